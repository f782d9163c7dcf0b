"""The form pieces the dock widgets share (_widgets/forms.py), over a display-less ViewerModel."""

import numpy as np
import pytest
from napari.components import ViewerModel
from qtpy.QtWidgets import QWidget

from napari_biogans._widgets import _common, forms


@pytest.fixture
def viewer():
    viewer = ViewerModel()
    cells = np.zeros((2, 4, 6), np.uint8)
    for name in ("A Tea1", "X Bgs4", "X Alp14", "preview"):
        viewer.add_image(cells, name=name)
    return viewer


def test_layer_pair_chooses_a_red_and_a_green_of_the_same_set(qtbot, viewer):
    owner = QWidget()
    qtbot.addWidget(owner)
    pair = forms.CellLayerPair(viewer, owner, "red", "green", skip_layer="preview")
    assert [pair.red.itemText(i) for i in range(pair.red.count())] == ["A Tea1", "X Bgs4", "X Alp14"]
    assert (pair.red.currentText(), pair.green.currentText()) == ("X Bgs4", "X Alp14")
    pair.green.setCurrentText("A Tea1")
    viewer.layers.remove("X Alp14")  # a choice still there is kept
    assert (pair.red.currentText(), pair.green.currentText()) == ("X Bgs4", "A Tea1")
    stack = pair.stack()
    assert stack.images.shape == (2, 2, 4, 6) and stack.class_names == ["A Tea1"]
    pair.green.setCurrentText("X Bgs4")
    with pytest.raises(ValueError, match="must be different layers"):
        pair.stack()


def test_layer_pair_does_not_choose_results_but_offers_them(qtbot, viewer):
    viewer.layers["X Bgs4"].metadata["biogans_group"] = "results"
    owner = QWidget()
    qtbot.addWidget(owner)
    pair = forms.CellLayerPair(viewer, owner, "red", "green", results_group="results")
    assert pair.red.currentText() == "A Tea1"
    assert "X Bgs4" in [pair.red.itemText(i) for i in range(pair.red.count())]


def test_layer_pair_stops_following_the_viewer_with_its_owner(qtbot, viewer):
    owner = QWidget()
    pair = forms.CellLayerPair(viewer, owner, "red", "green")
    callbacks = len(viewer.layers.events.inserted.callbacks)
    owner.deleteLater()
    qtbot.waitUntil(lambda: len(viewer.layers.events.inserted.callbacks) < callbacks)
    viewer.add_image(np.zeros((2, 4, 6), np.uint8), name="late Bgs4")  # no RuntimeError from a dead combo
    assert pair is not None


def test_refill_keeps_quiet_and_spins_remember(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv(_common.SETTINGS_ENV, str(tmp_path / "settings.ini"))
    box = forms.combo(["a", "b"], "tip", current="b")
    changes = []
    box.currentTextChanged.connect(changes.append)
    forms.refill(box, ["c", "d", "e"], "e")
    assert (box.currentText(), box.count(), changes) == ("e", 3, [])
    spin = forms.setting_spin(0, 100, "test/n", 7, "tip")
    assert spin.value() == 7
    spin.setValue(42)
    forms.remember(spin)
    assert forms.setting_spin(0, 100, "test/n", 7, "tip").value() == 42
