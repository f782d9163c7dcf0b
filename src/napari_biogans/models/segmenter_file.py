"""The shipped EM segmenter's model file: float16 weights and the config in one safetensors file, kind
``em-segmenter``, checked by :mod:`napari_biogans.model_checks` before anything is built."""

from __future__ import annotations

from .. import checkpoints
from ..model_checks import check_model_file
from .architectures import build_em_module
from .segmenter import MODEL_KIND, SegmenterUNet

__all__ = ["load_segmenter", "save_segmenter"]


def load_segmenter(path, device="cpu") -> tuple[SegmenterUNet, dict]:
    """``(model in eval mode on device, metadata)`` of a segmenter file; one clear
    :class:`~napari_biogans.checkpoints.CheckpointError` naming the file when it is not one."""
    tensors, meta = checkpoints.load(path, kind=MODEL_KIND)
    check_model_file(path, meta, tensors)  # bounds, shapes and finite weights before anything is built
    model = build_em_module(meta["segmenter"])
    checkpoints.load_module_state(model, tensors, path)
    return model.to(device).eval(), meta


def save_segmenter(path, model: SegmenterUNet, meta: dict, half: bool = True):
    """A shipped segmenter file: weights (float16 when ``half``; batch-norm counters stay integers)
    and ``meta`` with the kind and the config."""
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    meta = {"kind": MODEL_KIND, "segmenter": model.config, "normalisation": "uint8 / 127.5 - 1 ([-1, 1])",
            "dtype": "float16" if half else "float32", "versions": checkpoints.library_versions(), **meta}
    return checkpoints.save(path, state, meta)
