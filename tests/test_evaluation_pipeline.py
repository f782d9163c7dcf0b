"""One evaluation pipeline: ``biogans evaluate`` and the Diagnostics widget write identical tables,
and every output made from simulated cells says so."""

import json

import numpy as np
import pytest
from qtpy.QtWidgets import QFileDialog
from test_widgets_diagnostics import save_varied_model
from test_widgets_generate import PROTEINS

from napari_biogans import atomic, checkpoints, cli, jobs
from napari_biogans._widgets import _common, model_picker
from napari_biogans.data import lin
from napari_biogans.data.simulator import simulate_stack
from napari_biogans.evaluation import outputs, pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MODEL = "tiny-varied"
# the same tiny settings on both sides: (CLI options, widget spin boxes)
C2ST = (["--method", "critic", "--steps", "4", "--splits", "2", "--width", "4", "--batch-size", "4", "--algorithm", "gan"],
        {"c2st_steps": 4, "splits": 2, "critic_width": 4, "batch": 4})
RECONSTRUCT = (["--steps", "1", "--restarts", "2", "--max-cells", "5"], {"steps": 1, "restarts": 2, "n_cells": 5})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    folders = {"test": lin.write_lin_folder(simulate_stack(4, PROTEINS, seed=0), root / "LIN_test"),
               "models": root / "models"}
    folders["models"].mkdir()
    save_varied_model(folders["models"] / f"{MODEL}.safetensors")
    return folders


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch, data):
    monkeypatch.setenv(_common.SETTINGS_ENV, str(tmp_path / "settings.ini"))
    monkeypatch.setenv(checkpoints.MODELS_ENV, str(data["models"]))
    monkeypatch.setenv("BIOGANS_CACHE", str(tmp_path / "cache"))  # feature networks and calibrations
    model_picker.clear_cache()


@pytest.mark.gui
def test_cli_and_diagnostics_write_identical_tables(make_napari_viewer, qtbot, data, tmp_path, monkeypatch):
    """Without a training split (the case where the two used to differ): C2ST, reconstruction with the
    leave-one-out baseline, and real vs real between two halves of the cells."""
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-biogans", "Diagnostics")
    widget.data_path.set_text(str(data["test"]))
    widget.train_path.set_text("")
    widget.model.set_path(checkpoints.catalogue()[MODEL])
    widget.device.combo.setCurrentText("cpu")
    widget.algorithm.setCurrentText("gan")
    widget.method.setCurrentText(outputs.CRITIC_METHOD)
    for name, value in {**C2ST[1], **RECONSTRUCT[1]}.items():
        getattr(widget, name).setValue(value)

    runs = [("c2st", ["--model", MODEL, *C2ST[0]], widget.c2st_button, "c2st", widget.export_c2st),
            ("reconstruct", ["--model", MODEL, *RECONSTRUCT[0]], widget.reconstruct_button, "reconstruction",
             widget.export_reconstruction),
            ("real-vs-real", C2ST[0], widget.rvr_button, "real_vs_real", widget.export_matrix)]
    for what, options, button, attribute, export in runs:
        out = tmp_path / what
        assert cli.main(["evaluate", what, "--data", str(data["test"]), "--out", str(out), "--device", "cpu",
                         *options]) == 0
        button.click()
        qtbot.waitUntil(lambda: getattr(widget, attribute) is not None and not widget.busy, timeout=60_000)
        result = getattr(widget, attribute)
        exported = tmp_path / f"widget-{what}.csv"
        monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(exported), "")))
        export.click()

        stem = outputs.stem(result)
        cli_csv = (out / f"{stem}.csv").read_text()
        assert exported.read_text() == cli_csv, what  # byte for byte
        assert cli_csv.startswith("# SIMULATED cells") and len(cli_csv.splitlines()) > 2
        # the JSON the CLI wrote is the widget's result as the writer turns it into JSON
        assert json.loads((out / f"{stem}.json").read_text()) == outputs.summary(result), what
        assert "SIMULATED cells" in {"c2st": widget.c2st_plot, "reconstruct": widget.scatter,
                                     "real-vs-real": widget.matrix_plot}[what].ax.get_title()

    # the leave-one-out baseline was measured on both sides: no empty cells in the nn_l2 column
    header, rows = outputs.read_table(tmp_path / "reconstruct" / "reconstruction.csv")
    assert header[-1] == "nn_l2" and all(float(row[-1]) > 0 for row in rows)


