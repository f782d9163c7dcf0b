"""EM evaluation: IU, global statistics and χ², the birthday test, a segmenter and the C2ST."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_biogans import jobs
from napari_biogans.data import em
from napari_biogans.evaluation import em_metrics as metrics

FIXTURE = Path(__file__).parent / "fixtures" / "vnc" / "stack1"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sections():
    return em.read_sections(FIXTURE, [0, 1, 10])


def test_iu(sections):
    _, labels = sections
    assert metrics.mean_iu(labels, labels) == 1.0
    assert metrics.mean_iu((labels + 1) % 3, labels) == 0.0  # every pixel wrong
    pred = np.array([[0, 0, 1, 2]])
    truth = np.array([[0, 1, 1, 1]])
    iu = metrics.class_iu(pred, truth)  # background 1/2, membrane 1/3, mitochondria 0/1
    np.testing.assert_allclose(iu, [0.5, 1 / 3, 0.0])
    assert np.isnan(metrics.class_iu(np.zeros((2, 2)), np.zeros((2, 2)))[1])
    assert 0.3 < metrics.mean_iu(labels[0], labels[1]) < 0.9  # neighbouring sections are alike, not equal


def test_statistics_of_a_hand_made_map():
    labels = np.zeros((100, 100), np.uint8)
    labels[:, 50] = em.MEMBRANE
    labels[50, :] = em.MEMBRANE
    labels[0, :] = labels[-1, :] = labels[:, 0] = labels[:, -1] = em.MEMBRANE  # four closed cells
    yy, xx = np.mgrid[:100, :100]
    labels[(yy - 25) ** 2 + (xx - 25) ** 2 <= 100] = em.MITOCHONDRIA  # a disc of radius 10 in one cell
    labels[70:73, 70:73] = em.MITOCHONDRIA
    labels[80:83, 60:63] = em.MITOCHONDRIA  # two squares in another
    stats = metrics.label_statistics(labels)
    assert sorted(stats["cell_area"]) == [48 * 48, 48 * 49, 48 * 49, 49 * 49]
    assert sorted(stats["mito_area"]) == [9, 9, (labels[:50, :50] == em.MITOCHONDRIA).sum()]
    disc = stats["mito_roundness"][np.argmax(stats["mito_area"])]
    assert 0.85 < disc <= 1.0
    speck = labels.copy()
    speck[30, 75] = em.MITOCHONDRIA  # one pixel: skimage's perimeter is 0
    assert metrics.label_statistics(speck)["mito_roundness"].max() <= 1.0
    assert sorted(stats["mito_per_cell"]) == [0, 0, 1, 2]
    open_map = labels.copy()
    open_map[0, 1:50] = em.CYTOPLASM  # the upper left cell now touches the border
    assert len(metrics.label_statistics(open_map)["cell_area"]) == 3
    assert len(metrics.label_statistics(open_map, exclude_border=False)["cell_area"]) == 4


def test_chi2_and_comparison(sections):
    _, labels = sections
    h = np.array([3, 0, 5, 2])
    assert metrics.chi2_distance(h, h) == 0.0 and metrics.chi2_distance(h, 10 * h) == 0.0
    assert metrics.chi2_distance([1, 0], [0, 1]) == 1.0
    assert metrics.chi2_distance(h, [1, 1, 1, 1]) == metrics.chi2_distance([1, 1, 1, 1], h) > 0
    same = metrics.compare_statistics(labels, labels)
    assert all(v["real_mean"] == v["fake_mean"] for v in same.values())
    assert {key for key, v in same.items() if "chi2" in v} == set(metrics.TESTED_STATISTICS)
    assert all(same[key]["chi2"] == 0 for key in metrics.TESTED_STATISTICS)
    assert "mito_per_cell" in metrics.DESCRIBED_STATISTICS  # the paper's mean only: no χ² of a histogram of zeros
    eroded = np.where(ndi.binary_dilation(labels == em.MEMBRANE, iterations=6), em.MEMBRANE, labels)
    worse = metrics.compare_statistics(labels, eroded)  # thicker membranes: smaller cells
    assert worse["cell_area"]["fake_mean"] < worse["cell_area"]["real_mean"] and worse["cell_area"]["chi2"] > 0


def test_chi2_bins_come_from_the_real_sample():
    """Bins of both samples pooled were set by the larger: thousands of one-pixel specks against a hundred real
    mitochondria put every edge on 1 (one bin, χ² 0: a perfect score for the worst maps)."""
    real = np.random.default_rng(0).lognormal(7, 1, 100)
    specks = np.ones(5000)
    edges = metrics.histogram_edges(real)
    assert len(edges) == metrics.CHI2_BINS + 1 and edges[0] == -np.inf and edges[-1] == np.inf
    found = metrics.compare_pooled({"mito_area": real}, {"mito_area": specks})["mito_area"]
    assert found["chi2"] > 0.8  # all the specks in the real sample's lowest bin, which holds a tenth of it


def grid_crops(labels, side=64):
    """Non-overlapping real label crops on a grid, skipping near-empty ones (two empty maps are equal)."""
    out = [m[y : y + side, x : x + side] for m in labels for y in range(0, m.shape[0] - side + 1, side)
           for x in range(0, m.shape[1] - side + 1, side)]
    return np.stack([c for c in out if (c == em.MEMBRANE).mean() > 0.05])


def test_birthday_test_finds_planted_duplicates(sections):
    _, labels = sections
    maps = grid_crops(labels)[:20]
    assert len(maps) == 20 and metrics.find_duplicates(maps) == []  # distinct real crops
    planted = maps.copy()
    planted[7] = maps[3]
    planted[15] = maps[11]
    planted[15, 30:34, 30:34] = em.MITOCHONDRIA  # a near copy (a small blob painted in) still counts
    assert [(i, j) for i, j, _ in metrics.find_duplicates(planted)] == [(3, 7), (11, 15)]

    pool = grid_crops(labels)[20:32]

    def from_pool(n, rng):  # a "generator" whose support is 12 maps
        return pool[rng.integers(len(pool), size=n)]

    result = metrics.birthday_test(from_pool, batch_sizes=(2, 12, 30), repeats=10)
    assert result.duplicate_rate[0] <= 0.5 and result.duplicate_rate[2] == 1.0
    assert result.smallest_batch in (12, 30) and result.support_estimate == result.smallest_batch**2
    assert result.min_distance[0] > 0.1 and result.min_distance[2] == 0.0


def test_label_generator_sampler():
    from napari_biogans.models.em import LabelGenerator

    torch.manual_seed(0)
    sample = metrics.label_generator_sampler(LabelGenerator(width=4), noise_side=2)
    maps = sample(70, np.random.default_rng(0))  # more than one generator batch
    assert maps.shape == (70, 128, 128) and set(np.unique(maps)) <= {0, 1, 2}
    np.testing.assert_array_equal(maps[:5], sample(5, np.random.default_rng(0)))
    result = metrics.birthday_test(sample, batch_sizes=(8,), repeats=2)  # fresh noise: no duplicates
    assert result.duplicate_rate == [0.0] and result.min_distance[0] > 0.1 and result.smallest_batch is None


def test_segmenter_learns_real_membranes(sections):
    images, labels = sections
    untrained = jobs.run(metrics.train_segmenter(images[:2], labels[:2], iterations=0, width=4, levels=2))
    trained = jobs.run(metrics.train_segmenter(images[:2], labels[:2], iterations=40, crop=64, batch_size=4, width=8,
                                               levels=2, lr=2e-3))
    before = metrics.segmentation_scores(untrained, images[2:], labels[2:])
    after = metrics.segmentation_scores(trained, images[2:], labels[2:])
    assert after["nll"] < 0.7 * before["nll"] and after["mean_iu"] > before["mean_iu"]
    assert 0 <= after["mean_iu"] <= 1 and len(after["iu"]) == 3
    assert metrics.segment(trained, images[2:, :100, :90]).shape == (1, 3, 100, 90)


def test_c2st_tells_blurred_from_real(sections):
    images, _ = sections
    blurred = ndi.gaussian_filter(images.astype(np.float64), (0, 2, 2)).astype(np.uint8)
    kwargs = dict(patch=32, steps=120, batch_size=32, width=8, lr=1e-3)
    real = jobs.run(metrics.c2st_realism(images[[0, 2]], images[[1]], **kwargs))["score"]
    fake = jobs.run(metrics.c2st_realism(images[[0, 2]], blurred[[1]], **kwargs))["score"]
    assert fake > real + 1.0


# ------------------------------------------------------------------------------------------------
# The shipped segmenter's file kind, and the calibration of the EM diagnostics

SHIPPED_SEGMENTER = Path(__file__).parents[1] / "pretrained" / "vnc-segmenter.safetensors"


def test_segmenter_file_loads_by_kind_and_damage_is_one_clear_line(tmp_path):
    from napari_biogans import checkpoints
    from napari_biogans.models import loader
    from napari_biogans.models.segmenter import SegmenterUNet
    from napari_biogans.models.segmenter_file import save_segmenter

    path = save_segmenter(tmp_path / "seg.safetensors", SegmenterUNet(width=2, levels=1), {"name": "seg"})
    loaded = loader.load(path, "cpu", kind=loader.SEGMENTER_KIND)
    assert loaded.kind == "em-segmenter" and loaded.meta["segmenter"]["width"] == 2
    assert metrics.segment(loaded.model, np.zeros((1, 10, 13), np.uint8)).shape == (1, 3, 10, 13)
    with pytest.raises(checkpoints.CheckpointError, match="an EM segmenter .* needs an EM model"):
        loader.load(path, "cpu", kind=loader.EM_KIND)

    tensors, meta = checkpoints.load(path)
    for damage, says in (({"segmenter": {**meta["segmenter"], "width": 10**6}}, "'width' is 1000000"),
                         ({"segmenter": {"arch": "unet"}}, "must describe a 'segmenter-unet'")):
        bad = checkpoints.save(tmp_path / "bad.safetensors", tensors, {**meta, **damage})
        with pytest.raises(checkpoints.CheckpointError, match=says):
            loader.load(bad, "cpu", kind=loader.SEGMENTER_KIND)
    nan = {**tensors, "head.bias": torch.full_like(tensors["head.bias"], float("nan"))}
    with pytest.raises(checkpoints.CheckpointError, match="NaN"):
        loader.load(checkpoints.save(tmp_path / "nan.safetensors", nan, meta), "cpu", kind=loader.SEGMENTER_KIND)


def test_shipped_segmenter_segments_a_real_validation_crop(sections):
    from napari_biogans.models.segmenter_file import load_segmenter

    images, labels = sections
    model, card = load_segmenter(SHIPPED_SEGMENTER)
    scores = metrics.segmentation_scores(model, images[2:], labels[2:])  # a 256² crop of section 10
    assert scores["mean_iu"] > 0.7 and card["validation"]["mean_iu"] >= 0.80


def test_spoiled_labels_are_what_they_say(sections):
    from napari_biogans.evaluation import em_calibration as calibration

    _, labels = sections
    membrane = (labels == em.MEMBRANE).sum()
    shuffled = calibration.spoil_labels(labels, "shuffled")
    assert np.array_equal(np.sort(shuffled, axis=None), np.sort(labels, axis=None))  # same pixels, moved
    assert (calibration.spoil_labels(labels, "eroded") == em.MEMBRANE).sum() < membrane
    assert (calibration.spoil_labels(labels, "dilated") == em.MEMBRANE).sum() > membrane
    disc = cell_maps(1, seed=0)
    mito = (disc == em.MITOCHONDRIA).sum()
    grown = [(calibration.spoil_labels(disc, "dilated", radius=r) == em.MITOCHONDRIA).sum() for r in (None, 1)]
    assert grown[0] > grown[1] > mito  # by DILATE_RADIUS px by default
    crops = calibration.budget_sample(labels, 3, 100)
    assert crops.shape == (3, 100, 100) and set(np.unique(crops)) <= {0, 1, 2}


def cell_maps(n, seed, side=128):
    """Synthetic label maps: nine closed cells behind 6 px membranes (2 px of erosion thins them, does not open
    them), each holding one disc of mitochondria of random radius 4-10 px."""
    rng = np.random.default_rng(seed)
    maps = np.zeros((n, side, side), np.uint8)
    yy, xx = np.mgrid[:side, :side]
    for k in range(n):
        for a in (0, 40, 80, 122):
            maps[k, a:a + 6, :] = maps[k, :, a:a + 6] = em.MEMBRANE
        for cy in (23, 63, 103):
            for cx in (23, 63, 103):
                r = rng.uniform(4, 10)
                maps[k][(yy - cy - rng.integers(-4, 5)) ** 2 + (xx - cx) ** 2 <= r * r] = em.MITOCHONDRIA
    return maps


def test_statistics_calibration_passes_real_against_itself_and_sees_every_defect():
    from napari_biogans.evaluation import em_calibration as calibration

    labels = cell_maps(4, seed=0)
    reference = metrics.global_statistics(labels)
    found = calibration.calibrate_statistics(reference, labels)  # real vs real: the same maps, χ² 0
    assert set(found) == set(metrics.TESTED_STATISTICS)  # mitochondria per cell is described, never tested
    dilated = f"dilated {calibration.DILATE_RADIUS} px"
    assert set(found["mito_area"]["controls"]) == {"real vs real", "shuffled", f"eroded {calibration.ERODE_RADIUS} px",
                                                   dilated}
    for key, row in found.items():
        assert row["controls"]["real vs real"] == {"chi2": 0.0, "passed": True}
        assert row["trust"]["trusted"], (key, row["trust"]["reason"])
    assert found["mito_area"]["controls"][dilated]["chi2"] > 0.3  # discs of 4-10 px grown by 4 px

    # one map of nine mitochondria against 36: its χ² is noise, the verdict says so
    small = calibration.calibrate_statistics(reference, cell_maps(1, seed=1))
    assert not small["mito_area"]["trust"]["trusted"] and "too small" in small["mito_area"]["trust"]["reason"]
    assert small["cell_area"]["trust"]["trusted"]  # the cells are all alike: any sample tells them apart


def test_c2st_and_segmentation_verdicts():
    from napari_biogans.evaluation import em_calibration as calibration

    sees = calibration.c2st_trust(0.01, {1.0: 0.3, 2.0: 0.9})
    assert sees["trust"]["trusted"] and sees["trust"]["status"] == "calibrated" and sees["trust"]["needed"] == ""
    blind = calibration.c2st_trust(0.01, {1.0: 0.02, 2.0: 0.9})
    assert not blind["trust"]["trusted"] and "blur σ=1" in blind["trust"]["reason"] and blind["trust"]["needed"]
    assert not calibration.c2st_trust(0.3, {1.0: 0.9, 2.0: 0.9})["trust"]["trusted"]  # real vs real must read 0
    assert calibration.segmentation_trust(0.85, "shipped")["trusted"]
    assert not calibration.segmentation_trust(0.54, "trained")["trusted"]
