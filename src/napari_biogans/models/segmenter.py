"""The shipped EM segmenter: a small U-Net that labels VNC sections as cytoplasm / membrane /
mitochondria (codes 0/1/2 of :mod:`napari_biogans.data.em`), for ``biogans evaluate em``.

Classic U-Net (two 3x3 conv + batch-norm + ReLU per level, max-pool down, bilinear up + skip
concatenation), kept small so a 2-core CPU trains it in about an hour and segments a 1024² section
in seconds. Inputs are uint8 sections mapped to [-1, 1] (``x / 127.5 - 1``), as every EM model here.
Its files are read and written by :mod:`.segmenter_file`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

MODEL_KIND = "em-segmenter"
N_CLASSES = 3

__all__ = ["MODEL_KIND", "N_CLASSES", "SegmenterUNet", "to_input", "segment"]


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class SegmenterUNet(nn.Module):
    """U-Net with ``levels`` down-samplings; level i has ``width·2^i`` channels. ``forward`` returns
    class logits (B, ``n_classes``, H, W); sides must be multiples of ``factor`` (:func:`segment` pads)."""

    arch = "segmenter-unet"

    def __init__(self, in_channels: int = 1, n_classes: int = N_CLASSES, width: int = 16, levels: int = 4):
        super().__init__()
        if levels < 1:
            raise ValueError("a U-Net needs levels >= 1")
        widths = [width * 2**i for i in range(levels + 1)]
        self.down = nn.ModuleList([_block(in_channels, widths[0])]
                                  + [_block(widths[i], widths[i + 1]) for i in range(levels)])
        self.up = nn.ModuleList([_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(levels))])
        self.head = nn.Conv2d(widths[0], n_classes, 1)
        self.factor = 2**levels
        self.config = {"arch": self.arch, "in_channels": in_channels, "n_classes": n_classes, "width": width,
                       "levels": levels}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.factor or w % self.factor:
            raise ValueError(f"{self.arch}: sides must be multiples of {self.factor}, got {h}x{w}")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 sections -> float32 in [-1, 1], the segmenter's input scale."""
    return images.astype(np.float32) / 127.5 - 1


def segment(model: nn.Module, images: np.ndarray, device="cpu", tile: int = 512) -> np.ndarray:
    """Class probabilities (N, 3, H, W) float32 for uint8 images (N, H, W) of any size.

    Images are reflect-padded to the model's factor and run in overlapping ``tile``² windows (a 64-pixel
    margin, only the centre kept), so memory stays bounded on large sections."""
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    n, h, w = images.shape
    factor, margin = model.factor, 64
    model = model.to(device).eval()
    out = np.empty((n, model.config["n_classes"], h, w), dtype=np.float32)
    step = max(tile - 2 * margin, factor)
    with torch.inference_mode():
        for k in range(n):
            x = to_input(images[k])
            for y0 in range(0, h, step):
                for x0 in range(0, w, step):
                    y1, x1 = min(y0 + step, h), min(x0 + step, w)
                    # window with margins, clipped to the image, then reflect-padded to the factor
                    ya, yb, xa, xb = max(0, y0 - margin), min(h, y1 + margin), max(0, x0 - margin), min(w, x1 + margin)
                    window = x[ya:yb, xa:xb]
                    ph, pw = -window.shape[0] % factor, -window.shape[1] % factor
                    mode = "reflect" if min(window.shape) > max(ph, pw) else "edge"
                    window = np.pad(window, ((0, ph), (0, pw)), mode=mode)
                    logits = model(torch.from_numpy(np.ascontiguousarray(window))[None, None].to(device))
                    probs = torch.softmax(logits.float(), 1)[0].cpu().numpy()
                    out[k, :, y0:y1, x0:x1] = probs[:, y0 - ya:y1 - ya, x0 - xa:x1 - xa]
    return out
