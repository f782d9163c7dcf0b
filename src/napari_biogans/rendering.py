"""Label map -> EM image with the image generator G_x, at any size, in overlapping tiles.

Geometry. Let ``f`` be the generator's factor (64 for the default CRN). The canvas starts at
the image's top-left pixel and is padded at the bottom and right (by reflection) up to the
tile grid; tile origins are multiples of ``tile - overlap``, and ``tile`` and ``overlap`` must
be multiples of ``f``. That keeps every tile's pooling grid and noise cells aligned with the
canvas, so a tile sees exactly the labels and noise a one-shot pass would see there.

Statistics. G_x normalises every feature map by its own spatial statistics (instance norm), so
a tile rendered alone would be normalised by the tile's content and differ from its neighbours
in tone. The renderer instead measures the statistics once, in one pass over the central
``stats_side``² window of the canvas (the whole canvas when smaller), and normalises every
tile with them; edits re-use them. Labels and textures are stationary, so a central window
stands for the canvas.

Context. The CRN's coarse blocks see about ±256 px, more than a tile: a tile still differs from
a one-shot render through what lies beyond its edges. ``context`` (a multiple of ``f``) adds
that many pixels of labels and noise around each tile (cost grows as ((tile + 2·context) /
tile)²); the default 0 keeps a 256² tile interactive on a CPU.

Noise. One noise field for the whole canvas, anchored at the image origin and drawn in blocks
of 16x16 cells, each seeded by ``(seed, block row, block column)``: a cell's noise depends on
its position and the seed only, never on the canvas size, so tiles, one-shot renders and
renders of a grown canvas all agree.

Blending. Each tile's output is weighted by a raised-cosine ramp across the overlaps it shares
with neighbours (flat where it has none). Over an overlap the two ramps sum to 1, so
the composite is a partition of unity and hides what differences remain.

Mode. The generator runs in eval mode and channels-last. The reference never called eval()
(I.5); for the CRN (instance norm, no dropout) both modes compute the same thing, so eval is
the deliberate, deterministic choice. (G_y's eval mode is per-sample normalisation: see
:class:`~napari_biogans.models.em.SampleBatchNorm`.)
"""

from __future__ import annotations

import math

import numpy as np

NOISE_BLOCK = 16  # noise cells per seeded block side


