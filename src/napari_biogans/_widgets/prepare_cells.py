"""Prepare cells dock widget: a user's own field of view -> aligned LIN-style cells.

A thin view over ``data.prepare``: the chosen layers become a :class:`~napari_biogans.data.fields.Field`
(on the GUI thread, a copy), the job runs in a worker (progress, cancel), and the results come
back as two outline layers (accepted in green, rejected in magenta, the reason in the status bar
on hover) and the aligned crops as the same red/green cell-stack layers the LIN reader makes,
which Train, Diagnostics and Cell cycle take as they are. Save writes the LIN layout and ``.h5``.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QCheckBox, QFileDialog, QFormLayout, QLineEdit, QVBoxLayout, QWidget

from . import _common, forms
from .workers import start_job

GROUP = "prepare_cells"  # the crops' layer group (replaced on every run)
OUTLINES = "biogans_cell_outlines"  # metadata key of the accepted / rejected outline layers
SEGMENT = "(segment the red channel)"
ACCEPTED_COLOR, REJECTED_COLOR = "#39e639", "#ff3fd0"
MODES = ("separate red and green layers", "one multichannel layer")


# --------------------------------------------------------------------------------------------
# Pure helpers (no Qt)


def _layer_array(layer) -> np.ndarray:
    """The full-resolution data of an image or labels layer (multiscale: the first level)."""
    return np.asarray(layer.data[0] if getattr(layer, "multiscale", False) else layer.data)


def _channel_axis(layer) -> int:
    labels = [str(a).lower() for a in getattr(layer, "axis_labels", ())]
    return next((i for i, a in enumerate(labels) if a in ("c", "ch", "channel")), 0)


def field_from_layers(red, green=None, red_channel: int = 0, green_channel: int = 1, labels=None,
                      pixel_size_um: float | None = None, project_how: str = "max"):
    """A :class:`Field` from napari layers: two channel layers, or one multichannel layer (``green``
    None) with its channel indices; a z-stack is projected; ``labels`` an optional labels layer."""
    from ..data.fields import FieldError, field_from_arrays

    if green is None:
        data, axis = _layer_array(red), _channel_axis(red)
        if data.ndim < 3:
            raise FieldError(f"layer '{red.name}' has no channel axis {data.shape}; choose two layers instead")
        n = data.shape[axis]
        for name, index in (("red", red_channel), ("green", green_channel)):
            if not 0 <= index < n:
                raise FieldError(f"layer '{red.name}': no {name} channel {index}; it has {n} along axis {axis}")
        r, g = np.take(data, red_channel, axis=axis), np.take(data, green_channel, axis=axis)
        source, names = f"napari layer '{red.name}'", (f"{red.name} [{red_channel}]", f"{red.name} [{green_channel}]")
    else:
        if red is green:
            raise FieldError("choose two different layers for red and green, or one multichannel layer")
        r, g = _layer_array(red), _layer_array(green)
        source, names = f"napari layers '{red.name}' + '{green.name}'", (red.name, green.name)
    label_image = None if labels is None else _layer_array(labels)
    return field_from_arrays(r, g, source, pixel_size_um, label_image, project_how, names)


def outline_layers(result, scale, translate) -> list[tuple]:
    """Labels layer tuples of the accepted and the rejected cells, their measurements as features
    (napari shows a hovered label's features, the rejection reason among them, in the status bar)."""
    layers = []
    for name, keep, color in (("accepted cells", True, ACCEPTED_COLOR), ("rejected cells", False, REJECTED_COLOR)):
        records = [r for r in result.records if r.accepted == keep]
        data = np.where(np.isin(result.labels, [r.label for r in records]), result.labels, 0).astype(np.int32)
        features = {"index": [r.label for r in records],
                    "reason": [r.reason or "accepted" for r in records],
                    "length_um": [round(r.length_um, 2) for r in records],
                    "width_um": [round(r.width_um, 2) for r in records],
                    "solidity": [round(r.solidity, 3) for r in records]}
        layers.append((data, {"name": name, "features": features, "scale": scale, "translate": translate,
                              "colormap": {None: color, 0: (0, 0, 0, 0)}, "opacity": 0.9,
                              "metadata": {OUTLINES: True, "source": result.source}}, "labels"))
    return layers


def crop_layers(result, protein: str) -> list[tuple]:
    """The accepted cells as the LIN reader's red/green cell-stack layers, marked as prepared from
    fields of view, with each cell's provenance row."""
    from .._io import cell_layers
    from ..data import prepare

    stack = prepare.to_cell_stack([result], protein)
    layers = cell_layers(stack, f"prepared {protein}", scale=(result.crop_pixel_size_um,) * 2)
    provenance = [row for row in prepare.provenance_rows([result]) if row["accepted"]]
    for _, kwargs, _ in layers:
        kwargs["metadata"] = {**kwargs["metadata"], "prepared_from_fields": True, "provenance": provenance,
                              "pixel_size_um": result.crop_pixel_size_um}
    return layers


# --------------------------------------------------------------------------------------------
# The widget


class PrepareCellsWidget(QWidget):
    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker = None
        self.result = None
        self._cancelled = False

        self.mode = forms.combo(MODES, "Red and green as two image layers, or one image layer holding both channels")
        self.red_layer = forms.combo([], "The cell-outline channel (Bgs4, a membrane or cell-wall marker)")
        self.green_layer = forms.combo([], "The protein channel")
        self.labels_layer = forms.combo([], "Cells segmented by another tool (cellpose, YeaZ, ilastik), or segment "
                                        "here")
        self.red_channel = forms.spin(0, 63, 0, "Index of the red (outline) channel in the multichannel layer")
        self.green_channel = forms.spin(0, 63, 1, "Index of the green (protein) channel")
        self.project = forms.combo(["max", "sum"], "How a z-stack becomes one image")
        self.pixel_size = forms.double_spin(0.001, 10.0, 0.1, "Physical size of one pixel of the field; filled "
                                            "from the layer's scale", decimals=4, suffix=" µm")
        self.protein = QLineEdit()
        self.protein.setPlaceholderText("protein name")
        self.protein.setToolTip("The green protein: the class name of the cells")
        self.size = forms.combo(["48x80", "96x160"], "48 x 80 at 0.2 µm per pixel (the LIN release), or 96 x 160 "
                                "at 0.1 µm")
        self.normalise = forms.combo(["field", "cell"], "field: one intensity range per field, brightness "
                                     "differences between cells survive; cell: each cell spans 0..255")
        self.mask = QCheckBox("zero the pixels outside each cell")
        self.mask.setChecked(True)
        self.mask.setToolTip("As in the LIN release: background 0 outside the segmented cell")
        self.split = forms.double_spin(0.0, 0.9, 0.2, "Test fraction of the seeded train/test split written by "
                                       "Save (0: one folder)", step=0.05)

        self.run_button = forms.button("Run", "Segment (or read the labels), measure, align and crop", self._run)
        self.cancel_button = forms.button("Cancel", "Stop the running preparation", self._cancel)
        self.save_button = forms.button("Save…", "Write the LIN layout, cells.h5, the float crops and "
                                        "provenance.csv into a new folder", self._save)
        self.counts = forms.text_label()

        self._form = form = QFormLayout()
        form.addRow("Channels", self.mode)
        form.addRow("Red (outline)", self.red_layer)
        form.addRow("Green (protein)", self.green_layer)
        form.addRow("Red channel", self.red_channel)
        form.addRow("Green channel", self.green_channel)
        form.addRow("Cells", self.labels_layer)
        form.addRow("z projection", self.project)
        form.addRow("Pixel size", self.pixel_size)
        form.addRow("Protein", self.protein)
        form.addRow("Crop size", self.size)
        form.addRow("Normalise per", self.normalise)
        form.addRow("", self.mask)
        form.addRow("Test fraction", self.split)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(forms.row(self.run_button, self.cancel_button, self.save_button))
        layout.addWidget(self.counts)
        layout.addStretch(1)

        self.mode.currentIndexChanged.connect(self._mode_changed)
        self.red_layer.currentTextChanged.connect(self._red_changed)
        self.green_layer.currentTextChanged.connect(self._green_changed)
        forms.follow_layers(self, napari_viewer, self._refresh_layers)
        self._refresh_layers()
        self._mode_changed()
        self._set_busy(False)

    # -- inputs ------------------------------------------------------------------------------
    def _inputs(self):
        """Image layers the user may mean (not our own results) and labels layers."""
        from napari.layers import Image, Labels

        images = [l.name for l in self.viewer.layers if isinstance(l, Image) and not l.rgb
                  and l.metadata.get("biogans_group") != GROUP and not l.metadata.get("prepared_from_fields")]
        labels = [l.name for l in self.viewer.layers if isinstance(l, Labels) and not l.metadata.get(OUTLINES)]
        return images, labels

    def _refresh_layers(self, *_) -> None:
        images, labels = self._inputs()
        for combo, names, default in ((self.red_layer, images, 0), (self.green_layer, images, 1),
                                      (self.labels_layer, [SEGMENT] + labels, 0)):
            now = combo.currentText()
            forms.refill(combo, names, now if now in names else names[min(default, len(names) - 1)] if names else "")
        self._red_changed()
        self._green_changed()

    def _mode_changed(self, *_) -> None:
        multichannel = self.mode.currentIndex() == 1
        forms.set_row_visible(self._form, self.green_layer, not multichannel)
        for spin in (self.red_channel, self.green_channel):
            forms.set_row_visible(self._form, spin, multichannel)
        self._form.labelForField(self.red_layer).setText("Image" if multichannel else "Red (outline)")

    def _layer(self, name):
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _red_changed(self, *_) -> None:
        """Pre-fill the pixel size from the layer's scale (or a reader's metadata)."""
        layer = self._layer(self.red_layer.currentText())
        if layer is None:
            return
        size = layer.metadata.get("pixel_size_um")
        scale = float(layer.scale[-1])
        if size is None and scale != 1.0:
            size = scale
        if size:
            self.pixel_size.setValue(float(size))

    def _green_changed(self, *_) -> None:
        if self.mode.currentIndex() == 0 and self.green_layer.currentText():
            self.protein.setPlaceholderText(self.green_layer.currentText())

    def _protein(self) -> str:
        return self.protein.text().strip() or self.protein.placeholderText()

    # -- jobs --------------------------------------------------------------------------------
    def _set_busy(self, busy: bool) -> None:
        self.run_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.save_button.setEnabled(not busy and self.result is not None and len(self.result.accepted) > 0)

    def _run(self) -> None:
        from ..data import prepare

        try:
            red = self._layer(self.red_layer.currentText())
            if red is None:
                raise ValueError("open a field of view first (an image layer with the red channel)")
            green = None if self.mode.currentIndex() == 1 else self._layer(self.green_layer.currentText())
            if self.mode.currentIndex() == 0 and green is None:
                raise ValueError("choose the green (protein) layer")
            labels = self._layer(self.labels_layer.currentText())
            fov = field_from_layers(red, green, self.red_channel.value(), self.green_channel.value(), labels,
                                    self.pixel_size.value(), self.project.currentText())
            h, w = (int(v) for v in self.size.currentText().split("x"))
            params = prepare.PrepareParams(size=(h, w), normalise=self.normalise.currentText(),
                                           mask_outside=self.mask.isChecked())
        except ValueError as err:
            _common.report_error(err)
            return
        self._field_layer = red
        self.counts.setText("preparing…")
        self.result, self._cancelled = None, False
        self.worker = start_job(prepare.prepare_field, fov, params, what="Prepare cells",
                                on_update=self._progress,
                                on_done=self._show, on_error=self._failed, on_finished=self._finished)
        self._set_busy(True)

    def _progress(self, update) -> None:
        if self.result is None and not self._cancelled:  # a late update must not hide the outcome
            self.counts.setText(f"{update.stage}…")

    def _cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self._cancelled = True
            self.counts.setText("cancelled")

    def _failed(self, err) -> None:
        self.counts.setText("failed")
        _common.report_error(err)

    def _finished(self) -> None:
        self.worker = None
        self._set_busy(False)

    def _show(self, result) -> None:
        from ..data import prepare

        self.result = result
        field = self._field_layer
        scale, translate = tuple(field.scale[-2:]), tuple(field.translate[-2:])
        for data, kwargs, _ in outline_layers(result, scale, translate):
            if kwargs["name"] in self.viewer.layers:
                self.viewer.layers.remove(kwargs["name"])
            layer = self.viewer.add_labels(data, **kwargs)
            layer.contour = 2
        summary = prepare.rejection_summary([result])
        accepted = summary.pop("accepted")
        lines = [f"{len(result.records)} cells: {accepted} accepted"] + [f"{n} {why}" for why, n in summary.items()]
        self.counts.setText("; ".join(lines))
        if accepted:
            _common.add_or_update_layers(self.viewer, crop_layers(result, self._protein()), group=GROUP)
        self._set_busy(False)

    def _save(self) -> None:
        if self.result is None:
            return
        start = _common.get_setting("folders/prepared", "")
        folder = QFileDialog.getExistingDirectory(self, "Choose a new, empty folder for the cells", start)
        if folder:
            self.save_to(folder)

    def save_to(self, folder) -> dict:
        """Write the last result into ``folder`` (new or empty); returns what was written."""
        from ..data import prepare

        try:
            written = prepare.write_prepared([self.result], folder, self._protein(), self.split.value())
        except (ValueError, OSError) as err:
            _common.report_error(err, "choose a new, empty folder")
            return {}
        _common.set_setting("folders/prepared", str(folder))
        self.counts.setText(self.counts.text() + f" — saved to {folder}")
        return written
