"""Cell cycle dock widget in a real viewer (Xvfb): anchors, time axis, endpoints, measurement, export."""

import numpy as np
import pytest

from napari_biogans import checkpoints
from napari_biogans._widgets import _common, model_picker
from napari_biogans._widgets.cell_cycle import CYCLE, RANDOM, CellCycleWidget, parse_indices
from napari_biogans.cell_session import composite
from napari_biogans._widgets.generate import GenerateWidget

pytestmark = pytest.mark.gui
PROTEINS = ["Arp3", "Tea1"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    import torch

    from napari_biogans.models import make_models

    torch.manual_seed(0)
    G, _ = make_models("star", n_classes=len(PROTEINS), width=4, nz=16, critic_bn=False)
    path = tmp_path_factory.mktemp("models") / "tiny-cycle.safetensors"
    checkpoints.save_generator(path, G, {"class_names": PROTEINS, "name": "tiny-cycle", "image_size": [48, 80]})
    return path


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch, model_path):
    monkeypatch.setenv(_common.SETTINGS_ENV, str(tmp_path / "settings.ini"))
    monkeypatch.setenv(checkpoints.MODELS_ENV, str(model_path.parent))
    model_picker.clear_cache()


@pytest.fixture
def generated(make_napari_viewer, qtbot, model_path):
    """A viewer with 6 generated cells (seed 4) and a Cell cycle widget docked beside Generate."""
    viewer = make_napari_viewer(show=True)
    gen = GenerateWidget(viewer)
    gen.model.set_path(model_path)
    gen.device.combo.setCurrentText("cpu")
    gen.n_cells.setValue(6)
    gen.seed.setValue(4)
    with qtbot.waitSignal(gen.generated, timeout=30_000):
        gen.run()
    widget = CellCycleWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Cell cycle")
    widget.device.combo.setCurrentText("cpu")
    return viewer, gen, widget


def interpolate(qtbot, widget):
    with qtbot.waitSignal(widget.finished, timeout=30_000):
        widget.run_button.click()
    qtbot.waitUntil(lambda: widget.run_button.isEnabled(), timeout=10_000)


def test_no_layers_at_start_and_tooltips(make_napari_viewer):
    from test_widgets_generate import assert_tooltips

    viewer = make_napari_viewer()
    widget = CellCycleWidget(viewer)
    assert len(viewer.layers) == 0
    assert widget.source.currentText() == CYCLE  # nothing generated yet: one cell cycle from random codes
    assert widget.n_anchors.isHidden()  # a cycle picks its own three anchors
    assert_tooltips(widget)
    assert parse_indices("3, 7 9") == [3, 7, 9]
    with pytest.raises(ValueError, match="at least two"):
        parse_indices("4")
    # the plot follows napari's theme
    viewer.theme = "dark"
    dark = widget.plot.colors["text"]
    viewer.theme = "light"
    assert widget.plot.colors["text"] != dark
    assert widget.plot.ax.xaxis.label.get_color() == widget.plot.colors["text"]


def test_endpoints_equal_the_anchor_cells(generated, qtbot):
    viewer, gen, widget = generated
    assert widget.source.currentText() == "generated"
    widget.anchors.setText("1, 4")
    widget.frames.setValue(9)
    widget.greens.setCurrentText("greens free")
    interpolate(qtbot, widget)
    names = ["cell cycle Bgs4", "cell cycle Arp3", "cell cycle Tea1"]
    assert [layer.name for layer in viewer.layers][-3:] == names
    cells = gen.samples.images  # (6, 3, 48, 80)
    for k, name in enumerate(names):
        frames = viewer.layers[name].data
        assert frames.shape == (9, 48, 80) and frames.dtype == np.uint8
        np.testing.assert_allclose(frames[0], cells[1, k], atol=1)
        np.testing.assert_allclose(frames[-1], cells[4, k], atol=1)
    assert viewer.layers["cell cycle Bgs4"].axis_labels[0] == "t"
    assert viewer.dims.current_step[0] == 0 and viewer.dims.nsteps[0] >= 9
    provenance = viewer.layers["cell cycle Tea1"].metadata["provenance"]
    assert provenance["model"] == "tiny-cycle" and provenance["cells"] == [1, 4]
    assert provenance["weights_sha256"] == checkpoints.file_sha256(gen.model.path())
    assert widget.lengths.shape == (9,) and "ρ" in widget.result.text()


def test_red_only_keeps_the_green_code_and_reaches_the_last_red(generated, qtbot):
    viewer, gen, widget = generated
    widget.anchors.setText("0, 5")
    widget.frames.setValue(5)
    widget.method.setCurrentText("linear")
    widget.greens.setCurrentText("greens fixed (red only)")
    interpolate(qtbot, widget)
    red = viewer.layers["cell cycle Bgs4"].data
    np.testing.assert_allclose(red[-1], gen.samples.images[5, 0], atol=1)  # the red cell depends on z_red only
    codes = viewer.layers["cell cycle Bgs4"].metadata["codes"]
    anchors = viewer.layers[0].metadata["codes"]
    nz_red = model_picker.load_generator_cached(gen.model.path(), "cpu")[0].nz_red
    np.testing.assert_allclose(codes[:, nz_red:], np.repeat(anchors[:1, nz_red:], 5, axis=0), atol=1e-6)


