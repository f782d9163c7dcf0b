"""Reconstruction, interpolation and the generator C2ST on tiny, seeded models."""

import math

import numpy as np
import pytest
import torch

from napari_biogans import jobs
from napari_biogans.evaluation import interpolation as interp
from napari_biogans.evaluation import reconstruction as rec
from napari_biogans.models import make_models

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # immune to oversubscription on a busy machine


@pytest.fixture(scope="module")
def star():
    torch.manual_seed(0)
    G, _ = make_models("star", n_classes=2, image_size=(12, 20), width=4, critic_bn=False)
    with torch.no_grad():  # an untrained N(0, 0.02) generator is nearly constant: make z matter
        for p in G.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.3)
    return G.eval()


def planted(G, n, seed):
    z = torch.randn(n, G.nz, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return z, G(z)


def test_reconstruction_recovers_a_planted_code(star):
    z_true, pairs = planted(star, 3, seed=1)
    slots = np.array([0, 1, 0])
    cells = pairs[torch.arange(3), torch.as_tensor(slots)].numpy()
    result = jobs.run(rec.reconstruct(star, cells, slots, restarts=3, steps=6, lr=0.5, seed=2))
    with torch.no_grad():
        start = star(torch.randn(3, star.nz, generator=torch.Generator().manual_seed(9)))[torch.arange(3), torch.as_tensor(slots)]
    start_l2 = rec.l2_error(start.numpy(), cells)
    assert result.images.shape == cells.shape
    assert np.all(result.l2 < 0.3 * start_l2), (result.l2, start_l2)
    np.testing.assert_allclose(result.l2, rec.l2_error(result.images, cells), rtol=1e-5)
    np.testing.assert_allclose(result.nll, 0.5 * (result.z**2).sum(1) + 50 * math.log(2 * math.pi), rtol=1e-6)


def test_cells_in_one_batch_do_not_interact(star):
    _, pairs = planted(star, 4, seed=3)
    cells, slots = pairs[:, 0].numpy(), np.zeros(4, dtype=int)
    together = jobs.run(rec.reconstruct(star, cells, slots, restarts=2, steps=3, seed=4))
    # alone, cell 0 starts from the same two codes (rows 0 and 4 of the batched start)
    z0 = torch.randn(8, star.nz, generator=torch.Generator().manual_seed(4))
    target = torch.as_tensor(cells[[0, 0]])

    def loss(z):  # rendered as the product renders (a tower loop rounds differently from the grouped convolutions)
        return ((star.generate(z, torch.zeros(len(z), 1, dtype=torch.long))[:, 0] - target) ** 2).flatten(1).mean(1)

    alone = jobs.run(rec.batched_lbfgs(loss, z0[[0, 4]], iterations=3 * 20))
    best = int(np.argmin(rec.l2_error(star(alone)[:, 0].detach().numpy(), target.numpy())))
    np.testing.assert_allclose(together.z[0], alone[best].numpy(), atol=1e-4)


def test_reconstruction_through_one_tower_matches_the_every_tower_path(star):
    """The former path rendered every protein's tower (grouped convolutions) and picked the cell's
    protein; the product renders the cell's own tower only. Same starts, same iterations: same L2
    (few iterations: L-BFGS without line search amplifies the two paths' float rounding, ~10x an
    iteration on this steep random generator)."""
    _, pairs = planted(star, 4, seed=7)
    slots = np.array([1, 0, 1, 0])
    cells = pairs[torch.arange(4), torch.as_tensor(slots)].numpy()
    product = jobs.run(rec.reconstruct(star, cells, slots, restarts=2, steps=1, inner=5, seed=8))
    target, slot = torch.as_tensor(cells).repeat(2, 1, 1, 1), torch.as_tensor(slots).repeat(2)
    z0 = torch.randn(8, star.nz, generator=torch.Generator().manual_seed(8))
    star.execution = "grouped"
    try:
        def every_tower(z):
            return star(z)[torch.arange(len(z)), slot]

        z = jobs.run(rec.batched_lbfgs(lambda z: ((every_tower(z) - target) ** 2).flatten(1).mean(1), z0,
                                       iterations=5))
        former = rec.l2_error(every_tower(z).detach().numpy(), target.numpy()).reshape(2, 4).min(0)
    finally:
        star.execution = "auto"
    np.testing.assert_allclose(product.l2, former, rtol=2e-3)
    assert np.all(product.l2 < rec.l2_error(every_tower(z0).detach().numpy(), target.numpy()).reshape(2, 4).min(0))


def test_separable_mode_moves_red_code_then_green_code(star):
    _, pairs = planted(star, 2, seed=5)
    cells = pairs[:, 1].numpy()
    result = jobs.run(rec.reconstruct(star, cells, np.ones(2, dtype=int), mode="separable", restarts=2, steps=4, seed=6))
    assert np.all(np.isfinite(result.l2)) and result.z.shape == (2, star.nz)
    dcgan, _ = make_models("dcgan", image_size=(12, 20), width=4, critic_bn=False)
    with pytest.raises(ValueError, match="red/green latent split"):
        jobs.run(rec.reconstruct(dcgan, cells[:, :1].repeat(1, 0), np.zeros(2, dtype=int), mode="separable"))


def test_nearest_neighbour_baseline():
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, (20, 2, 8, 8), dtype=np.uint8)
    l2, index = rec.nearest_neighbour_l2(pool[[3, 7]], pool)
    assert index.tolist() == [3, 7] and np.allclose(l2, 0, atol=1e-6)
    query = pool[[5]].astype(int)
    query[0, 0, 0, 0] = (query[0, 0, 0, 0] + 51) % 256
    l2, index = rec.nearest_neighbour_l2(query.astype(np.uint8), pool)
    assert index[0] == 5
    diff = (int(query[0, 0, 0, 0]) - int(pool[5, 0, 0, 0])) / 255.0
    assert l2[0] == pytest.approx(abs(diff) / math.sqrt(2 * 64))


