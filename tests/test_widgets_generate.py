"""Generate cells dock widget in a real viewer (Xvfb): layers, provenance, seeds, montage, cache."""

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QListWidget

from napari_biogans import checkpoints
from napari_biogans._widgets import _common, model_picker
from napari_biogans._widgets.generate import GenerateWidget
from napari_biogans.models import loader

pytestmark = pytest.mark.gui
PROTEINS = ["Alp14", "Sid2", "Tea1"]


def save_tiny_model(path, simulated=True, arch="star", seed=0):
    """An untrained width-4 generator: enough for layer logic and reproducibility."""
    import torch

    from napari_biogans.models import make_models

    torch.manual_seed(seed)
    G, _ = make_models(arch, n_classes=len(PROTEINS), width=4, nz=16, critic_bn=False)
    meta = {"class_names": PROTEINS, "name": path.stem, "image_size": [48, 80],
            "simulated_training_data": simulated, "iterations": 0}
    return checkpoints.save_generator(path, G, meta)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    save_tiny_model(folder / "tiny-star.safetensors", simulated=True)
    save_tiny_model(folder / "tiny-real.safetensors", simulated=False, seed=1)
    return folder


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch, model_dir):
    monkeypatch.setenv(_common.SETTINGS_ENV, str(tmp_path / "settings.ini"))
    monkeypatch.setenv(checkpoints.MODELS_ENV, str(model_dir))
    model_picker.clear_cache()


def assert_tooltips(widget):
    controls = widget.findChildren((QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QListWidget))
    missing = [c for c in controls if not c.toolTip() and not (c.parentWidget() and c.parentWidget().toolTip())]
    assert not missing, [type(c).__name__ + ":" + getattr(c, "text", lambda: "")() for c in missing]


def make_widget(make_napari_viewer, model="tiny-star", n=5, seed=3):
    viewer = make_napari_viewer(show=True)
    widget = GenerateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Generate cells")
    assert len(viewer.layers) == 0  # nothing added before the button is pressed
    widget.model.set_path(checkpoints.catalogue()[model])
    widget.device.combo.setCurrentText("cpu")
    widget.n_cells.setValue(n)
    widget.seed.setValue(seed)
    return viewer, widget


def generate(qtbot, widget, action=None):
    qtbot.waitUntil(widget.run_button.isEnabled, timeout=10_000)  # the last run has finished
    with qtbot.waitSignal(widget.generated, timeout=30_000):
        (action or widget.run_button.click)()
    return widget.samples


