"""Tile two-channel cells into one RGB picture (red = Bgs4, green = protein, blue = 0)."""

from __future__ import annotations

import numpy as np


def make_montage(images: np.ndarray, ncols: int, pad: int = 2, pad_value: int = 48) -> np.ndarray:
    """``(N, 2, H, W)`` uint8 cells -> ``(rows, cols, 3)`` uint8 RGB grid, row-major, ``ncols`` wide.

    Tiles are separated (and framed) by ``pad`` pixels of grey ``pad_value``: the cells' own
    background is black, so a black gap would hide where one tile ends. Empty slots in the last
    row are left grey.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 2 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, 2, H, W) uint8 cells, got {images.shape} {images.dtype}")
    if len(images) == 0:
        raise ValueError("no cells to tile")
    if ncols < 1 or pad < 0:
        raise ValueError(f"ncols must be >= 1 and pad >= 0, got ncols={ncols}, pad={pad}")
    n, _, h, w = images.shape
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    out = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), pad_value, dtype=np.uint8)
    for k, cell in enumerate(images):
        r, c = divmod(k, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y : y + h, x : x + w, 0] = cell[0]
        out[y : y + h, x : x + w, 1] = cell[1]
        out[y : y + h, x : x + w, 2] = 0
    return out
