"""Checkpoints without pickle: tensors in safetensors, everything else as JSON in its header.

One ``.safetensors`` file holds both the tensors and a JSON document under the header key
``biogans``, so a checkpoint is written with one atomic rename and can never be half a pair.
Two kinds exist:

* a **model** file (``kind = "generator"``): generator weights (half precision when shipped),
  the architecture config, class names, image size, normalisation, the training data's
  description and hash, iterations, device, time and library versions;
* a **training state** file (``kind = "train-state"``): generator, critic, optimisers and RNG
  states, for an exact resume.

The catalogue of shipped models lives in ``napari_biogans.pretrained`` (installed from the
repository's ``pretrained/``); ``BIOGANS_MODELS`` adds folders (``os.pathsep``-separated).
:func:`resolve_model` turns whatever names a model (a catalogue name, a ``.safetensors`` file or a
training run's folder) into its file, checked against its card's SHA-256, and :func:`model_name`
is the name the model goes by in every provenance record; :mod:`napari_biogans.models.loader`
loads and caches models through them for the CLI and the widgets alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import struct
from pathlib import Path

from .checkpoint_format import FORMAT_VERSION, CheckpointError  # noqa: F401  (public here too)

HEADER_KEY = "biogans"
MODELS_ENV = "BIOGANS_MODELS"
NORMALISATION = "uint8 / 127.5 - 1 per channel ([-1, 1]); generators end in tanh"
RUN_FILE_STEMS = ("generator", "em_model")  # the model file a training run writes into its folder
MAX_HEADER_BYTES = 100_000_000


def library_versions() -> dict[str, str]:
    import numpy
    import torch

    from . import __version__

    return {
        "napari_biogans": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save(path, tensors: dict, meta: dict) -> Path:
    """Write tensors and JSON metadata atomically (:func:`napari_biogans.atomic.atomic_write`)."""
    from safetensors.torch import save as serialize

    from .atomic import write_bytes

    header = {HEADER_KEY: json.dumps({"format": FORMAT_VERSION, **meta})}
    # serialised here and written by the atomic helper so the file gets the user's umask, not save_file's 0600
    data = serialize({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=header)
    return write_bytes(path, data)


def load(path, kind: str | None = None) -> tuple[dict, dict]:
    """``(tensors, meta)`` from a checkpoint; a clear :class:`CheckpointError` for anything else."""
    from safetensors import SafetensorError, safe_open

    from .data import guards

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    guards.regular_file(path, CheckpointError)  # a FIFO would block the read
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            if HEADER_KEY not in header:
                raise CheckpointError(f"{path}: a safetensors file, but not a napari-biogans checkpoint")
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or foreign file: {err})") from None
    try:
        meta = json.loads(header[HEADER_KEY])
    except ValueError as err:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path}: its metadata is not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the metadata must be a JSON object, got {type(meta).__name__}")
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(f"{path}: a '{meta.get('kind')}' checkpoint, expected '{kind}'")
    return tensors, meta


def load_module_state(module, tensors: dict, path, prefix: str = "") -> None:
    """Load ``prefix``-ed tensors into ``module``, naming every missing, extra or mis-shaped tensor."""
    own = module.state_dict()
    given = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing = sorted(set(own) - set(given))
    extra = sorted(set(given) - set(own))
    shapes = [k for k in set(own) & set(given) if tuple(own[k].shape) != tuple(given[k].shape)]
    if missing or extra or shapes:
        details = []
        if missing:
            details.append(f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
        if extra:
            details.append(f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''}")
        if shapes:
            details.append(f"shape mismatch in {sorted(shapes)[:3]}")
        raise CheckpointError(f"{path}: weights do not fit this architecture ({'; '.join(details)})")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in given.items()})


# --------------------------------------------------------------------------------------------
# Generator (model) files


def save_generator(path, generator, meta: dict, half: bool = False) -> Path:
    """Save a generator with its config; ``half`` stores floating tensors as float16."""
    import torch

    tensors = {}
    for key, value in generator.state_dict().items():
        tensors[key] = value.half() if half and value.is_floating_point() else value
    meta = {
        "kind": "generator",
        "config": generator.config,
        "normalisation": NORMALISATION,
        "dtype": "float16" if half else str(next(generator.parameters()).dtype).replace("torch.", ""),
        "versions": library_versions(),
        **meta,
    }
    with torch.no_grad():
        return save(path, tensors, meta)


def load_generator(path, device: str = "cpu"):
    """``(generator in eval mode, meta)``: the architecture is rebuilt from the stored config."""
    from .models.architectures import build_generator

    from .model_checks import check_model_file

    tensors, meta = load(path, kind="generator")
    check_model_file(path, meta, tensors)
    try:
        generator = build_generator(meta["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: unknown generator config {meta.get('config')} ({err})") from None
    load_module_state(generator, tensors, path)
    return generator.to(device).eval(), meta


# --------------------------------------------------------------------------------------------
# The catalogue of shipped and user model folders


def shipped_folder() -> Path:
    """The ``pretrained/`` folder shipped with this copy of the package: installed inside it
    (``napari_biogans/pretrained``), or beside ``src/`` in a source checkout (PYTHONPATH=src, as on
    the GPU machine, and editable installs). Found from this file, not the import system, so a copy
    run from ``src/`` never takes another installation's models."""
    package = Path(__file__).resolve().parent
    installed = package / "pretrained"
    return installed if installed.is_dir() else package.parents[1] / "pretrained"


