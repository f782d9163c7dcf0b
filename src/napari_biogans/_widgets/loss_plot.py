"""Loss curves of a training run: a plot over a {name: [(iteration, value)]} history, redrawn in place."""

from __future__ import annotations

import time

import numpy as np

from . import _common

PLOTTED = ("critic", "generator", "wasserstein")  # first on the plot; any other losses follow
MAX_CURVES = 6
PLOT_EVERY_S = 1.0  # redraw at most once a second while training
MAX_PLOTTED_POINTS = 2000


def curve_order(losses) -> list[str]:
    """Loss names to plot: the fluorescence trio first, then the rest (EM losses) alphabetically."""
    return [k for k in PLOTTED if k in losses] + sorted(k for k in losses if k not in PLOTTED)


class LossPlot(_common.PlotCanvas):
    """``history`` is what is drawn; :meth:`add` appends logged iterations, :meth:`draw_losses` redraws."""

    def __init__(self, viewer, height: float = 2.2):
        super().__init__(viewer, height=height)
        self.top_extra_px = 16  # the legend sits in a row above the curves
        self.history: dict[str, list] = {}
        self._lines: dict = {}
        self._last_plot = 0.0

    def add(self, logged) -> None:
        """Append ``[(iteration, {name: value})]``."""
        for iteration, losses in logged:
            for key, value in losses.items():
                self.history.setdefault(key, []).append((iteration, value))

    def draw_losses(self, force: bool = True) -> None:
        """Redraw; during training at most once a second (``force=False``), lines updated in place."""
        now = time.perf_counter()
        if not force and now - self._last_plot < PLOT_EVERY_S:
            return
        self._last_plot = now
        ax = self.ax
        keys = curve_order(self.history)[:MAX_CURVES]
        if not self._lines or any(key not in self._lines for key in keys):
            ax.clear()
            ax.set_xlabel("iteration", fontsize=8)
            ax.set_ylabel("loss", fontsize=8)
            self._lines = {}
            for color, key in zip(self.line_colors(), keys or PLOTTED):
                (self._lines[key],) = ax.plot([], [], color=color, linewidth=1.2, label=key)
        shown = []
        for key, line in self._lines.items():
            points = self.history.get(key, [])
            step = max(1, len(points) // MAX_PLOTTED_POINTS)
            if points:
                x, y = np.asarray(points[::step], dtype=float).T
                line.set_data(x, y)
                shown.append(line)
            else:
                line.set_data([], [])
        if shown:
            legend = ax.get_legend()
            if legend is None or len(legend.get_texts()) != len(shown):
                ax.legend(handles=shown, fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=len(shown),
                          frameon=False, borderaxespad=0.2, handlelength=1.5)
            ax.relim()
            ax.autoscale_view()
        self.draw()
