"""The one model loader and cache, for the CLI and the widgets alike.

:func:`load` takes whatever names a model (a catalogue name, a ``.safetensors`` file or a training
run's folder, :func:`napari_biogans.checkpoints.resolve_model`), checks its SHA-256 against its
card, refuses a model of the wrong kind with one clear line, and returns it on the device with the
metadata every output records: ``name`` (:func:`~napari_biogans.checkpoints.model_name`),
``sha256`` and ``path``. One model of each kind stays loaded per process (keyed by file version and
device), so a second call is free and switching model or device frees the last one; loading is
thread safe (the widgets' workers share it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .. import checkpoints
from ..devices import resolve_device
from .em_inference import MODEL_KIND as EM_KIND
from .em_inference import load_em_model
from .segmenter import MODEL_KIND as SEGMENTER_KIND
from .segmenter_file import load_segmenter

GENERATOR_KIND = "generator"
KIND_NAMES = {GENERATOR_KIND: "a fluorescence generator", EM_KIND: "an EM model", SEGMENTER_KIND: "an EM segmenter"}
# where a model of each kind is used, for the error that meets a model of the other kind
KIND_USES = {GENERATOR_KIND: "sample, interpolate, evaluate c2st/reconstruct/fid, Generate cells, Cell cycle, "
                             "Diagnostics", EM_KIND: "render-em, evaluate em, Paint EM",
             SEGMENTER_KIND: "evaluate em --segmenter"}


@dataclass(frozen=True)
class LoadedModel:
    """``model``: the generator (``kind`` "generator"), the :class:`~.em_inference.EMModel`
    ("em-generator") or the :class:`~.segmenter.SegmenterUNet` ("em-segmenter"), in eval mode on
    ``device``; ``meta``: its card plus ``name``, ``sha256``, ``path``."""

    model: object
    meta: dict
    device: object  # torch.device
    kind: str


_lock = threading.Lock()
_cache: dict[str, tuple[tuple, LoadedModel]] = {}  # kind -> (file version and device, model)
load_count = 0  # models actually read from disk (tests check that the cache holds)


def check_kind(path, card: dict, kind: str | None) -> str:
    """The card's kind, or a :class:`~napari_biogans.checkpoints.CheckpointError` saying what the file is
    and where it belongs when it is not a model of ``kind`` (any model kind when ``kind`` is None)."""
    found = card.get("kind")
    if found not in KIND_NAMES:
        raise checkpoints.CheckpointError(
            f"{path}: a '{found}' checkpoint, not a model; give the run folder or its "
            + " / ".join(f"{stem}.safetensors" for stem in checkpoints.RUN_FILE_STEMS))
    if kind is not None and found != kind:
        raise checkpoints.CheckpointError(
            f"{path}: {KIND_NAMES[found]} ('{found}'), but this needs {KIND_NAMES[kind]} ('{kind}'); "
            f"use it with {KIND_USES[found]}")
    return found


def load(name_or_path, device="auto", kind: str | None = None) -> LoadedModel:
    """The model ``name_or_path`` names, loaded once per file version and device (see the module)."""
    global load_count
    path = checkpoints.canonical_path(checkpoints.resolve_model(name_or_path))  # a run folder's link stays
    found = check_kind(path, checkpoints.read_card(path), kind)
    torch_device = resolve_device(device) if isinstance(device, str) else device
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, str(torch_device))
    with _lock:
        cached = _cache.get(found)
        if cached is not None and cached[0] == key:
            return cached[1]
        _cache.pop(found, None)  # free the last model of this kind before reading the next
        if found == EM_KIND:
            model = load_em_model(path, torch_device)
            meta = model.meta
        elif found == SEGMENTER_KIND:
            model, meta = load_segmenter(path, torch_device)
        else:
            model, meta = checkpoints.load_generator(path, torch_device)
        meta.setdefault("name", checkpoints.model_name(path))
        meta["sha256"] = checkpoints.checked_sha256(path)
        meta["path"] = str(path)
        loaded = LoadedModel(model, meta, torch_device, found)
        _cache[found] = (key, loaded)
        load_count += 1
        return loaded


def load_generator_cached(path, device: str = "auto"):
    """``(generator, meta, torch.device)`` of a fluorescence model from the core loader's cache;
    ``meta`` holds its ``name``, ``sha256`` and ``path`` as the CLI's does."""
    loaded = load(path, device, kind=GENERATOR_KIND)
    return loaded.model, loaded.meta, loaded.device


def load_em_model_cached(path, device: str = "auto"):
    """The :class:`~napari_biogans.models.em_inference.EMModel` of an EM model from the core loader's
    cache (its ``meta`` holds ``name``, ``sha256`` and ``path``)."""
    return load(path, device, kind=EM_KIND).model


def clear_cache() -> None:
    """Forget every loaded model (the next :func:`load` reads its file again)."""
    with _lock:
        _cache.clear()

