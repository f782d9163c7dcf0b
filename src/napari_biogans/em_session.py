"""The Qt-free work behind Paint EM: a cached EM model, sampling a label map, rendering painted labels
tile by tile, label edits and loading real VNC labels. Each job is a generator of the one progress
protocol (:mod:`napari_biogans.jobs`) that yields its stage and returns its result, so the widget
starts it with ``_widgets.workers.start_job`` like every other job."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .data import em
from .jobs import Job, Update
from .models.loader import load_em_model_cached

EDITS = {
    "remove membrane fragments": "remove_membrane_fragments",
    "convex mitochondria": "convex_mitochondria",
    "remove small mitochondria": "remove_small_mitochondria",
}

def tile_geometry(tile: int, factor: int) -> tuple[int, int]:
    """The tile side nearest ``tile`` that a generator of ``factor`` accepts, and an overlap of about a
    quarter of it (at least one factor, at most half the tile)."""
    tile = max(factor, round(tile / factor) * factor)
    overlap = min(max(factor, tile // 4 // factor * factor), tile // 2 // factor * factor)
    return tile, overlap


def check_codes(labels: np.ndarray) -> np.ndarray:
    """A 2-D map of codes 0/1/2 as uint8, or a ValueError that says what is wrong."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"Paint EM works on 2-D label maps; this one has shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > em.MITOCHONDRIA):
        bad = np.setdiff1d(np.unique(labels), list(em.LABEL_NAMES))
        raise ValueError(f"label values {bad[:5].tolist()} are not codes 0 = cytoplasm, 1 = membrane, "
                         "2 = mitochondria")
    return labels.astype(np.uint8, copy=False)


def sample_job(path, device, height: int, width: int, seed: int) -> Job:
    """Returns (label map, the model's metadata)."""
    yield Update(0, 1, "sampling")
    model = load_em_model_cached(path, device)
    return model.sample_labels(height, width, seed), model.meta


def render_job(renderer, path, device, tile: int, noise_seed: int, labels) -> Job:
    """Returns (renderer, image, tiles rendered, tiles in all, seconds); ``renderer`` None builds one."""
    from .rendering import TileGrid, TiledRenderer

    yield Update(0, 1, "rendering")
    labels = check_codes(labels)
    if renderer is None:
        model = load_em_model_cached(path, device)
        if model.image_generator is None:
            raise ValueError(f"{Path(path).name} is a joint model: it has no image generator to render painted labels")
        tile, overlap = tile_geometry(tile, model.image_generator.factor)
        renderer = TiledRenderer(model.image_generator, tile, overlap, noise_seed, model.device)
    t0 = time.perf_counter()
    image, n = renderer.update(labels)
    total = len(TileGrid(labels.shape, renderer.tile, renderer.overlap, renderer.generator.factor))
    return renderer, image, n, total, time.perf_counter() - t0


def edit_job(name: str, labels, **kwargs) -> Job:
    """Run a label-editing function; returns the changed pixels' indices and their new values."""
    from .data import label_editing

    yield Update(0, 1, name)
    labels = check_codes(labels)
    edited = getattr(label_editing, EDITS[name])(labels, **kwargs)
    changed = np.nonzero(edited != labels)
    return changed, edited[changed]


def vnc_sample_job() -> Job:
    """The shipped VNC crop as layer tuples."""
    from ._io import vnc_sample

    yield Update(0, 1, "loading")
    return vnc_sample()


def vnc_path_job(path, section: int) -> Job:
    """Layer tuples from a VNC stack folder (raw section + labels) or a label map file (labels only)."""
    yield Update(0, 1, "loading")
    path = Path(path)
    if path.is_dir():
        found = em.read_section(path, section)
        if found.labels is None:
            raise em.EMFormatError(f"{path}: section {section:02d} has no labels (no membranes/ folder)")
        meta = {"source": f"{path} section {section:02d}"}
        return [(found.image, {"name": f"VNC {found.name}", "metadata": meta}, "image"),
                (found.labels, {"name": f"VNC {found.name} labels", "opacity": 0.5, "metadata": meta}, "labels")]
    labels = em.read_label_map(path)
    return [(labels, {"name": f"{path.stem} labels", "metadata": {"source": str(path)}}, "labels")]
