"""Matplotlib figures shared by the CLI (PNG files) and the Diagnostics widget (themed canvases).

Each function draws into a given ``Axes`` with colours from ``style`` (foreground, background,
accent), so the widget can pass napari's theme and the CLI the light defaults.
"""

from __future__ import annotations

import numpy as np

LIGHT = {"foreground": "#222222", "background": "white", "accent": "#1f77b4", "secondary": "#d62728"}


def _style_axes(ax, style):
    ax.set_facecolor(style["background"])
    for spine in ax.spines.values():
        spine.set_color(style["foreground"])
    ax.tick_params(colors=style["foreground"])
    ax.xaxis.label.set_color(style["foreground"])
    ax.yaxis.label.set_color(style["foreground"])
    ax.title.set_color(style["foreground"])


def prior_nll(nz: int) -> tuple[float, float]:
    """Mean and standard deviation of the NLL of codes drawn from the N(0, I_nz) prior.

    NLL = ½‖z‖² + (nz/2)·ln 2π and ‖z‖² is χ² with nz degrees of freedom (mean nz, variance 2·nz).
    """
    import math

    return nz / 2 * (1 + math.log(2 * math.pi)), math.sqrt(nz / 2)


def outlier_limit(values, spare: float = 0.0) -> float | None:
    """An axis's upper limit that keeps the bulk of ``values`` readable: Tukey's far-out fence
    (Q3 + 3·IQR, at least ``spare``), or None when no value lies beyond it."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 4:
        return None
    q1, q3 = np.percentile(values, [25, 75])
    fence = max(q3 + 3 * (q3 - q1), spare)
    return float(fence) if values.max() > fence else None


def reconstruction_scatter(ax, l2, nll, nn_l2=None, nz: int = 100, style=LIGHT, label="reconstruction",
                           prior_sd: float = 2.0, nn_label="nearest neighbour (median)"):
    """L2 against NLL of the found codes (Osokin et al. Figure 6), with the NN line and the prior band
    (NLL of prior codes, mean ± ``prior_sd`` standard deviations).

    A few codes far out (one NLL of 175,000 among cells near 150) would squash every other dot
    into one line: the NLL axis stops at :func:`outlier_limit`, the cells above it are drawn at
    the top edge as triangles, and the plot says so.
    """
    l2, nll = np.asarray(l2, dtype=float), np.asarray(nll, dtype=float)
    prior_mean, prior_std = prior_nll(nz)
    band_top = prior_mean + prior_sd * prior_std
    limit = outlier_limit(nll, spare=band_top)
    above = nll > limit if limit is not None else np.zeros(len(nll), dtype=bool)
    ax.scatter(l2[~above], nll[~above], s=8, alpha=0.6, color=style["accent"], label=label)
    ax.axhspan(prior_mean - prior_sd * prior_std, band_top, color=style["foreground"],
               alpha=0.12, label=f"prior NLL, mean ± {prior_sd:g} sd")
    if nn_l2 is not None and len(nn_l2):
        ax.axvline(float(np.median(nn_l2)), color=style["secondary"], linestyle="--", label=nn_label)
    if above.any():
        low = min(float(nll[~above].min()), prior_mean - prior_sd * prior_std) if (~above).any() else 0.0
        top = limit + 0.05 * (limit - low)
        ax.scatter(l2[above], np.full(above.sum(), top), s=24, marker="^", color=style["secondary"],
                   label=f"{above.sum()} with NLL > {limit:.0f} (up to {nll.max():.3g}), drawn at the edge")
        ax.set_ylim(low - 0.05 * (limit - low), top + 0.05 * (limit - low))
    ax.set_xlabel("L2 error (RMSE in [0, 1])")
    ax.set_ylabel("NLL of the latent code" + (" (axis clipped)" if above.any() else ""))
    ax.legend(fontsize=8, frameon=False, labelcolor=style["foreground"])
    _style_axes(ax, style)


def c2st_scores(ax, report: dict, style=LIGHT):
    """Per-protein C2ST scores over splits: dots per split, median as a bar."""
    names = [n for n in report if n != "all"] + ["all"]
    for i, name in enumerate(names):
        scores = np.asarray(report[name]["scores"], dtype=float)
        ax.scatter(np.full(len(scores), i), scores, s=12, color=style["accent"], alpha=0.7)
        ax.hlines(report[name]["median"], i - 0.3, i + 0.3, color=style["secondary"], linewidth=2)
    ax.axhline(0.0, color=style["foreground"], linewidth=0.8, alpha=0.5)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylabel("C2ST score\n(lower is closer to real)")
    _style_axes(ax, style)


def score_matrix(ax, matrix: np.ndarray, names: list[str], style=LIGHT, title="real vs real C2ST"):
    """Heat map of a (C, C) score matrix with the numbers written in."""
    image = ax.imshow(matrix, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("B (test set)")
    ax.set_ylabel("A (train set)")
    ax.set_title(title)
    low, high = np.nanmin(matrix), np.nanmax(matrix)
    for i in range(len(names)):
        for j in range(len(names)):
            value = matrix[i, j]
            # dark text on the bright (high) end of viridis; scores may be negative, so compare within the range
            bright = high > low and (value - low) / (high - low) > 0.6
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7, color="black" if bright else "white")
    _style_axes(ax, style)
    return image


def save_figure(draw, path, size=(5, 4), **kwargs) -> None:
    """Draw with ``draw(ax, **kwargs)`` into a new Agg figure and save it as PNG (atomically)."""
    from matplotlib.figure import Figure

    from ..atomic import atomic_write

    fig = Figure(figsize=size, dpi=120, layout="constrained")
    draw(fig.add_subplot(), **kwargs)
    atomic_write(path, fig.savefig)
