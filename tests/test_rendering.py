"""Tiled rendering of real VNC label maps: agreement with one pass, no seams, any size, and
re-rendering only the tiles an edit touched."""

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_biogans import rendering
from napari_biogans.data import em
from napari_biogans.models.em import CascadeGenerator

FIXTURE = Path(__file__).parent / "fixtures" / "vnc" / "stack1"
# a tiny G_x with 3 blocks (factor 8) keeps many tiles cheap: tile 64, overlap 16, stride 48
TILE, OVERLAP = 64, 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def labels():
    """A 768x768 mosaic of the three real fixture label crops."""
    _, maps = em.read_sections(FIXTURE, [0, 1, 10])
    return np.block([[maps[0], maps[1], maps[2]], [maps[2], maps[0], maps[1]], [maps[1], maps[2], maps[0]]])


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return CascadeGenerator(width=8, n_blocks=3).eval()


class CountingGenerator(torch.nn.Module):
    """Wraps a generator and counts the windows it renders."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.factor, self.nz, self.windows = inner, inner.factor, inner.nz, 0

    def forward(self, labels, z, **kwargs):
        self.windows += labels.shape[0]
        return self.inner(labels, z, **kwargs)


def mean_abs(a, b):
    return float(np.abs(a.astype(np.float64) - b).mean())


def test_noise_depends_on_position_and_seed_only():
    big = rendering.noise_field(8, 40, 33, seed=3)
    np.testing.assert_array_equal(rendering.noise_field(8, 5, 7, seed=3), big[:, :5, :7])
    assert not np.allclose(rendering.noise_field(8, 5, 7, seed=4), big[:, :5, :7])
    assert abs(big.std() - 1) < 0.05


def test_tiled_equals_one_pass_when_the_context_covers_the_receptive_field(labels, generator):
    crop = labels[:304, :496]  # 304 = 16 + 6·48 and 496 = 16 + 10·48: both canvases are the image
    one = rendering.render(generator, crop)
    tiled = rendering.render_tiled(generator, crop, tile=TILE, overlap=OVERLAP, context=32, stats_side=1024)
    assert tiled.dtype == np.uint8 and tiled.shape == crop.shape
    assert np.abs(tiled.astype(int) - one).max() <= 1  # uint8 rounding only
    # without context the tiles still agree far better with one pass than another noise seed does
    plain = rendering.render_tiled(generator, crop, tile=TILE, overlap=OVERLAP, stats_side=1024)
    other_seed = rendering.render(generator, crop, noise_seed=1)
    assert mean_abs(plain, one) < 0.5 * mean_abs(other_seed, one)
    assert one.std() > 3  # not a flat image: the comparison means something


def row_jumps(image, axis):
    """Mean absolute step between neighbouring rows (axis 0) or columns (axis 1)."""
    return np.abs(np.diff(image.astype(np.float64), axis=axis)).mean(1 - axis)


def test_blending_leaves_no_seams(labels, generator):
    crop = labels[:304, :496]
    for overlap in (0, OVERLAP):
        image = rendering.render_tiled(generator, crop, tile=TILE, overlap=overlap)
        stride = TILE - overlap
        for axis in (0, 1):
            jumps = row_jumps(image, axis)
            bands = [k * stride + j for k in range(1, 20) for j in range(max(overlap, 1))
                     if k * stride + j < len(jumps)]
            ratio = jumps[[b - 1 for b in bands]].mean() / np.median(jumps)
            if overlap:
                assert ratio < 1.5, (axis, ratio)  # overlaps look like anywhere else
            else:
                assert ratio > 2.0, (axis, ratio)  # hard tile edges: the measure sees seams


def test_blend_windows_are_a_smooth_partition_of_unity():
    grid = rendering.TileGrid((300, 517), 256, 64, 64)
    total = np.zeros(grid.canvas)
    for ty in range(grid.rows):
        for tx in range(grid.cols):
            oy, ox = grid.origin(ty, tx)
            window = grid.window(ty, tx)
            total[oy : oy + 256, ox : ox + 256] += window
            steps = max(np.abs(np.diff(window, axis=0)).max(), np.abs(np.diff(window, axis=1)).max())
            assert steps < 2 * np.pi / 64  # a raised cosine changes by at most π/(2·overlap) per pixel
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert (grid.rows, grid.cols, grid.canvas) == (2, 3, (448, 640))


def test_any_size(labels, generator):
    crop = labels[:300, :517]
    image = rendering.render_tiled(generator, crop, tile=TILE, overlap=OVERLAP, noise_seed=7)
    assert image.shape == (300, 517) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, rendering.render_tiled(generator, crop, tile=TILE, overlap=OVERLAP,
                                                                noise_seed=7))
    assert mean_abs(image, rendering.render(generator, crop, noise_seed=7)) < 4
    tiny = rendering.render_tiled(generator, labels[:5, :3], tile=TILE, overlap=OVERLAP)
    assert tiny.shape == (5, 3)
    with pytest.raises(ValueError, match="multiples of the generator's factor 8"):
        rendering.render_tiled(generator, crop, tile=60, overlap=OVERLAP)


def test_changed_tiles():
    old = np.zeros((300, 500), np.uint8)
    new = old.copy()
    assert rendering.changed_tiles(old, new, TILE, OVERLAP, 8) == []
    new[100, 100] = 1  # rows 96..111 and columns 96..111 are overlaps: four tiles see it
    assert sorted(rendering.changed_tiles(old, new, TILE, OVERLAP, 8)) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    new = old.copy()
    new[70, 70] = 1  # inside tile (1, 1) only
    assert rendering.changed_tiles(old, new, TILE, OVERLAP, 8) == [(1, 1)]
    new = old.copy()
    for i in range(20, 280):  # a diagonal stroke: its bounding box covers 6x6 tiles, it touches far fewer
        new[i, i] = 2
    touched = rendering.changed_tiles(old, new, TILE, OVERLAP, 8)
    assert len(touched) < 20 and all(abs(ty - tx) <= 1 for ty, tx in touched)


def test_updates_render_only_touched_tiles(labels, generator):
    counting = CountingGenerator(generator)
    renderer = rendering.TiledRenderer(counting, tile=TILE, overlap=OVERLAP)
    base = labels[:300, :400]
    first = renderer.render(base).copy()
    n_tiles = len(renderer._grid)
    assert counting.windows == n_tiles + 1  # the statistics pass, then every tile
    edited = base.copy()
    edited[68:90, 68:90] = em.MITOCHONDRIA  # tile 1 spans 48..111, tile 0 ends at 64, tile 2 starts at 96
    counting.windows = 0
    image, n = renderer.update(edited)
    assert n == 1 and counting.windows == 1
    window = np.zeros(base.shape, bool)
    window[48:112, 48:112] = True
    np.testing.assert_array_equal(image[~window], first[~window])  # untouched pixels keep their values
    assert mean_abs(image[68:90, 68:90], first[68:90, 68:90]) > 5  # the edit shows
    fresh = rendering.TiledRenderer(generator, tile=TILE, overlap=OVERLAP).render(edited)
    assert mean_abs(image, fresh) < 0.5  # the same as rendering the edited map from scratch
    counting.windows = 0
    assert renderer.update(edited)[1] == 0 and counting.windows == 0
    assert renderer.update(edited[:200])[1] == len(renderer._grid)  # a new shape renders everything
