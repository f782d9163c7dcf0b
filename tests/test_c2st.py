"""C2ST: critics score what they should, and the same whatever their group and convolution path."""

import numpy as np
import pytest
import torch

from napari_biogans import jobs
from napari_biogans.evaluation import c2st

SIZE = (16, 16)
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # immune to oversubscription on a busy machine


def toy_draw(shift: float, critics: int):
    """Set A: noisy blobs; set B: the same blobs brightened by ``shift``, for every critic, drawn
    for all ``critics`` from the step's generator and kept for the group's ``ids``."""

    def draw(b, rng, ids):
        base = torch.rand(b, critics, 2, *SIZE, generator=rng) * 0.5 - 0.5
        other = torch.rand(b, critics, 2, *SIZE, generator=rng) * 0.5 - 0.5 + shift
        return base[:, ids], other[:, ids]

    return draw


def run(shift, critics=3, steps=80, group_size=None, path="loop", algorithm="wgan-gp", seed=0):
    plan = c2st.CriticPlan(critics, group_size or critics, 0, 0, 0, path)
    return jobs.run(c2st.train_and_score(
        toy_draw(shift, critics), toy_draw(shift, critics), critics, image_size=SIZE, steps=steps, batch_size=16,
        test_batches=4, width=4, seed=seed, algorithm=algorithm, lr=2e-3, plan=plan,
    ))


def test_same_sets_score_near_zero_and_shifted_sets_high():
    same = run(0.0).scores
    shifted = run(0.4).scores
    assert np.all(np.abs(same) < 0.5), same
    assert np.all(shifted > 2.0), shifted
    assert shifted.min() > same.max() + 2.0


@pytest.mark.parametrize("algorithm", ["wgan-gp", "wgan", "gan"])
def test_scores_do_not_depend_on_the_grouping(algorithm):
    """Same seed: four critics trained one at a time, two by two or all together score the same."""
    common = dict(shift=0.2, critics=4, steps=12, algorithm=algorithm)
    alone = run(group_size=1, **common)
    pairs = run(group_size=2, **common)
    together = run(group_size=4, **common)
    np.testing.assert_allclose(pairs.scores, alone.scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(together.scores, alone.scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(together.losses, alone.losses, rtol=1e-4, atol=1e-5)
    assert len(np.unique(together.scores)) == 4  # four different critics, not one copied


@pytest.mark.parametrize("algorithm", ["wgan-gp", "gan"])  # gan: batch norm, whose running statistics score
def test_grouped_convolutions_and_the_loop_give_the_same_scores(algorithm):
    common = dict(shift=0.2, critics=3, steps=12, algorithm=algorithm)
    loop, grouped = run(path="loop", **common), run(path="grouped", **common)
    np.testing.assert_allclose(grouped.scores, loop.scores, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(grouped.losses, loop.losses, rtol=1e-3, atol=1e-4)


def test_the_device_chooses_the_path():
    assert c2st.fastest_path("cpu") == "loop"
    assert c2st.fastest_path("cuda") == "loop"  # measured on an H200 too (docs/benchmarks.md)


def test_plan_groups_evenly_within_the_budget():
    per = c2st.critic_bytes((48, 80), 64, 64)
    plan = c2st.plan_critics(100, (48, 80), 64, 64, memory_gb=(64 * per + 10**6) / 1e9, data_bytes=10**6,
                             path="grouped")
    assert (plan.groups, plan.group_size) == (2, 50) and plan.fits
    assert "100 critics in 2 groups of 50" in plan.describe()
    loop = c2st.plan_critics(100, (48, 80), 64, 64, memory_gb=1000, path="loop")  # faster in small groups
    assert (loop.groups, loop.group_size) == (13, 8)
    small = c2st.plan_critics(100, (48, 80), 64, 64, memory_gb=per / 2 / 1e9)
    assert plan.group_size > 1 and (small.group_size, small.fits) == (1, False)
    # more steps of memory per critic at a wider critic and a bigger batch
    assert c2st.critic_bytes((48, 80), 16, 32) < c2st.critic_bytes((48, 80), 64, 32) < per
    with pytest.raises(ValueError, match="positive"):
        c2st.memory_budget("cpu", 0)


def test_summary_statistics():
    s = c2st.summarize([1.0, 2.0, 4.0, np.nan])
    assert s == {"median": 2.0, "mad": 1.0, "mean": pytest.approx(7 / 3), "std": pytest.approx(np.std([1, 2, 4])), "n": 3}


def test_real_vs_real_reports_every_step_so_cancel_is_prompt():
    from napari_biogans.data.simulator import simulate_stack

    stack = simulate_stack(n_per_class=8, proteins=["Sid2", "Tea1"], seed=0)
    job = c2st.real_vs_real(stack, stack, ["Sid2", "Tea1"], n_splits=2, steps=50, batch_size=4, test_batches=1, width=4)
    first = [next(job) for _ in range(3)]
    job.close()  # what a Cancel does: the worker stops the job at its next report
    assert [(u.done, u.total) for u in first] == [(1, 50), (2, 50), (3, 50)]  # every critic step of the one group
    with pytest.raises(StopIteration):
        next(job)
    finished = []
    plan = c2st.real_vs_real_plan(stack, stack, 2, n_splits=2, width=4, batch_size=4, memory_gb=1e-9)
    plan = c2st.CriticPlan(8, 4, plan.bytes_per_critic, 0, 1, "loop")
    scores = jobs.run(c2st.real_vs_real(stack, stack, ["Sid2", "Tea1"], n_splits=2, steps=3, batch_size=4,
                                        test_batches=1, width=4, plan=plan), finished.append)
    assert scores.shape == (2, 2, 2) and np.isfinite(scores).all()
    # two groups of 4 critic pairs, 3 steps each, counted as one job
    assert [(u.done, u.total) for u in finished] == [(d, 6) for d in range(1, 7)]
    assert {u.stage for u in finished} == {"critic pairs"}


def test_plan_only_prints_the_critic_groups_and_trains_nothing(tmp_path, capsys):
    from napari_biogans import cli
    from napari_biogans.data import lin
    from napari_biogans.data.simulator import simulate_stack

    folder = lin.write_lin_folder(simulate_stack(4, ["Sid2", "Tea1"], seed=0), tmp_path / "cells")
    per_critic = c2st.critic_bytes((48, 80), 8, 32)  # the CPU defaults' critic
    budget = (2 * per_critic + 10**5) / 1e9  # two critics and the cells
    assert cli.main(["evaluate", "real-vs-real", "--data", str(folder), "--out", str(tmp_path / "out"), "--device",
                     "cpu", "--plan-only", "--memory-gb", str(budget)]) == 0
    out = capsys.readouterr().out
    assert "real vs real on a CPU: 1 split(s), 200 steps, width 8, batch 32, learning rate 0.001" in out
    assert "critics: 4 critics in 2 groups of 2" in out
    assert not (tmp_path / "out").exists()
