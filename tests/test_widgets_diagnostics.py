"""Diagnostics dock widget in a real viewer (Xvfb): reconstruction, C2ST, real vs real, export, errors."""

import csv

import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection
from qtpy.QtWidgets import QFileDialog
from test_widgets_generate import PROTEINS, assert_tooltips, save_tiny_model

from napari_biogans import checkpoints
from napari_biogans._widgets import _common, model_picker
from napari_biogans._widgets.diagnostics import DiagnosticsWidget
from napari_biogans.data import lin
from napari_biogans.data.simulator import simulate_stack
from napari_biogans.evaluation import outputs
from napari_biogans.evaluation.reconstruction import nearest_neighbour_l2, nll

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("one_torch_thread")]
CELLS = 4  # per protein


def save_varied_model(path):
    """A tiny generator whose cells depend on the code (the untrained init draws nearly the same
    cell for every code, so L-BFGS would stop at once): reconstruction has work to do."""
    from napari_biogans.models import make_models

    torch.manual_seed(0)
    G, _ = make_models("star", n_classes=len(PROTEINS), width=4, nz=16, critic_bn=False)
    for module in G.modules():
        if isinstance(module, torch.nn.ConvTranspose2d):
            torch.nn.init.normal_(module.weight, 0.0, 0.3)
    meta = {"class_names": PROTEINS, "name": path.stem, "image_size": [48, 80], "simulated_training_data": True}
    return checkpoints.save_generator(path, G, meta)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Simulated LIN splits written by the real writer (the test split has one protein more than the model)."""
    root = tmp_path_factory.mktemp("lin")
    folders = {
        "test": lin.write_lin_folder(simulate_stack(CELLS, PROTEINS + ["Cki2"], seed=0), root / "LIN_test"),
        "train": lin.write_lin_folder(simulate_stack(CELLS, PROTEINS, seed=1), root / "LIN_train"),
        "other": lin.write_lin_folder(simulate_stack(CELLS, ["Cki2", "Tea1"], seed=2), root / "LIN_other"),
        "not_lin": root / "notes",
    }
    folders["not_lin"].mkdir()
    (folders["not_lin"] / "readme.txt").write_text("not cells")
    models = root / "models"
    models.mkdir()
    save_tiny_model(models / "tiny-star.safetensors")
    save_varied_model(models / "tiny-varied.safetensors")
    folders["models"] = models
    return folders


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch, data):
    monkeypatch.setenv(_common.SETTINGS_ENV, str(tmp_path / "settings.ini"))
    monkeypatch.setenv(checkpoints.MODELS_ENV, str(data["models"]))
    model_picker.clear_cache()


@pytest.fixture
def errors(monkeypatch):
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    return shown


def make_widget(make_napari_viewer, data, train=True, model="tiny-star"):
    """The widget as napari's Plugins menu opens it, set up for tiny, fast runs."""
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-biogans", "Diagnostics")
    assert isinstance(widget, DiagnosticsWidget) and len(viewer.layers) == 0
    widget.source.setCurrentText("file or folder")
    widget.data_path.set_text(str(data["test"]))
    widget.train_path.set_text(str(data["train"]) if train else "")
    widget.model.set_path(checkpoints.catalogue()[model])
    widget.device.combo.setCurrentText("cpu")
    for spin, value in ((widget.n_cells, 5), (widget.restarts, 2), (widget.steps, 3), (widget.c2st_steps, 5),
                        (widget.splits, 2), (widget.critic_width, 4), (widget.batch, 4)):
        spin.setValue(value)
    widget.algorithm.setCurrentText("gan")
    widget.method.setCurrentText(outputs.CRITIC_METHOD)  # the fast feature test has its own tests
    return viewer, widget


def run(qtbot, widget, button, result, timeout=60_000):
    """Press ``button`` and wait for the widget to hold ``result`` and be idle again."""
    setattr(widget, result, None)
    button.click()
    qtbot.waitUntil(lambda: getattr(widget, result) is not None and not widget.busy, timeout=timeout)
    return getattr(widget, result)


