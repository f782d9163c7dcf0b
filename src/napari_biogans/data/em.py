"""Electron-microscopy sections and label maps (the Drosophila VNC ssTEM layout of Gerhard et al.).

A stack folder holds ``raw/NN.tif`` (uint8 sections), ``membranes/NN.png`` (boolean, True =
membrane) and ``mitochondria/NN.png`` (uint8, anti-aliased, > 0 = mitochondria). Sections
without label folders (``stack2``) read as images only.

Label codes, used everywhere in the product (files, Labels layers, CLI)::

    0 = cytoplasm / background, 1 = membrane, 2 = mitochondria

Where the membrane and mitochondria masks overlap (44 of 1,048,576 pixels on section 00), the
mitochondrion wins: the organelle's outline is what the label generator must learn to close.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import guards

CYTOPLASM, MEMBRANE, MITOCHONDRIA = 0, 1, 2
LABEL_NAMES = {CYTOPLASM: "cytoplasm", MEMBRANE: "membrane", MITOCHONDRIA: "mitochondria"}
# Colours for napari Labels layers: membranes dark blue-grey, mitochondria orange.
LABEL_COLORS = {CYTOPLASM: (0, 0, 0, 0), MEMBRANE: (0.2, 0.55, 1.0, 1.0), MITOCHONDRIA: (1.0, 0.55, 0.1, 1.0)}
TRAIN_SECTIONS = tuple(range(0, 10))
VALIDATION_SECTIONS = tuple(range(10, 20))
VNC_PIXEL_SIZE_UM = 0.0046  # the VNC ssTEM sections' 4.6 nm pixels (Gerhard et al. 2013)
SECTION_FILE = re.compile(r"^(\d+)\.(tif|tiff|png)$", re.IGNORECASE)


class EMFormatError(ValueError):
    """Input that is not a valid EM section or label map; the message names the file."""


@dataclass
class EMSection:
    image: np.ndarray  # (H, W) uint8
    labels: np.ndarray | None  # (H, W) uint8 codes 0/1/2, None for unlabelled sections
    name: str


def _read_image(path: Path) -> np.ndarray:
    """A 2-D image (or a single-page colour image) after its size and the memory it needs are checked."""
    import imageio.v3 as iio
    import tifffile
    from PIL import Image

    guards.regular_file(path, EMFormatError)
    shown = guards.display_name(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tif:
                if not tif.series:
                    raise EMFormatError(f"{shown}: not a readable image (a TIFF without images)")
                series = tif.series[0]
                _check_size(series.shape, series.dtype.itemsize, shown)
                return series.asarray()
        with Image.open(path) as image:  # reads the header, then checks every chunk's CRC
            width, height = image.size
            _check_size((height, width, len(image.getbands())), 2, shown)
            if image.format == "PNG":
                image.verify()
                guards.png_end(path, EMFormatError)
        return iio.imread(path)
    except EMFormatError:
        raise
    except Exception as err:  # the image libraries raise many types for damaged files
        raise EMFormatError(f"{shown}: not a readable image ({err})") from None


def _check_size(shape, itemsize: int, shown: str) -> None:
    if len(shape) not in (2, 3):
        raise EMFormatError(f"{shown}: expected a 2-D image, got shape {tuple(shape)}")
    for side in shape[:2]:
        guards.check_side(side, "a side", shown, EMFormatError)
    guards.check_allocation(int(np.prod(shape)) * itemsize, f"an image of {tuple(shape)}", shown, EMFormatError)


def _mask(path: Path, shape) -> np.ndarray:
    """A membrane or mitochondria mask: 2-D, the raw section's shape, bool or non-negative integers."""
    mask = _read_image(path)
    shown = guards.display_name(path)
    if mask.ndim != 2 or mask.dtype.kind not in "biu" or (mask.dtype.kind == "i" and mask.size and mask.min() < 0):
        raise EMFormatError(
            f"{shown}: expected a 2-D mask of 0 and non-zero integers, got {mask.shape} {mask.dtype}"
            + (" with negative values" if mask.dtype.kind == "i" else "")
        )
    if mask.shape != tuple(shape):
        raise EMFormatError(f"{shown}: shape {mask.shape} does not match the raw section's {tuple(shape)}")
    return mask


