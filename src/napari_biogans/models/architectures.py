"""The one catalogue of architectures: every generator, critic and EM module by name, and the
factories that build them from a checkpoint's config or from a model name.

The tables are declared here, once, and never edited afterwards: a checkpoint's ``config``
(``{"arch": ..., **kwargs}``, a module's own ``config``) rebuilds through them whatever module was
imported first. The model families stay in their own modules (:mod:`.fluorescence`,
:mod:`.conditional`, :mod:`.em`), which do not import this one; the tables name their classes
through those modules, so the list of classes the package exports stays in ``models/__init__.py``
alone, and :func:`make_models` builds through the tables.
"""

from __future__ import annotations

from torch import nn

from . import conditional, em, fluorescence, segmenter

__all__ = ["GENERATOR_ARCHS", "CRITIC_ARCHS", "EM_ARCHS", "canonical_arch", "build_generator", "build_critic",
           "build_em_module", "make_models"]

GENERATOR_ARCHS = {
    "dcgan": fluorescence.DCGANGenerator,
    "separable": fluorescence.SeparableGenerator,
    "star": fluorescence.StarGenerator,
    "one-class": fluorescence.OneClassGenerators,
    "multichannel": fluorescence.MultichannelGenerator,
    "cgan": conditional.CGANGenerator,
    "projection": conditional.ProjectionGenerator,
}
CRITIC_ARCHS = {
    "dcgan": fluorescence.DCGANCritic,
    "multichannel": fluorescence.MultichannelCritic,
    "cgan": conditional.CGANCritic,
    "multichannel-masked": conditional.MaskedMultichannelCritic,
    "projection": conditional.ProjectionCritic,
}
EM_ARCHS = {cls.arch: cls for cls in (em.LabelGenerator, em.JointGenerator, em.MultiScaleDiscriminator,
                                      em.CascadeGenerator, em.ConditionalLabelGenerator, em.UNet,
                                      segmenter.SegmenterUNet)}

# the names make_models takes (METHODS C.3 / the reference scripts' spellings) -> (arch, separable)
_ALIASES = {
    "dcgan": ("dcgan", False),
    "dcgan-sep": ("separable", True),
    "separable": ("separable", True),
    "star": ("star", False),
    "star-shaped": ("star", False),
    "dcgan-star-shaped": ("star", False),
    "one-class": ("one-class", False),
    "independent": ("one-class", False),
    "independent-sep": ("one-class", True),
    "one-class-sep": ("one-class", True),
    "multichannel": ("multichannel", False),
    "multichannel-sep": ("multichannel", True),
    "dcgan-sep-multichannel": ("multichannel", True),
    "cgan": ("cgan", False),
    "multichannel-masked": ("multichannel-masked", False),
    "projection": ("projection", False),
}


def canonical_arch(name: str) -> tuple[str, bool]:
    """``(architecture, separable)`` for any accepted spelling, e.g. ``one-class-sep`` -> ``("one-class", True)``."""
    key = str(name).strip().casefold().replace("_", "-")  # METHODS I.1, I.2: compare case-folded, exactly
    if key not in _ALIASES:
        raise ValueError(f"unknown model '{name}'; one of {sorted({arch for arch, _ in _ALIASES.values()})}")
    return _ALIASES[key]


def _split_config(config: dict, what: str) -> tuple[str, dict]:
    kwargs = dict(config)
    if "arch" not in kwargs:
        raise KeyError(f"{what} config has no 'arch'")
    return kwargs.pop("arch"), kwargs


def build_generator(config: dict) -> nn.Module:
    """The generator a ``config`` (``{"arch": ..., **kwargs}``, e.g. ``G.config``) describes."""
    arch, kwargs = _split_config(config, "generator")
    if arch not in GENERATOR_ARCHS:
        raise ValueError(f"unknown generator '{arch}'; one of {sorted(GENERATOR_ARCHS)}")
    return GENERATOR_ARCHS[arch](**kwargs)


def build_critic(config: dict) -> nn.Module:
    """The critic a ``config`` (e.g. ``D.config``) describes."""
    arch, kwargs = _split_config(config, "critic")
    if arch not in CRITIC_ARCHS:
        raise ValueError(f"unknown critic '{arch}'; one of {sorted(CRITIC_ARCHS)}")
    return CRITIC_ARCHS[arch](**kwargs)


def build_em_module(config: dict) -> nn.Module:
    """The EM module a ``config`` (e.g. ``module.config``) describes; a ValueError for anything else
    (EM configs come from model files, whose errors are reported as the file's)."""
    kwargs = dict(config)
    arch = kwargs.pop("arch", None)
    if arch not in EM_ARCHS:
        raise ValueError(f"unknown EM module '{arch}'; one of {sorted(EM_ARCHS)}")
    try:
        return EM_ARCHS[arch](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad config for EM module '{arch}': {err}") from None


def make_models(arch: str, n_classes: int = 1, image_size=(48, 80), width: int = 64, nz: int = 100, *,
                critic_bn: bool, spectral_norm: bool = False, separable: bool | None = None):
    """``(G, D)`` for one of ``dcgan, separable, one-class, star, multichannel`` or a conditional
    model (``cgan, multichannel-masked, projection``, see :mod:`.conditional`).

    ``width``/``nz`` are the DCGAN ngf = ndf and latent size. ``dcgan`` and ``separable`` are
    joint models (C = 1) with the B.2 critic; ``one-class`` and ``star`` get C independent
    critics. ``multichannel`` is matched to a star model of the same ``width``/``nz``
    (:func:`.multichannel_size`: ngf = ndf = 224 and nz = 350 for C = 6, width 64, nz 100, the
    published configuration); its critic is the B.6 critic on 1 + C channels with that width.
    ``separable`` picks the green-on-red variant of ``one-class`` and ``multichannel``
    (aliases: ``one-class-sep`` = ``independent-sep``, ``multichannel-sep``). ``critic_bn`` comes from the objective.
    """
    name, default_sep = canonical_arch(arch)
    separable = default_sep if separable is None else bool(separable)
    size = fluorescence._size(image_size)
    if name in conditional.CONDITIONAL_ARCHS:
        return conditional.make_conditional_models(name, n_classes, size, width, nz, critic_bn=critic_bn,
                                                   spectral_norm=spectral_norm)
    critic = dict(image_size=size, bn=critic_bn, spectral_norm=spectral_norm)
    if name in ("dcgan", "separable"):
        if n_classes != 1:
            raise ValueError(f"'{name}' is a joint model of all proteins pooled (n_classes 1, got {n_classes})")
        return GENERATOR_ARCHS[name](size, nz, width), CRITIC_ARCHS["dcgan"](1, width=width, **critic)
    if name == "star":
        G = GENERATOR_ARCHS["star"](n_classes, size, nz, width)
        return G, CRITIC_ARCHS["dcgan"](n_classes, width=width, **critic)
    if name == "one-class":
        G = GENERATOR_ARCHS["one-class"](n_classes, size, nz, width, separable=separable)
        return G, CRITIC_ARCHS["dcgan"](n_classes, width=width, **critic)
    ngf, nz_mc = fluorescence.multichannel_size(n_classes, width, nz)
    if separable:  # red counts of the matched star model: nz // 2 and the B.1 widths halved
        red = dict(nz_red=nz // 2, red_widths=[w // 2 for w in fluorescence._generator_widths(size, width)])
    else:
        red = {}
    G = GENERATOR_ARCHS["multichannel"](n_classes, size, nz_mc, ngf, separable=separable, **red)
    return G, CRITIC_ARCHS["multichannel"](n_classes, width=ngf, **critic)
