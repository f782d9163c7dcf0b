"""EM reader on real VNC pixels (the fixture crops of tests/fixtures/vnc)."""

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_biogans.data import em

FIXTURE = Path(__file__).parent / "fixtures" / "vnc" / "stack1"


def check_fractions(stack_dir, index):
    section = em.read_section(stack_dir, index)
    membranes = iio.imread(stack_dir / "membranes" / f"{index:02d}.png") > 0
    mito = iio.imread(stack_dir / "mitochondria" / f"{index:02d}.png") > 0
    raw = tifffile.imread(stack_dir / "raw" / f"{index:02d}.tif")
    np.testing.assert_array_equal(section.image, raw)
    # mitochondria win the overlap, so their fraction is exactly the PNG's ...
    assert (section.labels == em.MITOCHONDRIA).mean() == mito.mean()
    # ... and the membrane fraction is the PNG's minus the overlap, which is tiny
    assert (section.labels == em.MEMBRANE).mean() == (membranes & ~mito).mean()
    assert (membranes & mito).mean() < 1e-3
    assert set(np.unique(section.labels)) <= {0, 1, 2}
    return section, membranes, mito


def test_fixture_crop_fractions():
    section, membranes, mito = check_fractions(FIXTURE, 0)
    assert section.image.shape == (256, 256)
    assert 0.05 < membranes.mean() < 0.3 and 0.01 < mito.mean() < 0.2


@pytest.mark.parametrize("index", [1, 10])  # 00 is test_fixture_crop_fractions
def test_every_fixture_section_fractions_equal_the_pngs(index):
    """Each in-repo section, training and validation, reads to the label fractions of its own masks."""
    section, membranes, mito = check_fractions(FIXTURE, index)
    assert section.image.shape == membranes.shape == mito.shape == (256, 256)
    assert (section.labels == em.MEMBRANE).any() and (section.labels == em.MITOCHONDRIA).any()


def test_sections_and_splits():
    assert em.section_indices(FIXTURE) == [0, 1, 10]
    images, labels = em.read_sections(FIXTURE, [0, 1])
    assert images.shape == labels.shape == (2, 256, 256)
    assert em.TRAIN_SECTIONS == tuple(range(10)) and em.VALIDATION_SECTIONS == tuple(range(10, 20))


def test_one_hot_round_trip():
    _, labels = em.read_sections(FIXTURE, [0])
    channels = em.one_hot(labels)
    assert channels.shape == (1, 2, 256, 256) and channels.dtype == np.float32
    assert (channels.sum(axis=1) <= 1).all()
    np.testing.assert_array_equal(em.from_one_hot(channels), labels)


def test_random_crops_are_real_and_augmented():
    images, labels = em.read_sections(FIXTURE, [0, 1])
    rng = np.random.default_rng(0)
    crops, crop_labels = em.random_crops(images, labels, 64, 8, rng, augment=False)
    assert crops.shape == crop_labels.shape == (8, 64, 64)
    # each unaugmented crop is found verbatim in one of the sections, with its labels
    for crop, lab in zip(crops, crop_labels):
        hits = [
            (s, y, x)
            for s in range(2)
            for y in range(256 - 63)
            for x in range(0, 256 - 63)
            if images[s, y, x] == crop[0, 0] and np.array_equal(images[s, y : y + 64, x : x + 64], crop)
        ]
        assert hits
        s, y, x = hits[0]
        np.testing.assert_array_equal(labels[s, y : y + 64, x : x + 64], lab)
    aug, aug_labels = em.random_crops(images, labels, 64, 32, np.random.default_rng(1))
    # augmentation keeps image and labels aligned: membranes stay darker than cytoplasm
    assert aug[aug_labels == em.MEMBRANE].mean() < aug[aug_labels == em.CYTOPLASM].mean()
    with pytest.raises(em.EMFormatError, match="larger than the sections"):
        em.random_crops(images, labels, 512, 1, rng)


def test_label_map_files(tmp_path):
    labels = np.array([[0, 1], [2, 1]], np.uint8)
    for suffix in (".png", ".tif"):
        path = em.write_label_map(labels, tmp_path / f"labels{suffix}")
        np.testing.assert_array_equal(em.read_label_map(path), labels)
    iio.imwrite(tmp_path / "bad.png", np.array([[0, 7]], np.uint8))
    with pytest.raises(em.EMFormatError, match=r"bad.png: label values \[7\]"):
        em.read_label_map(tmp_path / "bad.png")
    iio.imwrite(tmp_path / "rgb.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(em.EMFormatError, match="rgb.png: expected a single-channel"):
        em.read_label_map(tmp_path / "rgb.png")


def test_missing_and_mismatched_sections(tmp_path):
    with pytest.raises(em.EMFormatError, match="raw/ sub-folder"):
        em.section_indices(tmp_path)
    (tmp_path / "raw").mkdir()
    (tmp_path / "membranes").mkdir()
    tifffile.imwrite(tmp_path / "raw" / "00.tif", np.zeros((8, 8), np.uint8))
    iio.imwrite(tmp_path / "membranes" / "00.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(em.EMFormatError, match="section 03"):
        em.read_section(tmp_path, 3)
    with pytest.raises(em.EMFormatError, match=r"membranes/00.png: shape \(4, 4\) does not match"):
        em.read_section(tmp_path, 0)
    (tmp_path / "raw" / "01.tif").write_bytes(b"II*\0garbage")
    with pytest.raises(em.EMFormatError, match="01.tif: (not a readable image|expected a 2-D uint8 section)"):
        em.read_section(tmp_path, 1)


def test_unlabelled_stack(tmp_path):
    (tmp_path / "raw").mkdir()
    tifffile.imwrite(tmp_path / "raw" / "00.tif", np.full((8, 8), 3, np.uint8))
    section = em.read_section(tmp_path, 0)
    assert section.labels is None and section.image[0, 0] == 3


def test_label_decoding_smooths_a_ragged_outline_and_keeps_a_clean_one():
    """G_y's output is thresholded after a 1-px Gaussian: a pixel-scale ripple on an outline goes, a smooth
    disc (as in real label maps) stays as it was."""
    import torch

    from napari_biogans.evaluation.em_metrics import label_statistics
    from napari_biogans.models.em_inference import _codes

    yy, xx = np.mgrid[:128, :128]
    disc = np.hypot(yy - 64, xx - 64) < 30
    wall = (np.minimum(np.minimum(yy, 127 - yy), np.minimum(xx, 127 - xx)) // 4) == 1  # a closed cell around it
    clean = np.stack([np.where(wall, 1.0, -1.0), np.where(disc, 1.0, -1.0)]).astype(np.float32)
    decoded = _codes(torch.from_numpy(clean)[None])[0]
    assert np.mean((decoded == em.MITOCHONDRIA) != disc) < 1e-3
    ragged = clean.copy()  # a soft edge with a pixel-scale ripple, as G_y's up-sampled output has
    ripple = 0.8 * np.random.default_rng(0).uniform(-1, 1, disc.shape)
    ragged[1] = np.tanh((30 - np.hypot(yy - 64, xx - 64)) / 1.5) + ripple
    raw = em.labels_from_masks(ragged[0] > 0, ragged[1] > 0)
    roundness = []
    for labels in (raw, _codes(torch.from_numpy(ragged)[None])[0]):  # of the largest mitochondrion
        stats = label_statistics(labels)
        roundness.append(stats["mito_roundness"][stats["mito_area"].argmax()])
    assert roundness[0] < 0.65 < 0.85 < roundness[1]
