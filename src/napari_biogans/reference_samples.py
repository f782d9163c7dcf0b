"""Seeded reference samples of shipped models: what a test compares a fresh CPU sample with.

A fluorescence model's reference is ``sampling.sample(seed=0, n=2)``; an EM model's is the label
map G_y draws at 128² with seed 0 and G_x's render of it. Float kernels differ a little between
CPUs (vector widths, summation order), so a fresh sample is compared within one grey level and
a handful of label pixels, not bit for bit; the stored arrays carry a SHA-256 in the model's card.
"""

from __future__ import annotations

import hashlib

import numpy as np

SIDE = 128  # EM reference map side (two 64-pixel factors)


def fluorescence_reference(path) -> dict[str, np.ndarray]:
    from . import checkpoints
    from .sampling import sample

    generator, meta = checkpoints.load_generator(path)
    return {"cells": sample(generator, {**meta, "name": "reference"}, 2, seed=0).images}


def em_reference(path) -> dict[str, np.ndarray]:
    from .rendering import render
    from .models.em_inference import load_em_model

    model = load_em_model(path)
    labels = model.sample_labels(SIDE, SIDE, seed=0)
    arrays = {"labels": labels.astype(np.uint8)}
    if model.image_generator is not None:
        arrays["image"] = render(model.image_generator, labels, noise_seed=0)
    return arrays


def segmenter_reference(path) -> dict[str, np.ndarray]:
    """The EM segmenter's classes (argmax) on a seeded, smoothed noise image of SIDE²."""
    from scipy import ndimage as ndi

    from .models.segmenter import segment
    from .models.segmenter_file import load_segmenter

    model, _ = load_segmenter(path)
    noise = ndi.gaussian_filter(np.random.default_rng(0).random((SIDE, SIDE)), 2)
    image = np.rint(255 * (noise - noise.min()) / np.ptp(noise)).astype(np.uint8)
    return {"labels": segment(model, image[None]).argmax(1)[0].astype(np.uint8)}


def reference(path, kind: str) -> dict[str, np.ndarray]:
    if kind == "em-segmenter":
        return segmenter_reference(path)
    return em_reference(path) if kind == "em-generator" else fluorescence_reference(path)


def checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    return digest.hexdigest()
