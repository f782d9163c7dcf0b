"""Generate cells: sample a trained generator into napari layers (red Bgs4 + one layer per protein).

A thin view over :func:`napari_biogans.sampling.sample`; the CLI's ``biogans sample`` runs the
same code. Sampling is :func:`napari_biogans.cell_session.sample_job`, started with
``workers.start_job``; layers are added or updated when it returns, on the GUI thread, named ``<name> <channel>`` so that clicking again replaces their
data instead of piling up layers.
"""

from __future__ import annotations

import random

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QCheckBox, QFormLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from ..cell_session import sample_job
from . import _common, forms, model_picker
from .export_model import ExportModelButton
from .workers import start_job

MAX_SEED = 2**31 - 1


def tile(images: np.ndarray, ncols: int, pad: int = 2) -> np.ndarray:
    """``(n, H, W)`` -> one 2-D grid, row-major, ``ncols`` wide, ``pad`` black pixels between tiles."""
    n, h, w = images.shape
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    out = np.zeros((nrows * (h + pad) - pad, ncols * (w + pad) - pad), dtype=images.dtype)
    for k, cell in enumerate(images):
        r, c = divmod(k, ncols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = cell
    return out


class GenerateWidget(QWidget):
    """Sample cells from a trained generator into napari layers.

    Layers are ``<name> Bgs4`` (red) and ``<name> <protein>`` (one additive layer per protein),
    stacked over an axis labelled ``cell`` (or tiled into a 2-D montage), with provenance in
    ``metadata['provenance']`` and the latent codes in ``metadata['codes']``.
    """

    generated = Signal(object)  # the Samples, after their layers are in the viewer

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.samples = None
        self._card: dict = {}

        self.model = model_picker.ModelPicker("generate/model")
        self.device = model_picker.DeviceCombo("device")
        self.simulated_label = QLabel("⚠ trained on simulated cells")
        self.simulated_label.setToolTip(
            "This model learned from the project's simulated fission-yeast cells, not from real LIN images"
        )
        self.simulated_label.setStyleSheet("color: #e3b617; font-weight: bold;")
        self.simulated_label.setVisible(False)
        self.model_info = forms.text_label("What the chosen model file says about itself")

        self.n_cells = forms.setting_spin(1, 4096, "generate/n", 16, "How many cells to sample")

        self.proteins = QListWidget()
        self.proteins.setToolTip("Green proteins to render on each red cell (one layer each)")
        all_button = forms.button("All", "Tick every protein", lambda: self._check_all(True))
        none_button = forms.button("None", "Untick every protein (only the red cell is rendered)",
                                   lambda: self._check_all(False))

        self.seed = forms.setting_spin(0, MAX_SEED, "generate/seed", 0, "Seed of the latent codes: the same seed "
                                       "gives the same cells, pixel for pixel")
        new_seed = forms.button("New seed", "Draw a new random seed and generate", self.new_seed)
        self.red_seed = forms.spin(-1, MAX_SEED, -1, "Seed of the red (Bgs4) part of the codes alone; '= seed' ties "
                                   "it to the seed. Keep it and change the seed to see new proteins on the same red "
                                   "cells.")
        self.red_seed.setSpecialValueText("= seed")
        self.red_seed.setMinimumWidth(self.red_seed.fontMetrics().horizontalAdvance("= seed 0000") + 50)
        same_red = forms.button("Same red, new greens", "Keep the red cells (fix the red seed) and draw a new seed "
                                "for the green proteins", self.same_red_new_greens)

        self.longer = forms.double_spin(
            -3.0, 3.0, 0.0, "Latent arithmetic: move every code by this many 'long minus short' vectors (the mean "
            "code of the longest generated cells minus that of the shortest); positive grows the cells, negative "
            "shrinks them", decimals=1, step=0.5, suffix=" × (long − short)")
        self.montage = QCheckBox("montage")
        self.montage.setToolTip("Tile the cells into one 2-D grid per channel instead of stacking them over a cell axis")
        self.columns = forms.spin(1, 64, 4, "Cells per row of the montage")
        self.columns.setPrefix("columns: ")
        self.name = QLineEdit(_common.get_setting("generate/name", "generated"))
        self.name.setToolTip("Layer names start with this; generate again with the same name to replace them")

        self.run_button = forms.button("Generate cells", "Sample the cells in the background and show them as layers",
                                       self.run)
        self.status = forms.text_label("What the last run did")

        form = QFormLayout()
        form.addRow("model", self.model)
        form.addRow("", self.simulated_label)
        form.addRow("", self.model_info)
        form.addRow("device", self.device)
        form.addRow("cells", self.n_cells)
        form.addRow("proteins", self.proteins)
        form.addRow("", forms.row(all_button, none_button))
        form.addRow("seed", forms.row(self.seed, new_seed))
        form.addRow("red seed", forms.row(self.red_seed, same_red))
        form.addRow("cell length", self.longer)
        form.addRow("layout", forms.row(self.montage, self.columns))
        form.addRow("name", self.name)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        self.export_button = ExportModelButton(self.model.path, self.status, self.seed.value)
        layout.addWidget(self.export_button)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.model.changed.connect(self._model_changed)
        self._model_changed(self.model.path())

    # -- model ---------------------------------------------------------------------------------
    def _model_changed(self, path) -> None:
        self.proteins.clear()
        self._card = {}
        self.simulated_label.setVisible(False)
        if path is None:
            self.model_info.setText("No model yet: train one in the Train widget, or Browse… for a file.")
            self.run_button.setEnabled(False)
            return
        try:
            card = model_picker.read_card(path)
        except ValueError as err:
            self.model_info.setText(str(err))
            self.run_button.setEnabled(False)
            return
        self._card = card
        self.run_button.setEnabled(True)
        checked = set(_common.get_list_setting(f"generate/proteins/{model_picker.model_name(path)}"))
        for name in card.get("class_names", []):
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if (not checked or name in checked) else Qt.CheckState.Unchecked)
            item.setToolTip(f"Render {name} on the red cells")
            self.proteins.addItem(item)
        rows = min(max(self.proteins.count(), 1), 8)
        self.proteins.setFixedHeight(rows * max(self.proteins.sizeHintForRow(0), 14) + 2 * self.proteins.frameWidth() + 4)
        simulated = bool(card.get("simulated_training_data") or (card.get("data") or {}).get("simulated"))
        self.simulated_label.setVisible(simulated)
        config = card.get("config", {})
        bits = [str(config.get("arch", "?"))]
        if card.get("iterations") is not None:
            bits.append(f"{card['iterations']} iterations")
        if card.get("image_size"):
            bits.append("{}×{} px".format(*card["image_size"]))
        self.model_info.setText(", ".join(bits))

    def _check_all(self, state: bool) -> None:
        for i in range(self.proteins.count()):
            self.proteins.item(i).setCheckState(Qt.CheckState.Checked if state else Qt.CheckState.Unchecked)

    def checked_proteins(self) -> list[str]:
        return [self.proteins.item(i).text() for i in range(self.proteins.count())
                if self.proteins.item(i).checkState() == Qt.CheckState.Checked]

    # -- seeds ---------------------------------------------------------------------------------
    def new_seed(self) -> None:
        """A new random seed (red and green), then generate."""
        self.red_seed.setValue(-1)
        self.seed.setValue(random.randint(0, MAX_SEED))
        self.run()

    def same_red_new_greens(self) -> None:
        """Fix the red seed to the cells on screen, draw a new seed for the greens, then generate."""
        if self.red_seed.value() < 0:
            self.red_seed.setValue(self.seed.value())
        self.seed.setValue(random.randint(0, MAX_SEED))
        self.run()

    # -- run -----------------------------------------------------------------------------------
    def run(self):
        """Start sampling in a worker; returns the worker (None when nothing could start)."""
        if self.worker is not None and self.worker.is_running:
            self.status.setText("still generating…")
            return None
        path = self.model.path()
        if path is None:
            _common.report_error("no model chosen", "train one in the Train widget or choose a file with Browse…")
            return None
        proteins = self.checked_proteins()
        red_seed = self.red_seed.value() if self.red_seed.value() >= 0 else None
        params = dict(n=self.n_cells.value(), seed=self.seed.value(), red_seed=red_seed,
                      proteins=proteins, montage=self.montage.isChecked(), columns=self.columns.value(),
                      name=self.name.text().strip() or "generated")
        _common.set_setting("generate/n", params["n"])
        _common.set_setting("generate/seed", params["seed"])
        _common.set_setting("generate/name", params["name"])
        _common.set_list_setting(f"generate/proteins/{model_picker.model_name(path)}", proteins)
        self.run_button.setEnabled(False)
        self.status.setText("starting…")
        self.worker = start_job(
            sample_job, model_picker.load_generator_cached, path, self.device.device(), params["n"], params["seed"],
            red_seed, proteins, self.longer.value(), what="Generate cells",
            on_update=lambda update: self.status.setText(f"{update.stage}…"),
            on_done=lambda result: self._show(result, params), on_error=self._failed,
            on_finished=lambda: self.run_button.setEnabled(self.model.path() is not None))
        return self.worker

    def _failed(self, err) -> None:
        self.status.setText(f"failed: {err}")
        what = "check the model file, or try the cpu device"
        if isinstance(err, FileNotFoundError):
            what = "the model file is gone; choose another model"
        _common.report_error(err, what)

    def _show(self, result, params) -> None:
        from .._io import sample_layers

        samples, meta, torch_device, seconds = result
        provenance = {**samples.provenance, "model_path": meta.get("path"), "device": str(torch_device),
                      "montage": params["montage"]}
        metadata = {"provenance": provenance, "codes": samples.z, "class_names": list(meta.get("class_names", []))}
        name = params["name"]
        layer_data = sample_layers(samples.images, samples.channel_names, name, metadata)
        if params["montage"]:
            name = f"{name} montage"
            layer_data = [
                (tile(data, params["columns"]),
                 {**kwargs, "name": f"{name} {kwargs['metadata']['channel']}", "axis_labels": ("y", "x"),
                  "metadata": {**kwargs["metadata"], "montage_columns": params["columns"]}},
                 kind)
                for data, kwargs, kind in layer_data
            ]
        before = len(self.viewer.layers)
        _common.add_or_update_layers(self.viewer, layer_data, group=name)
        if len(self.viewer.layers) != before:
            self.viewer.reset_view()
        self.samples = samples
        flag = "  [model trained on SIMULATED cells]" if provenance.get("simulated_training_data") else ""
        self.status.setText(
            f"{len(samples.images)} cells × {len(provenance['proteins'])} proteins in {seconds * 1000:.0f} ms "
            f"on {torch_device}; seed {provenance['seed']}"
            + (f", red seed {provenance['red_seed']}" if provenance.get("red_seed") is not None else "")
            + ("; each protein on its own red cell (this model does not share one)"
               if len(samples.channel_names) > len(provenance["proteins"]) + 1 else "") + flag
        )
        self.generated.emit(samples)

