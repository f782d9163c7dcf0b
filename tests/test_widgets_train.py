"""Train dock widget in a real viewer (Xvfb): a tiny run end to end, cancel, resume, responsiveness."""

from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_biogans import _io, checkpoints
from napari_biogans._widgets import _common, model_picker
from napari_biogans._widgets.train import TrainWidget

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv(_common.SETTINGS_ENV, str(tmp_path / "settings.ini"))
    monkeypatch.setenv(checkpoints.MODELS_ENV, str(tmp_path / "no-models"))


def tiny_widget(make_napari_viewer, run_dir, iterations):
    viewer = make_napari_viewer(show=True)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    assert len(viewer.layers) == 0
    widget.data.source.setCurrentText("simulate cells")
    widget.data.sim_n.setValue(4)
    widget.data.sim_proteins.setText("Tea1, Sid2")
    widget.arch.setCurrentText("star")
    widget.objective.setCurrentText("wgan-gp")
    widget.iterations.setValue(iterations)
    widget.batch.setValue(4)
    widget.width.setValue(4)
    widget.device.combo.setCurrentText("cpu")
    widget.run_dir.set_text(str(run_dir))
    return viewer, widget


def wait_done(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: widget.worker is not None and not widget.running and widget.start_button.isEnabled(),
                    timeout=timeout)


def test_tiny_run_trains_previews_and_registers_the_model(make_napari_viewer, qtbot, tmp_path):
    from test_widgets_generate import assert_tooltips

    from napari_biogans._widgets.generate import GenerateWidget

    viewer, widget = tiny_widget(make_napari_viewer, tmp_path / "run", iterations=2)
    assert_tooltips(widget)
    generate = GenerateWidget(viewer)  # open before training: its list must update when the run ends
    assert "run (trained)" not in [generate.model.combo.itemText(i) for i in range(generate.model.combo.count())]
    widget.start_button.click()
    assert widget.running and not widget.start_button.isEnabled() and widget.cancel_button.isEnabled()
    wait_done(qtbot, widget)
    assert widget.last_result.iteration == 2 and not widget.last_result.stopped
    model = tmp_path / "run" / "generator.safetensors"
    assert model.is_file() and (tmp_path / "run" / "train_state.safetensors").is_file()
    assert widget.progress.value() == 2
    assert [it for it, _ in widget.plot.history["critic"]] == [1, 2]  # both iterations on the loss curves
    preview = viewer.layers[TrainWidget.PREVIEW_LAYER]
    assert preview.rgb and preview.data.ndim == 3 and preview.data.shape[2] == 3
    # 4 fixed codes x 2 proteins, 48 x 80 tiles with 2-pixel gaps
    assert preview.data.shape[:2] == (4 * 50 + 2, 2 * 82 + 2)
    assert widget.simulated_label.isVisibleTo(widget)
    # the model is in Generate's list (chosen when nothing else was), and marked as trained on simulated cells
    listed = {generate.model.combo.itemText(i): generate.model.combo.itemData(i)
              for i in range(generate.model.combo.count())}
    assert Path(listed["run (trained)"]).resolve() == model.resolve()
    generate.model.set_path(model)
    assert generate.model.combo.currentText() == "run (trained)"
    assert generate.simulated_label.isVisibleTo(generate)
    assert generate.checked_proteins() == ["Sid2", "Tea1"]
    # a second Start into the same folder is refused with a message, not a traceback
    widget.start_button.click()
    assert widget.worker is not None and not widget.running


def test_cancel_saves_and_stops_and_training_leaves_the_gui_thread_free(make_napari_viewer, qtbot, tmp_path):
    viewer, widget = tiny_widget(make_napari_viewer, tmp_path / "run", iterations=100_000)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    widget.start_button.click()
    qtbot.waitUntil(lambda: widget.progress.value() >= 2 and TrainWidget.PREVIEW_LAYER in viewer.layers,
                    timeout=60_000)
    assert "per iteration on cpu" in widget.status.text() and "training state ≈" in widget.status.text()
    timer.start(20)
    qtbot.waitUntil(lambda: len(ticks) >= 5, timeout=30_000)  # the GUI thread runs its timers while training
    timer.stop()
    assert widget.running and len(widget.plot.history["critic"]) >= 2  # losses arrive while training

    widget.cancel_button.click()
    wait_done(qtbot, widget)
    result = widget.last_result
    assert result.stopped and 2 <= result.iteration < 100_000
    state = model_picker.read_card(tmp_path / "run" / "train_state.safetensors")
    assert state["iteration"] == result.iteration  # the checkpoint is the last iteration
    checkpoints.load_generator(tmp_path / "run" / "generator.safetensors")
    assert widget.resume_button.isEnabled()
    assert "cancelled" in widget.status.text()

    # Resume continues from the checkpoint to the new target
    widget.iterations.setValue(result.iteration + 2)
    widget.resume_button.click()
    wait_done(qtbot, widget)
    assert widget.last_result.iteration == result.iteration + 2 and not widget.last_result.stopped
    assert model_picker.read_card(tmp_path / "run" / "train_state.safetensors")["iteration"] == result.iteration + 2


