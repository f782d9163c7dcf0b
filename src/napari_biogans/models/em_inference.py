"""What running a trained EM model needs, and nothing of its training: the model file's
:class:`EMModel` (G_y, G_x and the file's metadata) and :func:`load_em_model`.

Label maps are codes 0/1/2 (cytoplasm, membrane, mitochondria; :mod:`napari_biogans.data.em`);
images are uint8. The EM trainer imports the helpers it shares with inference from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import checkpoints
from ..data import em
from ..devices import resolve_device
from .architectures import build_em_module

MODEL_KIND = "em-generator"

__all__ = ["MODEL_KIND", "EMModel", "load_em_model"]


# Thresholding G_y's up-sampled output at 0 turns its pixel-scale ripple into ragged outlines (shipped vnc-dsgan:
# mitochondria roundness 0.78 against real 0.855, χ² 0.26); a Gaussian of σ = 1 px before the threshold removes
# the ripple and leaves real label maps' statistics as they were (docs/evaluation.md, "Ragged outlines").
LABEL_SMOOTHING_SIGMA = 1.0


def smooth_label_channels(channels: np.ndarray, sigma: float = LABEL_SMOOTHING_SIGMA) -> np.ndarray:
    """Float channels (..., H, W) blurred over the last two axes by a Gaussian of ``sigma`` px (edges replicated)."""
    from scipy import ndimage as ndi

    sigmas = (0,) * (channels.ndim - 2) + (sigma, sigma)
    return ndi.gaussian_filter(channels, sigmas, mode="nearest", truncate=3.0)


def _codes(labels: torch.Tensor) -> np.ndarray:
    """G_y's label channels in [-1, 1] (B, 2, H, W) at full resolution -> codes (B, H, W): smoothed, then
    channel > 0 is probability > 0.5."""
    return em.from_one_hot((smooth_label_channels(labels.float().cpu().numpy()) + 1) / 2)


def _uint8(image: torch.Tensor) -> np.ndarray:
    return np.clip(np.rint((image.float().cpu().numpy() + 1) * 127.5), 0, 255).astype(np.uint8)


def _given_membranes(generator, membranes: np.ndarray, z: torch.Tensor, downsample: int):
    """Conditional synthesis on a membrane mask (H, W) bool whose sides are multiples of
    ``generator.factor·downsample``: (codes (H, W) with the membranes exactly as given and the
    mitochondria only off them, the mitochondria channel as uint8)."""
    y = torch.from_numpy(membranes[None, None].astype(np.float32) * 2 - 1).to(z.device)
    with torch.no_grad():  # the condition is pooled like the training crops (``EMTrainer._down``)
        mito = generator(F.avg_pool2d(y, downsample), z).float()
        mito = F.interpolate(mito, scale_factor=downsample, mode="bilinear", align_corners=False)[0, 0]
    mito = smooth_label_channels(mito.cpu().numpy())
    return em.labels_from_masks(membranes, (mito > 0) & ~membranes), _uint8(torch.from_numpy(mito))


@dataclass
class EMModel:
    """A trained EM model: ``label_generator`` (G_y; the joint generator for ``joint``, the
    conditional CRN for ``conditional``), ``image_generator`` (G_x, None for ``joint`` and
    ``conditional``) and the file's ``meta``."""

    label_generator: torch.nn.Module
    image_generator: torch.nn.Module | None
    meta: dict
    device: torch.device

    @property
    def label_downsample(self) -> int:
        return int(self.meta["label_downsample"])

    def _noise(self, height: int, width: int, seed: int) -> tuple[torch.Tensor, int, int]:
        """G_y's noise seeded by ``seed`` for at least (height, width) at full resolution:
        (z, padded height, padded width)."""
        g, d = self.label_generator, self.label_downsample
        step = g.factor * d
        h, w = math.ceil(height / step) * step, math.ceil(width / step) * step
        rng = torch.Generator("cpu").manual_seed(int(seed))
        z = torch.randn((1, *g.noise_shape(h // d, w // d)), generator=rng).to(self.device)
        return z, h, w

    def _sample(self, height: int, width: int, seed: int) -> torch.Tensor:
        """G_y output up-sampled to full resolution, cropped to (height, width): (1, C, H, W)."""
        if self.meta["mode"] == "conditional":
            raise ValueError("a conditional model draws mitochondria given membranes: use mitochondria_given_membranes")
        z, _, _ = self._noise(height, width, seed)
        with torch.inference_mode():
            out = F.interpolate(self.label_generator(z).float(), scale_factor=self.label_downsample, mode="bilinear",
                                align_corners=False)
        return out[..., :height, :width]

    def sample_labels(self, height: int, width: int, seed: int = 0) -> np.ndarray:
        """A label map (height, width) of codes 0/1/2 drawn from G_y with noise seeded by ``seed``."""
        return _codes(self._sample(height, width, seed)[:, :2])[0]

    def mitochondria_given_membranes(self, membranes: np.ndarray, seed: int = 0) -> np.ndarray:
        """A label map of codes 0/1/2 for a membrane mask (H, W) (> 0 = membrane) of any size: the
        membranes exactly as given, mitochondria drawn off them with noise seeded by ``seed``."""
        if self.meta["mode"] != "conditional":
            raise ValueError(f"a {self.meta['mode']} model draws whole label maps; mitochondria given membranes "
                             "needs a conditional model")
        membranes = np.asarray(membranes) > 0
        if membranes.ndim != 2 or membranes.size == 0:
            raise ValueError(f"expected a 2-D membrane mask, got shape {membranes.shape}")
        height, width = membranes.shape
        z, h, w = self._noise(height, width, seed)
        padded = np.pad(membranes, ((0, h - height), (0, w - width)), mode="symmetric")
        return _given_membranes(self.label_generator, padded, z, self.label_downsample)[0][:height, :width]

    def sample_joint(self, height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(labels, image) of a joint model."""
        if self.meta["mode"] != "joint":
            raise ValueError("sample_joint needs a joint model; render the labels with the image generator instead")
        out = self._sample(height, width, seed)
        return _codes(out[:, :2])[0], _uint8(out[0, 2])


def load_em_model(path, device="cpu") -> EMModel:
    """An :class:`EMModel` from an ``em_model.safetensors`` file, in eval mode on ``device``."""
    from ..model_checks import check_model_file

    tensors, meta = checkpoints.load(path, kind=MODEL_KIND)
    check_model_file(path, meta, tensors)
    device = resolve_device(device) if isinstance(device, str) else device
    modules = {}
    for prefix in ("label_generator", "image_generator"):
        if meta.get(prefix) is None:
            modules[prefix] = None
            continue
        try:
            module = build_em_module(meta[prefix])
        except ValueError as err:
            raise checkpoints.CheckpointError(f"{path}: {err}") from None
        checkpoints.load_module_state(module, tensors, path, prefix=f"{prefix}.")
        modules[prefix] = module.to(device).eval()
    return EMModel(modules["label_generator"], modules["image_generator"], meta, device)
