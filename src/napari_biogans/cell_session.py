"""The Qt-free work behind Generate cells and Cell cycle: sampling cells, interpolating latent codes
frame chunk by frame chunk, and writing the composite as TIFF or GIF. Each job is a generator of
the one progress protocol (:mod:`napari_biogans.jobs`); the widgets start them with
``_widgets.workers.start_job`` and cancel them at their next yield.

``load(path, device) -> (generator, meta, torch.device)`` is the caller's cached model loader (the
widgets share one cache, so a model is read from disk once for all of them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .jobs import Job, Update

CHUNK = 8  # interpolation frames rendered per update

_length_vectors: dict[tuple, np.ndarray] = {}  # (weights sha256, device) -> "long minus short" code vector
_cycles: dict[tuple, np.ndarray] = {}  # (weights sha256, device, seed) -> a cell cycle's three anchor codes


def sample_job(load, path, device, n: int, seed: int, red_seed, proteins, longer: float = 0.0) -> Job:
    """Load (cached) and sample ``n`` cells; returns (Samples, meta, device, seconds)."""
    from .sampling import sample

    yield Update(0, 3, "loading model")
    generator, meta, torch_device = load(path, device)
    attribute = None
    if longer:
        key = (meta["sha256"], str(torch_device))
        if key not in _length_vectors:
            from .evaluation.profiling import length_attribute

            yield Update(1, 3, "measuring 512 generated cells for the length vector")
            _length_vectors[key] = length_attribute(generator)["vector"]
        attribute = ("long minus short", _length_vectors[key], longer)
    yield Update(2, 3, f"sampling {n} cells on {torch_device}")
    t0 = time.perf_counter()
    samples = sample(generator, meta, n=n, seed=seed, proteins=proteins, red_seed=red_seed, attribute=attribute)
    return samples, meta, torch_device, time.perf_counter() - t0


@dataclass(frozen=True)
class CycleStart:
    """The first update of an interpolation: what the frames will be."""

    channel_names: list
    shape: tuple  # (frames, channels, H, W)
    meta: dict
    codes: np.ndarray
    anchors: np.ndarray
    device: str


@dataclass(frozen=True)
class Frames:
    start: int
    chunk: np.ndarray  # (n, channels, H, W) uint8


def interpolate_job(load, path, device, anchors, n_anchors: int, seed: int, frames: int, method: str,
                    red_only: bool, proteins, cycle: bool = False) -> Job:
    """Frames between anchor codes (given; with ``cycle`` a short, a grown and a long cell picked from codes
    drawn with ``seed``; else ``n_anchors`` drawn with ``seed``): a :class:`CycleStart` update, then a
    :class:`Frames` update per chunk; returns (red lengths, Spearman ρ)."""
    from .data.lin import to_uint8
    from .evaluation.interpolation import cycle_anchors, interpolate_codes, monotonicity, red_lengths
    from .sampling import channel_names, latent_codes, pairs_to_channels, render

    generator, meta, torch_device = load(path, device)
    if anchors is None and cycle:
        key = (meta.get("sha256"), str(torch_device), seed)
        if key not in _cycles or key[0] is None:  # measured once per model and seed: a rerun starts at once
            yield Update(0, frames, "measuring 512 cells for the cycle's anchors")
            _cycles[key] = cycle_anchors(generator, seed)
        anchors = _cycles[key]
    elif anchors is None:
        anchors = latent_codes(n_anchors, generator.nz, generator.nz_red, seed)
    anchors = np.asarray(anchors, np.float32)
    if anchors.shape[1] != generator.nz:
        raise ValueError(f"the anchor codes have {anchors.shape[1]} numbers, the model expects {generator.nz}")
    if red_only and not generator.nz_red:
        raise ValueError(f"{meta.get('name')} has no separate red code ({generator.config.get('arch')}); "
                         "choose 'greens free'")
    codes = interpolate_codes(anchors, frames, method, red_only, generator.nz_red)
    class_names = meta["class_names"]
    proteins = proteins or class_names
    names = channel_names(class_names, proteins, generator.shares_red)
    h, w = generator.image_size
    yield Update(0, frames, "rendering", CycleStart(names, (frames, len(names), h, w), meta, codes, anchors,
                                                    str(torch_device)))
    reds = []
    for start in range(0, frames, CHUNK):
        pairs = render(generator, codes[start : start + CHUNK])
        channels, _ = pairs_to_channels(pairs, class_names, proteins, generator.shares_red)
        chunk = to_uint8(channels)
        reds.append(chunk[:, 0])
        yield Update(start + len(chunk), frames, "rendering", Frames(start, chunk))
    lengths = red_lengths(np.concatenate(reds))
    return lengths, monotonicity(lengths)


def composite(channels, colormaps, limits) -> np.ndarray:
    """Additive RGB of ``(T, H, W)`` channels through napari-style colormaps (``.map(values) -> RGBA``)
    -> ``(T, H, W, 3)`` uint8."""
    out = None
    for data, cmap, (lo, hi) in zip(channels, colormaps, limits):
        norm = np.clip((np.asarray(data, np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)
        rgba = np.asarray(cmap.map(norm.ravel()), np.float32).reshape(*norm.shape, 4)
        rgb = rgba[..., :3] * rgba[..., 3:]
        out = rgb if out is None else out + rgb
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def export_job(path, channels, colormaps, limits, kind: str, zoom: int, fps: int) -> Job:
    """Write the composite as an RGB OME-TIFF movie or an animated GIF (atomically); returns the path."""
    yield Update(0, 1, f"writing {kind}")
    frames = composite(channels, colormaps, limits)
    path = Path(path)
    if kind == "tiff":  # frames along T, RGB samples
        from . import ome

        return str(ome.write(path, frames, "TYXS", ["composite"], None,
                             {"stack_axis": "frame", "composite": "additive RGB of the cell-cycle layers"}))
    import imageio.v3 as iio

    if zoom > 1:
        frames = frames.repeat(zoom, axis=1).repeat(zoom, axis=2)
    atomic_write(path, lambda tmp: iio.imwrite(tmp, frames, extension=".gif", duration=int(1000 / fps), loop=0))
    return str(path)