def test_cells_from_layers(make_napari_viewer):
    from napari_biogans.data.simulator import simulate_stack

    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    stack = simulate_stack(n_per_class=3, proteins=["Cki2", "Tea1"], seed=2)
    for data, kwargs, _ in _io.cell_layers(stack, "sim"):
        viewer.add_image(data, **kwargs)
    widget.data.source.setCurrentText("layers")
    assert widget.data.red_layer.currentText() == "sim Bgs4" and widget.data.green_layer.currentText() == "sim protein"
    cells = widget.data.pair.stack()
    np.testing.assert_array_equal(cells.images, stack.images)
    assert cells.class_names == ["Cki2", "Tea1"] and cells.simulated
    widget.data.green_layer.setCurrentText("sim Bgs4")
    with pytest.raises(ValueError, match="different layers"):
        widget.data.pair.stack()


def test_learning_rate_reaches_the_trainer_and_resume_keeps_it(make_napari_viewer, qtbot, tmp_path):
    viewer, widget = tiny_widget(make_napari_viewer, tmp_path / "run", iterations=1)
    assert widget.config().lr is None  # 'reference': the objective's own rate
    widget.lr.setValue(0.0003)
    widget.start_button.click()
    wait_done(qtbot, widget)
    card = model_picker.read_card(tmp_path / "run" / "train_state.safetensors")
    assert card["train_config"]["lr"] == pytest.approx(0.0003)
    assert card["optimizers"]["G"]["param_groups"][0]["lr"] == pytest.approx(0.0003)
    widget.lr.setValue(0.0)
    widget.iterations.setValue(2)
    widget.resume_button.click()
    wait_done(qtbot, widget)
    assert widget.lr.value() == pytest.approx(0.0003) and widget.last_result.iteration == 2


def test_resume_keeps_a_cli_runs_kept_models(make_napari_viewer, qtbot, tmp_path):
    from napari_biogans.data.simulator import simulate_stack
    from napari_biogans.training.trainer import TrainConfig, Trainer

    # a CLI run that keeps a model every 3 iterations, checkpointing every 3 (the widget would pick 10)
    stack = simulate_stack(n_per_class=4, proteins=["Sid2", "Tea1"], seed=0)
    config = TrainConfig(arch="star", iterations=3, batch_size=4, width=4, device="cpu", checkpoint_every=3,
                         keep_models_every=3, log_every=1, preview_every=100)
    list(Trainer(config, stack, tmp_path / "run").run())
    viewer, widget = tiny_widget(make_napari_viewer, tmp_path / "run", iterations=6)
    widget.data.sim_n.setValue(4)
    widget.iterations.setValue(6)
    widget.resume_button.click()
    wait_done(qtbot, widget)
    assert widget.last_result.iteration == 6, widget.status.text()
    kept = sorted(p.name for p in (tmp_path / "run" / "models").iterdir())
    assert kept == ["generator-000000003.safetensors", "generator-000000006.safetensors"]


def test_em_models_train_on_vnc_sections_and_land_in_paint_em(make_napari_viewer, qtbot, tmp_path):
    from napari_biogans.models.em_inference import MODEL_KIND, load_em_model

    viewer, widget = tiny_widget(make_napari_viewer, tmp_path / "em-run", iterations=2)
    widget.data.source.setCurrentText("VNC EM sections")
    assert [widget.arch.itemText(i) for i in range(widget.arch.count())] == ["dsgan", "sgan", "joint", "conditional"]
    assert not widget.objective.isVisibleTo(widget)  # EM models have their own losses
    widget.data.vnc_path.set_text(str(Path(__file__).parent / "fixtures" / "vnc" / "stack1"))
    widget.data.vnc_sections.setText("0-1")
    widget.data.em_crop.setValue(128)
    widget.width.setValue(8)
    widget.batch.setValue(1)
    widget.start_button.click()
    wait_done(qtbot, widget)
    assert widget.last_result.iteration == 2, widget.status.text()
    model_file = tmp_path / "em-run" / "em_model.safetensors"
    assert model_picker.read_card(model_file)["kind"] == MODEL_KIND
    assert load_em_model(model_file).image_generator.config["width"] == 8
    assert {"D_x", "D_y"} <= set(widget.plot.history)  # EM losses on the curves
    preview = viewer.layers[TrainWidget.PREVIEW_LAYER]
    assert preview.rgb and preview.data.shape[1] > preview.data.shape[0]  # labels beside image
    assert str(checkpoints.canonical_path(model_file)) in map(str, model_picker.model_registry.files().values())
    # a bad section list is a message, not a traceback
    widget.data.vnc_sections.setText("0-1, 42")
    widget.new_run_dir()
    widget.start_button.click()
    qtbot.waitUntil(lambda: "has no sections [42]" in widget.status.text(), timeout=20_000)