def test_interpolation_endpoints_and_red_only():
    rng = np.random.default_rng(0)
    anchors = rng.standard_normal((3, 10)).astype(np.float32)
    for method in ("linear", "slerp"):
        codes = interp.interpolate_codes(anchors, 9, method)
        np.testing.assert_allclose(codes[0], anchors[0], atol=1e-6)
        np.testing.assert_allclose(codes[4], anchors[1], atol=1e-6)  # (9 - 1) / 2 frames per leg
        np.testing.assert_allclose(codes[-1], anchors[2], atol=1e-6)
    red = interp.interpolate_codes(anchors, 7, "slerp", red_only=True, nz_red=4)
    np.testing.assert_array_equal(red[:, 4:], np.repeat(anchors[:1, 4:], 7, axis=0))
    assert not np.allclose(red[3, :4], red[0, :4])
    with pytest.raises(ValueError, match="red/green latent split"):
        interp.interpolate_codes(anchors, 5, red_only=True)
    with pytest.raises(ValueError, match="two anchor"):
        interp.interpolate_codes(anchors[:1], 5)


def test_slerp_keeps_the_norm_between_equal_norm_codes():
    a = np.array([3.0, 0.0])
    b = np.array([0.0, 3.0])
    path = interp.slerp(a, b, np.linspace(0, 1, 5))
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), 3.0)


def test_length_measurement_follows_simulated_growth():
    from napari_biogans.data.simulator import PIXEL_SIZE_UM, simulate_lineage

    cells = simulate_lineage("Cki2", np.linspace(0.0, 0.74, 12), seed=3)
    lengths = interp.red_lengths(cells.images[:, 0])
    assert interp.monotonicity(lengths) > 0.95
    np.testing.assert_allclose(lengths * PIXEL_SIZE_UM, cells.truth["length_um"], rtol=0.15)
    assert interp.monotonicity(lengths[::-1]) < -0.95


def test_grown_middle_picks_the_right_length_nearest_the_path():
    codes = np.array([[0.0, 0.0], [10.0, 0.0], [3.0, 5.0], [6.0, 0.5], [7.0, -4.0], [5.0, 0.0]])
    lengths = np.array([40.0, 70.0, 61.0, 60.5, 61.5, 50.0])
    # 70 % of the way from 40 to 70 px is 61 px: codes 2, 3 and 4 are within 2 px; 3 lies nearest the midpoint (5, 0)
    assert interp.grown_middle(codes, lengths, 0, 1) == 3
    assert interp.grown_middle(codes, lengths, 0, 1, fraction=0.35) == 5  # 50.5 px: only code 5 is close
    # nothing within the tolerance: the nearest length, never an end itself
    assert interp.grown_middle(codes, lengths, 0, 1, fraction=0.9, tolerance=0.5) == 4


