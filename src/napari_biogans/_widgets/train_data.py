"""The Train widget's data panel: where the cells (or EM sections) come from, as a data spec for
:func:`napari_biogans.training.session.train_job`."""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFormLayout, QLineEdit, QStackedWidget, QVBoxLayout, QWidget

from ..training.session import parse_sections
from . import _common, forms

SOURCES = ["simulate cells", "file or folder", "layers", "VNC EM sections"]
EM_SOURCE = SOURCES[3]


class TrainDataPanel(QWidget):
    """A source drop-down over one page of controls per source. ``changed`` fires when the source
    changes; ``skip_layer`` names a layer never offered as cells (the training preview)."""

    changed = Signal()

    def __init__(self, viewer, skip_layer: str = "", parent=None):
        super().__init__(parent)
        self.source = forms.combo(SOURCES, "Cells to learn from: simulated fission yeast, a LIN folder / .h5 / .tif "
                                  "stack, or a red and a green image layer already in the viewer",
                                  _common.get_setting("train/source", SOURCES[0]))
        self.sim_n = forms.setting_spin(1, 100_000, "train/sim_n", 100, "Simulated cells per protein")
        self.sim_proteins = QLineEdit(_common.get_setting("train/sim_proteins", ""))
        self.sim_proteins.setPlaceholderText("all eight proteins")
        self.sim_proteins.setToolTip("Comma-separated proteins to simulate (Alp14, Arp3, Cki2, Fim1, Mkh1, Sid2, "
                                     "Tea1, Tea4); empty = all eight")
        self.sim_seed = forms.spin(0, 2**31 - 1, 0, "Seed of the simulated cells (the same seed gives the same "
                                   "cells, so Resume works)")
        self.data_path = _common.PathEdit(
            "train/data", "A LIN split folder (one sub-folder per protein), an .h5 or a .tif cell stack",
            file_filter=forms.CELL_FILTER, folder=True)
        self.pair = forms.CellLayerPair(
            viewer, self, "Image layer of red Bgs4 cells, (cells, H, W)", "Image layer of the green protein, same "
            "shape as the red one; class names come from the red layer's metadata when it has them",
            skip_layer=skip_layer)
        self.red_layer, self.green_layer = self.pair.red, self.pair.green
        self.vnc_path = _common.PathEdit(
            "train/vnc", "A VNC stack folder: raw/NN.tif sections with membranes/ and mitochondria/ label masks",
            folder=True)
        self.vnc_sections = QLineEdit(_common.get_setting("train/vnc_sections", "0-9"))
        self.vnc_sections.setToolTip("Sections to train on, e.g. 0-9 (the papers' training sections; 10-19 are "
                                     "kept for validation)")
        self.em_crop = forms.spin(64, 4096, _common.get_int_setting("train/em_crop", 256),
                                  "Side of the random crops the EM models train on (a multiple of 64; the paper's "
                                  "is 512)")
        self.em_crop.setSingleStep(64)

        self.pages = QStackedWidget()
        for rows in ((("cells per protein", self.sim_n), ("proteins", self.sim_proteins), ("seed", self.sim_seed)),
                     (("cells", self.data_path),),
                     (("red layer", self.red_layer), ("green layer", self.green_layer)),
                     (("VNC folder", self.vnc_path), ("sections", self.vnc_sections), ("crop", self.em_crop))):
            page = QWidget()
            form = QFormLayout(page)
            form.setContentsMargins(0, 0, 0, 0)
            for label, field in rows:
                form.addRow(label, field)
            self.pages.addWidget(page)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.pages)

        self.source.currentIndexChanged.connect(self._source_changed)
        self.pages.setCurrentIndex(self.source.currentIndex())

    @property
    def em(self) -> bool:
        """True when the chosen data are EM sections (and the models EM models)."""
        return self.source.currentText() == EM_SOURCE

    def _source_changed(self, *_):
        self.pages.setCurrentIndex(self.source.currentIndex())
        _common.set_setting("train/source", self.source.currentText())
        self.changed.emit()

    def data_spec(self):
        """What :func:`~napari_biogans.training.session.train_job` loads (a ValueError says what is wrong)."""
        source = self.source.currentText()
        if source == "simulate cells":
            proteins = [p.strip() for p in self.sim_proteins.text().replace(";", ",").split(",") if p.strip()]
            forms.remember(self.sim_n)
            _common.set_setting("train/sim_proteins", self.sim_proteins.text())
            return ("simulate", self.sim_n.value(), proteins, self.sim_seed.value())
        if source == "file or folder":
            return ("path", self.data_path.text())
        if source == EM_SOURCE:
            _common.set_setting("train/vnc_sections", self.vnc_sections.text())
            return ("vnc", self.vnc_path.text(), parse_sections(self.vnc_sections.text()))
        return ("stack", self.pair.stack())
