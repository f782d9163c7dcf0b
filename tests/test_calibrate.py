"""Calibration and the fast two-sample test: the controls come out as expected at tiny sizes, the
verdicts decide later results' trust, and the feature network is cached once per data set."""

import json

import numpy as np
import pytest

from napari_biogans import cli, jobs
from napari_biogans.data import lin
from napari_biogans.data.simulator import simulate_stack
from napari_biogans.evaluation import calibrate, fast_test, trust

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROTEINS = ["Sid2", "Tea1", "Cki2"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOGANS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def cells():
    return simulate_stack(24, PROTEINS, seed=1)


def test_the_permutation_p_value_separates_same_from_shifted_features():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 10)), rng.normal(size=(60, 10))
    same_accuracy, same_p = fast_test.ridge_loo_accuracy(a, b, permutations=199)
    shifted_accuracy, shifted_p = fast_test.ridge_loo_accuracy(a, b + 0.8, permutations=199)
    assert same_p > 0.05 and same_accuracy < 0.65
    assert shifted_p == 1 / 200 and shifted_accuracy > 0.8


def test_calibrate_writes_the_table_and_remembers_each_verdict(cells, tmp_path, capsys):
    data = lin.write_lin_folder(cells.select_classes(["Sid2", "Tea1"]), tmp_path / "cells")
    out = tmp_path / "out"
    assert cli.main(["evaluate", "calibrate", "--data", str(data), "--out", str(out), "--device", "cpu",
                     "--fast-iterations", "5", "--permutations", "199", "--steps", "2", "--splits", "2", "--width",
                     "4", "--batch-size", "8", "--test-batches", "1", "--proteins", "Tea1"]) == 0
    assert "| fast feature test | Tea1 | blur σ=1 |" in capsys.readouterr().out
    assert (out / "calibration.csv").read_text().startswith("# SIMULATED cells")
    assert "| paper's critic C2ST |" in (out / "calibration.md").read_text()
    body = json.loads((out / "calibration.json").read_text())
    found = {(r["diagnostic"], r["protein"], r["control"]): r for r in body["rows"]}
    # the fast test, even at this size, reads real vs real as indistinguishable and sees blur and the wrong protein
    for protein in ("Tea1",):  # Sid2 is its "other protein"
        for control in calibrate.REQUIRED:
            assert found[(calibrate.FAST, protein, control)]["pass"], (protein, control)
        assert found[(calibrate.NN, protein, "training copies")]["answer"] == "flagged"
        assert found[(calibrate.NN, protein, "real vs real")]["answer"] == "not flagged"
        assert (calibrate.FAST, protein, "training copies") not in found  # a two-sample test cannot see copies
    assert body["verdicts"][calibrate.FAST]["pass"] and body["verdicts"][calibrate.NN]["pass"]
    # a 2-step critic of width 4 cannot pass: remembered as failed for these cells at this budget
    assert not body["verdicts"][calibrate.CRITIC]["pass"]
    read = lin.read_cells(data)
    budget = dict(splits=2, width=4, algorithm="wgan-gp", lr=calibrate.CPU_CRITIC["lr"], batch_size=8)
    failed = calibrate.critic_trust(read, steps=2, **budget)
    assert failed.status == trust.FAILED and "biogans evaluate calibrate" in failed.needed
    assert calibrate.critic_trust(read, steps=50, **budget).status == trust.NOT_CALIBRATED
    # a verdict speaks for its learning rate only: the reference's was never calibrated here
    assert calibrate.critic_trust(read, steps=2, **{**budget, "lr": None}).status == trust.NOT_CALIBRATED


def _critic_record(cells, proteins: dict, steps=100):
    from napari_biogans.training.data import stack_hash

    settings = {"steps": steps, "splits": 3, "width": 16, "algorithm": "wgan-gp", "batch_size": 64, "lr": None}
    verdict = {"pass": all(proteins.values()), "failed": [], "budget": f"b{steps}", "settings": settings,
               "proteins": {p: {"pass": ok, "failed": [] if ok else [f"{p}: blur σ=1 read indistinguishable"]}
                            for p, ok in proteins.items()}}
    return calibrate.Calibration([], {calibrate.CRITIC: verdict}, "cells", stack_hash(cells), "cpu", True, {})