def test_random_codes_rerun_replaces_and_exports(generated, qtbot, tmp_path):
    import imageio.v3 as iio
    import tifffile

    viewer, gen, widget = generated
    widget.source.setCurrentText(RANDOM)
    widget.model.set_path(gen.model.path())
    widget.n_anchors.setValue(3)
    widget.frames.setValue(5)
    interpolate(qtbot, widget)
    n_layers = len(viewer.layers)
    layer = viewer.layers["cell cycle Bgs4"]
    widget.frames.setValue(7)
    interpolate(qtbot, widget)
    assert len(viewer.layers) == n_layers and viewer.layers["cell cycle Bgs4"] is layer
    assert layer.data.shape == (7, 48, 80)
    assert layer.metadata["provenance"]["source"] == "random codes"

    for name, kind in (("cc.tif", "tiff"), ("cc.gif", "gif")):
        widget.export(tmp_path / name)
        # the GUI-thread callback reports the file once written (a fast worker may finish
        # before a signal spy could connect, so wait on the outcome instead)
        qtbot.waitUntil(lambda: widget.result.text() == f"saved {tmp_path / name}", timeout=20_000)
        assert (tmp_path / name).is_file()
    rgb = tifffile.imread(tmp_path / "cc.tif")
    assert rgb.shape == (7, 48, 80, 3) and rgb.dtype == np.uint8
    visible = [lay for lay in widget.layers if lay.visible]
    expected = composite([lay.data for lay in visible], [lay.colormap for lay in visible],
                         [lay.contrast_limits for lay in visible])
    np.testing.assert_array_equal(rgb, expected)
    gif = iio.imread(tmp_path / "cc.gif")
    assert gif.shape[:3] == (7, 48 * 4, 80 * 4)
    assert not list(tmp_path.glob(".*partial*"))


def test_cancel_stops_the_interpolation(generated, qtbot):
    viewer, gen, widget = generated
    widget.frames.setValue(2000)
    worker = widget.run()
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        widget.cancel_button.click()
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


@pytest.mark.parametrize("arch", ["projection", "cgan"])
def test_conditional_models_generate_and_interpolate(make_napari_viewer, qtbot, tmp_path, arch):
    """The conditional models go through Generate and Cell cycle like the others: projection with one
    shared red cell, the cGAN with each protein's own red; the time axis starts and ends on the anchors."""
    import torch

    from napari_biogans.models import make_models

    torch.manual_seed(0)
    G, _ = make_models(arch, n_classes=len(PROTEINS), width=4, nz=16, critic_bn=False)
    path = checkpoints.save_generator(tmp_path / f"tiny-{arch}.safetensors", G,
                                      {"class_names": PROTEINS, "name": f"tiny-{arch}", "image_size": [48, 80]})
    viewer = make_napari_viewer(show=True)
    gen = GenerateWidget(viewer)
    gen.model.set_path(path)
    gen.device.combo.setCurrentText("cpu")
    gen.n_cells.setValue(4)
    with qtbot.waitSignal(gen.generated, timeout=30_000):
        gen.run()
    expected = {"projection": ["Bgs4", "Arp3", "Tea1"], "cgan": ["Bgs4 (Arp3)", "Arp3", "Bgs4 (Tea1)", "Tea1"]}[arch]
    assert gen.samples.channel_names == expected
    widget = CellCycleWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Cell cycle")
    widget.device.combo.setCurrentText("cpu")
    # the cGAN has no separate red code: 'greens fixed' is greyed out and 'greens free' chosen
    assert widget.greens.model().item(0).isEnabled() == (arch == "projection")
    assert widget.greens.currentText() == ("greens fixed (red only)" if arch == "projection" else "greens free")
    widget.anchors.setText("0, 3")
    widget.frames.setValue(5)
    interpolate(qtbot, widget)
    for k, name in enumerate(expected):
        frames = viewer.layers[f"cell cycle {name}"].data
        assert frames.shape == (5, 48, 80)
        np.testing.assert_allclose(frames[0], gen.samples.images[0, k], atol=1)
        np.testing.assert_allclose(frames[-1], gen.samples.images[3, k], atol=1)


def test_a_cell_cycle_runs_through_three_picked_anchors(generated, qtbot, monkeypatch):
    viewer, gen, widget = generated
    widget.source.setCurrentText(CYCLE)
    widget.model.set_path(gen.model.path())
    widget.frames.setValue(7)
    widget.greens.setCurrentText("greens free")
    interpolate(qtbot, widget)
    layer = viewer.layers["cell cycle Bgs4"]
    provenance = layer.metadata["provenance"]
    assert provenance["source"] == "cell cycle: short, grown, long"
    anchors = np.asarray(provenance["anchors"])
    codes = layer.metadata["codes"]
    assert anchors.shape[0] == 3 and codes.shape[0] == 7
    np.testing.assert_allclose(codes[[0, 3, 6]], anchors, atol=1e-5)  # frames 0, 3, 6 are the anchors

    # the same model and seed again (other frames): the anchors are not measured a second time
    from napari_biogans.evaluation import interpolation

    monkeypatch.setattr(interpolation, "cycle_anchors", lambda *a, **k: pytest.fail("anchors measured again"))
    widget.frames.setValue(5)
    interpolate(qtbot, widget)
    assert layer.data.shape[0] == 5
    np.testing.assert_allclose(np.asarray(layer.metadata["provenance"]["anchors"]), anchors)
