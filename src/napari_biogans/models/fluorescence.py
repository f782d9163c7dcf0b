"""Generators and critics for two-channel fluorescence cells (METHODS B).

Every model speaks **pairs form**: a tensor ``(B, C, 2, H, W)`` in [-1, 1], where C is the
number of classes (proteins) the model covers and index 2 is (red Bgs4, green protein).

Generators (``forward(z)``: ``(B, nz) -> (B, C, 2, H, W)``; ``generate(z, labels)``: only the
classes ``labels`` ``(B, K)`` of each sample, ``(B, K, 2, H, W)``, computing no other class's
tower where the model has one per class) carry ``nz``, ``nz_red`` (the
leading latent dims that are red noise; 0 without a red/green split), ``n_classes``,
``image_size`` ``(H, W)``, ``shares_red`` (all C pairs hold the same red image) and ``config``
(JSON-serialisable; :func:`build_generator` rebuilds the architecture from it).

Critics (``forward(x)``: ``(B, C, 2, H, W) -> (B, n_scores)``) carry ``n_classes``,
``n_scores`` and ``config`` (:func:`build_critic`). The per-pair critics give one score per
pair (``n_scores = C``); the multichannel critic sees the whole composite and gives one
(``n_scores = 1``). Objectives average scores over batch and columns, and the gradient
penalty draws one ε per sample and score column (see ``training/objectives.py``).

All layout is static: no data-dependent Python control flow in any ``forward`` (``generate``
with arbitrary labels has some), no dtype or
memory-format assumptions (``channels_last`` and ``torch.autocast`` work), so the modules
trace with ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

__all__ = [
    "DCGANGenerator",
    "SeparableGenerator",
    "StarGenerator",
    "OneClassGenerators",
    "MultichannelGenerator",
    "DCGANCritic",
    "MultichannelCritic",
    "multichannel_size",
    "native_channels",
    "pairs_from_native",
    "count_parameters",
    "tower_plan",
]


# --------------------------------------------------------------------------------------------
# Shapes and helpers


def tower_plan(image_size) -> tuple[tuple[int, int], int]:
    """METHODS B.1 construction rule for any (H, W): ``(base (h, w), n)``.

    Halve both sides while both are > 4; ``n`` is the number of halvings (4 for 48x80 and
    base 3x5; 5 for 96x160, base 3x5). Each side must stay even while it is halved.
    """
    h, w = (int(s) for s in image_size)
    n = 0
    while h > 4 and w > 4:
        if h % 2 or w % 2:
            raise ValueError(f"image size {tuple(image_size)}: both sides must halve evenly down to <= 4")
        h, w, n = h // 2, w // 2, n + 1
    if n == 0:
        raise ValueError(f"image size {tuple(image_size)} is too small: both sides must be > 4")
    return (h, w), n


def _generator_widths(image_size, width: int) -> list[int]:
    """Hidden widths of the B.1 generator: ``[512, 256, 128, 64]`` for 48x80 and width 64."""
    _, n = tower_plan(image_size)
    top = (width // 2) * 2**n  # the reference: start at ngf // 2 and double per halving
    widths = [top // 2**i for i in range(n)]
    if widths[-1] < 1:
        raise ValueError(f"width {width} is too small for image size {tuple(image_size)}")
    return widths


def _critic_widths(image_size, width: int) -> list[int]:
    """Widths of the B.2 critic's stride-2 layers: ``[64, 128, 256, 512]`` for 48x80."""
    _, n = tower_plan(image_size)
    return [width * 2**i for i in range(n)]


