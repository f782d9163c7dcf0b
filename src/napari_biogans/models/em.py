"""SGAN / DSGAN networks for EM label-image pairs (METHODS F.2-F.5; Han, Murphy & Ramanan 2018).

Tensors are NCHW in [-1, 1]. Label tensors have two channels, (membrane, mitochondria), each
``2·mask - 1``; images have one channel. Noise "images" have ``nz`` (8) channels and a side
that is the output side divided by the module's ``factor``.

* :class:`LabelGenerator` G_y (F.2, "fcgan"): noise (B, nz, s, s) -> labels (B, 2, f·s, f·s).
* :class:`JointGenerator`: G_y with three outputs, (membrane, mitochondria, image) as the
  reference's R, G, B packing.
* :class:`MultiScaleDiscriminator` (F.3): a pyramid of PatchGAN bodies; returns **logits**
  (no sigmoid): the trainer uses ``BCEWithLogits``, which is the reference's sigmoid + BCE
  computed stably and allowed under bf16 autocast.
* :class:`CascadeGenerator` G_x (F.4, CRN): labels + noise -> image, for any size that is a
  multiple of ``factor`` (the pooling factors follow from the number of blocks, I.6).
* :class:`ConditionalLabelGenerator`: the CRN on one membrane channel -> mitochondria
  (the paper's "mitochondria given membranes", its Fig. 13).
* :class:`UNet` F_y (F.5): image -> label channels, with configurable depth and width.

Every module has a JSON-able ``config``; :func:`.architectures.build_em_module` rebuilds it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NZ = 8
__all__ = [
    "NZ",
    "SampleBatchNorm",
    "LabelGenerator",
    "JointGenerator",
    "gaussian_kernel",
    "PatchDiscriminator",
    "MultiScaleDiscriminator",
    "CascadeGenerator",
    "ConditionalLabelGenerator",
    "UNet",
]


def _init_weights(module: nn.Module) -> None:
    """The reference's ``normal`` init: conv weights N(0, 0.02), norm scales N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _check_side(name: str, shape, factor: int) -> None:
    h, w = shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"{name}: input {h}x{w} must be a multiple of {factor} on both sides")


class SampleBatchNorm(nn.BatchNorm2d):
    """BatchNorm over the batch while training; over each sample alone in eval mode.

    The reference trained G_y with batch 1 and never called ``eval()`` (I.5), so every sample
    it drew was normalised by its own statistics. Eval mode does exactly that here (instance
    norm with the learned scale and shift), so a sample never depends on the rest of its batch
    and no running statistics are kept.
    """

    def __init__(self, channels: int):
        super().__init__(channels, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)