def export(widget, button, path, monkeypatch):
    """Export through the button; the rows after the ``#`` lines, the first of which says the cells are
    simulated (the next, whether the result is trusted)."""
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *args, **kwargs: (str(path), "")))
    button.click()
    with open(path, newline="") as f:
        lines = list(f)
    assert lines[0].startswith("# SIMULATED cells"), lines[0]
    return list(csv.reader(line for line in lines if not line.startswith("#")))


def test_reconstruction_adds_layers_scatter_summary_and_exports(make_napari_viewer, qtbot, data, tmp_path,
                                                                monkeypatch):
    from napari.utils.theme import get_theme

    viewer, widget = make_widget(make_napari_viewer, data, model="tiny-varied")
    widget.steps.setValue(1)
    result = run(qtbot, widget, widget.reconstruct_button, "reconstruction")
    names = ["reconstruction: real Bgs4", "reconstruction: real protein",
             "reconstruction: tiny-varied Bgs4", "reconstruction: tiny-varied protein"]
    assert [layer.name for layer in viewer.layers] == names
    for layer in viewer.layers:
        assert layer.data.shape == (5, 48, 80) and layer.data.dtype == np.uint8
    real, rebuilt = viewer.layers[names[0]], viewer.layers[names[2]]
    assert tuple(rebuilt.translate) == (0, 0, 80 + 4)  # to the right of the real cells
    provenance = rebuilt.metadata["provenance"]
    model_file = data["models"] / "tiny-varied.safetensors"
    assert provenance["model"] == "tiny-varied" and provenance["weights_sha256"] == checkpoints.file_sha256(model_file)
    assert [provenance[k] for k in ("restarts", "steps", "max_cells", "mode")] == [2, 1, 5, "regular"]
    assert provenance["simulated"] and provenance["model_path"] == str(model_file)
    assert rebuilt.metadata["codes"].shape == (5, 16) and rebuilt.metadata["class_names"] == PROTEINS

    # the real layers hold the chosen cells of the model's proteins, read through the real reader
    stack = lin.read_lin_folder(data["test"]).select_classes(PROTEINS)
    rows = np.asarray([stack.file_names.index(name) for name in real.metadata["file_names"]])
    np.testing.assert_array_equal(rows, np.sort(np.random.default_rng(0).choice(3 * CELLS, 5, replace=False)))  # as the CLI
    np.testing.assert_array_equal(real.data, stack.images[rows, 0])
    # the reconstructions are what the model draws from the stored codes
    G, _ = checkpoints.load_generator(model_file)
    with torch.no_grad():
        drawn = G(torch.as_tensor(rebuilt.metadata["codes"]))[torch.arange(5), torch.as_tensor(stack.class_index[rows])]
    np.testing.assert_allclose(rebuilt.data, lin.to_uint8(drawn[:, 0].numpy()), atol=1)

    # scatter: one dot per cell at (L2, NLL), the baseline from the training split, the prior band
    ax = widget.scatter.ax
    l2, codes_nll = np.asarray(rebuilt.metadata["l2"]), np.asarray(rebuilt.metadata["nll"])
    np.testing.assert_allclose(ax.collections[0].get_offsets(), np.c_[l2, codes_nll])
    np.testing.assert_allclose(codes_nll, nll(rebuilt.metadata["codes"]), rtol=1e-5)
    train = lin.read_lin_folder(data["train"])
    nn = [nearest_neighbour_l2(stack.images[[i]], train.images[train.class_index == train.class_names.index(
        stack.class_names[stack.class_index[i]])])[0][0] for i in rows]
    np.testing.assert_allclose(result.nn_l2, nn)
    (line,) = ax.lines
    assert np.allclose(line.get_xdata(), np.median(nn)) and "training cells" in line.get_label()
    prior = nll(np.random.default_rng(0).standard_normal((20_000, 16)))  # codes of the model's size
    (band,) = ax.patches
    ys = band.get_path().transformed(band.get_patch_transform()).vertices[:, 1]
    low, high = ys.min(), ys.max()
    assert (low + high) / 2 == pytest.approx(prior.mean(), rel=0.01)
    assert (high - low) / 2 == pytest.approx(2 * prior.std(), rel=0.05)
    median, mad = np.median(l2), np.median(np.abs(l2 - np.median(l2)))
    assert f"L2 {median:.3f} ± {mad:.3f}" in widget.summary.text() and "nearest neighbour" in widget.summary.text()

    # CSV: the same numbers come back
    rows_back = export(widget, widget.export_reconstruction, tmp_path / "rec.csv", monkeypatch)
    assert rows_back[0] == ["file", "protein", "l2", "nll", "nll_start", "nn_l2"]
    assert [r[0] for r in rows_back[1:]] == [stack.file_names[i] for i in rows]
    np.testing.assert_array_equal([float(r[2]) for r in rows_back[1:]], l2)
    np.testing.assert_array_equal([float(r[5]) for r in rows_back[1:]], result.nn_l2)

    # the plot follows napari's theme
    for theme in ("dark", "light"):
        viewer.theme = theme
        text = get_theme(theme).text.as_hex()
        ax = widget.scatter.ax
        assert ax.xaxis.label.get_color() == text
        assert all(t.get_color() == text for t in ax.get_legend().get_texts())
        (band,) = ax.patches  # drawn again in the new foreground colour
        assert np.allclose(band.get_facecolor()[:3], [int(text[i : i + 2], 16) / 255 for i in (1, 3, 5)])

    # again: the same layers are updated, nothing piles up
    ids = [id(layer) for layer in viewer.layers]
    run(qtbot, widget, widget.reconstruct_button, "reconstruction")
    assert [id(layer) for layer in viewer.layers] == ids