def _c2st_result(simulated: bool):
    settings = pipeline.C2STSettings(steps=3, splits=2)
    provenance = pipeline.Provenance(data="LIN folder cells", simulated=simulated, device="cpu", model="m")
    report = {"all": {"scores": [1 / 3, 2 / 3], "median": 0.5, "mad": 1 / 6, "mean": 0.5, "std": 1 / 6, "n": 2}}
    return pipeline.C2STEvaluation(report, settings, provenance)


def test_the_writer_keeps_full_precision_and_flags_only_simulated_results(tmp_path):
    for simulated in (True, False):
        result = _c2st_result(simulated)
        files = outputs.write_outputs(result, tmp_path / str(simulated))
        text = files["csv"].read_text()
        assert text.startswith("# SIMULATED cells") == simulated
        header, rows = outputs.read_table(files["csv"])
        assert header == ["protein", "median", "mad", "mean", "std", "split0", "split1"]
        assert [float(v) for v in rows[0][1:]] == [0.5, 1 / 6, 0.5, 1 / 6, 1 / 3, 2 / 3]  # reads back exactly
        body = json.loads(files["json"].read_text())
        assert body["simulated"] is simulated and ("note" in body) == simulated
        assert body["settings"]["steps"] == 3 and body["settings"]["device"] == "cpu"
        assert ("SIMULATED cells" in outputs.title(result, "x")) == simulated
        assert files["png"].stat().st_size > 1000
        assert not [p for p in files["csv"].parent.iterdir() if atomic.is_temporary(p)]  # written whole, then renamed


def test_a_model_trained_on_simulated_cells_marks_its_results():
    real = simulate_stack(1, ["Tea1"], seed=0)
    real.simulated = False
    assert not pipeline.is_simulated(real, {})
    assert pipeline.is_simulated(real, {"simulated_training_data": True})
    assert pipeline.is_simulated(real, {"data": {"simulated": True}})


def test_the_baseline_is_the_training_split_when_given_else_the_other_held_out_cells():
    from napari_biogans.evaluation.reconstruction import nearest_neighbour_l2

    cells = simulate_stack(3, ["Sid2", "Tea1"], seed=0)
    train = simulate_stack(4, ["Sid2", "Tea1"], seed=1)
    rows = np.array([0, 4])
    alone = pipeline.nn_baseline(cells, rows)
    same = np.flatnonzero(cells.class_index == cells.class_index[0])
    assert alone[0] == pytest.approx(nearest_neighbour_l2(cells.images[[0]], cells.images[same[same != 0]])[0][0])
    pooled = pipeline.nn_baseline(cells, rows, train)
    label = cells.class_index[4]
    expected = nearest_neighbour_l2(cells.images[[4]], train.images[train.class_index == label])[0][0]
    assert pooled[1] == pytest.approx(expected) and not np.allclose(pooled, alone)


