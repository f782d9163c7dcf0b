"""Validate a model file before any model is built from it.

A model file is JSON metadata plus tensors (as :func:`napari_biogans.checkpoints.load` returns
them). A damaged or hostile file must not build a network of a million channels (napari was
killed for out of memory by a 300 KB file whose card said width 1,000,000), sample black cells
from NaN weights, or fail later with an ``AttributeError``. :func:`check_model_file` checks, in
this order and before anything is allocated:

1. the metadata is a JSON object with the keys and types sampling needs (``kind``, the config,
   ``class_names`` a list of distinct non-empty names, one per class of the generator);
2. every config value lies within sane bounds (widths, latent sizes, classes, image and tile
   sizes), then the network is built on torch's ``meta`` device (no memory) to count its
   parameters and refuse one that would not fit in memory;
3. the tensors are exactly the network's: the same names and shapes, floating point where the
   network holds floats, and every value finite.

Every refusal is one :class:`~napari_biogans.checkpoints.CheckpointError` line naming the file.
"""

from __future__ import annotations

from .checkpoint_format import FORMAT_VERSION, CheckpointError
from .data import guards

GENERATOR_KIND = "generator"
EM_KIND = "em-generator"  # training/em_trainer.MODEL_KIND; not imported to keep this module light
SEGMENTER_KIND = "em-segmenter"  # models/segmenter.MODEL_KIND
SEGMENTER_ARCH = "segmenter-unet"
# the label generator's and image generator's architecture for each EM mode (None: no image generator)
EM_MODES = {
    "sgan": ("label-generator", "image-generator"),
    "dsgan": ("label-generator", "image-generator"),
    "joint": ("joint-generator", None),
    "conditional": ("conditional-label-generator", None),
}

# (smallest, largest) of each integer config value; anything outside is damage, not a model
BOUNDS = {
    "n_classes": (1, 256),
    "nz": (1, 4096),
    "nz_red": (1, 4095),
    "width": (1, 4096),
    "n_layers": (1, 10),
    "n_blocks": (1, 12),
    "depth": (1, 12),
    "out_channels": (1, 16),
    "in_channels": (1, 16),
    "levels": (1, 8),
    "label_channels": (1, 16),
}
MAX_IMAGE_SIDE = 2048  # fluorescence cells (LIN cells are 48 x 80 or 96 x 160)
MAX_PARAMETERS = 2_000_000_000
MAX_LABEL_DOWNSAMPLE = 16
MAX_CROP = 8192  # EM training tiles
MAX_NAME_LENGTH = 200


def _fail(path, problem: str):
    raise CheckpointError(f"{guards.display_name(path)}: {problem}")


def check_model_file(path, meta, tensors) -> None:
    """Refuse a model file whose metadata or tensors are not a usable, sane generator.

    ``meta`` and ``tensors`` are what ``checkpoints.load(path)`` returns for a ``generator``,
    ``em-generator`` or ``em-segmenter`` file. Raises :class:`CheckpointError` naming ``path`` and the problem.
    """
    if not isinstance(meta, dict):
        _fail(path, f"the metadata must be a JSON object, got {type(meta).__name__}")
    fmt = meta.get("format", FORMAT_VERSION)
    if not _is_int(fmt) or not 1 <= fmt <= FORMAT_VERSION:
        _fail(path, f"format {fmt!r} is not one this version reads (1 to {FORMAT_VERSION}); update napari-biogans")
    kind = meta.get("kind")
    if kind == GENERATOR_KIND:
        modules = {"": _generator(path, meta)}
    elif kind == EM_KIND:
        modules = _em_modules(path, meta)
    elif kind == SEGMENTER_KIND:
        modules = {"": _segmenter(path, meta)}
    else:
        _fail(path, f"'kind' is {kind!r}; expected a model file ('{GENERATOR_KIND}', '{EM_KIND}' or "
                    f"'{SEGMENTER_KIND}')")
    _check_size(path, modules)
    _check_tensors(path, tensors, modules)


# --------------------------------------------------------------------------------------------
# Metadata


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_config_values(path, config: dict, where: str) -> None:
    for key, value in config.items():
        if key in BOUNDS:
            low, high = BOUNDS[key]
            if not _is_int(value) or not low <= value <= high:
                _fail(path, f"{where} '{key}' is {_short(value)}; expected an integer from {low} to {high}")
        elif key in ("separable", "bn", "spectral_norm") and not isinstance(value, bool):
            _fail(path, f"{where} '{key}' is {_short(value)}; expected true or false")


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _image_size(path, value, where: str) -> list[int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(_is_int(v) and 1 <= v <= MAX_IMAGE_SIDE for v in value)
    ):
        _fail(path, f"{where} is {_short(value)}; expected [height, width], each 1 to {MAX_IMAGE_SIDE}")
    return value


def _names(path, value, key: str) -> list[str]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(x, str) and x.strip() and len(x) <= MAX_NAME_LENGTH for x in value)
    ):
        _fail(path, f"'{key}' must be a non-empty list of names, got {_short(value)}")
    if len(set(value)) != len(value):
        _fail(path, f"'{key}' repeats a name: {_short(value)}")
    return value


