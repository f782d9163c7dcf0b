"""Cell cycle: interpolate latent codes between anchor cells and show the result as time.

Anchors are cells of a Generate result (their codes are in the layers' metadata), one cell cycle
(a short, a grown and a long cell the core picks: grow, then divide) or new random codes. The
widget starts :func:`napari_biogans.cell_session.interpolate_job` with ``workers.start_job``,
preallocates a ``(T, channels, H, W)`` stack (channels as in :mod:`..sampling`) when its first
update arrives, adds one layer per channel with an axis labelled ``t``, and fills frames as the
job's updates bring chunks, so napari's play button
scrubs the cell cycle. The red cell's length is measured in every frame and its Spearman ρ
against frame index says how steadily the sequence grows (the core's
:mod:`napari_biogans.evaluation.interpolation`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFileDialog, QFormLayout, QLabel, QLineEdit, QVBoxLayout, QWidget

from ..cell_session import CycleStart, Frames, export_job, interpolate_job
from ..jobs import Update
from . import _common, forms, model_picker
from .workers import start_job

GROUP = "cell cycle"
CYCLE = "a cell cycle: short → grown → dividing"
RANDOM = "new random codes"


def parse_indices(text: str) -> list[int]:
    """``"0, 5 9"`` -> ``[0, 5, 9]``; a clear ValueError otherwise."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        indices = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"anchor cells must be whole numbers separated by commas, got {text!r}") from None
    if len(indices) < 2:
        raise ValueError("give at least two anchor cells, e.g. 0, 5")
    return indices