def _init_weights(module: nn.Module) -> None:
    """METHODS B.7: convs N(0, 0.02); BN weights N(1, 0.02), biases 0 (BN without affine terms,
    as in conditional BN, has none)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _size(image_size) -> list[int]:
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (H, W), got {image_size!r}")
    return [int(image_size[0]), int(image_size[1])]


def native_channels(x_pairs: torch.Tensor) -> torch.Tensor:
    """Pairs ``(B, C, 2, H, W)`` -> native channels ``(B, 1 + C, H, W)``: red of pair 0, then each green."""
    return torch.cat([x_pairs[:, 0, 0:1], x_pairs[:, :, 1]], dim=1)


def pairs_from_native(x: torch.Tensor) -> torch.Tensor:
    """Native ``(B, 1 + C, H, W)`` -> pairs ``(B, C, 2, H, W)``: channel 0 paired with each green."""
    greens = x[:, 1:]
    return torch.stack([x[:, 0:1].expand_as(greens), greens], dim=2)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def multichannel_size(n_classes: int, width: int = 64, nz: int = 100) -> tuple[int, int]:
    """``(ngf = ndf, nz)`` of the multichannel model matched to a star model of ``width``/``nz``.

    METHODS B.6 picks ngf = 224 so that the first layer's width (8·ngf = 1792) equals the star
    model's total (7 x 256 for C = 6), and nz = 350 = 7 x 50: both scale with (C + 1) / 2.
    ``multichannel_size(6, 64, 100) == (224, 350)``, the published configuration.
    """
    return (width * (n_classes + 1) + 1) // 2, (nz * (n_classes + 1) + 1) // 2


# --------------------------------------------------------------------------------------------
# Backbones: native-channel networks (not part of the pairs-form interface)


class _DCGANBackbone(nn.Module):
    """METHODS B.1: z ``(B, nz)`` -> ``(B, channels, H, W)`` in [-1, 1]."""

    def __init__(self, image_size, nz: int, width: int, channels: int):
        super().__init__()
        base, _ = tower_plan(image_size)
        widths = _generator_widths(image_size, width)
        layers = [nn.ConvTranspose2d(nz, widths[0], base, 1, 0, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(z.shape[0], z.shape[1], 1, 1))


class _GreenOnRedBackbone(nn.Module):
    """METHODS B.3 / B.4 / B.6-sep: one red tower and ``towers`` green towers.

    Layer k of the red tower maps the red features to ``red_widths[k]`` (the first layer reads
    ``z[:, :nz_red]``). Layer k of green tower t reads concat(red features, tower t's green
    features) (the first layer reads all of z, the same for every tower). This is computed
    without materialising the concatenation: ``from_red`` (a dense ConvT from the red features
    to every tower's outputs) plus ``from_green`` (a grouped ConvT, ``groups = towers``, each
    tower reading only its own green features). The sum equals the reference's ConvT over the
    concatenation, with the same parameter count; tower t owns output channels
    ``[t·g, (t+1)·g)`` of every green layer (weight slices along the output axis of
    ``from_red`` / the first layer, and group t of ``from_green``). BN is per channel, so one
    BatchNorm2d over all towers equals one per tower, and the red BN runs once per forward.

    Returns ``(red (B, 1, H, W), greens (B, towers·green_out, H, W))``.
    """

    def __init__(self, image_size, nz: int, nz_red: int, red_widths, green_widths, towers: int, green_out: int):
        super().__init__()
        base, n = tower_plan(image_size)
        red_widths, green_widths = [int(r) for r in red_widths], [int(g) for g in green_widths]
        if len(red_widths) != n or len(green_widths) != n:
            raise ValueError(f"image size {tuple(image_size)} needs {n} red and green widths")
        if not 0 < nz_red < nz or min(red_widths + green_widths) < 1:
            raise ValueError(f"bad red/green split: nz_red {nz_red} of {nz}, red {red_widths}, green {green_widths}")
        self.nz_red, self.towers = nz_red, towers
        self._args = dict(image_size=image_size, nz=nz, nz_red=nz_red, red_widths=red_widths,
                          green_widths=green_widths, green_out=green_out)
        T = towers
        self.red_first = nn.ConvTranspose2d(nz_red, red_widths[0], base, 1, 0, bias=False)
        self.green_first = nn.ConvTranspose2d(nz, T * green_widths[0], base, 1, 0, bias=False)
        self.red_convs = nn.ModuleList()
        self.green_from_red = nn.ModuleList()
        self.green_from_green = nn.ModuleList()
        outs_red = red_widths[1:] + [1]
        outs_green = green_widths[1:] + [green_out]
        for r_in, g_in, r_out, g_out in zip(red_widths, green_widths, outs_red, outs_green):
            self.red_convs.append(nn.ConvTranspose2d(r_in, r_out, 4, 2, 1, bias=False))
            self.green_from_red.append(nn.ConvTranspose2d(r_in, T * g_out, 4, 2, 1, bias=False))
            self.green_from_green.append(nn.ConvTranspose2d(T * g_in, T * g_out, 4, 2, 1, bias=False, groups=T))
        self.red_norms = nn.ModuleList(nn.BatchNorm2d(r) for r in red_widths)
        self.green_norms = nn.ModuleList(nn.BatchNorm2d(T * g) for g in green_widths)

    def _tower_slice(self, tensor: torch.Tensor, dim: int, t: int) -> torch.Tensor:
        """Tower ``t``'s block of ``tensor`` along ``dim`` (a view: the same weights, no copy)."""
        size = tensor.shape[dim] // self.towers
        return tensor.narrow(dim, t * size, size)

    @torch.no_grad()
    def extract_tower(self, t: int) -> "_GreenOnRedBackbone":
        """Green tower ``t`` with the red tower as a one-tower backbone (a copy, same outputs)."""
        if not 0 <= t < self.towers:
            raise IndexError(f"tower {t} of {self.towers}")
        one = _GreenOnRedBackbone(towers=1, **self._args).to(self.red_first.weight.device)
        for name in ("red_first", "red_convs", "red_norms"):
            getattr(one, name).load_state_dict(getattr(self, name).state_dict())
        one.green_first.weight.copy_(self._tower_slice(self.green_first.weight, 1, t))
        for mine, theirs in zip(one.green_from_red, self.green_from_red):
            mine.weight.copy_(self._tower_slice(theirs.weight, 1, t))
        for mine, theirs in zip(one.green_from_green, self.green_from_green):
            mine.weight.copy_(self._tower_slice(theirs.weight, 0, t))
        for mine, theirs in zip(one.green_norms, self.green_norms):
            for key, value in theirs.state_dict().items():
                getattr(mine, key).copy_(value if value.dim() == 0 else self._tower_slice(value, 0, t))
        return one

    def per_tower(self, z: torch.Tensor, labels: torch.Tensor | None = None):
        """The green towers one at a time, over slices of the same weights (no grouped
        convolution): every tower for every row (``labels`` None, a static loop), or row b
        through the towers ``labels[b]`` (``(B, K)``) only. The red tower runs once per row. Eval
        mode only (BN running statistics: a tower may see only some rows).

        Activations are channels-last (NHWC): CPU transposed convolutions ran up to 1.4x faster so
        (docs/benchmarks.md), CUDA's as fast. Returns ``(red (B, 1, H, W), greens (B, K·green_out, H, W))``.
        """
        if self.training:
            raise RuntimeError("per_tower runs in eval mode (BN running statistics)")
        b = z.shape[0]
        z = z.reshape(b, -1, 1, 1)
        first = torch.relu(self.red_norms[0](self.red_first(z[:, : self.nz_red])))
        reds = [first.contiguous(memory_format=torch.channels_last)]
        for i, conv in enumerate(self.red_convs):  # reds[i]: the red features green layer i reads
            red = conv(reds[-1])
            reds.append(torch.relu(self.red_norms[i + 1](red)) if i + 1 < len(self.red_convs) else red)
        red, reds = torch.tanh(reds[-1]), reds[:-1]
        if labels is None:
            return red, torch.cat([self._green_tower(t, z, reds) for t in range(self.towers)], 1)
        # rows grouped by tower, so each tower reads one contiguous block (no copy when they already are)
        k, flat = labels.shape[1], labels.flatten()
        order = torch.argsort(flat, stable=True)
        grouped = k == 1 and torch.equal(order, torch.arange(len(flat), device=flat.device))
        if not grouped:
            z, reds = z[order // k], [r[order // k] for r in reds]
        counts = torch.bincount(flat, minlength=self.towers).tolist()
        blocks = zip(z.split(counts), *(r.split(counts) for r in reds))  # split: its backward is one cat
        greens = torch.cat([self._green_tower(t, z_t, list(reds_t)) for t, (z_t, *reds_t) in enumerate(blocks)
                            if len(z_t)])
        if not grouped:
            greens = greens[torch.argsort(order)]
        return red, greens.reshape(b, k * greens.shape[1], *greens.shape[2:])

    def _green_tower(self, t: int, z: torch.Tensor, reds: list) -> torch.Tensor:
        """Green tower ``t`` on codes ``z`` and the red features each of its layers reads (tanh applied)."""
        def convolve(conv, x, dim):  # conv restricted to tower t, as a plain (ungrouped) convolution
            return nn.functional.conv_transpose2d(x, self._tower_slice(conv.weight, dim, t), None, conv.stride,
                                                  conv.padding, conv.output_padding, 1, conv.dilation)

        def normalise(norm, x):
            return torch.relu(nn.functional.batch_norm(
                x, self._tower_slice(norm.running_mean, 0, t), self._tower_slice(norm.running_var, 0, t),
                self._tower_slice(norm.weight, 0, t), self._tower_slice(norm.bias, 0, t), False, 0.0, norm.eps))

        green = normalise(self.green_norms[0], convolve(self.green_first, z, 1))
        green = green.contiguous(memory_format=torch.channels_last)
        last = len(reds) - 1
        for i, (red, from_red, from_green) in enumerate(zip(reds, self.green_from_red, self.green_from_green)):
            green = convolve(from_red, red, 1) + convolve(from_green, green, 0)
            if i < last:
                green = normalise(self.green_norms[i + 1], green)
        return torch.tanh(green)

    def forward(self, z: torch.Tensor):
        z = z.reshape(z.shape[0], z.shape[1], 1, 1)
        red = torch.relu(self.red_norms[0](self.red_first(z[:, : self.nz_red])))
        green = torch.relu(self.green_norms[0](self.green_first(z)))
        last = len(self.red_convs) - 1
        layers = zip(self.red_convs, self.green_from_red, self.green_from_green)
        for k, (to_red, from_red, from_green) in enumerate(layers):
            red, green = to_red(red), from_red(red) + from_green(green)
            if k < last:
                red = torch.relu(self.red_norms[k + 1](red))
                green = torch.relu(self.green_norms[k + 1](green))
        return torch.tanh(red), torch.tanh(green)


def _red_split(image_size, width: int, nz: int, nz_red, red_widths, portion: int = 2):
    """Explicit red counts (METHODS I.10): by default 1/portion of every hidden width and of nz."""
    widths = _generator_widths(image_size, width)
    nz_red = nz // portion if nz_red is None else int(nz_red)
    red_widths = [w // portion for w in widths] if red_widths is None else [int(r) for r in red_widths]
    if len(red_widths) != len(widths) or any(not 0 < r < w for r, w in zip(red_widths, widths)):
        raise ValueError(f"red widths {red_widths} must lie strictly inside the hidden widths {widths}")
    return nz_red, red_widths, [w - r for w, r in zip(widths, red_widths)]


def _stack_pairs(red: torch.Tensor, greens: torch.Tensor) -> torch.Tensor:
    """Red ``(B, 1, H, W)`` shared by greens ``(B, C, H, W)`` -> ``(B, C, 2, H, W)``."""
    return torch.stack([red.expand_as(greens), greens], dim=2)


PER_TOWER_MIN_WIDTH = 48  # on a CPU the loop over towers wins from this width up (docs/benchmarks.md)


def towers_one_by_one(device: torch.device, width: int, execution: str = "auto") -> bool:
    """Whether a star generator renders its green towers one after another (a loop over slices of
    the same weights) rather than as one grouped convolution.

    ``auto``, from ``benchmarks/bench_generate.py`` (docs/benchmarks.md): one by one on a CPU for
    models of width >= :data:`PER_TOWER_MIN_WIDTH` (16 cells x 6 proteins, 1 thread: 1.2x faster at
    widths 48 and 64; at width 16 the grouped convolution is 1.15x faster); grouped on CUDA, where
    the few large kernels of the grouped convolution win at interactive batch sizes.
    """
    if execution not in ("auto", "grouped", "per-tower"):
        raise ValueError(f"execution must be 'auto', 'grouped' or 'per-tower', got {execution!r}")
    if execution != "auto":
        return execution == "per-tower"
    return device.type == "cpu" and width >= PER_TOWER_MIN_WIDTH


def _pick_classes(pairs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pairs ``(B, C, 2, H, W)`` -> ``(B, K, 2, H, W)``: sample b's pairs ``labels[b]``."""
    return pairs[torch.arange(len(pairs), device=pairs.device)[:, None], labels]


# --------------------------------------------------------------------------------------------
# Generators (pairs form)


class DCGANGenerator(nn.Module):
    """METHODS B.1, the joint model: C = 1, green is "any protein". 3,524,480 params at width 64."""

    def __init__(self, image_size=(48, 80), nz: int = 100, width: int = 64):
        super().__init__()
        size = _size(image_size)
        self.nz, self.nz_red, self.n_classes = int(nz), 0, 1
        self.image_size, self.shares_red = tuple(size), True
        self.config = {"arch": "dcgan", "image_size": size, "nz": int(nz), "width": int(width)}
        self.net = _DCGANBackbone(size, nz, width, 2)
        _init_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unsqueeze(1)

    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pairs ``(B, K, 2, H, W)`` of the classes ``labels`` (one network renders them all)."""
        return _pick_classes(self(z), labels)


class SeparableGenerator(nn.Module):
    """METHODS B.3 green-on-red, C = 1: the red image depends only on ``z[:, :nz_red]``.

    Red counts are explicit (default: half of every width and of nz, i.e. red_portion 0.5).
    2,643,840 params at width 64. It is the star generator with one tower (B.4).
    """

    def __init__(self, image_size=(48, 80), nz: int = 100, width: int = 64, nz_red: int | None = None,
                 red_widths=None):
        super().__init__()
        size = _size(image_size)
        nz_red, red_widths, green_widths = _red_split(size, width, nz, nz_red, red_widths)
        self.nz, self.nz_red, self.n_classes = int(nz), nz_red, 1
        self.image_size, self.shares_red = tuple(size), True
        self.config = {"arch": "separable", "image_size": size, "nz": int(nz), "width": int(width),
                       "nz_red": nz_red, "red_widths": red_widths}
        self.net = _GreenOnRedBackbone(size, nz, nz_red, red_widths, green_widths, towers=1, green_out=1)
        _init_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _stack_pairs(*self.net(z))

    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pairs ``(B, K, 2, H, W)`` of the classes ``labels`` (one network renders them all)."""
        return _pick_classes(self(z), labels)


class StarGenerator(nn.Module):
    """METHODS B.4 star-shaped: one red tower, C green towers fed the same green noise.

    Output ``(B, C, 2, H, W)``; the red image is the same in every pair. Green tower c depends
    only on its own weights (its output-channel slice of each green layer) and the red tower.
    11,455,040 params for C = 6 at width 64.

    In eval mode the green towers run either as grouped convolutions or one after another over
    slices of the same weights (:func:`towers_one_by_one`, by device and width); ``execution``
    ("auto", "grouped" or "per-tower") overrides the choice, e.g. in benchmarks.
    """

    execution = "auto"

    def __init__(self, n_classes: int = 6, image_size=(48, 80), nz: int = 100, width: int = 64,
                 nz_red: int | None = None, red_widths=None):
        super().__init__()
        size = _size(image_size)
        nz_red, red_widths, green_widths = _red_split(size, width, nz, nz_red, red_widths)
        self.nz, self.nz_red, self.n_classes = int(nz), nz_red, int(n_classes)
        self.image_size, self.shares_red = tuple(size), True
        self.config = {"arch": "star", "n_classes": int(n_classes), "image_size": size, "nz": int(nz),
                       "width": int(width), "nz_red": nz_red, "red_widths": red_widths}
        self.net = _GreenOnRedBackbone(size, nz, nz_red, red_widths, green_widths, towers=n_classes, green_out=1)
        _init_weights(self)

    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pairs ``(B, K, 2, H, W)``: sample b drawn as each class ``labels[b]``, through those
        classes' towers only (the red tower once per sample). In training mode, through
        :meth:`forward` (BN statistics over the whole batch, as in training)."""
        if self.training:
            return _pick_classes(self(z), labels)
        return _stack_pairs(*self.net.per_tower(z, labels))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not self.training and towers_one_by_one(z.device, self.config["width"], self.execution):
            return _stack_pairs(*self.net.per_tower(z))
        return _stack_pairs(*self.net(z))

    def tower(self, c: int) -> SeparableGenerator:
        """Class ``c`` as a standalone separable generator (a copy): ``tower(c)(z)[:, 0] == self(z)[:, c]``."""
        config = {k: v for k, v in self.config.items() if k not in ("arch", "n_classes")}
        one = SeparableGenerator(**config)
        one.net = self.net.extract_tower(c)
        return one.train(self.training)


class OneClassGenerators(nn.Module):
    """METHODS B.5 "independent" baselines: C separate generators (DCGAN or separable), same z.

    ``generators[c]`` is a complete one-class model (pairs form with C = 1). Each pair has its
    own red image, so ``shares_red`` is False (unless C = 1).
    """

    def __init__(self, n_classes: int = 6, image_size=(48, 80), nz: int = 100, width: int = 64,
                 separable: bool = False, nz_red: int | None = None, red_widths=None):
        super().__init__()
        size = _size(image_size)
        self.config = {"arch": "one-class", "n_classes": int(n_classes), "image_size": size, "nz": int(nz),
                       "width": int(width), "separable": bool(separable)}
        if separable:
            nz_red, red_widths, _ = _red_split(size, width, nz, nz_red, red_widths)
            self.config.update(nz_red=nz_red, red_widths=red_widths)
            self.generators = nn.ModuleList(
                SeparableGenerator(size, nz, width, nz_red, red_widths) for _ in range(n_classes)
            )
        else:
            if nz_red is not None or red_widths is not None:
                raise ValueError("nz_red / red_widths need separable=True")
            nz_red = 0
            self.generators = nn.ModuleList(DCGANGenerator(size, nz, width) for _ in range(n_classes))
        self.nz, self.nz_red, self.n_classes = int(nz), nz_red, int(n_classes)
        self.image_size, self.shares_red = tuple(size), n_classes == 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([g(z) for g in self.generators], dim=1)

    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pairs ``(B, K, 2, H, W)``: sample b drawn by the generators ``labels[b]`` only. In
        training mode, through :meth:`forward` (BN statistics over the whole batch)."""
        if self.training:
            return _pick_classes(self(z), labels)
        flat, k = labels.flatten(), labels.shape[1]
        out = None
        for c in flat.unique().tolist():
            where = torch.nonzero(flat == c).flatten()
            pairs = self.generators[c](z[where // k])[:, 0]
            out = pairs.new_empty(len(flat), *pairs.shape[1:]) if out is None else out
            out[where] = pairs
        return out.reshape(*labels.shape, *out.shape[1:])


class MultichannelGenerator(nn.Module):
    """METHODS B.6: a DCGAN generator with 1 + C channels (red, then each class's green).

    Published config: C = 6, nz = 350, width (ngf) = 224. ``separable=True`` is the
    multichannel-sep variant with explicit red counts (default 1/(C+1) of nz and of every
    hidden width, i.e. 50 of 350 and 256/128/64/32 at width 224) and one red output channel;
    its single green path sees everything and outputs C channels.
    ``forward`` returns pairs form (channel 0 paired with each green); :meth:`native`
    returns ``(B, 1 + C, H, W)``.
    """

    def __init__(self, n_classes: int = 6, image_size=(48, 80), nz: int = 350, width: int = 224,
                 separable: bool = False, nz_red: int | None = None, red_widths=None):
        super().__init__()
        size = _size(image_size)
        self.config = {"arch": "multichannel", "n_classes": int(n_classes), "image_size": size, "nz": int(nz),
                       "width": int(width), "separable": bool(separable)}
        self.separable = bool(separable)
        if separable:
            nz_red, red_widths, green_widths = _red_split(size, width, nz, nz_red, red_widths, portion=n_classes + 1)
            self.config.update(nz_red=nz_red, red_widths=red_widths)
            self.net = _GreenOnRedBackbone(size, nz, nz_red, red_widths, green_widths, towers=1, green_out=n_classes)
        else:
            if nz_red is not None or red_widths is not None:
                raise ValueError("nz_red / red_widths need separable=True")
            nz_red = 0
            self.net = _DCGANBackbone(size, nz, width, 1 + n_classes)
        self.nz, self.nz_red, self.n_classes = int(nz), nz_red, int(n_classes)
        self.image_size, self.shares_red = tuple(size), True
        _init_weights(self)

    def native(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, 1 + C, H, W)``: channel 0 red, channel c + 1 the green of class c."""
        if self.separable:
            return torch.cat(self.net(z), dim=1)
        return self.net(z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.separable:
            return _stack_pairs(*self.net(z))
        return pairs_from_native(self.net(z))

    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pairs ``(B, K, 2, H, W)`` of the classes ``labels`` (one network renders them all)."""
        return _pick_classes(self(z), labels)


# --------------------------------------------------------------------------------------------
# Critics


class _DCGANDiscriminator(nn.Module):
    """METHODS B.2 on native channels: ``(B, channels, H, W) -> (B,)`` raw scores."""

    def __init__(self, image_size, channels: int, width: int, bn: bool, spectral_norm: bool):
        super().__init__()
        base, _ = tower_plan(image_size)
        widths = _critic_widths(image_size, width)
        layers = [nn.Conv2d(channels, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False))
            if bn:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2))
        layers.append(nn.Conv2d(widths[-1], 1, base, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)
        _init_weights(self)
        if spectral_norm:
            for i, layer in enumerate(self.net):
                if isinstance(layer, nn.Conv2d):
                    self.net[i] = _spectral_norm(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


class DCGANCritic(nn.Module):
    """C independent DCGAN critics (METHODS B.2), critic c sees only pair c: ``(B, C, 2, H, W) -> (B, C)``.

    C = 1 is the joint critic (2,762,240 params at width 64 without BN, 2,764,032 with); C > 1
    is the star-shaped critic of B.4, also used for the one-class models. ``bn``: BatchNorm in
    the middle layers (GAN, WGAN; off for WGAN-GP). ``spectral_norm``: on every conv (per
    critic, since each is its own module).
    """

    def __init__(self, n_classes: int = 1, image_size=(48, 80), width: int = 64, bn: bool = True,
                 spectral_norm: bool = False):
        super().__init__()
        size = _size(image_size)
        self.n_classes = self.n_scores = int(n_classes)
        self.image_size = tuple(size)
        self.config = {"arch": "dcgan", "n_classes": int(n_classes), "image_size": size, "width": int(width),
                       "bn": bool(bn), "spectral_norm": bool(spectral_norm)}
        self.critics = nn.ModuleList(
            _DCGANDiscriminator(size, 2, width, bn, spectral_norm) for _ in range(n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([d(x[:, c]) for c, d in enumerate(self.critics)], dim=1)


class MultichannelCritic(nn.Module):
    """METHODS B.6 training critic: one DCGAN critic on the 1 + C native channels -> ``(B, 1)``.

    Takes pairs form and reads red from pair 0 and every pair's green (:func:`native_channels`),
    so its input must share the red across pairs (composites, multichannel fakes). It scores the
    whole composite, hence one column; objectives treat it as C = 1 and the gradient penalty
    takes one ε per sample and the norm over the whole sample, as the reference did.
    33,770,240 params for C = 6, width 224, without BN.
    """

    def __init__(self, n_classes: int = 6, image_size=(48, 80), width: int = 224, bn: bool = True,
                 spectral_norm: bool = False):
        super().__init__()
        size = _size(image_size)
        self.n_classes, self.n_scores = int(n_classes), 1
        self.image_size = tuple(size)
        self.config = {"arch": "multichannel", "n_classes": int(n_classes), "image_size": size,
                       "width": int(width), "bn": bool(bn), "spectral_norm": bool(spectral_norm)}
        self.critic = _DCGANDiscriminator(size, 1 + n_classes, width, bn, spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(native_channels(x)).unsqueeze(1)
