"""Paint EM: paint membrane and mitochondria labels and watch the EM image that G_x renders from them.

A thin view over :mod:`napari_biogans.em_session` (the model cache, sampling, rendering and label
edits, all Qt-free jobs started with ``workers.start_job``) and :class:`.em_live_render.LiveRender`
(the debounced, latest-wins live render). The label map to paint is a Labels layer (codes 0
cytoplasm, 1 membrane, 2 mitochondria): sampled from G_y ("New label map"), the shipped VNC crop, a
section of a VNC stack folder or a label file. Its render is the uint8 Image layer "EM render",
placed to the right of the labels (or under them).

The label-editing buttons run the core functions of :mod:`napari_biogans.data.label_editing`
in a worker and write the changed pixels back with ``Labels.data_setitem`` inside
``block_history``: one undoable step, which fires ``paint`` and so re-renders.
"""

from __future__ import annotations

import random

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..data import em
from ..em_session import EDITS, edit_job, sample_job, vnc_path_job, vnc_sample_job
from . import _common, forms, model_picker
from .em_live_render import LiveRender
from .export_model import ExportModelButton
from .workers import start_job

MAX_SEED = 2**31 - 1
LABELS_NAME = "EM labels"


def labels_colormap():
    """Codes as in :data:`napari_biogans.data.em.LABEL_COLORS` (cytoplasm transparent), as the VNC sample."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: (0, 0, 0, 0), **em.LABEL_COLORS})


class PaintEMWidget(QWidget):
    """Paint EM label maps and render them live with an EM model's image generator.

    ``rendered`` fires with the number of tiles rendered once the "EM render" layer shows a new
    render; ``status`` says how many tiles and how long.
    """

    rendered = Signal(int)

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._job = None  # the one sampling / loading / editing worker

        self.model = model_picker.ModelPicker("paint_em/model", kind="em-generator")
        self.model_info = forms.text_label("What the chosen model file says about itself")
        self.device = model_picker.DeviceCombo("device")

        # new label map
        self.height_box = self._spin(64, 8192, "paint_em/height", 512, "Height of the new label map (pixels)")
        self.width_box = self._spin(64, 8192, "paint_em/width", 512, "Width of the new label map (pixels)")
        self.seed = self._spin(0, MAX_SEED, "paint_em/seed", 0,
                               "Seed of the label generator's noise: the same seed gives the same label map")
        new_seed = forms.button("New seed", "Draw a new random seed and sample a new label map", self.new_seed)
        self.new_map_button = forms.button("New label map", "Sample a label map from the model's label generator G_y "
                                           f"into '{LABELS_NAME}'", self.new_label_map)

        # real VNC labels
        self.sample_button = forms.button("Load VNC sample", "The shipped 512×512 crop of real VNC section 10: EM "
                                          "image and its labels (offline)", self.load_vnc_sample)
        self.vnc_path = _common.PathEdit(
            "paint_em/vnc_path", "A VNC stack folder (raw/, membranes/, mitochondria/) or a label map file "
            "(PNG or TIFF with codes 0/1/2)", file_filter="Label maps (*.png *.tif *.tiff)")
        self.section = self._spin(0, 999, "paint_em/section", 10, "Section number to load from a VNC stack folder")
        load_button = forms.button("Load", "Load the section (EM image beside its labels) or the label file",
                                   self.load_vnc_path)

        self.target_combo = forms.combo([], "The Labels layer to paint, edit and render (codes 0 cytoplasm, 1 "
                                        "membrane, 2 mitochondria); new and loaded label maps are chosen here at once")

        # editing
        self.edit_buttons = {}
        for name in EDITS:
            button = QPushButton(name.capitalize())
            button.clicked.connect(lambda _=False, name=name: self.edit(name))
            self.edit_buttons[name] = button
        self.edit_buttons["remove membrane fragments"].setToolTip(
            "Drop membrane that separates no two cells (spurs, floating pieces, walls with gaps); undo with Ctrl+Z")
        self.edit_buttons["convex mitochondria"].setToolTip(
            "Replace every mitochondrion by its filled convex hull; undo with Ctrl+Z")
        self.edit_buttons["remove small mitochondria"].setToolTip(
            "Turn mitochondria smaller than the area into cytoplasm; undo with Ctrl+Z")
        self.min_area = self._spin(1, 100_000, "paint_em/min_area", 20, "Mitochondria with fewer pixels are removed")

        # rendering
        self.noise_seed = self._spin(0, MAX_SEED, "paint_em/noise_seed", 0,
                                     "Seed of the image generator's noise: another seed, another texture")
        self.tile = self._spin(64, 2048, "paint_em/tile", 256,
                               "Tile side in pixels, rounded to the model's factor: smaller tiles re-render a "
                               "stroke faster, larger ones render a whole map faster")
        self.tile.setSingleStep(64)
        self.side_by_side = QCheckBox("side by side")
        self.side_by_side.setChecked(_common.get_setting("paint_em/side_by_side", "true") in (True, "true"))
        self.side_by_side.setToolTip("Show the render to the right of the labels (off: under them)")
        self.status = forms.text_label("What the last render or action did")

        form = QFormLayout()
        form.addRow("model", self.model)
        form.addRow("", self.model_info)
        form.addRow("device", self.device)
        form.addRow("labels layer", self.target_combo)
        new_box = QGroupBox("New label map")
        new_form = QFormLayout(new_box)
        new_form.addRow("size", forms.row(self.height_box, QLabel("×"), self.width_box))
        new_form.addRow("seed", forms.row(self.seed, new_seed))
        new_form.addRow(self.new_map_button)
        real_box = QGroupBox("Real VNC labels")
        real_form = QFormLayout(real_box)
        real_form.addRow(self.sample_button)
        real_form.addRow("folder or file", self.vnc_path)
        real_form.addRow("section", forms.row(self.section, load_button))
        edit_box = QGroupBox("Edit labels")
        edit_form = QFormLayout(edit_box)
        edit_form.addRow(forms.row(self.edit_buttons["remove membrane fragments"],
                                   self.edit_buttons["convex mitochondria"]))
        edit_form.addRow(forms.row(self.edit_buttons["remove small mitochondria"], QLabel("area"), self.min_area))
        render_box = QGroupBox("Render")
        render_form = QFormLayout(render_box)
        render_form.addRow("noise seed", self.noise_seed)
        render_form.addRow("tile", forms.row(self.tile, self.side_by_side))
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for box in (new_box, real_box, edit_box, render_box):
            layout.addWidget(box)
        self.export_button = ExportModelButton(self.model.path, self.status, self.noise_seed.value)
        layout.addWidget(self.export_button)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.live = LiveRender(self.viewer, lambda: (self.model.path(), self.device.device(), self.tile.value(),
                                                     self.noise_seed.value(), self.side_by_side.isChecked()), self)
        self.live.rendered.connect(self.rendered)
        self.live.message.connect(self.status.setText)
        self.model.changed.connect(self._model_changed)
        self.device.changed.connect(lambda _: self._settings_changed())
        self.noise_seed.valueChanged.connect(lambda _: self._settings_changed())
        self.tile.valueChanged.connect(lambda _: self._settings_changed())
        self.side_by_side.toggled.connect(self._side_by_side_changed)
        self.target_combo.currentIndexChanged.connect(self._target_chosen)
        layers = self.viewer.layers.events
        self._viewer_connections = [(layers.inserted, self._refresh_targets), (layers.removed, self._layer_removed),
                                    (layers.moved, self._refresh_targets)]
        for emitter, callback in self._viewer_connections:
            emitter.connect(callback)
        self.destroyed.connect(self._disconnect_all)  # a bound method: see forms.follow_layers
        self._refresh_targets()
        self._model_changed(self.model.path())

    @staticmethod
    def _spin(low, high, key, default, tooltip) -> QSpinBox:
        box = forms.spin(low, high, _common.get_int_setting(key, default), tooltip)
        box.valueChanged.connect(lambda value: _common.set_setting(key, value))
        return box

    # -- model -----------------------------------------------------------------------------------
    def _model_changed(self, path) -> None:
        self.new_map_button.setEnabled(False)
        if path is None:
            self.model_info.setText("No EM model yet: train one in the Train widget (VNC EM sections), "
                                    "or Browse… for an em_model.safetensors file.")
            return
        try:
            card = model_picker.read_card(path)
        except ValueError as err:
            self.model_info.setText(str(err))
            return
        bits = [str(card.get("mode", "?"))]
        if card.get("iterations") is not None:
            bits.append(f"{card['iterations']} iterations")
        description = (card.get("data") or {}).get("description")
        if description:
            bits.append(f"trained on {description}")
        if card.get("image_generator") is None:
            bits.append("no image generator: samples labels, cannot render")
        self.model_info.setText(", ".join(bits))
        self.new_map_button.setEnabled(True)
        self._settings_changed()

    def _settings_changed(self) -> None:
        """Model, device, tile or noise seed changed: renderers start over."""
        self.live.restart()

    # -- target Labels layer ---------------------------------------------------------------------
    def _labels_layers(self) -> list:
        from napari.layers import Labels

        return [layer for layer in self.viewer.layers if isinstance(layer, Labels)]

    def _refresh_targets(self, event=None) -> None:
        layers = self._labels_layers()
        names = ["(none)"] + [layer.name for layer in layers]
        current = layers.index(self.live.target) + 1 if self.live.target in layers else 0
        forms.refill(self.target_combo, names, names[current])
        for layer in layers:  # keep the names current (connecting twice is a no-op)
            layer.events.name.connect(self._refresh_targets)

    def _layer_removed(self, event) -> None:
        if event.value is self.live.target:
            self.set_target(None)
        self.live.layer_removed(event.value)
        self._refresh_targets()

    def _target_chosen(self, index: int) -> None:
        layers = self._labels_layers()
        self.set_target(layers[index - 1] if 0 < index <= len(layers) else None)

    def target(self):
        """The Labels layer that is edited and rendered (None when there is none)."""
        return self.live.target

    def set_target(self, layer) -> None:
        """Render ``layer`` (a Labels layer, or None) and follow its edits."""
        if layer is self.live.target:
            return
        self.live.set_target(layer)
        self._refresh_targets()

    def _disconnect_all(self, *_) -> None:
        """Napari outlives the widget: leave no callbacks behind on its events."""
        for emitter, callback in self._viewer_connections:
            _common._disconnect(emitter, callback)
        for layer in self._labels_layers():
            _common._disconnect(layer.events.name, self._refresh_targets)
            self.live.forget(layer)

    # -- live rendering --------------------------------------------------------------------------
    def busy(self) -> bool:
        """True while a render or an action is waiting or running."""
        return self.live.busy() or self._job is not None

    def schedule_render(self, event=None) -> None:
        """Render after a short quiet spell (a burst of events gives one render)."""
        self.live.schedule()

    def render(self):
        """Render the target in a worker (or ask for another render after the running one)."""
        return self.live.render()

    def _side_by_side_changed(self, checked: bool) -> None:
        _common.set_setting("paint_em/side_by_side", checked)
        if self.live.render_layer is not None and self.live.target is not None:
            self.live.place()
            self.viewer.reset_view()

    # -- actions (one worker at a time) ----------------------------------------------------------
    def _start(self, job, *args, done, what: str, **kwargs):
        if self._job is not None:
            self.status.setText("busy: wait for the last action to finish")
            return None
        self._job = start_job(job, *args, what="Paint EM", on_done=done, on_error=lambda err: self._failed(err, what),
                              on_finished=self._job_finished, **kwargs)
        return self._job

    def _job_finished(self) -> None:
        self._job = None

    def _failed(self, err, what: str) -> None:
        self.status.setText(f"failed: {err}")
        _common.report_error(err, what)

    def new_seed(self):
        self.seed.setValue(random.randint(0, MAX_SEED))
        return self.new_label_map()

    def new_label_map(self):
        """Sample a label map from G_y in a worker into the Labels layer 'EM labels'."""
        path = self.model.path()
        if path is None:
            _common.report_error("no EM model chosen", "train one in the Train widget or choose a file with Browse…")
            return None
        height, width, seed = self.height_box.value(), self.width_box.value(), self.seed.value()
        self.status.setText(f"sampling a {height}×{width} label map…")
        return self._start(sample_job, path, self.device.device(), height, width, seed,
                           done=lambda result: self._show_new_map(result, path, seed),
                           what="check the model file, or try the cpu device")

    def _show_new_map(self, result, path, seed) -> None:
        labels, meta = result
        provenance = {"model": model_picker.model_name(path), "model_path": str(path), "seed": seed,
                      "mode": meta.get("mode"), "iterations": meta.get("iterations")}
        self._add_labels(labels, LABELS_NAME, {"provenance": provenance})
        self.status.setText(f"sampled a {labels.shape[0]}×{labels.shape[1]} label map, seed {seed}")

    def load_vnc_sample(self):
        """The shipped VNC crop: its EM image and its labels (the layer to paint)."""
        return self._start(vnc_sample_job, done=self._show_real, what="reinstall napari-biogans")

    def load_vnc_path(self):
        """A section of the VNC stack folder, or the label file, in the path box."""
        text = self.vnc_path.text()
        if not text:
            _common.report_error("no folder or file given", "choose a VNC stack folder or a label map file")
            return None
        return self._start(vnc_path_job, text, self.section.value(), done=self._show_real,
                           what="choose a VNC stack folder with raw/ and membranes/, or a PNG/TIFF of codes 0/1/2")

    def _show_real(self, layer_data) -> None:
        for data, kwargs, kind in layer_data:
            kwargs = dict(kwargs)
            name = kwargs.pop("name")
            if kind == "labels":
                kwargs.pop("colormap", None)  # ours, the same colours
                self._add_labels(data, name, kwargs.pop("metadata", {}), **kwargs)
            else:
                _common.add_or_update_layers(self.viewer, [(data, {"name": name, **kwargs}, kind)])
        self.status.setText(f"loaded {layer_data[-1][1]['name']}")

    def _add_labels(self, labels, name, metadata, **kwargs) -> None:
        """A Labels layer of codes, named and coloured, made the target (same name: its data is replaced)."""
        from napari.layers import Labels

        metadata = {**metadata, "label_names": dict(em.LABEL_NAMES)}
        existing = self.viewer.layers[name] if name in self.viewer.layers else None
        if isinstance(existing, Labels):
            existing.metadata = metadata
            existing.data = labels
            layer = existing
        else:
            if existing is not None:
                self.viewer.layers.remove(existing)
            layer = self.viewer.add_labels(
                labels, name=name, colormap=labels_colormap(), metadata=metadata,
                features={"index": list(em.LABEL_NAMES), "name": list(em.LABEL_NAMES.values())}, **kwargs)
            layer.selected_label = em.MEMBRANE
            layer.mode = "paint"
        self.set_target(layer)

    def edit(self, name: str):
        """Apply a label-editing operation to the target layer, as one undoable step."""
        layer = self.live.target
        if layer is None:
            _common.report_error("no labels layer to edit", "make a new label map, load VNC labels or choose a layer")
            return None
        kwargs = {"min_area": self.min_area.value()} if name == "remove small mitochondria" else {}
        self.status.setText(f"{name}…")
        labels = np.array(layer.data, copy=True)
        return self._start(edit_job, name, labels, **kwargs,
                           done=lambda result: self._apply_edit(result, layer, labels.shape, name),
                           what="paint with codes 0, 1 and 2 only, on a 2-D labels layer")

    def _apply_edit(self, result, layer, shape, name) -> None:
        indices, values = result
        if layer not in self.viewer.layers or layer.data.shape != shape:
            self.status.setText(f"{name}: the labels layer changed meanwhile; apply it again")
            return
        with layer.block_history():  # one undo step; committing it fires paint, which re-renders
            layer.data_setitem(indices, values)
        self.status.setText(f"{name}: {len(values)} pixels changed (Ctrl+Z undoes)")