class CellCycleWidget(QWidget):
    """Interpolate between anchor cells through latent space; show the frames as a ``t`` axis.

    Layers ``cell cycle Bgs4`` and ``cell cycle <protein>``, each ``(T, H, W)``, with provenance
    (model, weights hash, anchors, method, codes) in ``metadata``.
    """

    finished = Signal(object)  # (lengths, rho) once all frames are in

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.export_worker = None
        self.stack: np.ndarray | None = None
        self.layers: list = []
        self.lengths: np.ndarray | None = None
        self.rho: float | None = None
        self._done = 0

        self.source = forms.combo([], "Where the anchor codes come from: cells of a Generate result; one cell cycle "
                                  "(a short, a grown and a long cell picked from 512 random codes, so the cell grows, "
                                  "then divides); or new random codes")
        self.anchors = QLineEdit("0, 1")
        self.anchors.setToolTip("Cell indices (the 'cell' slider of the generated layers), two or more, "
                                "e.g. a small cell then a long one: 3, 11")
        add_current = forms.button("+ current cell", "Append the cell shown now (the first slider) to the anchors",
                                   self._add_current_cell)
        self.model = model_picker.ModelPicker("cell_cycle/model")
        self.model.combo.setToolTip("Model for a cell cycle or new random codes (anchors from layers use their own "
                                    "model)")
        self.device = model_picker.DeviceCombo("device")
        self.seed = forms.setting_spin(0, 2**31 - 1, "cell_cycle/seed", 0, "Seed of the random codes (a new seed, "
                                       "another cell cycle)")
        self.n_anchors = forms.spin(2, 16, 2, "How many random anchor codes to pass through")

        self.frames = forms.setting_spin(2, 2048, "cell_cycle/frames", 64, "Frames of the sequence (the first and "
                                         "last are the anchors exactly)")
        self.method = forms.combo(["slerp", "linear"], "slerp: along the sphere where normal codes live; linear: "
                                  "straight lines")
        self.greens = forms.combo(["greens fixed (red only)", "greens free"], "Fixed: only the red part of the code "
                                  "moves, each protein keeps its pattern style while the cell grows; free: the whole "
                                  "code moves")

        self.run_button = forms.button("Interpolate", "Render the sequence in the background, frame chunks appear "
                                       "as they are done", self.run)
        self.cancel_button = forms.button("Cancel", "Stop rendering after the current chunk of frames", self.cancel)
        self.cancel_button.setEnabled(False)

        self.result = forms.text_label("Red (Bgs4) cell length per frame, and its Spearman ρ with time: 1 = the "
                                       "cell grows steadily, 0 = no trend")
        self.plot = _common.PlotCanvas(napari_viewer, height=1.8)
        self.plot.setToolTip("Measured red-cell length per frame")

        self.gif_zoom = forms.spin(1, 8, 4, "Enlarge GIF frames by this factor (nearest neighbour); the TIFF keeps "
                                   "the pixels")
        self.gif_zoom.setPrefix("GIF zoom ×")
        self.tiff_button = forms.button("Save TIFF…", "Multi-page RGB TIFF of the visible cell-cycle channels, as "
                                        "composited on screen", lambda: self._export_dialog("tiff"))
        self.gif_button = forms.button("Save GIF…", "Animated GIF of the visible cell-cycle channels, as composited "
                                       "on screen", lambda: self._export_dialog("gif"))
        for button in (self.tiff_button, self.gif_button):
            button.setEnabled(False)

        form = QFormLayout()
        form.addRow("anchors from", self.source)
        self._anchor_row = forms.row(self.anchors, add_current, stretch_last=False)
        form.addRow("anchor cells", self._anchor_row)
        form.addRow("model", self.model)
        form.addRow("device", self.device)
        self._n_anchors_label = QLabel("anchors")
        self._random_row = forms.row(self._n_anchors_label, self.n_anchors, QLabel("seed"), self.seed)
        form.addRow("random codes", self._random_row)
        form.addRow("frames", self.frames)
        form.addRow("method", self.method)
        form.addRow("greens", self.greens)
        self._form = form
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(forms.row(self.run_button, self.cancel_button))
        layout.addWidget(self.result)
        layout.addWidget(self.plot)
        layout.addWidget(forms.row(self.tiff_button, self.gif_button, self.gif_zoom))
        layout.addStretch(1)
        self._draw_lengths(None)

        self.source.currentIndexChanged.connect(self._source_changed)
        self.model.changed.connect(self._update_greens)
        forms.follow_layers(self, napari_viewer, self._refresh_sources)
        self._refresh_sources()

    # -- anchors -------------------------------------------------------------------------------
    def _generated_groups(self) -> dict[str, object]:
        """Generate results in the viewer: group name -> one of its layers (holding the codes)."""
        groups = {}
        for layer in self.viewer.layers:
            meta = layer.metadata
            if "codes" in meta and meta.get("biogans_group") and meta.get("biogans_group") != GROUP:
                groups.setdefault(meta["biogans_group"], layer)
        return groups

    def _refresh_sources(self, event=None) -> None:
        try:
            current = self.source.currentText()
        except RuntimeError:  # widget deleted, viewer still alive
            return
        sources = [*self._generated_groups(), CYCLE, RANDOM]
        forms.refill(self.source, sources, current if current in sources else sources[0])
        self._source_changed()

    def _source_changed(self, *_):
        source = self.source.currentText()
        from_layers = source not in (CYCLE, RANDOM)
        forms.set_row_visible(self._form, self._anchor_row, from_layers)
        forms.set_row_visible(self._form, self.model, not from_layers)
        forms.set_row_visible(self._form, self._random_row, not from_layers)
        for widget in (self._n_anchors_label, self.n_anchors):  # a cycle has its own three anchors
            widget.setVisible(source == RANDOM)
        self._update_greens()

    def _update_greens(self, *_):
        """'Greens fixed' needs a separate red code: for models without one (DCGAN, cGAN, plain
        multichannel and one-class) it is greyed out and the whole code moves."""
        try:
            separate_red = bool(model_picker.load_generator_cached(self._anchor_request()[0], "cpu")[0].nz_red)
        except (ValueError, OSError):  # no usable model yet: leave the choice open, run() reports
            separate_red = True
        self.greens.model().item(0).setEnabled(separate_red)
        if not separate_red:
            self.greens.setCurrentIndex(1)

    def _add_current_cell(self) -> None:
        step = self.viewer.dims.current_step[0] if self.viewer.dims.ndim > 2 else 0
        text = self.anchors.text().strip()
        self.anchors.setText(f"{text}, {step}" if text else str(step))

    def _anchor_request(self):
        """(model path, anchors or None, proteins or None, description) for the chosen source."""
        source = self.source.currentText()
        if source in (CYCLE, RANDOM):
            path = self.model.path()
            if path is None:
                raise ValueError("no model chosen for random codes; train one or Browse… for a file")
            if source == CYCLE:
                return path, None, None, {"source": "cell cycle: short, grown, long", "seed": self.seed.value()}
            return path, None, None, {"source": "random codes", "seed": self.seed.value(),
                                      "n_anchors": self.n_anchors.value()}
        layer = self._generated_groups().get(source)
        if layer is None:
            raise ValueError(f"the layers '{source}' are gone; generate cells again")
        codes = np.asarray(layer.metadata["codes"], np.float32)
        provenance = layer.metadata.get("provenance", {})
        indices = parse_indices(self.anchors.text())
        bad = [i for i in indices if not 0 <= i < len(codes)]
        if bad:
            raise ValueError(f"'{source}' has cells 0..{len(codes) - 1}; no cell {bad}")
        path = provenance.get("model_path")
        if not path or not Path(path).is_file():
            raise ValueError(f"the model of '{source}' ({provenance.get('model')}) is not on disk any more")
        return path, codes[indices], provenance.get("proteins"), {
            "source": f"layers '{source}'", "cells": indices, "seed": provenance.get("seed"),
            "red_seed": provenance.get("red_seed")}

    # -- run -----------------------------------------------------------------------------------
    def run(self):
        if self.worker is not None and self.worker.is_running:
            return None
        try:
            path, anchors, proteins, origin = self._anchor_request()
        except ValueError as err:
            _common.report_error(err, "pick anchors from a Generate result or use new random codes")
            return None
        frames = self.frames.value()
        forms.remember(self.frames, self.seed)
        red_only = self.greens.currentIndex() == 0
        params = {"frames": frames, "method": self.method.currentText(), "red_only": red_only, **origin}
        self.worker = start_job(
            interpolate_job, model_picker.load_generator_cached, path, self.device.device(), anchors,
            self.n_anchors.value(), self.seed.value(), frames, params["method"], red_only, proteins,
            self.source.currentText() == CYCLE, what="Cell cycle",
            on_update=lambda update: self._on_update(update, params), on_done=self._measured,
            on_error=self._failed, on_finished=self._finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.result.setText("rendering…")
        self._done = 0
        return self.worker

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()

    def _failed(self, err) -> None:
        self.result.setText(f"failed: {err}")
        _common.report_error(err, "check the model and the anchors, or try the cpu device")

    def _on_update(self, update: Update, params) -> None:
        item = update.payload
        if isinstance(item, CycleStart):
            self._start_stack(item.channel_names, item.shape, item.meta, item.codes, item.anchors, item.device,
                              params)
            return
        if not isinstance(item, Frames) or self.stack is None:
            return
        self.stack[item.start : item.start + len(item.chunk)] = item.chunk
        self._done = item.start + len(item.chunk)
        for layer in self.layers:
            layer.refresh()
        self.result.setText(f"{self._done} / {len(self.stack)} frames")

    def _start_stack(self, names, shape, meta, codes, anchors, device, params) -> None:
        from .._io import sample_layers
        from ..sampling import is_red_channel

        self.stack = np.zeros(shape, np.uint8)
        self.lengths, self.rho = None, None
        self._draw_lengths(None)
        provenance = {
            "model": meta.get("name"), "weights_sha256": meta.get("sha256"), "model_path": meta.get("path"),
            "device": device, "proteins": [n for n in names if not is_red_channel(n)], "anchors": anchors,
            "simulated_training_data": bool(meta.get("simulated_training_data", False)), **params,
        }
        layer_data = sample_layers(self.stack, names, GROUP, {"provenance": provenance, "codes": codes})
        layer_data = [(data, {**kwargs, "axis_labels": ("t", "y", "x")}, kind) for data, kwargs, kind in layer_data]
        new = any(kwargs["name"] not in self.viewer.layers for _, kwargs, _ in layer_data)
        self.layers = _common.add_or_update_layers(self.viewer, layer_data, group=GROUP)
        if new:
            # additive layers of other generated sets would shine through the sequence: hide them
            for layer in self.viewer.layers:
                group = layer.metadata.get("biogans_group")
                if group and group != GROUP:
                    layer.visible = False
            self.viewer.reset_view()
        self.viewer.dims.set_current_step(0, 0)

    def _finished(self) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.stack is not None and self._done < len(self.stack):
            self.result.setText(f"stopped: {self._done} / {len(self.stack)} frames")

    def _measured(self, result) -> None:
        self.lengths, self.rho = result
        found = self.lengths > 0
        span = f"{self.lengths[0]:.0f} → {self.lengths[-1]:.0f} px" if found.any() else "no red cell found"
        self.result.setText(f"{len(self.lengths)} frames; red length {span}; Spearman ρ = {self.rho:+.2f} "
                            "(+1 = steady growth)")
        self._draw_lengths(self.lengths)
        for button in (self.tiff_button, self.gif_button):
            button.setEnabled(True)
        self.finished.emit((self.lengths, self.rho))

    def _draw_lengths(self, lengths) -> None:
        ax = self.plot.ax
        ax.clear()
        ax.set_xlabel("frame", fontsize=8)
        ax.set_ylabel("red length (px)", fontsize=8)
        if lengths is not None:
            ax.plot(np.arange(len(lengths)), lengths, color=self.plot.line_colors()[1], linewidth=1.5)
            ax.set_title(f"Spearman ρ = {self.rho:+.2f}", fontsize=9)
        self.plot.draw()

    # -- export --------------------------------------------------------------------------------
    def _export_dialog(self, kind: str) -> None:
        folder = _common.get_setting("folders/export", str(Path.home()))
        suffix = ".tif" if kind == "tiff" else ".gif"
        file, _ = QFileDialog.getSaveFileName(self, f"Save the cell cycle as {kind.upper()}",
                                              str(Path(folder) / f"cell_cycle{suffix}"), f"*{suffix}")
        if file:
            if not file.lower().endswith((suffix, ".tiff")):
                file += suffix
            _common.set_setting("folders/export", str(Path(file).parent))
            self.export(file, kind)

    def export(self, path, kind: str | None = None):
        """Write the RGB composite of the visible cell-cycle layers (TIFF or GIF) in a worker."""
        kind = kind or ("gif" if str(path).lower().endswith(".gif") else "tiff")
        layers = [layer for layer in self.layers if layer in self.viewer.layers and layer.visible]
        if not layers:
            _common.report_error("no visible cell-cycle layers to export", "interpolate first, or show a channel")
            return None
        channels = [np.asarray(layer.data) for layer in layers]
        self.export_worker = start_job(
            export_job, str(path), channels, [layer.colormap for layer in layers],
            [tuple(layer.contrast_limits) for layer in layers], kind, self.gif_zoom.value(), 12, what="Cell cycle export",
            on_done=lambda p: self.result.setText(f"saved {p}"),
            on_error=lambda err: _common.report_error(err, "choose another file or folder"))
        return self.export_worker