class LabelGenerator(nn.Module):
    """F.2: ``n_layers + 1`` stride-2 transposed convolutions, so ``factor = 2**(n_layers+1)``.

    With width 32 and 5 layers the hidden widths are 256, 256, 128, 64, 32 (1,772,448
    parameters for 2 outputs). The reference's special first layer for a 1x1 noise image is
    not needed: every layer is k4 s2 p1, so any noise side works.
    """

    arch = "label-generator"

    def __init__(self, width: int = 32, n_layers: int = 5, nz: int = NZ, out_channels: int = 2):
        super().__init__()
        widths = [width * min(2 ** (n_layers - 1 - i), 8) for i in range(n_layers)]
        layers = [nn.ConvTranspose2d(nz, widths[0], 4, 2, 1, bias=False), SampleBatchNorm(widths[0]), nn.ReLU(True)]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), SampleBatchNorm(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], out_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.nz, self.out_channels, self.factor = nz, out_channels, 2 ** (n_layers + 1)
        self.config = {"arch": self.arch, "width": width, "n_layers": n_layers, "nz": nz, "out_channels": out_channels}
        _init_weights(self)

    def noise_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """The (nz, h, w) noise that gives a ``height`` x ``width`` output."""
        _check_side(self.arch, (height, width), self.factor)
        return self.nz, height // self.factor, width // self.factor

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class JointGenerator(LabelGenerator):
    """JointGAN: G_y with outputs (membrane, mitochondria, image)."""

    arch = "joint-generator"

    def __init__(self, width: int = 32, n_layers: int = 5, nz: int = NZ, out_channels: int = 3):
        if out_channels != 3:
            raise ValueError("the joint generator has 3 outputs: membrane, mitochondria, image")
        super().__init__(width, n_layers, nz, out_channels)

    @staticmethod
    def split(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels (B, 2, H, W), image (B, 1, H, W)) from a joint output."""
        return output[:, :2], output[:, 2:]


def gaussian_kernel(scale: int) -> torch.Tensor:
    """F.3's fixed blur before keeping every ``scale``-th pixel: σ = scale/2, side 4σ+1 (I.2: ints)."""
    sigma = scale / 2
    side = int(4 * sigma + 1)
    x = torch.arange(side, dtype=torch.float64) - (side - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return (k / k.sum()).float()


class PatchDiscriminator(nn.Module):
    """One F.3 body (PatchGAN, ``n_layers``, instance norm) seeing the input at ``1/scale``.

    Padding is 1, the canonical PatchGAN (I.3). The blur kernel is a non-persistent buffer:
    it follows ``.to()`` but is neither a parameter (the optimiser cannot touch it, I.2) nor
    in checkpoints (the config rebuilds it). The blur pads by reflection, so the image border
    does not fade towards 0 before subsampling.
    """

    def __init__(self, in_channels: int, width: int = 64, n_layers: int = 3, scale: int = 1, padding: int = 1):
        super().__init__()
        self.scale, self.n_layers, self.padding = int(scale), int(n_layers), int(padding)
        if self.scale > 1:
            k = gaussian_kernel(self.scale)
            self.register_buffer("blur", k.expand(in_channels, 1, *k.shape).contiguous(), persistent=False)
        p = self.padding
        layers = [nn.Conv2d(in_channels, width, 4, 2, p), nn.LeakyReLU(0.2, True)]
        c = width
        for j in range(1, n_layers):
            c_out = width * min(2**j, 8)
            layers += [nn.Conv2d(c, c_out, 4, 2, p), nn.InstanceNorm2d(c_out), nn.LeakyReLU(0.2, True)]
            c = c_out
        c_out = width * min(2**n_layers, 8)
        layers += [nn.Conv2d(c, c_out, 4, 1, p), nn.InstanceNorm2d(c_out), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(c_out, 1, 4, 1, p)]
        self.net = nn.Sequential(*layers)

    def output_side(self, side: int) -> int:
        """Side of the logit map for an input side (< 1: the input is too small)."""
        side = math.ceil(side / self.scale)
        for _ in range(self.n_layers):
            side = (side + 2 * self.padding - 4) // 2 + 1
        return side + 2 * (2 * self.padding - 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale > 1:
            pad = self.blur.shape[-1] // 2
            x = F.pad(x, (pad,) * 4, mode="reflect")
            x = F.conv2d(x, self.blur.to(x.dtype), groups=x.shape[1])[..., :: self.scale, :: self.scale]
        return self.net(x)


class MultiScaleDiscriminator(nn.Module):
    """F.3 pyramid: one :class:`PatchDiscriminator` per ``(n_layers, scale, weight)`` entry.

    ``forward`` returns the list of logit maps. The weights scale only the generator's
    adversarial terms (the trainer reads :attr:`weights`).
    """

    arch = "discriminator"

    def __init__(self, in_channels: int = 2, width: int = 32, pyramid=((3, 1, 0.5), (3, 2, 0.4), (3, 4, 0.1)),
                 padding: int = 1):
        super().__init__()
        pyramid = [[int(n), int(s), float(w)] for n, s, w in pyramid]
        self.members = nn.ModuleList(PatchDiscriminator(in_channels, width, n, s, padding) for n, s, _ in pyramid)
        self.weights = [w for _, _, w in pyramid]
        self.config = {"arch": self.arch, "in_channels": in_channels, "width": width, "pyramid": pyramid,
                       "padding": padding}
        _init_weights(self)

    def check_input_side(self, side: int) -> None:
        for (n, s, _), member in zip(self.config["pyramid"], self.members):
            if member.output_side(side) < 1:
                raise ValueError(f"discriminator member (n_layers {n}, scale {s}) needs inputs larger than {side} px")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [member(x) for member in self.members]


class _Norm:
    """Instance norm (no affine) for one forward pass: per-sample statistics, optionally recorded,
    or fixed statistics given in call order (see :meth:`CascadeGenerator.forward`)."""

    def __init__(self, statistics=None, record: list | None = None, eps: float = 1e-5):
        self.statistics, self.record, self.eps, self.calls = statistics, record, eps, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.statistics is not None:
            mean, var = self.statistics[self.calls]
            self.calls += 1
        elif self.record is None and torch.is_grad_enabled():
            return F.instance_norm(x, eps=self.eps)  # fused forward and backward for training
        else:  # inference: faster than F.instance_norm on channels-last CPU tensors
            var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, correction=0)
            if self.record is not None:
                self.record.append((mean, var))
        scale = torch.rsqrt(var + self.eps)
        return torch.addcmul((-mean * scale).to(x.dtype), x, scale.to(x.dtype))  # one pass over x


class CascadeGenerator(nn.Module):
    """F.4 CRN G_x: ``n_blocks`` blocks, each doubling the side, so ``factor = 2**n_blocks``.

    Block 0 sees ``concat(avgpool_factor(y), z)``; block j > 0 sees
    ``concat(L(avgpool_{factor/2^j}(y)), h)`` with one label conv ``L`` (+ IN) shared across
    scales. Each block: conv3x3 -> bilinear x2 -> IN, then 2 x (ReLU -> conv3x3 -> IN); the last
    conv maps to ``out_channels`` with no norm, then tanh. The pooling factors follow from
    ``n_blocks`` (64 ... 2 for 6 blocks), so any input whose sides are multiples of ``factor``
    works, square or not (I.6). Upsampling is bilinear with ``align_corners=False``: unlike
    the reference's PyTorch < 0.4 behaviour (I.8) it is translation-equivariant, which tiled
    rendering relies on. Instance norm without affine terms (no state) makes the module
    batch-independent, so train and eval modes agree.
    """

    arch = "image-generator"

    def __init__(self, label_channels: int = 2, out_channels: int = 1, width: int = 64, n_blocks: int = 6,
                 nz: int = NZ):
        super().__init__()
        self.label_conv = nn.Conv2d(label_channels, width, 3, 1, 1)
        self.up_convs = nn.ModuleList(
            nn.Conv2d(label_channels + nz if j == 0 else 2 * width, width, 3, 1, 1) for j in range(n_blocks)
        )
        self.refine1 = nn.ModuleList(nn.Conv2d(width, width, 3, 1, 1) for _ in range(n_blocks))
        self.refine2 = nn.ModuleList(
            nn.Conv2d(width, out_channels if j == n_blocks - 1 else width, 3, 1, 1) for j in range(n_blocks)
        )
        self.nz, self.label_channels, self.n_blocks, self.factor = nz, label_channels, n_blocks, 2**n_blocks
        self.config = {"arch": self.arch, "label_channels": label_channels, "out_channels": out_channels,
                       "width": width, "n_blocks": n_blocks, "nz": nz}
        _init_weights(self)

    def noise_shape(self, height: int, width: int) -> tuple[int, int, int]:
        _check_side(self.arch, (height, width), self.factor)
        return self.nz, height // self.factor, width // self.factor

    def forward(self, labels: torch.Tensor, z: torch.Tensor, statistics=None, record: list | None = None):
        """Image in [-1, 1]. ``statistics``: a list of (mean, var) pairs, one per norm call in
        order, used instead of each sample's own (tiles normalised like the canvas they come
        from); ``record``: a list that receives this pass's (mean, var) pairs."""
        _check_side(self.arch, labels.shape, self.factor)
        norm = _Norm(statistics, record)
        h = torch.cat([F.avg_pool2d(labels, self.factor), z], 1)
        for j in range(self.n_blocks):
            if j > 0:
                pooled = F.avg_pool2d(labels, self.factor >> j)
                h = torch.cat([norm(self.label_conv(pooled)), h], 1)
            h = norm(F.interpolate(self.up_convs[j](h), scale_factor=2, mode="bilinear", align_corners=False))
            h = norm(self.refine1[j](F.relu(h)))
            h = self.refine2[j](F.relu(h))
            if j < self.n_blocks - 1:
                h = norm(h)
        return torch.tanh(h)


class ConditionalLabelGenerator(CascadeGenerator):
    """Mitochondria given membranes: the CRN on one membrane channel plus noise -> one channel."""

    arch = "conditional-label-generator"

    def __init__(self, label_channels: int = 1, out_channels: int = 1, width: int = 32, n_blocks: int = 6,
                 nz: int = NZ):
        super().__init__(label_channels, out_channels, width, n_blocks, nz)


class _UNetLevel(nn.Module):
    """One pix2pix U-Net level: down (LReLU, conv, IN), the inner levels, up (ReLU, convT, IN)."""

    def __init__(self, outer: int, inner: int, in_channels: int, sub: nn.Module | None, outermost: bool,
                 dropout: float):
        super().__init__()
        down = [nn.Conv2d(in_channels, inner, 4, 2, 1)]
        if not outermost:
            down.insert(0, nn.LeakyReLU(0.2, True))
            if sub is not None:
                down.append(nn.InstanceNorm2d(inner))
        up_in = inner if sub is None else 2 * inner
        up = [nn.ReLU(True), nn.ConvTranspose2d(up_in, outer, 4, 2, 1)]
        if not outermost:
            up.append(nn.InstanceNorm2d(outer))
            if dropout:
                up.append(nn.Dropout(dropout))
        self.down, self.sub, self.up = nn.Sequential(*down), sub, nn.Sequential(*up)
        self.outermost = outermost

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(x)
        if self.sub is not None:
            h = self.sub(h)
        h = self.up(h)
        return h if self.outermost else torch.cat([x, h], 1)


class UNet(nn.Module):
    """F.5 reconstructor F_y (pix2pix U-Net with ``depth`` down-samplings, instance norm).

    Level i has width ``width·min(2^i, 8)``; dropout sits in the 8x-width levels that are
    neither innermost nor the first 8x level (two of them for depth 7, as ``unet_128``).
    ``forward`` ends in tanh; :meth:`logits` returns ``2·h`` for the pre-tanh ``h``, so
    ``sigmoid(logits) == (tanh(h) + 1) / 2`` exactly: the BCE on (t+1)/2 of F.6, computed
    stably. The reference's ignored noise argument is dropped (I.6).
    """

    arch = "unet"

    def __init__(self, in_channels: int = 1, out_channels: int = 2, width: int = 32, depth: int = 7,
                 dropout: float = 0.5):
        super().__init__()
        if depth < 1:
            raise ValueError("a U-Net needs depth >= 1")
        widths = [width * min(2**i, 8) for i in range(depth)]
        level = None
        for i in reversed(range(depth)):
            outer = out_channels if i == 0 else widths[i - 1]
            c_in = in_channels if i == 0 else widths[i - 1]
            drop = dropout if (4 <= i < depth - 1) else 0.0
            level = _UNetLevel(outer, widths[i], c_in, level, outermost=i == 0, dropout=drop)
        self.net = level
        self.factor = 2**depth
        self.config = {"arch": self.arch, "in_channels": in_channels, "out_channels": out_channels, "width": width,
                       "depth": depth, "dropout": dropout}
        _init_weights(self)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        _check_side(self.arch, x.shape, self.factor)
        return 2 * self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.logits(x) / 2)