def model_folders() -> list[Path]:
    folders = [shipped_folder()]
    folders += [Path(p) for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    return folders


def catalogue() -> dict[str, Path]:
    """Model name -> file, from the shipped folder then ``BIOGANS_MODELS`` (later folders win)."""
    models = {}
    for folder in model_folders():
        if folder.is_dir():
            for file in sorted(folder.glob("*.safetensors")):
                models[file.stem] = file
    return models


_sha256_memo: dict[tuple, str] = {}  # (file, mtime, size) -> digest: a model is hashed once per version


def checked_sha256(path) -> str:
    """The file's SHA-256, checked against the ``sha256`` of the JSON card beside it when it has one
    (shipped models do); hashed once per version of the file."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _sha256_memo:
        digest = file_sha256(path)
        card = path.with_suffix(".json")
        expected = _card_sha256(card) if card.is_file() else None
        if expected and digest != expected:
            raise CheckpointError(f"{path}: SHA-256 does not match its card {card.name}; the file is damaged")
        _sha256_memo[key] = digest
    return _sha256_memo[key]


def _card_sha256(card: Path) -> str | None:
    try:
        text = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{card}: the model's card is not readable JSON ({err})") from None
    return text.get("sha256") if isinstance(text, dict) else None


def read_card(path) -> dict:
    """The JSON metadata of a napari-biogans ``.safetensors`` file, read from its header alone
    (no tensors): cheap enough for every entry of a model list."""
    from .data import guards

    path = Path(path)
    if path.exists():
        guards.regular_file(path, CheckpointError)  # a FIFO named x.safetensors would block open()
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > MAX_HEADER_BYTES:
                raise ValueError("header too large")
            header = json.loads(f.read(size))
        meta = json.loads(header["__metadata__"][HEADER_KEY])
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such model file") from None
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        raise CheckpointError(f"{path}: not a napari-biogans model file (.safetensors with a biogans header)") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: not a napari-biogans model file (its biogans header is not a JSON object)")
    return meta


def card_kind(path) -> str | None:
    """The ``kind`` a file's card declares; None for files that are not napari-biogans checkpoints."""
    try:
        return read_card(path).get("kind")
    except CheckpointError:
        return None


def canonical_path(path) -> Path:
    """``path`` made absolute with its folders resolved but not the file itself: a run folder's
    ``generator.safetensors`` is a link into its current checkpoint (``training.run_folder``), and the
    name that stays valid across checkpoints is the link's."""
    path = Path(path).expanduser()
    return path.parent.resolve() / path.name


_checked_models: dict[tuple, str | None] = {}  # (file, mtime, size, kind) -> the problem found, None: usable


def model_problem(name_or_path, kind: str | None = None) -> str | None:
    """What makes a model unusable, in one line naming the file (None: it is usable): resolved and
    hashed (:func:`resolve_model`), its card of ``kind``, then metadata and tensors checked
    (:func:`napari_biogans.model_checks.check_model_file`) without building the model. Remembered per
    version of the file, so a picker can ask on every selection."""
    try:
        path = resolve_model(name_or_path)
        stat = path.stat()
    except CheckpointError as err:
        return str(err)
    except OSError as err:
        return f"{name_or_path}: cannot be read ({err.strerror or err})"
    key = (str(canonical_path(path)), stat.st_mtime_ns, stat.st_size, kind)
    if key not in _checked_models:
        _checked_models[key] = _model_problem(path, kind)
    return _checked_models[key]


def _model_problem(path: Path, kind: str | None) -> str | None:
    from .model_checks import check_model_file

    try:
        found = read_card(path).get("kind")
        if kind is not None and found != kind:
            return f"{path}: a '{found}' file, not a '{kind}' model"
        tensors, meta = load(path, kind=kind)
        check_model_file(path, meta, tensors)
    except CheckpointError as err:
        return str(err)
    except OSError as err:
        return f"{path}: cannot be read ({err.strerror or err})"
    return None


def model_name(path) -> str:
    """The name a model file goes by in provenance: a run's model file is named after its run folder."""
    path = Path(path)
    if path.stem not in RUN_FILE_STEMS:
        return path.stem
    folder = path.parent.resolve()
    if folder.parent.name == "checkpoints":  # a file inside a run's checkpoint folder (training.run_folder)
        folder = folder.parent.parent
    return folder.name


def run_model_file(folder) -> Path | None:
    """The model file a training run wrote into ``folder`` (None when there is none yet)."""
    for stem in RUN_FILE_STEMS:
        file = Path(folder) / f"{stem}.safetensors"
        if file.is_file():
            return file
    return None


def names_a_model(name_or_path) -> bool:
    """Whether ``name_or_path`` is meant as a model: a ``.safetensors`` path, a run folder or a catalogue name."""
    path = Path(name_or_path)
    if path.suffix == ".safetensors":
        return True
    if path.is_dir():
        return run_model_file(path) is not None
    return not path.exists() and str(name_or_path) in catalogue()


def resolve_model(name_or_path) -> Path:
    """The model file of a catalogue name, a ``.safetensors`` file or a training run's folder,
    checked against its card's SHA-256 (:func:`checked_sha256`); a clear error for anything else."""
    path = Path(name_or_path)
    if path.is_dir():
        file = run_model_file(path)
        if file is None:
            expected = " or ".join(f"{stem}.safetensors" for stem in RUN_FILE_STEMS)
            raise CheckpointError(f"{path}: a folder without a model file ({expected}); give a training run's "
                                  "folder once it has saved its model, or the model file itself")
        path = file
    elif path.suffix == ".safetensors" or path.exists():
        if not path.exists():
            raise CheckpointError(f"{path}: no such model file")
        from .data import guards

        guards.regular_file(path, CheckpointError)  # a FIFO or device: refused before it can block a read
    else:
        models = catalogue()
        if str(name_or_path) not in models:
            known = ", ".join(sorted(models)) or "none installed"
            raise CheckpointError(f"unknown model '{name_or_path}'; known models: {known}, or give a "
                                  ".safetensors file or a training run's folder")
        path = models[str(name_or_path)]
    checked_sha256(path)
    return path