def test_cancel_is_quick_then_reader_layers_reconstruct_without_a_training_split(make_napari_viewer, qtbot, data,
                                                                                 errors):
    viewer, widget = make_widget(make_napari_viewer, data, train=False, model="tiny-varied")
    widget.steps.setValue(100_000)  # hours
    widget.reconstruct_button.click()
    assert widget.busy and widget.cancel_button.isEnabled() and not widget.c2st_button.isEnabled()
    qtbot.waitUntil(lambda: "running" in widget.status.text(), timeout=30_000)  # inside L-BFGS
    qtbot.wait(200)
    widget.cancel_button.click()  # stops at the job's next report (every 20 L-BFGS iterations), not in hours
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    assert errors and "cancelled" in errors[-1] and " — " in errors[-1]
    assert widget.reconstruction is None and len(viewer.layers) == 0

    # the widget still works: now on the layers the LIN reader makes, without a training split
    viewer.open(str(data["test"]), plugin="napari-biogans")
    assert [layer.name for layer in viewer.layers] == ["LIN_test Bgs4", "LIN_test protein"]
    widget.source.setCurrentText("layers")
    assert (widget.red_layer.currentText(), widget.green_layer.currentText()) == ("LIN_test Bgs4", "LIN_test protein")
    widget.steps.setValue(1)
    widget.n_cells.setValue(100)  # more than there are: all 12 cells of the model's proteins
    result = run(qtbot, widget, widget.reconstruct_button, "reconstruction")
    assert viewer.layers["reconstruction: tiny-varied protein"].data.shape == (3 * CELLS, 48, 80)
    assert len(viewer.layers) == 2 + 4
    # the baseline is the nearest *other* cell of the same protein
    stack = lin.read_lin_folder(data["test"]).select_classes(PROTEINS)
    same = np.flatnonzero(stack.class_index == 0)
    expected = nearest_neighbour_l2(stack.images[[0]], stack.images[same[1:]])[0][0]
    assert result.nn_l2[0] == pytest.approx(expected) and result.nn_l2[0] > 0
    assert "other cells" in widget.scatter.ax.lines[0].get_label()


