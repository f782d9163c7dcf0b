"""Prepare cells dock widget in a real viewer (Xvfb): layers in, outlines and cell stacks out."""

import numpy as np
import pytest

from napari_biogans._widgets import _common
from napari_biogans._widgets.prepare_cells import GROUP, MODES, PrepareCellsWidget
from napari_biogans.data import lin, simulator

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv(_common.SETTINGS_ENV, str(tmp_path / "settings.ini"))


@pytest.fixture(scope="module")
def sim():
    return simulator.simulate_field(seed=0, shape=(512, 512), n_cells=12)


def _run(widget, qtbot):
    widget.run_button.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)


def test_two_layers_to_outlines_and_cell_stacks(make_napari_viewer, qtbot, sim, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(sim.image[0], name="Bgs4 field", scale=(0.1, 0.1))
    viewer.add_image(sim.image[1], name="Tea1 field", scale=(0.1, 0.1))
    widget = PrepareCellsWidget(viewer)
    assert widget.pixel_size.value() == pytest.approx(0.1)  # from the layer's scale
    assert widget.green_layer.currentText() == "Tea1 field"
    widget.protein.setText("Tea1")
    _run(widget, qtbot)

    result = widget.result
    assert result is not None, widget.counts.text()
    accepted, rejected = viewer.layers["accepted cells"], viewer.layers["rejected cells"]
    assert set(np.unique(accepted.data)) - {0} == {r.label for r in result.accepted}
    assert "touches the border" in list(rejected.features["reason"])
    assert tuple(accepted.scale) == (0.1, 0.1)
    red, green = viewer.layers["prepared Tea1 Bgs4"], viewer.layers["prepared Tea1 protein"]
    stack = _common.stack_from_layers(red, green)  # what Train, Diagnostics and Cell cycle call
    assert len(stack) == len(result.accepted) >= 3 and stack.class_names == ["Tea1"]
    assert stack.image_size == (48, 80) and not stack.simulated
    assert red.metadata["prepared_from_fields"] and len(red.metadata["provenance"]) == len(stack)
    assert red.metadata["biogans_group"] == GROUP
    assert f"{len(result.records)} cells: {len(result.accepted)} accepted" in widget.counts.text()

    written = widget.save_to(tmp_path / "out")
    assert len(lin.read_h5(written["h5"])) == len(stack)
    assert widget.save_to(tmp_path / "out") == {}  # not empty any more: refused, nothing written

    # a second run replaces the results instead of piling them up
    _run(widget, qtbot)
    assert [l.name for l in viewer.layers].count("accepted cells") == 1


def test_one_multichannel_layer_with_given_labels(make_napari_viewer, qtbot, sim):
    viewer = make_napari_viewer()
    viewer.add_image(sim.image, name="field", scale=(1, 0.1, 0.1), axis_labels=("c", "y", "x"))
    viewer.add_labels(sim.labels, name="cellpose masks", scale=(0.1, 0.1))
    widget = PrepareCellsWidget(viewer)
    widget.mode.setCurrentText(MODES[1])
    widget.labels_layer.setCurrentText("cellpose masks")
    _run(widget, qtbot)
    inner = int((~sim.truth["touches_border"]).sum())
    assert len(widget.result.accepted) == inner
    assert viewer.layers[-1].name == "prepared field protein"  # no protein typed: the layer's name


def test_bad_input_is_reported_not_raised(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    shown = []
    monkeypatch.setattr(_common, "report_error", lambda err, *a: shown.append(str(err)))
    widget = PrepareCellsWidget(viewer)
    widget.run_button.click()
    assert shown and "open a field of view" in shown[0]
    viewer.add_image(np.zeros((2, 40, 40)), name="two")
    widget.mode.setCurrentText(MODES[1])
    widget.green_channel.setValue(5)
    widget.run_button.click()
    assert "no green channel 5" in shown[-1] and widget.worker is None


def test_cancel_stops_before_any_result(make_napari_viewer, qtbot, sim):
    viewer = make_napari_viewer()
    viewer.add_image(sim.image[0], name="red", scale=(0.1, 0.1))
    viewer.add_image(sim.image[1], name="green", scale=(0.1, 0.1))
    widget = PrepareCellsWidget(viewer)
    widget.run_button.click()
    assert widget.cancel_button.isEnabled() and not widget.run_button.isEnabled()
    widget.cancel_button.click()  # seen by the job at its next step, long before the crops
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.result is None and "accepted cells" not in viewer.layers and widget.counts.text() == "cancelled"
    assert widget.run_button.isEnabled() and not widget.save_button.isEnabled()
