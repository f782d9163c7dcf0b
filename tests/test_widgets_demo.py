"""``biogans view``'s widgets: Generate cells and Paint EM open on catalogue models, already at work."""

import shutil

import pytest

from napari_biogans import checkpoints
from napari_biogans._widgets import _common, model_picker
from napari_biogans._widgets.demo import open_demo

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture
def models(tmp_path, monkeypatch):
    from test_widgets_generate import save_tiny_model
    from test_widgets_paint_em import FIXTURE

    from napari_biogans.data import em
    from napari_biogans.training.em_trainer import EMTrainConfig, EMTrainer

    folder = tmp_path / "models"
    folder.mkdir()
    save_tiny_model(folder / "star-6.safetensors")
    config = EMTrainConfig(mode="sgan", iterations=1, label_width=4, image_width=4, label_d_width=4, image_d_width=4,
                           crop=128, device="cpu", batch_size=1, pool_size=2, preview_every=100, checkpoint_every=100)
    trainer = EMTrainer(config, *em.read_sections(FIXTURE, [0]), tmp_path / "run", description="VNC fixture")
    list(trainer.run())
    shutil.copy(trainer.model_path, folder / "vnc-dsgan.safetensors")
    monkeypatch.setenv(_common.SETTINGS_ENV, str(tmp_path / "settings.ini"))
    monkeypatch.setenv(checkpoints.MODELS_ENV, str(folder))
    model_picker.clear_cache()
    return folder


def test_view_opens_generate_and_paint_em_on_the_catalogue_models(make_napari_viewer, qtbot, models):
    viewer = make_napari_viewer()
    opened = open_demo(viewer)
    assert not opened["notes"]
    generate, paint = opened["generate"], opened["paint_em"]
    assert generate.model.path().name == "star-6.safetensors" and paint.model.path().name == "vnc-dsgan.safetensors"
    qtbot.waitUntil(lambda: generate.samples is not None and "generated Bgs4" in viewer.layers, timeout=30_000)
    qtbot.waitUntil(lambda: not paint.busy() and "EM render" in viewer.layers, timeout=60_000)
    render = viewer.layers["EM render"]
    labels = paint.target()
    assert labels.data.shape == (512, 512) and render.data.shape == labels.data.shape  # the shipped VNC crop


def test_view_without_models_notes_what_is_missing(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setenv(_common.SETTINGS_ENV, str(tmp_path / "settings.ini"))
    monkeypatch.setenv(checkpoints.MODELS_ENV, str(tmp_path / "none"))
    viewer = make_napari_viewer()
    opened = open_demo(viewer, model="no-such-model", em_model="", samples=("vnc_em",))
    assert opened["generate"] is None and opened["paint_em"] is None
    assert "unknown model 'no-such-model'" in opened["notes"][0]
    assert len(viewer.layers) >= 2  # the sample data still opens
