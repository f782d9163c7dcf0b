"""C2ST: critics trained together behave like critics trained one after another."""

import numpy as np
import pytest
import torch

from napari_biogans import jobs
from napari_biogans.evaluation import c2st

SIZE = (16, 16)
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # immune to oversubscription on a busy machine


def toy_draw(shift: float, groups: int, seed: int):
    """Set A: noisy blobs; set B: the same blobs brightened by ``shift``, for every critic slot."""
    gen = torch.Generator().manual_seed(seed)

    def draw(b):
        base = torch.rand(b, groups, 2, *SIZE, generator=gen) * 0.5 - 0.5
        other = torch.rand(b, groups, 2, *SIZE, generator=gen) * 0.5 - 0.5 + shift
        return base, other

    return draw


def run(shift, groups=3, steps=150, critic=None, seed=0, algorithm="wgan-gp"):
    return jobs.run(c2st.train_and_score(
        toy_draw(shift, groups, seed), toy_draw(shift, groups, seed + 1), groups=groups, image_size=SIZE,
        steps=steps, batch_size=16, test_batches=4, width=4, critic=critic, seed=seed, algorithm=algorithm, lr=2e-3,
    ))


def test_same_sets_score_near_zero_and_shifted_sets_high():
    same = run(0.0).scores
    shifted = run(0.4).scores
    assert np.all(np.abs(same) < 0.5), same
    assert np.all(shifted > 2.0), shifted
    assert shifted.min() > same.max() + 2.0


@pytest.mark.parametrize("algorithm", ["wgan-gp", "wgan", "gan"])
def test_batched_critics_equal_sequential_ones(algorithm):
    """Critics trained together on the same draws give the same scores as one at a time."""
    torch.manual_seed(1)
    singles = [c2st.GroupedCritic(1, SIZE, 4, bn=algorithm != "wgan-gp") for _ in range(3)]
    group = c2st.GroupedCritic.from_critics(singles)
    # the same data per slot in both set-ups: slot g of the batched draw is what single g sees
    draws = {g: (toy_draw(0.2, 1, 10 + g), toy_draw(0.2, 1, 20 + g)) for g in range(3)}

    def batched(kind):
        fns = [draws[g][kind] for g in range(3)]
        return lambda b: tuple(torch.cat([f(b)[k] for f in fns], dim=1) for k in range(2))

    def fresh():
        nonlocal draws
        draws = {g: (toy_draw(0.2, 1, 10 + g), toy_draw(0.2, 1, 20 + g)) for g in range(3)}

    common = dict(image_size=SIZE, steps=40, batch_size=8, test_batches=3, width=4, algorithm=algorithm)
    together = jobs.run(c2st.train_and_score(batched(0), batched(1), groups=3, critic=group, **common)).scores
    fresh()
    alone = []
    for g, single in enumerate(singles):
        alone.append(jobs.run(c2st.train_and_score(draws[g][0], draws[g][1], groups=1, critic=single, **common)).scores[0])
    alone = np.array(alone)
    if algorithm == "wgan-gp":
        # the interpolation weights ε differ between the set-ups: same distribution, not same numbers
        assert np.all(np.abs(together - alone) < 0.35 * np.abs(alone).max() + 0.3), (together, alone)
    else:
        np.testing.assert_allclose(together, alone, rtol=1e-2, atol=1e-5)


def test_summary_statistics():
    s = c2st.summarize([1.0, 2.0, 4.0, np.nan])
    assert s == {"median": 2.0, "mad": 1.0, "mean": pytest.approx(7 / 3), "std": pytest.approx(np.std([1, 2, 4])), "n": 3}


def test_real_vs_real_reports_every_step_so_cancel_is_prompt():
    from napari_biogans.data.simulator import simulate_stack

    stack = simulate_stack(n_per_class=8, proteins=["Sid2", "Tea1"], seed=0)
    job = c2st.real_vs_real(stack, stack, ["Sid2", "Tea1"], n_splits=2, steps=50, batch_size=4, test_batches=1, width=4)
    first = [next(job) for _ in range(3)]
    job.close()  # what a Cancel does: the worker stops the job at its next report
    assert [(u.done, u.total) for u in first] == [(1, 50), (2, 50), (3, 50)]  # every critic step of the one pass
    with pytest.raises(StopIteration):
        next(job)
    finished = []
    scores = jobs.run(c2st.real_vs_real(stack, stack, ["Sid2", "Tea1"], n_splits=2, steps=3, batch_size=4,
                                        test_batches=1, width=4, pairs_per_pass=4), finished.append)
    assert scores.shape == (2, 2, 2) and np.isfinite(scores).all()
    # two passes of 4 critic pairs, 3 steps each, counted as one job
    assert [(u.done, u.total) for u in finished] == [(d, 6) for d in range(1, 7)]
    assert {u.stage for u in finished} == {"critic pairs"}