def test_a_passing_calibration_trusts_that_budget_and_above_for_its_proteins(cells):
    calibrate.remember(_critic_record(cells, {"Sid2": True, "Tea1": True}))
    assert calibrate.critic_trust(cells, 200, 3, 16, "wgan-gp", proteins=["Sid2", "Tea1"]).trusted
    below = calibrate.critic_trust(cells, 50, 3, 16, "wgan-gp", proteins=["Tea1"])
    assert below.status == trust.NOT_CALIBRATED and "at least b100" in below.needed
    # Cki2 was never calibrated: the cells' C2ST as a whole is not vouched for
    missing = calibrate.critic_trust(cells, 200, 3, 16, "wgan-gp")
    assert missing.status == trust.NOT_CALIBRATED and "Cki2" in missing.reason
    # a second run at the same budget adds its protein; a failed protein makes the budget untrusted
    calibrate.remember(_critic_record(cells, {"Cki2": False}))
    failed = calibrate.critic_trust(cells, 100, 3, 16, "wgan-gp")
    assert failed.status == trust.FAILED and "Cki2: blur" in failed.reason
    assert "calibrated for Sid2, Tea1" in failed.reason and failed.controls["Cki2"] == "failed controls"
    assert "--proteins Cki2 --steps 200" in failed.needed  # the failed protein, at a larger budget
    calibrate.remember(_critic_record(cells, {"Cki2": True}))  # rerun: replaces Cki2's verdict, keeps the others
    assert calibrate.critic_trust(cells, 100, 3, 16, "wgan-gp").trusted


def test_the_wrong_protein_control_skips_the_look_alike():
    stack = simulate_stack(12, ["Alp14", "Tea1", "Tea4"], seed=0)
    assert fast_test.look_alike(stack, "Tea1") == "Tea4" and fast_test.look_alike(stack, "Tea4") == "Tea1"
    assert fast_test.other_protein(stack, "Tea1") == "Alp14"  # not the next of the list, Tea4
    sets = calibrate.control_sets(stack, "Tea1")
    assert sets["look-alike protein"][1].shape == sets["other protein"][1].shape
    assert set(calibrate.control_sets(stack, "Tea1", required_only=True)) == {*calibrate.REQUIRED, "training copies"}


def test_the_feature_network_is_cached_per_data_set_and_a_stale_file_is_retrained(cells):
    tiny = fast_test.FastTestSettings(feature_iterations=2)
    first = jobs.run(fast_test.feature_net_job(cells, tiny))
    path, key = fast_test._cache_path(cells, tiny)
    assert path.is_file() and first.trained
    updates = []
    again = jobs.run(fast_test.feature_net_job(cells, tiny), updates.append)
    assert updates == []  # loaded, not trained
    x = cells.images[:3]
    assert np.allclose(again.features(x), first.features(x))
    from napari_biogans import checkpoints

    tensors, meta = checkpoints.load(path)
    checkpoints.save(path, tensors, {**{k: v for k, v in meta.items() if k != "format"},
                                     "key": {**key, "data_sha256": "0" * 64}})
    updates = []
    jobs.run(fast_test.feature_net_job(cells, tiny), updates.append)
    assert updates  # the stale file was not used


def test_three_critic_splits_all_above_real_vs_real_read_as_detected():
    """With 3 splits a side the exact Mann–Whitney p cannot fall below 0.05: detection is p ≤ 0.05."""
    settings = calibrate.CalibrationSettings()
    scores = {("Tea1", "real vs real"): np.array([0.07, -0.9, -0.06]),
              ("Tea1", "blur σ=2"): np.array([5.4, 5.5, 5.3], np.float32),  # critics score in float32
              ("Tea1", "blur σ=1"): np.array([0.4, -0.1, 2.3])}
    rows = calibrate._critic_rows(scores, settings, "budget")
    answers = {r["control"]: r["answer"] for r in rows}
    assert answers == {"real vs real": "indistinguishable", "blur σ=2": "different", "blur σ=1": "indistinguishable"}
    assert rows[1]["splits"] == pytest.approx([5.4, 5.5, 5.3]) and rows[1]["score"] == pytest.approx(5.4)  # all kept


def test_real_vs_real_allows_the_gradient_penalty_but_not_an_untrained_critic():
    """A trained WGAN-GP critic's real vs real sits a little below 0 (its test score keeps the
    gradient penalty); an untrained one reads ≈ −10."""
    settings = calibrate.CalibrationSettings()
    for splits, answer in (([-0.74, -2.0, -0.49], "indistinguishable"), ([-8.6, -8.7, -8.5], "off the null")):
        row = calibrate._critic_rows({("Tea1", "real vs real"): np.array(splits)}, settings, "budget")[0]
        assert row["answer"].startswith(answer), row


def test_recognition_reads_real_cells_as_real_and_another_protein_as_wrong(cells):
    net = jobs.run(fast_test.feature_net_job(cells, fast_test.FastTestSettings(feature_iterations=60)))
    held = fast_test.held_out(cells, 0)
    own = {p: cells.images[held][cells.class_index[held] == i] for i, p in enumerate(cells.class_names)}
    found = fast_test.recognition(net, cells, own)
    assert all(r["generated"] == r["real"] and r["passes"] for r in found.values())  # the yardstick itself
    swapped = fast_test.recognition(net, cells, {"Sid2": own["Tea1"]})["Sid2"]
    assert swapped["generated"] < fast_test.RECOGNITION_BAR * swapped["real"] and not swapped["passes"], swapped