def test_c2st_and_real_vs_real_tables_plots_and_exports(make_napari_viewer, qtbot, data, tmp_path, monkeypatch):
    viewer, widget = make_widget(make_napari_viewer, data, train=False)
    widget.tabs.setCurrentIndex(1)
    report = run(qtbot, widget, widget.c2st_button, "c2st").report
    rows = [widget.table.item(i, 0).text() for i in range(widget.table.rowCount())]
    assert rows == PROTEINS + ["all"]  # the model's proteins (not Cki2), then their mean per split
    for i, name in enumerate(rows):
        scores = np.asarray(report[name]["scores"])
        median = report[name]["median"]
        assert len(scores) == 2 and np.isfinite(scores).all()
        # "gan" scores are minus a sum of two cross-entropies: never above 0 (≈ −1.39 when indistinguishable)
        assert (scores <= 0).all()
        assert scores.min() <= median <= scores.max() and median == pytest.approx(np.median(scores))
        assert report[name]["mad"] == pytest.approx(np.median(np.abs(scores - median)))
        assert widget.table.item(i, 1).text() == f"{median:.3f}"
    np.testing.assert_allclose(report["all"]["scores"], np.mean([report[p]["scores"] for p in PROTEINS], axis=0))
    ax = widget.c2st_plot.ax
    assert [t.get_text() for t in ax.get_xticklabels()] == rows
    dots = [len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection)]
    assert dots == [2] * 4  # a dot per split and protein

    assert widget.trust.text().startswith("C2ST: UNTRUSTED (not calibrated)")  # a 5-step critic
    back = export(widget, widget.export_c2st, tmp_path / "c2st.csv", monkeypatch)
    assert back[0] == ["protein", "median", "mad", "mean", "std", "split0", "split1"]
    for row in back[1:]:
        r = report[row[0]]
        assert [float(v) for v in row[1:]] == [r["median"], r["mad"], r["mean"], r["std"], *r["scores"]]

    # the fast feature test, at a size too small for its controls to pass: said beside the numbers
    from functools import partial

    from napari_biogans.evaluation import fast_test

    monkeypatch.setenv("BIOGANS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fast_test, "FastTestSettings", partial(fast_test.FastTestSettings, feature_iterations=2,
                                                               permutations=19))
    widget.method.setCurrentText(outputs.FAST_METHOD)
    fast = run(qtbot, widget, widget.c2st_button, "c2st")
    assert list(fast.report) == PROTEINS and widget.table.horizontalHeaderItem(1).text() == "accuracy"
    assert widget.trust.text().startswith("C2ST: UNTRUSTED (failed controls)")
    assert outputs.FAST_METHOD in widget.c2st_plot.ax.get_title()

    # the reference: real cells against real cells (two halves of the stack, no training split given)
    result = run(qtbot, widget, widget.rvr_button, "real_vs_real")
    names = sorted(PROTEINS + ["Cki2"])  # every protein of the cells, in the reader's order
    assert result.names == names and result.scores.shape == (2, 4, 4)
    assert (result.scores <= 0).all()  # "gan" objective, as for the generator
    np.testing.assert_allclose(result.mean, result.scores.mean(0))
    (image,) = widget.matrix_plot.ax.images
    np.testing.assert_allclose(image.get_array(), result.mean)
    assert [t.get_text() for t in widget.matrix_plot.ax.get_yticklabels()] == names
    assert widget.trust.text().startswith("real vs real: UNTRUSTED")
    back = export(widget, widget.export_matrix, tmp_path / "matrix.csv", monkeypatch)
    assert back[0] == ["A \\ B", *names] and [r[0] for r in back[1:]] == names
    np.testing.assert_array_equal([[float(v) for v in r[1:]] for r in back[1:]], result.mean)