def _find(folder: Path, index: int) -> Path:
    for ext in ("tif", "png", "tiff"):
        candidate = folder / f"{index:02d}.{ext}"
        if candidate.is_file():
            return candidate
    raise EMFormatError(
        f"{guards.display_name(folder)}: no section {index:02d} (expected {index:02d}.tif or {index:02d}.png)"
    )


def section_indices(stack_dir) -> list[int]:
    """The section numbers present in ``stack_dir/raw``."""
    raw = Path(stack_dir) / "raw"
    if not raw.is_dir():
        raise EMFormatError(f"{guards.display_name(stack_dir)}: expected a VNC stack folder with a raw/ sub-folder")
    try:
        found = sorted({int(m.group(1)) for f in raw.iterdir() if (m := SECTION_FILE.match(f.name))})
    except PermissionError:
        raise EMFormatError(f"{guards.display_name(raw)}: permission denied") from None
    if not found:
        raise EMFormatError(f"{guards.display_name(raw)}: no NN.tif sections")
    return found


def labels_from_masks(membranes: np.ndarray, mitochondria: np.ndarray) -> np.ndarray:
    """Merge the two masks into one code map; mitochondria win where both are set."""
    labels = np.zeros(membranes.shape, dtype=np.uint8)
    labels[membranes > 0] = MEMBRANE
    labels[mitochondria > 0] = MITOCHONDRIA
    return labels


def read_section(stack_dir, index: int) -> EMSection:
    """Section ``index`` of a VNC stack folder, with labels when the mask folders exist."""
    stack_dir = Path(stack_dir)
    raw_path = _find(stack_dir / "raw", index)
    image = _read_image(raw_path)
    if image.ndim != 2 or image.dtype != np.uint8 or image.size == 0:
        raise EMFormatError(
            f"{guards.display_name(raw_path)}: expected a 2-D uint8 section, got {image.shape} {image.dtype}"
        )
    labels = None
    if (stack_dir / "membranes").is_dir():
        membranes = _mask(_find(stack_dir / "membranes", index), image.shape)
        mito_dir = stack_dir / "mitochondria"
        mitochondria = _mask(_find(mito_dir, index), image.shape) if mito_dir.is_dir() else np.zeros_like(image)
        labels = labels_from_masks(membranes, mitochondria)
    return EMSection(image=image, labels=labels, name=f"{guards.display_name(stack_dir.name)}/{index:02d}")


def read_sections(stack_dir, indices=TRAIN_SECTIONS) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (S, H, W) and labels (S, H, W) (None when unlabelled) for the given sections."""
    sections = [read_section(stack_dir, i) for i in indices]
    if not sections:
        raise EMFormatError(f"{guards.display_name(stack_dir)}: no sections chosen")
    for section in sections[1:]:
        if section.image.shape != sections[0].image.shape or (section.labels is None) != (sections[0].labels is None):
            raise EMFormatError(
                f"{guards.display_name(stack_dir)}: section {section.name} is {section.image.shape}"
                f"{'' if section.labels is None else ' with labels'}, unlike {sections[0].name} "
                f"{sections[0].image.shape}{'' if sections[0].labels is None else ' with labels'}"
            )
    images = np.stack([s.image for s in sections])
    labels = None if sections[0].labels is None else np.stack([s.labels for s in sections])
    return images, labels


def one_hot(labels: np.ndarray) -> np.ndarray:
    """Label codes (..., H, W) -> channels (..., 2, H, W) float32 in {0, 1}: membrane, mitochondria."""
    return np.stack([labels == MEMBRANE, labels == MITOCHONDRIA], axis=-3).astype(np.float32)


def from_one_hot(channels: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Channels (..., 2, H, W) (probabilities) -> codes; mitochondria win, as in the reader."""
    membrane = channels[..., 0, :, :] > threshold
    mito = channels[..., 1, :, :] > threshold
    return labels_from_masks(membrane, mito)