def noise_field(nz: int, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """(nz, rows, cols) float32 N(0, 1) noise; cell (i, j) depends only on ``seed``, i and j."""
    out = np.empty((nz, rows, cols), dtype=np.float32)
    for bi in range(math.ceil(rows / NOISE_BLOCK)):
        for bj in range(math.ceil(cols / NOISE_BLOCK)):
            block = np.random.default_rng([int(seed), bi, bj]).standard_normal((nz, NOISE_BLOCK, NOISE_BLOCK),
                                                                               dtype=np.float32)
            r0, c0 = bi * NOISE_BLOCK, bj * NOISE_BLOCK
            r1, c1 = min(rows, r0 + NOISE_BLOCK), min(cols, c0 + NOISE_BLOCK)
            out[:, r0:r1, c0:c1] = block[:, : r1 - r0, : c1 - c0]
    return out


def labels_to_tensor(labels: np.ndarray) -> np.ndarray:
    """Codes (..., H, W) -> (..., 2, H, W) float32 in {-1, 1}: (membrane, mitochondria)."""
    from .data.em import one_hot

    return one_hot(labels) * 2.0 - 1.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[-1, 1] floats -> uint8 (the inverse of ``uint8 / 127.5 - 1``)."""
    return np.clip(np.rint((image + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size == 0:
        raise ValueError(f"expected a 2-D label map, got shape {labels.shape}")
    return labels


def _pad(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = labels.shape
    return np.pad(labels, ((0, height - h), (0, width - w)), mode="reflect" if min(h, w) > 1 else "edge")


def _run(generator, label_batch: np.ndarray, noise_batch: np.ndarray, device, **kwargs) -> np.ndarray:
    """G_x on code windows (B, h, w) and noise (B, nz, h/f, w/f) -> (B, h, w) float32 in [-1, 1]."""
    import torch

    with torch.inference_mode():
        y = torch.from_numpy(labels_to_tensor(label_batch)).to(device, memory_format=torch.channels_last)
        z = torch.from_numpy(np.ascontiguousarray(noise_batch)).to(device)
        return generator(y, z, **kwargs)[:, 0].float().cpu().numpy()


def _prepare(generator, device):
    """The generator on ``device`` in eval mode and channels-last (about 25 % faster on a CPU)."""
    import torch

    from .devices import resolve_device

    device = resolve_device(device) if isinstance(device, str) else device
    return generator.to(device, memory_format=torch.channels_last).eval(), device


def render(image_generator, labels: np.ndarray, noise_seed: int = 0, device="cpu") -> np.ndarray:
    """One forward pass over the whole map (padded to the generator's factor) -> uint8 (H, W)."""
    labels = _check_labels(labels)
    generator, device = _prepare(image_generator, device)
    f = generator.factor
    h, w = labels.shape
    ch, cw = math.ceil(h / f) * f, math.ceil(w / f) * f
    noise = noise_field(generator.nz, ch // f, cw // f, noise_seed)
    out = _run(generator, _pad(labels, ch, cw)[None], noise[None], device)[0]
    return to_uint8(out[:h, :w])


def _ramp(n: int) -> np.ndarray:
    """Raised-cosine ramp of length n from ~0 to ~1; it and its reverse sum to 1 (sin² + cos²)."""
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)


def _window(tile: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    w = np.ones(tile, dtype=np.float32)
    if overlap:
        if not first:
            w[:overlap] = _ramp(overlap)
        if not last:
            w[-overlap:] = _ramp(overlap)[::-1]
    return w


class TileGrid:
    """Tile origins and blend windows for an (H, W) map; see the module docstring."""

    def __init__(self, shape, tile: int, overlap: int, factor: int):
        if tile % factor or overlap % factor or tile <= 0 or not 0 <= 2 * overlap <= tile:
            raise ValueError(
                f"tile {tile} and overlap {overlap} must be multiples of the generator's factor {factor}, "
                f"with 0 <= overlap <= tile / 2 (e.g. tile {4 * factor}, overlap {factor})"
            )
        self.shape, self.tile, self.overlap = tuple(shape), tile, overlap
        self.stride = tile - overlap
        h, w = self.shape
        self.rows = max(1, math.ceil((h - overlap) / self.stride))
        self.cols = max(1, math.ceil((w - overlap) / self.stride))
        self.canvas = (self.stride * (self.rows - 1) + tile, self.stride * (self.cols - 1) + tile)

    def __len__(self) -> int:
        return self.rows * self.cols

    def origin(self, ty: int, tx: int) -> tuple[int, int]:
        return ty * self.stride, tx * self.stride

    def window(self, ty: int, tx: int) -> np.ndarray:
        wy = _window(self.tile, self.overlap, ty == 0, ty == self.rows - 1)
        wx = _window(self.tile, self.overlap, tx == 0, tx == self.cols - 1)
        return wy[:, None] * wx[None, :]

    def tiles_in(self, y0: int, y1: int, x0: int, x1: int) -> list[tuple[int, int]]:
        """Tiles whose window meets rows [y0, y1) and columns [x0, x1) of the canvas."""
        def span(a, b, n):
            lo = max(0, (a - self.tile) // self.stride + 1)
            return range(lo, min(n - 1, (b - 1) // self.stride) + 1)

        return [(ty, tx) for ty in span(y0, y1, self.rows) for tx in span(x0, x1, self.cols)]


def changed_tiles(old: np.ndarray, new: np.ndarray, tile: int = 256, overlap: int = 64,
                  factor: int = 64) -> list[tuple[int, int]]:
    """Tiles (row, column) whose label window holds a pixel that differs between ``old`` and ``new``.

    The bounding box of the changed mask picks the candidate tiles; each candidate is kept only
    if a changed pixel lies inside it (a diagonal stroke does not re-render the whole box).
    Both maps must have the same shape.
    """
    if old.shape != new.shape:
        raise ValueError(f"label maps differ in shape: {old.shape} and {new.shape}")
    grid = TileGrid(old.shape, tile, overlap, factor)
    changed = np.asarray(old) != np.asarray(new)
    rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
    if rows.size == 0:
        return []
    out = []
    for ty, tx in grid.tiles_in(rows[0], rows[-1] + 1, cols[0], cols[-1] + 1):
        oy, ox = grid.origin(ty, tx)
        if changed[oy : oy + tile, ox : ox + tile].any():
            out.append((ty, tx))
    return out


class TiledRenderer:
    """Renders label maps tile by tile and re-renders only the tiles an edit touched.

    ``render(labels)`` renders everything (measuring the normalisation statistics anew);
    ``update(labels)`` returns ``(image, n_tiles_rendered)`` and renders only the tiles whose
    label window changed since the last call, with the statistics of the last full render
    (everything when the shape changed or nothing was rendered yet). Tile outputs are cached
    as floats and an updated region is recomposed from the cache, so untouched pixels keep
    their values exactly. Not thread-safe: use one renderer per worker.
    """

    def __init__(self, image_generator, tile: int = 256, overlap: int = 64, noise_seed: int = 0, device="cpu",
                 batch: int = 4, context: int = 0, stats_side: int = 512):
        self.generator, self.device = _prepare(image_generator, device)
        f = self.generator.factor
        self.tile, self.overlap, self.batch = int(tile), int(overlap), max(1, int(batch))
        TileGrid((tile, tile), self.tile, self.overlap, f)  # validate early
        if context < 0 or context % f:
            raise ValueError(f"context {context} must be a non-negative multiple of the generator's factor {f}")
        self.context, self.stats_side = int(context), max(f, int(stats_side) // f * f)
        self._seed = int(noise_seed)
        self.reset()

    @property
    def noise_seed(self) -> int:
        return self._seed

    @noise_seed.setter
    def noise_seed(self, seed: int) -> None:
        self._seed = int(seed)
        self.reset()

    def reset(self) -> None:
        """Forget the cache; the next ``update`` renders everything."""
        self._labels = self._grid = self._tiles = self._image = self._noise = self._stats = None

    @property
    def image(self) -> np.ndarray | None:
        """A copy of the last composite (None before the first render)."""
        return None if self._image is None else self._image.copy()

    def changed_tiles(self, old: np.ndarray, new: np.ndarray) -> list[tuple[int, int]]:
        return changed_tiles(old, new, self.tile, self.overlap, self.generator.factor)

    def render(self, labels: np.ndarray) -> np.ndarray:
        self.reset()
        return self.update(labels)[0]

    def update(self, labels: np.ndarray) -> tuple[np.ndarray, int]:
        labels = _check_labels(labels)
        if self._labels is None or self._labels.shape != labels.shape:
            todo = self._start(labels)
        else:
            todo = self.changed_tiles(self._labels, labels)
        if todo:
            self._render_tiles(labels, todo)
        self._labels = labels.copy()
        return self._image.copy(), len(todo)  # a copy: later updates must not change a shown image

    def _start(self, labels: np.ndarray) -> list[tuple[int, int]]:
        """New canvas: noise, caches and statistics; returns the tiles still to render."""
        grid = TileGrid(labels.shape, self.tile, self.overlap, self.generator.factor)
        f = self.generator.factor
        self._grid = grid
        self._noise = noise_field(self.generator.nz, grid.canvas[0] // f, grid.canvas[1] // f, self._seed)
        self._tiles = np.zeros((grid.rows, grid.cols, self.tile, self.tile), dtype=np.float32)
        self._image = np.zeros(labels.shape, dtype=np.uint8)
        canvas = _pad(labels, *grid.canvas)
        (y0, y1), (x0, x1) = (self._stats_span(labels.shape[i], grid.canvas[i]) for i in (0, 1))
        record = []
        noise = self._noise[None, :, y0 // f : y1 // f, x0 // f : x1 // f]
        out = _run(self.generator, canvas[None, y0:y1, x0:x1], noise, self.device, record=record)
        self._stats = record
        if len(grid) == 1 and (y1 - y0, x1 - x0) == grid.canvas:
            self._tiles[0, 0] = out[0]  # the statistics pass was the one tile, with its own statistics
            self._compose([(0, 0)])
            return []
        return [(ty, tx) for ty in range(grid.rows) for tx in range(grid.cols)]

    def _stats_span(self, size: int, canvas: int) -> tuple[int, int]:
        """The statistics window along one axis: ``stats_side`` centred on the image, inside the canvas."""
        side = min(canvas, self.stats_side)
        f = self.generator.factor
        start = min(max(0, (size // 2 - side // 2) // f * f), canvas - side)
        return start, start + side

    def _render_tiles(self, labels: np.ndarray, todo: list[tuple[int, int]]) -> None:
        grid, t, c, f = self._grid, self.tile, self.context, self.generator.factor
        canvas = _pad(labels, *grid.canvas)
        spans = {}
        for ty, tx in todo:  # tiles with their context, clipped to the canvas, grouped by window shape
            oy, ox = grid.origin(ty, tx)
            y0, x0 = max(0, oy - c), max(0, ox - c)
            y1, x1 = min(grid.canvas[0], oy + t + c), min(grid.canvas[1], ox + t + c)
            spans.setdefault((y1 - y0, x1 - x0), []).append((ty, tx, y0, y1, x0, x1))
        for group in spans.values():
            for start in range(0, len(group), self.batch):
                chunk = group[start : start + self.batch]
                windows = np.stack([canvas[y0:y1, x0:x1] for _, _, y0, y1, x0, x1 in chunk])
                noises = np.stack([self._noise[:, y0 // f : y1 // f, x0 // f : x1 // f]
                                   for _, _, y0, y1, x0, x1 in chunk])
                out = _run(self.generator, windows, noises, self.device, statistics=self._stats)
                for (ty, tx, y0, _, x0, _), window_out in zip(chunk, out):
                    oy, ox = grid.origin(ty, tx)
                    self._tiles[ty, tx] = window_out[oy - y0 : oy - y0 + t, ox - x0 : ox - x0 + t]
        self._compose(todo)

    def _compose(self, todo: list[tuple[int, int]]) -> None:
        """Recompute the composite over the windows of ``todo`` from all tiles that cover them."""
        grid, t = self._grid, self.tile
        h, w = self._image.shape
        for ty, tx in todo:
            oy, ox = grid.origin(ty, tx)
            if oy >= h or ox >= w:
                continue
            y1, x1 = min(oy + t, h), min(ox + t, w)
            acc = np.zeros((y1 - oy, x1 - ox), dtype=np.float32)
            for ny, nx in grid.tiles_in(oy, y1, ox, x1):
                py, px = grid.origin(ny, nx)
                # the neighbour's window meets this region in rows [a0, a1) and columns [b0, b1)
                a0, a1 = max(py, oy), min(py + t, y1)
                b0, b1 = max(px, ox), min(px + t, x1)
                weights = grid.window(ny, nx)[a0 - py : a1 - py, b0 - px : b1 - px]
                tile = self._tiles[ny, nx, a0 - py : a1 - py, b0 - px : b1 - px]
                acc[a0 - oy : a1 - oy, b0 - ox : b1 - ox] += weights * tile
            self._image[oy:y1, ox:x1] = to_uint8(acc)


def render_tiled(image_generator, labels: np.ndarray, tile: int = 256, overlap: int = 64, noise_seed: int = 0,
                 device="cpu", batch: int = 4, context: int = 0, stats_side: int = 512) -> np.ndarray:
    """Render a label map of any size in overlapping, blended tiles -> uint8 (H, W)."""
    return TiledRenderer(image_generator, tile, overlap, noise_seed, device, batch, context, stats_side).render(labels)