def test_tooltips_errors_and_persistence(make_napari_viewer, qtbot, data, errors):
    viewer, widget = make_widget(make_napari_viewer, data)
    assert_tooltips(widget)
    for part in (widget.table, widget.tabs, widget.scatter, widget.c2st_plot, widget.matrix_plot):
        assert part.toolTip()
    assert widget.reconstruct_button.isEnabled() and not widget.cancel_button.isEnabled()

    # errors: a notification saying what went wrong, then what to do; never a traceback
    widget.n_cells.setValue(7)
    widget.algorithm.setCurrentText("wgan")

    def fails(button, *words):
        errors.clear()
        button.click()
        qtbot.waitUntil(lambda: bool(errors) and not widget.busy, timeout=30_000)
        assert all(word in errors[0] for word in words) and " — " in errors[0], errors

    widget.data_path.set_text(str(data["not_lin"]))
    fails(widget.reconstruct_button, "no cell<N>.png", "choose a LIN split folder")
    widget.data_path.set_text(str(data["other"]))  # Cki2 and Tea1: the model wants Alp14, Sid2, Tea1
    fails(widget.c2st_button, "Alp14", "Sid2", "model's proteins")
    widget.data_path.set_text(str(data["test"]))
    widget.train_path.set_text(str(data["other"]))
    fails(widget.reconstruct_button, "training cells", "lack")
    widget.data_path.set_text("")
    fails(widget.reconstruct_button, "no cells chosen")
    widget.source.setCurrentText("layers")  # and there are none
    fails(widget.c2st_button, "choose a red and a green")
    assert len(viewer.layers) == 0 and widget.reconstruction is None and widget.c2st is None
    assert widget.reconstruct_button.isEnabled()
    widget.export("c2st")  # nothing to export yet
    assert "run c2st first" in errors[-1]

    # a new widget starts from the last choices
    again = DiagnosticsWidget(viewer)
    assert again.source.currentText() == "layers" and again.train_path.text() == str(data["other"])
    assert again.model.path().name == "tiny-star.safetensors" and again.device.device() == "cpu"
    assert (again.n_cells.value(), again.c2st_steps.value(), again.critic_width.value()) == (7, 5, 4)
    assert again.algorithm.currentText() == "wgan"


def test_reconstructed_real_cells_are_cell_cycle_anchors(make_napari_viewer, qtbot, data):
    from napari_biogans._widgets.cell_cycle import CellCycleWidget

    viewer, widget = make_widget(make_napari_viewer, data, model="tiny-varied")
    widget.n_cells.setValue(3)
    widget.steps.setValue(1)
    result = run(qtbot, widget, widget.reconstruct_button, "reconstruction")
    cycle = CellCycleWidget(viewer)
    viewer.window.add_dock_widget(cycle, name="Cell cycle")
    sources = [cycle.source.itemText(i) for i in range(cycle.source.count())]
    assert "reconstruction" in sources
    cycle.source.setCurrentText("reconstruction")
    cycle.anchors.setText("0, 2")
    cycle.frames.setValue(5)
    cycle.device.combo.setCurrentText("cpu")
    with qtbot.waitSignal(cycle.finished, timeout=60_000):
        cycle.run()
    codes = viewer.layers["cell cycle Bgs4"].metadata["provenance"]
    assert codes["source"] == "layers 'reconstruction'" and codes["cells"] == [0, 2]
    z = result.reconstruction.z
    frames = np.asarray(viewer.layers["cell cycle Bgs4"].metadata["codes"])
    np.testing.assert_allclose(frames[0, : z.shape[1] // 2], z[0, : z.shape[1] // 2], rtol=1e-5)  # starts at cell 0's red code


def test_the_calibrated_cpu_budget_is_one_click_away(make_napari_viewer):
    from napari_biogans.evaluation.calibrate import CPU_CRITIC

    widget = DiagnosticsWidget(make_napari_viewer())
    assert widget.c2st_settings().lr is None  # 'reference' until chosen
    widget.cpu_budget_button.click()
    settings = widget.c2st_settings()
    assert (settings.splits, settings.steps, settings.width, settings.batch_size, settings.lr) == (
        CPU_CRITIC["splits"], CPU_CRITIC["steps"], CPU_CRITIC["width"], CPU_CRITIC["batch_size"], CPU_CRITIC["lr"])
    assert widget.method.currentText() == outputs.CRITIC_METHOD and settings.algorithm == "wgan-gp"