def test_bad_inputs_get_one_clear_line(data, tmp_path, capsys):
    big = lin.write_lin_folder(simulate_stack(2, PROTEINS, seed=3, size=(96, 160)), tmp_path / "LIN_big")
    assert cli.main(["evaluate", "reconstruct", "--model", MODEL, "--data", str(big), "--out", str(tmp_path / "x"),
                     "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "LIN_big" in err and "96×160" in err and "48×80" in err
    other = lin.write_lin_folder(simulate_stack(2, ["Cki2"], seed=3), tmp_path / "LIN_other")
    assert cli.main(["evaluate", "c2st", "--model", MODEL, "--data", str(other), "--out", str(tmp_path / "y"),
                     "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Alp14" in err and "LIN_other" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # nothing half-written


def test_a_long_c2st_on_a_cpu_says_how_long_and_what_is_cheaper(data, tmp_path, monkeypatch, capsys):
    measured = []

    def estimate(settings, critics, image_size, device):
        measured.append((settings, critics))
        return 3 * 3600.0 if settings.steps == 5000 else 240.0

    def stop(*args, **kwargs):
        raise ValueError("stopped before the critics train")
        yield

    monkeypatch.setattr(pipeline, "c2st_seconds", estimate)
    monkeypatch.setattr(pipeline, "c2st_job", stop)
    assert cli.main(["evaluate", "c2st", "--model", MODEL, "--data", str(data["test"]), "--out", str(tmp_path / "c"),
                     "--device", "cpu", "--method", "critic"]) == 2
    printed = capsys.readouterr().out
    cheap = "--splits 3 --steps 2000 --width 16 --batch-size 32 --lr 0.0005"  # calibrate.CPU_CRITIC
    assert "3.0 h" in printed and cheap in printed and "4 min" in printed
    assert measured[0][1] == 10 * len(PROTEINS)  # one critic per split and protein
    # a short run measures nothing and says nothing
    measured.clear()
    assert cli.main(["evaluate", "c2st", "--model", MODEL, "--data", str(data["test"]), "--out", str(tmp_path / "c"),
                     "--device", "cpu", "--method", "critic", "--steps", "10", "--splits", "2"]) == 2
    assert not measured and "note" not in capsys.readouterr().out


def test_the_step_estimate_comes_from_a_timed_step():
    import torch

    seconds = pipeline.c2st_seconds(pipeline.C2STSettings(steps=100, width=4, batch_size=4), 3, (48, 80),
                                    torch.device("cpu"))
    assert np.isfinite(seconds) and seconds > 0


def test_jobs_report_progress_that_ends_at_their_total():
    import torch

    from napari_biogans.models import make_models

    torch.manual_seed(0)
    generator, _ = make_models("star", n_classes=2, width=4, nz=8, critic_bn=False)
    cells = simulate_stack(3, ["Sid2", "Tea1"], seed=0)
    meta = {"class_names": ["Sid2", "Tea1"], "name": "g"}
    updates = []
    settings = pipeline.ReconstructionSettings(steps=2, restarts=1, mode="separable", max_cells=4)
    result = jobs.run(pipeline.reconstruction_job(generator, meta, cells, settings, "cpu"), updates.append)
    assert len(result.cells) == 4 and result.nn_source == "other cells of the stack"
    done = [u.done for u in updates]
    assert done == sorted(done) and (updates[-1].done, updates[-1].total) == (80, 80)  # two phases of 2 x 20
    assert {u.stage for u in updates} == {"L-BFGS, red code", "L-BFGS, green code"}


@pytest.mark.gui
def test_diagnostics_says_how_long_a_c2st_takes_on_a_cpu(make_napari_viewer, qtbot, data, monkeypatch):
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_info", shown.append)
    monkeypatch.setattr(pipeline, "c2st_seconds", lambda settings, *args: 2 * 3600.0 if settings.steps > 2000 else 90.0)
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-biogans", "Diagnostics")
    widget.data_path.set_text(str(data["test"]))
    widget.model.set_path(checkpoints.catalogue()[MODEL])
    widget.device.combo.setCurrentText("cpu")
    widget.method.setCurrentText(outputs.CRITIC_METHOD)
    for name, value in {"c2st_steps": 5000, "splits": 2, "critic_width": 4, "batch": 4}.items():
        getattr(widget, name).setValue(value)
    widget.c2st_button.click()
    qtbot.waitUntil(lambda: bool(shown), timeout=30_000)
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    assert "2.0 h" in shown[0] and "2 splits, 2000 critic steps, critic width 4, batch 4" in shown[0] and "about 90 s" in shown[0]
    assert widget.c2st is None


def test_no_command_prints_an_untrustworthy_number_without_saying_so(data, tmp_path, capsys):
    """A 2-step critic, a 1-iteration classifier, a fast test with 2 cells a side, a baseline of held-out
    cells: every output says UNTRUSTED, and FID shows no number at all."""
    weak = {"c2st": ["--model", MODEL, "--method", "critic", "--steps", "2", "--splits", "2", "--width", "4",
                     "--batch-size", "4"],
            "fast c2st": ["--model", MODEL, "--method", "fast", "--fast-iterations", "2", "--permutations", "19"],
            "real-vs-real": ["--steps", "2", "--splits", "1", "--width", "4", "--batch-size", "4", "--proteins",
                             "Sid2,Tea1"],
            "fid": ["--model", MODEL, "--train", str(data["test"]), "--classifier-iterations", "1",
                    "--classifier-width", "4", "--generated", "4"],
            "features": ["--train", str(data["test"]), "--classifier-iterations", "1", "--classifier-width", "4"],
            "reconstruct": ["--model", MODEL, *RECONSTRUCT[0]]}
    for name, options in weak.items():
        out = tmp_path / name.replace(" ", "_")
        assert cli.main(["evaluate", name.split()[-1], "--data", str(data["test"]), "--out", str(out),
                         "--device", "cpu", *options]) == 0, name
        printed = capsys.readouterr().out
        assert "UNTRUSTED (" in printed, name
        (csv_file,) = out.glob("*.csv")
        assert "\n# UNTRUSTED (" in csv_file.read_text(), name
        assert not outputs.read_trust(csv_file.with_suffix(".json")).trusted, name
        if name == "fid":
            assert "FID not shown" in printed and "FID real" not in printed
        if name == "fast c2st":
            assert "fast feature test" in printed and "UNTRUSTED (failed controls)" in printed
        if name == "c2st":
            assert "paper's critic C2ST" in printed and "UNTRUSTED (not calibrated)" in printed