def _generator(path, meta: dict):
    """The fluorescence generator the config describes, built on the meta device."""
    from .models.architectures import GENERATOR_ARCHS

    config = meta.get("config")
    if not isinstance(config, dict):
        _fail(path, f"'config' must be a JSON object describing the generator, got {_short(config)}")
    arch = config.get("arch")
    if arch not in GENERATOR_ARCHS:
        _fail(path, f"unknown generator {_short(arch)}; one of {sorted(GENERATOR_ARCHS)}")
    _check_config_values(path, config, "config")
    size = _image_size(path, config.get("image_size", [48, 80]), "config 'image_size'")
    if "image_size" in meta and meta["image_size"] != size:
        _fail(path, f"'image_size' {_short(meta['image_size'])} differs from the config's {size}")
    red = config.get("red_widths")
    if red is not None and (
        not isinstance(red, list) or len(red) > 16 or not all(_is_int(r) and 1 <= r <= BOUNDS["width"][1] for r in red)
    ):
        _fail(path, f"config 'red_widths' is {_short(red)}; expected a short list of positive integers")
    if _is_int(config.get("nz_red")) and _is_int(config.get("nz")) and config["nz_red"] >= config["nz"]:
        _fail(path, f"config 'nz_red' {config['nz_red']} must be smaller than 'nz' {config['nz']}")
    generator = _build(path, "the generator", lambda: _build_generator(config))
    names = _names(path, meta.get("class_names"), "class_names")
    if len(names) != generator.n_classes:
        _fail(path, f"'class_names' has {len(names)} names for a generator of {generator.n_classes} classes")
    if "channel_names" in meta:
        _names(path, meta["channel_names"], "channel_names")
    return generator


def _build_generator(config):
    from .models.architectures import build_generator

    return build_generator(config)


def _em_modules(path, meta: dict) -> dict:
    """``{prefix: module}`` of an EM model file, built on the meta device."""
    from .models.architectures import EM_ARCHS, build_em_module

    mode = meta.get("mode")
    if not isinstance(mode, str) or mode not in EM_MODES:
        _fail(path, f"'mode' is {_short(mode)}; expected one of {sorted(EM_MODES)}")
    down = meta.get("label_downsample", 1)
    if not _is_int(down) or not 1 <= down <= MAX_LABEL_DOWNSAMPLE:
        _fail(path, f"'label_downsample' is {_short(down)}; expected an integer from 1 to {MAX_LABEL_DOWNSAMPLE}")
    crop = meta.get("crop")
    if crop is not None and (not _is_int(crop) or not 8 <= crop <= MAX_CROP):
        _fail(path, f"'crop' is {_short(crop)}; expected an integer tile side from 8 to {MAX_CROP}")
    modules = {}
    for prefix, arch in zip(("label_generator", "image_generator"), EM_MODES[mode]):
        config = meta.get(prefix)
        if arch is None:
            if config is not None:
                _fail(path, f"a {mode} model has no '{prefix}', but the file describes one")
            continue
        if not isinstance(config, dict):
            _fail(path, f"'{prefix}' must be a JSON object describing the module, got {_short(config)}")
        if config.get("arch") != arch or arch not in EM_ARCHS:
            _fail(path, f"'{prefix}' is a {_short(config.get('arch'))}; a {mode} model needs a '{arch}'")
        _check_config_values(path, config, f"'{prefix}'")
        modules[f"{prefix}."] = _build(path, f"the {prefix.replace('_', ' ')}", lambda c=config: build_em_module(c))
    return modules


def _segmenter(path, meta: dict):
    """The EM segmenter's U-Net, built on the meta device."""
    from .models.architectures import build_em_module

    config = meta.get("segmenter")
    if not isinstance(config, dict) or config.get("arch") != SEGMENTER_ARCH:
        _fail(path, f"'segmenter' must describe a '{SEGMENTER_ARCH}', got {_short(config)}")
    _check_config_values(path, config, "'segmenter'")
    return _build(path, "the segmenter", lambda: build_em_module(config))


def _build(path, what: str, build):
    """``build()`` on torch's meta device: shapes and parameter counts, but no memory."""
    import torch

    try:
        with torch.device("meta"):
            return build()
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, OverflowError, RuntimeError) as err:
        _fail(path, f"{what}'s config does not describe a network ({err})")


# --------------------------------------------------------------------------------------------
# Size and tensors


def _check_size(path, modules: dict) -> None:
    n = sum(t.numel() for module in modules.values() for t in module.state_dict().values())
    if n > MAX_PARAMETERS:
        _fail(path, f"the config describes {n:,} parameters, more than {MAX_PARAMETERS:,}; the file is damaged")
    # float32 weights once in memory (a loader may cast half-precision files up)
    guards.check_allocation(4 * n, f"a model of {n:,} parameters", path, CheckpointError)


def _check_tensors(path, tensors, modules: dict) -> None:
    import torch

    if not isinstance(tensors, dict):
        _fail(path, f"expected named tensors, got {type(tensors).__name__}")
    expected = {prefix + k: v for prefix, module in modules.items() for k, v in module.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        details = [f"{label} {names[:3]}{'...' if len(names) > 3 else ''}"
                   for label, names in (("missing", missing), ("unexpected", extra)) if names]
        _fail(path, f"the tensors do not fit the config ({'; '.join(details)})")
    for name, own in expected.items():
        value = tensors[name]
        if not isinstance(value, torch.Tensor):
            _fail(path, f"'{name}' is not a tensor")
        if tuple(value.shape) != tuple(own.shape):
            _fail(path, f"'{name}' has shape {tuple(value.shape)}; the config needs {tuple(own.shape)}")
        if own.is_floating_point():
            if not value.is_floating_point():
                _fail(path, f"'{name}' holds {str(value.dtype).replace('torch.', '')} values; expected floating point")
            if not bool(torch.isfinite(value).all()):
                _fail(path, f"'{name}' holds NaN or infinite values; the model is broken (retrain or resume "
                      "from an earlier checkpoint)")
        elif value.is_floating_point() or value.is_complex():
            _fail(path, f"'{name}' holds {str(value.dtype).replace('torch.', '')} values; expected integers")
