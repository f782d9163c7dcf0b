"""A trainer's preview as one RGB picture (the Train widget's preview layer, the screenshots)."""

from __future__ import annotations

import numpy as np


def preview_montage(preview: np.ndarray) -> np.ndarray:
    """Trainer preview (n, C, 2, H, W) in [-1, 1] -> RGB grid: one row per code, one column per protein."""
    from ..data.lin import to_uint8
    from ..data.montage import make_montage

    n, c, _, h, w = preview.shape
    cells = to_uint8(preview).reshape(n * c, 2, h, w)
    return make_montage(cells, ncols=c if c > 1 else min(n, 4))


def em_preview_pair(preview, gap: int = 4) -> np.ndarray:
    """EM trainer preview -> RGB: the generated label map (napari's label colours) beside its image."""
    from ..data.em import LABEL_COLORS

    colors = np.zeros((3, 3), dtype=np.uint8)  # cytoplasm stays black
    for code, rgba in LABEL_COLORS.items():
        if code:
            colors[code] = np.round(np.asarray(rgba[:3]) * 255)
    labels = colors[preview.labels]
    image = np.repeat(preview.image[..., None], 3, axis=-1)
    h, w = preview.labels.shape
    out = np.zeros((h, 2 * w + gap, 3), dtype=np.uint8)
    out[:, :w], out[:, w + gap :] = labels, image
    return out


def preview_image(preview) -> np.ndarray:
    """Either trainer's preview as RGB (H, W, 3) uint8."""
    return preview_montage(preview) if isinstance(preview, np.ndarray) else em_preview_pair(preview)


def preview_layout(preview) -> str:
    """What the picture's parts are, for the layer's metadata."""
    if isinstance(preview, np.ndarray):
        return "rows: fixed codes; columns: proteins"
    return "left: generated label map (membrane blue, mitochondria orange); right: its EM image"
