"""Conditional models: one network for all C proteins, told the class by a label.

They speak the pairs form of :mod:`.fluorescence` (generator ``(B, nz) -> (B, C, 2, H, W)``,
critic ``(B, C, 2, H, W) -> (B, C)``), so they train on per-class batches, checkpoint, sample
and interpolate like the star model. In pairs form the label of a pair is its position: the
generator renders every class for the same z (batched over classes) and the critic scores
column c as class c. Both also take explicit labels: ``generate(z, labels)`` and
``score(x, labels)``, with ``labels`` ``(B, K)`` class indices and ``x`` ``(B, K, 2, H, W)``.

* ``cgan`` (Mirza & Osindero): the one-hot label is concatenated to the noise (the B.1
  generator with nz + C inputs) and, broadcast over the image, to the critic's input (the B.2
  critic with 2 + C channels). Each class draws its own red cell (``shares_red`` False).
* ``multichannel-masked`` (spatial separation): the B.6 generator, 1 + C channels (red, then
  the green of each class). Its critic judges one class at a time: red plus that class's
  green in its own channel, every other green -1 (empty); real cells of class c and the
  generator's output for class c are masked alike (:func:`masked_composites`), so no
  composites of neighbours are needed.
* ``projection`` (Miyato & Koyama, METHODS G): a separable generator whose red tower reads
  only ``z[:, :nz_red]`` and is shared by all classes (``shares_red`` True), and one green
  tower with conditional batch norm; the critic is D(x, y) = ψ(φ(x)) + ⟨e_y, φ(x)⟩ with
  spectral norm on every layer, whatever ``spectral_norm`` says. METHODS G trains it with the
  hinge loss, but on the simulated cells hinge left the generator grey (docs/evaluation.md);
  ``wgan-gp`` trains it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fluorescence import (
    MultichannelGenerator,
    _critic_widths,
    _DCGANBackbone,
    _DCGANDiscriminator,
    _init_weights,
    _red_split,
    _size,
    _spectral_norm,
    _stack_pairs,
    tower_plan,
)

__all__ = [
    "CONDITIONAL_ARCHS",
    "CGANCritic",
    "CGANGenerator",
    "ConditionalBatchNorm2d",
    "MaskedMultichannelCritic",
    "ProjectionCritic",
    "ProjectionGenerator",
    "make_conditional_models",
    "masked_composites",
]


def _all_classes(batch: int, n_classes: int, device) -> torch.Tensor:
    """The labels of pairs form, ``(B, C)``: column c is class c."""
    return torch.arange(n_classes, device=device).expand(batch, n_classes)


def _per_label(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a per-sample ``module`` over ``(B, K, ...)`` and give back ``(B, K, ...)``."""
    return module(x.flatten(0, 1)).unflatten(0, x.shape[:2])