def random_crops(
    images: np.ndarray, labels: np.ndarray | None, size: int, n: int, rng: np.random.Generator, augment: bool = True
):
    """``n`` random ``size``² crops from sections (S, H, W), with random flips and 90° turns.

    Returns (images (n, size, size), labels (n, size, size) or None).
    """
    s, h, w = images.shape
    if size > h or size > w:
        raise EMFormatError(f"crop {size} is larger than the sections ({h}x{w})")
    out_img = np.empty((n, size, size), dtype=images.dtype)
    out_lab = None if labels is None else np.empty((n, size, size), dtype=labels.dtype)
    for k in range(n):
        i, y, x = rng.integers(s), rng.integers(h - size + 1), rng.integers(w - size + 1)
        img = images[i, y : y + size, x : x + size]
        lab = None if labels is None else labels[i, y : y + size, x : x + size]
        if augment:
            turns, flip = int(rng.integers(4)), bool(rng.integers(2))
            img = np.rot90(img[:, ::-1] if flip else img, turns)
            if lab is not None:
                lab = np.rot90(lab[:, ::-1] if flip else lab, turns)
        out_img[k] = img
        if lab is not None:
            out_lab[k] = lab
    return out_img, out_lab


def pixel_size_um(meta: dict) -> float | None:
    """The pixel size of what an EM model renders: the VNC's when it learned from VNC sections, else unknown."""
    description = str((meta.get("data") or {}).get("description", ""))
    return VNC_PIXEL_SIZE_UM if description.startswith("VNC") else None


def read_label_map(path) -> np.ndarray:
    """A label map (PNG or TIFF) with codes 0/1/2, as uint8 (H, W)."""
    path = Path(path)
    shown = guards.display_name(path)
    labels = _read_ome_zarr_labels(path) if str(path).rstrip("/\\").lower().endswith(".ome.zarr") \
        else _read_image(path)
    if labels.ndim == 3 and labels.shape[-1] in (3, 4):
        raise EMFormatError(f"{shown}: expected a single-channel label map with codes 0/1/2, got an RGB image")
    if labels.ndim != 2 or labels.size == 0:
        raise EMFormatError(f"{shown}: expected a 2-D label map, got shape {labels.shape}")
    if labels.dtype.kind not in "biuf":
        raise EMFormatError(f"{shown}: expected label codes 0/1/2 as integers, got {labels.dtype} values")
    bad = np.setdiff1d(np.unique(labels), list(LABEL_NAMES))
    if bad.size:
        raise EMFormatError(
            f"{shown}: label values {bad[:5].tolist()} are not codes 0 = cytoplasm, 1 = membrane, 2 = mitochondria"
        )
    return labels.astype(np.uint8)


def _read_ome_zarr_labels(path: Path) -> np.ndarray:
    """The label map of an OME-Zarr (``render-em --out x.ome.zarr`` keeps it under labels/), else its image."""
    from .. import ome

    try:
        labels = ome.read_labels(path)
        return ome.read(path).data if labels is None else labels
    except ome.OmeError as err:
        raise EMFormatError(str(err)) from None


def write_label_map(labels: np.ndarray, path) -> Path:
    import imageio.v3 as iio
    import tifffile

    from ..atomic import atomic_write

    path = Path(path)
    codes = labels.astype(np.uint8)
    if path.suffix.lower() in (".tif", ".tiff"):
        return atomic_write(path, lambda tmp: tifffile.imwrite(tmp, codes))
    return atomic_write(path, lambda tmp: iio.imwrite(tmp, codes))