class RodGenerator(torch.nn.Module):
    """A stand-in generator whose red cell is a bright rod 30 + 40·sigmoid(z₀) px long, so length is known."""

    nz, nz_red = 6, 3

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a device for render()

    def forward(self, z):
        length = 30 + 40 * torch.sigmoid(z[:, 0])
        x = torch.arange(80, dtype=torch.float32)
        rod = (torch.abs(x - 40)[None] <= length[:, None] / 2).float()  # (n, 80)
        red = torch.zeros(len(z), 48, 80)
        red[:, 20:28] = rod[:, None, :]
        pairs = torch.stack([red, torch.zeros_like(red)], 1)  # (n, 2, 48, 80): red, green
        return (pairs * 2 - 1)[:, None]  # one protein

    def generate(self, z, labels):
        return self(z)[torch.arange(len(z))[:, None], labels]


def test_cycle_anchors_grow_then_end_long_and_both_figures_are_reported():
    from napari_biogans.data.lin import to_uint8
    from napari_biogans.sampling import render

    g = RodGenerator()
    anchors = interp.cycle_anchors(g, seed=3, pool=64)
    lengths = interp.red_lengths(to_uint8(render(g, anchors)[:, 0, 0]))
    assert anchors.shape == (3, 6) and lengths[0] < lengths[1] < lengths[2]
    grown = lengths[0] + interp.GROWN_FRACTION * (lengths[2] - lengths[0])
    assert abs(lengths[1] - grown) <= 2.5
    result = interp.growth_monotonicity(g, n_pairs=4, frames=9, pool=64, seed=3)
    assert len(result["rhos"]) == len(result["rhos_through_grown"]) == 4
    # the rod's length is monotone in z₀, so both paths grow steadily
    assert result["median_rho"] > 0.9 and result["median_rho_through_grown"] > 0.9


def test_generator_c2st_runs_per_protein(star):
    from napari_biogans.data.simulator import simulate_stack
    from napari_biogans.evaluation.c2st import generator_c2st

    torch.manual_seed(0)
    star, _ = make_models("star", n_classes=2, width=4, critic_bn=False)
    stack = simulate_stack(n_per_class=8, proteins=["Sid2", "Tea1"], seed=0)
    report = jobs.run(generator_c2st(star, stack, ["Sid2", "Tea1"], n_splits=3, steps=3, batch_size=4, test_batches=2,
                                     width=4))
    assert set(report) == {"Sid2", "Tea1", "all"}
    assert len(report["Tea1"]["scores"]) == 3 and np.isfinite(report["all"]["median"])


def test_reconstruction_plot_stays_readable_with_an_outlier():
    """One code at NLL ≈ 175,000 among cells near the prior must not squash the others into a line."""
    from matplotlib.figure import Figure

    from napari_biogans.evaluation import plots

    rng = np.random.default_rng(0)
    l2, nll = rng.uniform(0.05, 0.15, 40), rng.normal(150, 8, 40)
    nll[7] = 175_000.0
    ax = Figure().add_subplot()
    plots.reconstruction_scatter(ax, l2, nll, nn_l2=l2, nz=100)
    low, high = ax.get_ylim()
    rest = np.delete(nll, 7)
    assert low <= rest.min() and rest.max() <= high < 1000  # every other cell inside, and the axis not stretched
    assert (high - low) < 10 * np.ptp(rest)
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "1 with NLL >" in legend and "1.75e+05" in legend and "clipped" in ax.get_ylabel()
    ax = Figure().add_subplot()  # without outliers nothing is clipped
    plots.reconstruction_scatter(ax, np.delete(l2, 7), rest, nz=100)
    assert "clipped" not in ax.get_ylabel() and ax.get_ylim()[1] > rest.max()