def masked_composites(x: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Pairs ``(B, K, 2, H, W)`` of classes ``labels`` ``(B, K)`` -> ``(B, K, 1 + C, H, W)``.

    Each pair becomes a native multichannel image with red in channel 0 and its green in
    channel ``label + 1``; every other green channel is -1, the value of an empty pixel.
    """
    own = F.one_hot(labels, n_classes).bool()[..., None, None]  # (B, K, C, 1, 1)
    greens = torch.where(own, x[:, :, 1:2], -1.0)
    return torch.cat([x[:, :, 0:1], greens], dim=2)


# --------------------------------------------------------------------------------------------
# cGAN: the label concatenated to the inputs


class CGANGenerator(nn.Module):
    """G(z, y): the B.1 generator on concat(z, one-hot y); every class from the same z."""

    def __init__(self, n_classes: int = 6, image_size=(48, 80), nz: int = 100, width: int = 64):
        super().__init__()
        size = _size(image_size)
        self.nz, self.nz_red, self.n_classes = int(nz), 0, int(n_classes)
        self.image_size, self.shares_red = tuple(size), n_classes == 1
        self.config = {"arch": "cgan", "n_classes": int(n_classes), "image_size": size, "nz": int(nz),
                       "width": int(width)}
        self.net = _DCGANBackbone(size, nz + n_classes, width, 2)
        _init_weights(self)

    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pairs ``(B, K, 2, H, W)``: sample b drawn as each class ``labels[b]``."""
        onehot = F.one_hot(labels, self.n_classes).to(z.dtype)
        inputs = torch.cat([z[:, None].expand(*labels.shape, z.shape[1]), onehot], dim=2)
        return _per_label(self.net, inputs)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generate(z, _all_classes(z.shape[0], self.n_classes, z.device))


class CGANCritic(nn.Module):
    """D(x, y): the B.2 critic on the pair with the one-hot label as C constant channels."""

    def __init__(self, n_classes: int = 6, image_size=(48, 80), width: int = 64, bn: bool = True,
                 spectral_norm: bool = False):
        super().__init__()
        size = _size(image_size)
        self.n_classes = self.n_scores = int(n_classes)
        self.image_size = tuple(size)
        self.config = {"arch": "cgan", "n_classes": int(n_classes), "image_size": size, "width": int(width),
                       "bn": bool(bn), "spectral_norm": bool(spectral_norm)}
        self.critic = _DCGANDiscriminator(size, 2 + n_classes, width, bn, spectral_norm)

    def score(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        maps = F.one_hot(labels, self.n_classes).to(x.dtype)[..., None, None].expand(*labels.shape, -1, *x.shape[-2:])
        return _per_label(self.critic, torch.cat([x, maps], dim=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x, _all_classes(x.shape[0], self.n_classes, x.device))


# --------------------------------------------------------------------------------------------
# Multichannel with spatial separation: the critic sees one class's channel at a time


class MaskedMultichannelCritic(nn.Module):
    """The B.2 critic on 1 + C channels, fed :func:`masked_composites`: ``(B, C, 2, H, W) -> (B, C)``.

    Column c reads pair c only: its red, and its green in slot c. A real batch (column c a
    cell of class c) and the generator's output (column c its red with the green of class c)
    are masked alike, so the critic cannot tell them apart by the other classes' channels,
    which real cells never fill. It judges one pair at a time like each of the star model's
    critics, hence their width, not the composite critic's. Its input holds C composites of
    1 + C channels per sample, which is fine for 6 classes; for 41 use ``projection``.
    """

    def __init__(self, n_classes: int = 6, image_size=(48, 80), width: int = 64, bn: bool = True,
                 spectral_norm: bool = False):
        super().__init__()
        size = _size(image_size)
        self.n_classes = self.n_scores = int(n_classes)
        self.image_size = tuple(size)
        self.config = {"arch": "multichannel-masked", "n_classes": int(n_classes), "image_size": size,
                       "width": int(width), "bn": bool(bn), "spectral_norm": bool(spectral_norm)}
        self.critic = _DCGANDiscriminator(size, 1 + n_classes, width, bn, spectral_norm)

    def score(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return _per_label(self.critic, masked_composites(x, labels, self.n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x, _all_classes(x.shape[0], self.n_classes, x.device))


# --------------------------------------------------------------------------------------------
# Projection discriminator with a conditional-BN generator (METHODS G)


class ConditionalBatchNorm2d(nn.Module):
    """γ_y · BN(h) + β_y: BN without affine terms, then a per-class gain and bias (γ = 1, β = 0 at start)."""

    def __init__(self, channels: int, n_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(n_classes, channels)
        self.bias = nn.Embedding(n_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``h`` ``(N, channels, H, W)``, ``labels`` ``(N,)``."""
        return self.gain(labels)[:, :, None, None] * self.norm(h) + self.bias(labels)[:, :, None, None]


class ProjectionGenerator(nn.Module):
    """Separable generator (B.3 widths and red/green split) with a class-conditional green tower.

    The red tower (BN) reads ``z[:, :nz_red]`` and runs once per sample: every class shares its
    red cell. The green tower reads all of z and the red features, as in B.3, and its BNs are
    conditional: the class enters only through their gains and biases, so one set of weights
    draws every class. The red-to-green convolutions and the first green layer do not depend
    on the class either, so they also run once per sample; only the green tower proper runs
    once per (sample, class).
    """

    def __init__(self, n_classes: int = 6, image_size=(48, 80), nz: int = 100, width: int = 64,
                 nz_red: int | None = None, red_widths=None):
        super().__init__()
        size = _size(image_size)
        base, _ = tower_plan(size)
        nz_red, red_widths, green_widths = _red_split(size, width, nz, nz_red, red_widths)
        self.nz, self.nz_red, self.n_classes = int(nz), nz_red, int(n_classes)
        self.image_size, self.shares_red = tuple(size), True
        self.config = {"arch": "projection", "n_classes": int(n_classes), "image_size": size, "nz": int(nz),
                       "width": int(width), "nz_red": nz_red, "red_widths": red_widths}
        self.red_first = nn.ConvTranspose2d(nz_red, red_widths[0], base, 1, 0, bias=False)
        self.green_first = nn.ConvTranspose2d(nz, green_widths[0], base, 1, 0, bias=False)
        self.red_convs, self.green_from_red, self.green_from_green = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for r_in, g_in, r_out, g_out in zip(red_widths, green_widths, red_widths[1:] + [1], green_widths[1:] + [1]):
            self.red_convs.append(nn.ConvTranspose2d(r_in, r_out, 4, 2, 1, bias=False))
            self.green_from_red.append(nn.ConvTranspose2d(r_in, g_out, 4, 2, 1, bias=False))
            self.green_from_green.append(nn.ConvTranspose2d(g_in, g_out, 4, 2, 1, bias=False))
        self.red_norms = nn.ModuleList(nn.BatchNorm2d(r) for r in red_widths)
        self.green_norms = nn.ModuleList(ConditionalBatchNorm2d(g, n_classes) for g in green_widths)
        _init_weights(self)

    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pairs ``(B, K, 2, H, W)``: sample b drawn as each class ``labels[b]``, one red per sample."""
        b, k = labels.shape
        y = labels.flatten()

        def per_label(h):  # (B, ...) -> (B·K, ...), the same features for each of a sample's labels
            return h[:, None].expand(b, k, *h.shape[1:]).flatten(0, 1)

        z = z.reshape(b, -1, 1, 1)
        red = torch.relu(self.red_norms[0](self.red_first(z[:, : self.nz_red])))
        green = torch.relu(self.green_norms[0](per_label(self.green_first(z)), y))
        last = len(self.red_convs) - 1
        layers = zip(self.red_convs, self.green_from_red, self.green_from_green)
        for i, (to_red, from_red, from_green) in enumerate(layers):
            red, green = to_red(red), per_label(from_red(red)) + from_green(green)
            if i < last:
                red = torch.relu(self.red_norms[i + 1](red))
                green = torch.relu(self.green_norms[i + 1](green, y))
        return _stack_pairs(torch.tanh(red), torch.tanh(green).reshape(b, k, *green.shape[-2:]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generate(z, _all_classes(z.shape[0], self.n_classes, z.device))


class ProjectionCritic(nn.Module):
    """D(x, y) = ψ(φ(x)) + ⟨e_y, φ(x)⟩ on each pair (METHODS G): ``(B, C, 2, H, W) -> (B, C)``.

    φ is the B.2 body without BN, ending in ReLU and a sum over space (``8·width`` features at
    48x80); ψ is linear; e_y is row y of a C x d embedding. Spectral norm on every conv, on ψ
    and on the embedding, as in Miyato & Koyama; it sets the scale, so ψ and the embedding
    keep torch's default initialisation.
    """

    def __init__(self, n_classes: int = 6, image_size=(48, 80), width: int = 64):
        super().__init__()
        size = _size(image_size)
        self.n_classes = self.n_scores = int(n_classes)
        self.image_size = tuple(size)
        self.config = {"arch": "projection", "n_classes": int(n_classes), "image_size": size, "width": int(width)}
        widths = _critic_widths(size, width)
        layers = []
        for c_in, c_out in zip([2] + widths[:-1], widths):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
        layers[-1] = nn.ReLU()  # φ ends in ReLU before the sum
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(widths[-1], 1)
        self.embed = nn.Embedding(n_classes, widths[-1])
        _init_weights(self)
        for layer in [*self.features, self.linear, self.embed]:
            if isinstance(layer, (nn.Conv2d, nn.Linear, nn.Embedding)):
                _spectral_norm(layer)

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(B, K, d)`` of pairs ``(B, K, 2, H, W)``."""
        return _per_label(self.features, x).sum(dim=(-2, -1))

    def score(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        phi = self.phi(x)
        return self.linear(phi).squeeze(-1) + (self.embed(labels) * phi).sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x, _all_classes(x.shape[0], self.n_classes, x.device))


# --------------------------------------------------------------------------------------------
# Factory (called by architectures.make_models)

CONDITIONAL_ARCHS = ("cgan", "multichannel-masked", "projection")


def make_conditional_models(name: str, n_classes: int, image_size, width: int, nz: int, *, critic_bn: bool,
                            spectral_norm: bool):
    """``(G, D)`` for ``cgan``, ``multichannel-masked`` or ``projection`` (see :func:`.architectures.make_models`).

    All three use the plain ``width`` and ``nz``: ``multichannel-masked`` is the ``multichannel``
    generator with 1 + C output channels but not grown to match a star model (that size grows
    with C², some 2·10⁹ parameters for 41 classes at width 64), so it scales to many classes like
    the other two. The projection critic has no BN and always spectral norm.
    """
    size = _size(image_size)
    if name == "cgan":
        return CGANGenerator(n_classes, size, nz, width), CGANCritic(n_classes, size, width, critic_bn, spectral_norm)
    if name == "projection":
        return ProjectionGenerator(n_classes, size, nz, width), ProjectionCritic(n_classes, size, width)
    if name == "multichannel-masked":
        G = MultichannelGenerator(n_classes, size, nz, width)
        return G, MaskedMultichannelCritic(n_classes, size, width, critic_bn, spectral_norm)
    raise ValueError(f"'{name}' is not a conditional model; one of {list(CONDITIONAL_ARCHS)}")