def test_generate_adds_named_layers_with_provenance(make_napari_viewer, qtbot, model_dir):
    viewer, widget = make_widget(make_napari_viewer)
    assert_tooltips(widget)
    assert widget.checked_proteins() == PROTEINS
    assert widget.simulated_label.isVisibleTo(widget)  # the model card says simulated
    generate(qtbot, widget)
    names = [layer.name for layer in viewer.layers]
    assert names == ["generated Bgs4"] + [f"generated {p}" for p in PROTEINS]
    red = viewer.layers["generated Bgs4"]
    assert red.data.shape == (5, 48, 80) and red.data.dtype == np.uint8
    assert red.colormap.name == "red" and red.blending == "additive"
    assert len({layer.colormap.name for layer in viewer.layers}) == 4  # a colormap each
    assert viewer.dims.axis_labels[0] == "cell"
    provenance = red.metadata["provenance"]
    path = model_dir / "tiny-star.safetensors"
    assert provenance["model"] == "tiny-star"
    assert provenance["weights_sha256"] == checkpoints.file_sha256(path)
    assert provenance["seed"] == 3 and provenance["red_seed"] is None
    assert provenance["simulated_training_data"] is True
    assert red.metadata["codes"].shape == (5, 16)

    # the same pixels as the core (and the CLI) give for that seed
    from napari_biogans.sampling import sample

    G, meta = checkpoints.load_generator(path)
    expected = sample(G, meta, n=5, seed=3)
    for k, layer in enumerate(viewer.layers):
        np.testing.assert_array_equal(layer.data, expected.images[:, k])

    # clicking again with the same seed: same layers, same pixels, nothing piled up
    layer_ids = [id(layer) for layer in viewer.layers]
    before = [layer.data.copy() for layer in viewer.layers]
    generate(qtbot, widget)
    assert [id(layer) for layer in viewer.layers] == layer_ids
    for layer, old in zip(viewer.layers, before):
        np.testing.assert_array_equal(layer.data, old)

    # fewer proteins: the stale layer of this set goes
    widget.proteins.item(1).setCheckState(Qt.CheckState.Unchecked)  # Sid2 off
    widget.n_cells.setValue(7)
    generate(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["generated Bgs4", "generated Alp14", "generated Tea1"]
    assert viewer.layers["generated Tea1"].data.shape == (7, 48, 80)


def test_new_seed_and_same_red_new_greens(make_napari_viewer, qtbot):
    viewer, widget = make_widget(make_napari_viewer, seed=11)
    generate(qtbot, widget)
    red, greens = viewer.layers[0].data.copy(), [layer.data.copy() for layer in viewer.layers[1:]]
    generate(qtbot, widget, widget.same_red_new_greens)
    provenance = viewer.layers[0].metadata["provenance"]
    assert provenance["red_seed"] == 11 and provenance["seed"] != 11
    assert widget.red_seed.value() == 11 and widget.seed.value() == provenance["seed"]
    np.testing.assert_array_equal(viewer.layers[0].data, red)  # same red cells
    assert all(not np.array_equal(layer.data, old) for layer, old in zip(viewer.layers[1:], greens))
    generate(qtbot, widget, widget.new_seed)
    assert viewer.layers[0].metadata["provenance"]["red_seed"] is None
    assert not np.array_equal(viewer.layers[0].data, red)


def test_montage_is_one_2d_grid_per_channel(make_napari_viewer, qtbot):
    viewer, widget = make_widget(make_napari_viewer, n=5)
    widget.montage.setChecked(True)
    widget.columns.setValue(2)
    samples = generate(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["generated montage Bgs4"] + [
        f"generated montage {p}" for p in PROTEINS]
    grid = viewer.layers["generated montage Sid2"].data
    assert grid.shape == (3 * 48 + 2 * 2, 2 * 80 + 2)
    np.testing.assert_array_equal(grid[50:98, 82:162], samples.images[3, 2])  # row 1, column 1 = cell 3
    assert viewer.layers[0].metadata["codes"].shape == (5, 16)


def test_generator_is_cached_and_simulated_label_follows_the_model(make_napari_viewer, qtbot):
    viewer, widget = make_widget(make_napari_viewer)
    loads = loader.load_count
    generate(qtbot, widget)
    generate(qtbot, widget)
    assert loader.load_count == loads + 1  # loaded once for both clicks
    widget.model.set_path(checkpoints.catalogue()["tiny-real"])
    assert not widget.simulated_label.isVisibleTo(widget)
    generate(qtbot, widget)
    assert loader.load_count == loads + 2  # a new model is loaded
    assert viewer.layers[0].metadata["provenance"]["model"] == "tiny-real"


def test_settings_remember_model_and_device(make_napari_viewer, qtbot):
    viewer, widget = make_widget(make_napari_viewer, model="tiny-real")
    widget.model._remember()
    again = GenerateWidget(viewer)
    assert again.model.path().name == "tiny-real.safetensors"
    assert again.device.device() == "cpu" and "cpu" in again.device.label.text()


def test_manifest_opens_the_widgets(make_napari_viewer):
    viewer = make_napari_viewer()
    for name in ("Generate cells", "Cell cycle", "Train", "Paint EM", "Diagnostics"):
        dock, widget = viewer.window.add_plugin_dock_widget("napari-biogans", name)
        assert widget is not None
    assert len(viewer.layers) == 0


def test_bad_model_files_give_messages_not_tracebacks(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer, widget = make_widget(make_napari_viewer)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a model")
    widget.model.set_path(broken)  # refused at selection (tests/test_widgets_bad_models.py: every kind of damage)
    assert "not a napari-biogans model" in shown.pop() and widget.model.path().stem == "tiny-star"

    def fail(*args):
        raise checkpoints.CheckpointError("weights do not fit this architecture")

    widget.model.set_path(checkpoints.catalogue()["tiny-star"])
    monkeypatch.setattr(model_picker, "load_generator_cached", fail)
    widget.run()
    qtbot.waitUntil(lambda: bool(shown) and widget.run_button.isEnabled(), timeout=10_000)
    assert "weights do not fit" in shown[0] and " — " in shown[0]  # what happened, then what to do
    assert len(viewer.layers) == 0 and widget.run_button.isEnabled()


def test_model_lists_hold_only_their_kind(make_napari_viewer, qtbot, model_dir, tmp_path, monkeypatch):
    import torch

    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    em_file = checkpoints.save(model_dir / "tiny-em.safetensors", {"w": torch.zeros(1)}, {"kind": "em-generator"})
    try:
        viewer, widget = make_widget(make_napari_viewer)
        names = [widget.model.combo.itemText(i) for i in range(widget.model.combo.count())]
        assert "tiny-star" in names and "tiny-em" not in names
        widget.model.set_path(em_file)
        assert widget.model.path().stem == "tiny-star" and "Paint EM" in shown[-1]
    finally:
        em_file.unlink()


def test_cell_length_control_moves_every_code_by_one_vector(make_napari_viewer, qtbot):
    viewer, widget = make_widget(make_napari_viewer, n=4)
    plain = generate(qtbot, widget)
    widget.longer.setValue(2.0)
    longer = generate(qtbot, widget)
    step = longer.z - plain.z
    assert np.abs(step).max() > 0 and np.allclose(step, step[0])  # the same vector added to every code
    assert longer.provenance["attribute"] == {"name": "long minus short", "strength": 2.0}
    assert viewer.layers["generated Bgs4"].metadata["provenance"]["attribute"]["strength"] == 2.0
    widget.longer.setValue(0.0)
    again = generate(qtbot, widget)
    np.testing.assert_array_equal(again.z, plain.z)
    assert "attribute" not in again.provenance


def test_one_class_models_show_each_protein_on_its_own_red_cell(make_napari_viewer, qtbot, model_dir):
    save_tiny_model(model_dir / "tiny-oneclass.safetensors", arch="one-class-sep")
    viewer, widget = make_widget(make_napari_viewer, model="tiny-oneclass", n=3)
    samples = generate(qtbot, widget)
    assert samples.channel_names == ["Bgs4 (Alp14)", "Alp14", "Bgs4 (Sid2)", "Sid2", "Bgs4 (Tea1)", "Tea1"]
    reds = samples.images[:, 0::2]
    assert not np.array_equal(reds[:, 0], reds[:, 1])  # separate generators draw separate cells
    name = widget.name.text()
    assert viewer.layers[f"{name} Bgs4 (Sid2)"].colormap.name == "red"
    assert viewer.layers[f"{name} Sid2"].colormap.name != "red"
    assert [layer.visible for layer in viewer.layers][:3] == [True, True, False]
    assert "own red cell" in widget.status.text() and "3 proteins" in widget.status.text()
