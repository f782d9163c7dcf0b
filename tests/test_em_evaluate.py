"""``biogans evaluate em`` and its core (evaluation/em_report.py) on a tiny EM model and the VNC fixture."""

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from napari_biogans import cli
from napari_biogans import jobs
from napari_biogans.data import em
from napari_biogans.evaluation.em_report import (
    PAPER_NUMBERS,
    EMEvalSettings,
    evaluate_em,
    report_rows,
    score_pairs,
)
from napari_biogans.models.em_inference import load_em_model
from napari_biogans.training.em_trainer import EMTrainConfig, EMTrainer

FIXTURE = Path(__file__).parent / "fixtures" / "vnc" / "stack1"  # 256² crops of sections 00, 01 and 10
QUICK = EMEvalSettings(train_sections=(0, 1), validation_sections=(10,), n_generated=2, size=128, segmenter=None,
                       segmenter_iterations=2, segmenter_width=4, c2st_steps=2, c2st_width=4, c2st_batch_size=4,
                       birthday_batch_sizes=(4, 8), birthday_repeats=2)
QUICK_ARGS = ["--data", str(FIXTURE), "--sections-train", "0-1", "--sections-val", "10", "--generated", "2",
              "--size", "128", "--train-segmenter", "--segmenter-iterations", "2", "--segmenter-width", "4", "--c2st-steps", "2",
              "--width", "4", "--batch-size", "4", "--birthday-batch-sizes", "4", "8", "--birthday-repeats", "2",
              "--device", "cpu"]
STATISTICS = {"cell_area", "mito_area", "mito_roundness", "mito_per_cell"}
TESTED = {"cell_area", "mito_area", "mito_roundness"}  # χ² and a verdict; mitochondria per cell: its mean only

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """An sgan model trained 2 iterations on 128 crops of sections 00 and 01."""
    config = EMTrainConfig(mode="sgan", iterations=2, label_width=4, image_width=4, label_d_width=4, image_d_width=4,
                           crop=128, device="cpu", batch_size=2, pool_size=3, preview_every=100)
    trainer = EMTrainer(config, *em.read_sections(FIXTURE, [0, 1]), tmp_path_factory.mktemp("em") / "run")
    list(trainer.run())
    return trainer.model_path


def unit_or_nan(values):
    return all(math.isnan(v) or 0 <= v <= 1 for v in values)


def test_report_has_every_part_in_range(model_file):
    model = load_em_model(model_file)
    calls = []
    evaluation = jobs.run(evaluate_em(model, FIXTURE, QUICK), lambda update: calls.append((update.done, update.total)))
    results = evaluation.results
    assert set(results) == {"skipped", "segmentation", "statistics", "birthday", "c2st", "model", "settings"}
    assert results["skipped"] == {} and results["model"]["mode"] == "sgan" and results["settings"]["size"] == 128

    for side in ("real", "generated"):
        scores = results["segmentation"][side]
        assert 0 <= scores["mean_iu"] <= 1 and len(scores["iu"]) == 3 and unit_or_nan(scores["iu"])
        assert scores["nll"] > 0
    for comparison in ("generated", "train_vs_validation"):
        stats = results["statistics"][comparison]
        assert set(stats) == STATISTICS and unit_or_nan([stats[k]["chi2"] for k in TESTED])  # ½Σ(p−q)²/(p+q) ≤ 1
        assert "chi2" not in stats["mito_per_cell"]
    birthday = results["birthday"]
    assert birthday["batch_sizes"] == [4, 8] and unit_or_nan(birthday["duplicate_rate"])
    assert birthday["support_estimate"] in (None, 16, 64)
    assert all(math.isfinite(results["c2st"][k]) for k in ("generated", "real_vs_real"))
    assert results["c2st"]["reference_sections"] == [0] and results["c2st"]["control_sections"] == [1]
    # every part carries its controls' verdict; a 2-iteration segmenter and 2-step critics cannot pass them
    assert results["segmentation"]["segmenter"]["source"] == "trained"
    assert results["segmentation"]["trust"]["trusted"] is False
    assert set(results["c2st"]["calibration"]) == {"real vs real", "blur σ=1", "blur σ=2"}
    assert set(results["statistics"]["trust"]) == set(results["statistics"]["calibration"]) == TESTED
    assert all(set(t) >= {"trusted", "status", "reason", "needed", "controls"}
               for t in (results["c2st"]["trust"], *results["statistics"]["trust"].values()))

    # the pairs: G_y's labels with seed i, the image G_x renders from them; the real side is section 10
    assert evaluation.generated_labels.shape == evaluation.generated_images.shape == (2, 128, 128)
    assert evaluation.generated_images.dtype == np.uint8
    np.testing.assert_array_equal(evaluation.generated_labels[1], model.sample_labels(128, 128, seed=1))
    np.testing.assert_array_equal(evaluation.real_labels, em.read_sections(FIXTURE, [10])[1])
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1] == 2 + 2 + 1 + 1 + 4 * 2  # C2ST: 2 runs + 2 controls


def test_real_against_real_scores_equal_and_chi2_vanishes():
    """The reporting path with the validation pairs as the "generated" ones: every score must equal
    the real one (same segmenter, same pairs) and every χ² must be 0."""
    train, validation = em.read_sections(FIXTURE, [0, 1]), em.read_sections(FIXTURE, [10])
    settings = replace(QUICK, skip=("c2st",), calibrate=False)
    results = jobs.run(score_pairs(validation, train, validation, settings))
    assert results["skipped"] == {"c2st": "skipped", "birthday": "no label generator to sample from noise"}
    rows = {row["measure"]: row for row in report_rows({**results, "model": {"mode": "dsgan"}})}
    segmentation = [m for m in rows if m.startswith("segmentation.")]
    assert len(segmentation) == 5
    for measure in segmentation:
        real, generated = rows[measure]["real"], rows[measure]["generated"]
        assert real == generated or (math.isnan(real) and math.isnan(generated)), measure
    for key in STATISTICS:
        assert rows[f"statistics.{key}.mean"]["real"] == rows[f"statistics.{key}.mean"]["generated"]
    for key in TESTED:
        assert rows[f"statistics.{key}.chi2"]["generated"] == 0.0
    assert "statistics.mito_per_cell.chi2" not in rows
    per_cell = rows["statistics.mito_per_cell.mean"]
    assert per_cell["trusted"] is None and "described, not tested" in per_cell["note"]
    assert rows["segmentation.mean_iu"]["paper_generated"] == PAPER_NUMBERS["segmentation.mean_iu"]["dsgan"]
    assert rows["segmentation.mean_iu"]["paper_real"] == 0.883


def test_cli_writes_json_csv_and_png(model_file, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli.main(["evaluate", "em", "--model", str(model_file), "--out", str(out), *QUICK_ARGS]) == 0
    printed = capsys.readouterr().out
    assert "segmentation.mean_iu" in printed and "(paper 0.872)" in printed and "em_report.csv" in printed

    def no_nan(token):
        raise AssertionError(f"{token} in the JSON")

    report = json.loads((out / "em_report.json").read_text(), parse_constant=no_nan)
    assert report["model"]["file"] == str(model_file) and len(report["model"]["sha256"]) == 64
    assert report["settings"]["train_sections"] == [0, 1] and report["settings"]["validation_sections"] == [10]
    with open(out / "em_report.csv", newline="") as f:
        rows = {row["measure"]: row for row in csv.DictReader(f)}
    assert list(next(iter(rows.values()))) == ["measure", "real", "generated", "paper_real", "paper_generated", "trusted",
                                               "note"]
    assert rows["c2st.score"]["trusted"] == "False" and rows["c2st.score"]["note"].startswith("UNTRUSTED")
    assert "segmenter: trained for this run (trained)" in printed and "UNTRUSTED" in printed
    with open(out / "em_calibration.csv", newline="") as f:
        controls = {(row["diagnostic"], row["control"]) for row in csv.DictReader(f)}
    assert {("c2st.score", "blur σ=1"), ("statistics.cell_area.chi2", "shuffled"),
            ("segmentation", "real validation mean IU")} <= controls
    assert {"segmentation.mean_iu", "statistics.cell_area.chi2", "birthday.support_estimate", "c2st.score"} <= set(rows)
    assert rows["segmentation.mean_iu"]["paper_generated"] == "0.872"  # the sgan row of Table 2
    assert 0 <= float(rows["segmentation.mean_iu"]["generated"]) <= 1
    figure = iio.imread(out / "em_pairs.png")
    assert figure.ndim == 3 and figure.shape[0] > 200  # two rows of pairs

    quick = tmp_path / "quick"
    assert cli.main(["evaluate", "em", "--model", str(model_file), "--out", str(quick), *QUICK_ARGS,
                     "--skip", "segmentation", "birthday", "c2st"]) == 0
    report = json.loads((quick / "em_report.json").read_text())
    assert set(report["skipped"]) == {"segmentation", "birthday", "c2st"} and "segmentation" not in report
    assert all(line.startswith("measure") or line.startswith("statistics.")
               for line in (quick / "em_report.csv").read_text().splitlines())


def test_cli_bad_inputs_are_clear_errors(model_file, tmp_path, capsys):
    def fails(*args, says):
        out = tmp_path / "out"
        argv = ["evaluate", "em", "--out", str(out), *QUICK_ARGS, *args]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, err
        assert not out.exists()  # nothing half-written

    model = ["--model", str(model_file)]
    fails(*model, "--data", str(tmp_path), says="expected a VNC stack folder with a raw/ sub-folder")
    fails(*model, "--sections-val", "11", says="no section 11")
    fails(*model, "--sections-train", "0", says="needs at least two")
    fails("--model", str(tmp_path / "missing.safetensors"), says="no such model file")
    fails(says="--model is required")
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "em", *model, "--out", str(tmp_path / "x"), *QUICK_ARGS, "--sections-train", "a-b"])
    assert "expected sections such as 0-9" in capsys.readouterr().err
