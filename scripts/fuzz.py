"""Fuzz every reader and the model-file checks with malformed inputs, each read in its own process.

For each format a small valid input is written, then mutated (a hostile attribute, a replaced
dataset, a flipped byte, a truncation, a FIFO, ...); a forked child process reads it under a time
and memory limit. Every outcome is classified:

* **clean error**: the product's own error type, one line naming the file;
* **unnamed error**: the product's error type, but the message does not name the file;
* **read**: read, and the result passes every invariant (for a harmless mutation, equal to the original);
* **undetected**: a byte flip that no checksum covers changed pixels or weights, read as valid values;
* **traceback**: any other exception; **hang**: past the time limit; **crash**: killed by a
  signal or out of memory;
* **silent wrong**: a mutation that must be refused was read, or a harmless one read differently,
  or a read that breaks an invariant.

    nice python scripts/fuzz.py --inputs 1000                 # every format
    nice python scripts/fuzz.py --inputs 200 --formats h5,tif --examples 3

The mutations live here so that ``tests/test_fuzz_readers.py`` draws from the same ones.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import resource
import select
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from png_forge import GREY, GREY_ALPHA, png_bytes  # a sibling: scripts/ is on the path as a script and in pytest


def _errors():
    """The product's own error types: a refusal of one of these is a clean error."""
    from napari_biogans.checkpoints import CheckpointError
    from napari_biogans.data.em import EMFormatError
    from napari_biogans.data.lin import LinFormatError

    return (LinFormatError, EMFormatError, CheckpointError)


# --------------------------------------------------------------------------------------------
# Small valid inputs


def make_stack(truth: bool = True, n_per_class=(2, 2)):
    from napari_biogans.data import lin

    rng = np.random.default_rng(0)
    n = sum(n_per_class)
    class_index = np.repeat(np.arange(len(n_per_class)), n_per_class)
    names = ["Alp14", "Tea1"][: len(n_per_class)]
    files, counters = [], [0] * len(names)
    for c in class_index:
        files.append(f"{names[c]}/cell{counters[c]}.png")
        counters[c] += 1
    stack = lin.CellStack(
        images=rng.integers(0, 256, (n, 2, 48, 80), dtype=np.uint8),
        class_index=class_index,
        class_names=names,
        file_names=files,
    )
    if truth:
        stack.truth = {"phase": rng.random(n), "growth_mode": np.array(["monopolar", "bipolar"] * (n // 2))}
        stack.simulated = True
    return stack


def base_lin_folder(root: Path) -> Path:
    from napari_biogans.data import lin

    return lin.write_lin_folder(make_stack(), root / "LIN_Fuzz_train")


def base_h5(root: Path) -> Path:
    from napari_biogans.data import lin

    return lin.write_h5(make_stack(), root / "cells.h5", scale=(0.1, 0.1))


def base_tif(root: Path) -> Path:
    from napari_biogans.data import lin

    return lin.write_tiff(make_stack(truth=False), root / "cells.tif")


def base_vnc_folder(root: Path) -> Path:
    import imageio.v3 as iio
    import tifffile

    rng = np.random.default_rng(0)
    stack = root / "stack1"
    for sub in ("raw", "membranes", "mitochondria"):
        (stack / sub).mkdir(parents=True)
    for i in range(2):
        tifffile.imwrite(stack / "raw" / f"{i:02d}.tif", rng.integers(0, 256, (32, 32), dtype=np.uint8))
        iio.imwrite(stack / "membranes" / f"{i:02d}.png", (rng.random((32, 32)) < 0.2).astype(np.uint8) * 255)
        iio.imwrite(stack / "mitochondria" / f"{i:02d}.png", (rng.random((32, 32)) < 0.1).astype(np.uint8) * 200)
    return stack


def base_label_map(root: Path) -> Path:
    from napari_biogans.data import em

    labels = np.random.default_rng(0).integers(0, 3, (32, 32)).astype(np.uint8)
    return em.write_label_map(labels, root / "labels.png")


def base_fluorescence_model(root: Path) -> Path:
    import torch

    from napari_biogans import checkpoints
    from napari_biogans.models import StarGenerator

    torch.manual_seed(0)
    generator = StarGenerator(n_classes=2, nz=8, width=4)
    meta = {"class_names": ["Alp14", "Tea1"], "image_size": [48, 80], "channel_names": ["Bgs4", "Alp14", "Tea1"]}
    return checkpoints.save_generator(root / "model.safetensors", generator, meta)


def base_em_model(root: Path) -> Path:
    import torch

    from napari_biogans import checkpoints
    from napari_biogans.models.em import CascadeGenerator, LabelGenerator

    torch.manual_seed(0)
    label_generator = LabelGenerator(width=4, n_layers=2, nz=8, out_channels=2)
    image_generator = CascadeGenerator(label_channels=2, out_channels=1, width=4, n_blocks=2, nz=8)
    tensors = {f"label_generator.{k}": v for k, v in label_generator.state_dict().items()}
    tensors.update({f"image_generator.{k}": v for k, v in image_generator.state_dict().items()})
    meta = {
        "kind": "em-generator",
        "label_generator": label_generator.config,
        "image_generator": image_generator.config,
        "mode": "dsgan",
        "label_downsample": 1,
        "crop": 32,
        "label_codes": {"0": "cytoplasm", "1": "membrane", "2": "mitochondria"},
    }
    return checkpoints.save(root / "em_model.safetensors", tensors, meta)


# --------------------------------------------------------------------------------------------
# Reading a format, and what a read must satisfy


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _stack_summary(stack) -> dict:
    assert stack.images.dtype == np.uint8 and stack.images.ndim == 4 and stack.images.shape[1] == 2
    assert min(stack.images.shape) >= 1, "an empty stack"
    assert len(stack.class_index) == len(stack.images) == len(stack.file_names)
    assert 0 <= stack.class_index.min() and stack.class_index.max() < len(stack.class_names)
    assert all(isinstance(n, str) and n for n in list(stack.class_names) + list(stack.channel_names))
    assert len(stack.channel_names) == 2 and isinstance(stack.simulated, bool)
    for key, values in stack.truth.items():
        assert len(values) == len(stack.images), f"truth {key}"
    json.dumps({"d": stack.description, "c": stack.class_names, "f": stack.file_names}).encode("utf-8")
    return {
        "images": _digest(stack.images),
        "class_index": stack.class_index.tolist(),
        "class_names": list(stack.class_names),
        "file_names": list(stack.file_names),
        "channel_names": list(stack.channel_names),
        "truth": {k: np.asarray(v).tolist() for k, v in sorted(stack.truth.items())},
        "simulated": stack.simulated,
    }


def read_cells(path: Path) -> dict:
    from napari_biogans import _io
    from napari_biogans.data import lin

    summary = _stack_summary(lin.read_cells(path))
    if path.suffix == ".h5":
        layers = _io.read_h5_layers(path)
        assert len(layers) == 2 and all(np.isfinite(kw["scale"]).all() for _, kw, _ in layers)
        summary["scale"] = list(lin.read_h5_scale(path))
    return summary


def read_vnc_folder(path: Path) -> dict:
    from napari_biogans.data import em

    images, labels = em.read_sections(path, em.section_indices(path))
    assert images.dtype == np.uint8 and images.ndim == 3 and images.size
    assert labels is None or (labels.shape == images.shape and set(np.unique(labels)) <= {0, 1, 2})
    return {"images": _digest(images), "labels": None if labels is None else _digest(labels)}


def read_label_map(path: Path) -> dict:
    from napari_biogans.data import em

    labels = em.read_label_map(path)
    assert labels.dtype == np.uint8 and labels.ndim == 2 and labels.size and set(np.unique(labels)) <= {0, 1, 2}
    return {"labels": _digest(labels)}


def _tensor_digest(tensors: dict) -> str:
    return _digest(*[tensors[k].detach().float().numpy() for k in sorted(tensors)])


def read_fluorescence_model(path: Path) -> dict:
    import torch

    from napari_biogans import checkpoints, model_checks

    tensors, meta = checkpoints.load(path)
    model_checks.check_model_file(path, meta, tensors)
    generator, meta = checkpoints.load_generator(path)
    with torch.no_grad():
        out = generator(torch.randn(2, generator.nz, generator=torch.Generator().manual_seed(0)))
    assert torch.isfinite(out).all(), "non-finite samples"
    assert out.shape[1] == len(meta["class_names"]), "a class name per generated pair"
    return {"tensors": _tensor_digest(generator.state_dict()), "class_names": meta["class_names"]}


def read_em_model(path: Path) -> dict:
    from napari_biogans import checkpoints, model_checks
    from napari_biogans.models.em_inference import load_em_model

    tensors, meta = checkpoints.load(path)
    model_checks.check_model_file(path, meta, tensors)
    model = load_em_model(path)
    labels = model.sample_labels(32, 32, seed=0)
    assert labels.shape == (32, 32) and set(np.unique(labels)) <= {0, 1, 2}
    state = {f"g.{k}": v for k, v in model.label_generator.state_dict().items()}
    if model.image_generator is not None:
        state.update({f"x.{k}": v for k, v in model.image_generator.state_dict().items()})
    return {"tensors": _tensor_digest(state)}


# --------------------------------------------------------------------------------------------
# Mutations: (name, expectation, function(path, rng) -> path to read)
# expectation: "error" must be refused; "intact" refused or read equal to the original;
# "any" refused or read as valid values (a change no checksum covers)


DRAWN: list[str] = []  # what the current input's mutation drew, for the report


def _pick(rng, values):
    value = values[rng.randrange(len(values))]
    DRAWN.append(getattr(value, "__name__", None) or repr(value)[:40])
    return value


def flip_byte(path: Path, rng) -> Path:
    data = bytearray(path.read_bytes())
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return path


def truncate(path: Path, rng) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: rng.randrange(len(data))])
    return path


def append_garbage(path: Path, rng) -> Path:
    with open(path, "ab") as f:
        f.write(rng.randbytes(rng.randrange(1, 200)))
    return path


def garbage(path: Path, rng) -> Path:
    path.write_bytes(rng.randbytes(rng.randrange(0, 3000)))
    return path


def fifo(path: Path, rng) -> Path:
    path.unlink()
    os.mkfifo(path)
    return path


def directory(path: Path, rng) -> Path:
    path.unlink()
    path.mkdir()
    return path


FILE_MUTATIONS = [
    ("truncated", "error", truncate),
    ("random bytes", "error", garbage),
    ("FIFO", "error", fifo),
    ("directory", "error", directory),
]

HOSTILE_NAME_LISTS = [5, "abc", '"abc"', "[]", '[""]', "[1, 2]", '["Alp14", "Alp14"]', "{", b"\xff\xfe", "null",
                      '{"a": 1}', '["Alp14"]', '[["a"]]']


def _h5_attr(key, values):
    def mutate(path: Path, rng) -> Path:
        import h5py

        value = _pick(rng, values)
        with h5py.File(path, "r+") as f:
            if key in f.attrs:
                del f.attrs[key]
            f.attrs[key] = np.asarray(value) if isinstance(value, list) else value
        return path

    return mutate


def _h5_replace(name, makers):
    def mutate(path: Path, rng) -> Path:
        import h5py

        make = _pick(rng, makers)
        with h5py.File(path, "r+") as f:
            del f[name]
            make(f, name)
        return path

    return mutate


def _dataset(**kwargs):
    return lambda f, name: f.create_dataset(name, **kwargs)


H5_CELLS = [
    _dataset(data=np.zeros((4, 2, 48, 80), np.float32)),
    _dataset(data=np.zeros((4, 2, 48, 80), np.int16)),
    _dataset(data=np.zeros((4, 3, 48, 80), np.uint8)),
    _dataset(data=np.zeros((4, 48, 80), np.uint8)),
    _dataset(shape=(0, 2, 48, 80), dtype=np.uint8),
    _dataset(shape=(4, 2, 0, 0), dtype=np.uint8),
    _dataset(shape=(1, 2, 100000, 100000), dtype=np.uint8, chunks=(1, 1, 64, 64)),
    _dataset(data=np.zeros(4, dtype=[("a", "u1"), ("b", "f4")])),
    _dataset(data=np.array([b"cell"] * 4)),
    lambda f, name: f.create_group(name),
    lambda f, name: f.__setitem__(name, __import__("h5py").SoftLink("/nowhere")),
    lambda f, name: f.__setitem__(name, __import__("h5py").ExternalLink("missing.h5", "/cells")),
]
H5_CLASS_INDEX = [
    _dataset(data=np.array([0, 1, 5, 1])),
    _dataset(data=np.array([0, -1, 1, 1])),
    _dataset(data=np.array([0.0, 1.0, 0.5, 1.0])),
    _dataset(data=np.array([0, 1])),
    _dataset(data=np.zeros((4, 2), np.int64)),
    _dataset(data=np.array([b"a"] * 4)),
    lambda f, name: f.create_group(name),
    lambda f, name: f.__setitem__(name, __import__("h5py").SoftLink("/nowhere")),
]
H5_TRUTH = [
    _dataset(data=np.zeros(4)),
    lambda f, name: f.create_group(name).create_dataset("phase", data=np.zeros((4, 2))),
    lambda f, name: f.create_group(name).create_dataset("phase", data=np.zeros(3)),
    lambda f, name: f.create_group(name).create_dataset("mode", data=np.array([b"\xff\xfe"] * 4)),
    lambda f, name: f.create_group(name).create_group("phase"),
    lambda f, name: f.create_group(name).__setitem__("phase", __import__("h5py").SoftLink("/nowhere")),
]

H5_MUTATIONS = FILE_MUTATIONS + [
    ("flipped byte", "any", flip_byte),
    ("appended bytes", "intact", append_garbage),
    ("class_names attribute", "error", _h5_attr("class_names", HOSTILE_NAME_LISTS)),
    ("channel_names attribute", "error", _h5_attr("channel_names", [5, '["a"]', '["a", "b", "c"]', "[1, 2]", '"ab"',
                                                                     "x", '["", "g"]', b"\xff"])),
    ("file_names attribute", "error", _h5_attr("file_names", ["[]", '["a"]', 5, "[1, 2, 3, 4]", "{", "null"])),
    ("simulated attribute", "error", _h5_attr("simulated", ["no", "yes", 2, -1, 0.5, [1, 0], b"true"])),
    ("description attribute", "error", _h5_attr("description", [5, 1.5, [1, 2, 3], b"\xff\xfe"])),
    ("scale attribute", "error", _h5_attr("scale", ["a", [0.0, 1.0], [-1.0, 1.0], [float("nan"), 1.0],
                                                     [1.0, 2.0, 3.0], [float("inf"), 1.0]])),
    ("pixel_size_um attribute", "error", _h5_attr("pixel_size_um", [-1.0, 0.0, float("nan"), float("inf"), "x",
                                                                     [1.0, 2.0]])),
    ("cells dataset", "error", _h5_replace("cells", H5_CELLS)),
    ("class_index dataset", "error", _h5_replace("class_index", H5_CLASS_INDEX)),
    ("truth group", "error", _h5_replace("truth", H5_TRUTH)),
]


def _tif_rewrite(change):
    def mutate(path: Path, rng) -> Path:
        import tifffile

        from napari_biogans import ome

        with tifffile.TiffFile(path) as tif:  # lin.write_tiff writes an OME-TIFF, its JSON in the OME Description
            images = tif.asarray()
            meta = dict(tif.shaped_metadata[0]) if tif.shaped_metadata else dict(ome.tiff_metadata(tif, path)[0])
        meta.pop("shape", None)
        meta.pop("crc32", None)  # as other software writes it, so that the checks of each value are exercised
        images, meta = change(images, meta, rng)
        path.unlink()
        tifffile.imwrite(path, images, metadata=meta, photometric="minisblack")
        return path

    return mutate


def _tif_meta(key, values):
    def change(images, meta, rng):
        meta[key] = _pick(rng, values)
        return images, meta

    return _tif_rewrite(change)


def _tif_pixels(makers):
    def change(images, meta, rng):
        return _pick(rng, makers)(images), meta

    return _tif_rewrite(change)


def _tif_tags(path: Path, rng) -> Path:
    """Patch the first page's width and height to 0 or an absurd size without writing pixels."""
    import tifffile

    side = _pick(rng, [0, 100000, 2**31])
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(side)
        tif.pages[0].tags["ImageLength"].overwrite(side)
    return path


TIF_MUTATIONS = FILE_MUTATIONS + [
    ("flipped byte", "any", flip_byte),
    ("appended bytes", "intact", append_garbage),
    ("class_names metadata", "error", _tif_meta("class_names", [5, "abc", [], [""], [1, 2], ["A", "A"], ["A"], None,
                                                                {"a": 1}])),
    ("class_index metadata", "error", _tif_meta("class_index", [[0, 5, 0, 1], [0.5, 0, 1, 1], ["a"] * 4, [0, 1], 5,
                                                                [True, False, True, False], [-1, 0, 0, 0]])),
    ("channel_names metadata", "error", _tif_meta("channel_names", [5, ["a"], ["a", "b", "c"], [1, 2], "ab",
                                                                    ["", "g"]])),
    ("file_names metadata", "error", _tif_meta("file_names", [[], ["a"], 5, [1, 2, 3, 4], "abcd"])),
    ("simulated metadata", "error", _tif_meta("simulated", ["no", "yes", 2, 0.5, [1], None])),
    ("description metadata", "error", _tif_meta("description", [5, [1], {"a": 1}, None])),
    ("pixels", "error", _tif_pixels([
        lambda a: a.astype(np.float32),
        lambda a: a.astype(np.int16),
        lambda a: np.concatenate([a, a[:, :1]], axis=1),
        lambda a: a[:, 0],
        lambda a: a[:, :1],
    ])),
    ("width and height tags", "error", _tif_tags),
]


def _replace_cell(makers):
    def mutate(folder: Path, rng) -> Path:
        cell = _pick(rng, sorted(folder.glob("*/cell*.png")))
        data = _pick(rng, makers)(cell, rng)
        cell.write_bytes(data)
        return folder

    return mutate


def _pixels(cell: Path) -> np.ndarray:
    import imageio.v3 as iio

    return iio.imread(cell)


def _rgba(cell, rng, alpha=None):
    import imageio.v3 as iio

    rgb = _pixels(cell)
    a = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
    if alpha is not None:
        a[rng.randrange(rgb.shape[0]), rng.randrange(rgb.shape[1])] = alpha
    return iio.imwrite("<bytes>", np.concatenate([rgb, a], axis=2), extension=".png")


BAD_CELLS = [
    lambda c, rng: png_bytes(_pixels(c).astype(np.uint16) * 16, depth=16),  # 12-bit values in 16 bits
    lambda c, rng: png_bytes(_pixels(c)[..., 1], colour=GREY),
    lambda c, rng: png_bytes(np.stack([_pixels(c)[..., 1]] * 2, axis=2), colour=GREY_ALPHA),
    lambda c, rng: _rgba(c, rng, alpha=rng.randrange(255)),  # a transparent pixel
    lambda c, rng: png_bytes(_pixels(c)[:40]),  # 40 x 80
    lambda c, rng: png_bytes(np.zeros((0, 0, 3), np.uint8)),  # 0 x 0
    lambda c, rng: png_bytes(np.zeros((1, 100000, 3), np.uint8)),  # 1 x 100000
    lambda c, rng: c.read_bytes()[: rng.randrange(len(c.read_bytes()))],  # truncated
    lambda c, rng: bytes(b ^ (1 << rng.randrange(8)) if i == k else b
                         for k in [rng.randrange(len(c.read_bytes()))] for i, b in enumerate(c.read_bytes())),
    lambda c, rng: rng.randbytes(rng.randrange(0, 500)),
    lambda c, rng: b"GIF89a" + rng.randbytes(100),
]


def _truth_csv(makers):
    def mutate(folder: Path, rng) -> Path:
        csv_path = folder / "ground_truth.csv"
        text = csv_path.read_text()
        result = _pick(rng, makers)(text, rng)
        if isinstance(result, str):
            csv_path.write_text(result)
        elif isinstance(result, bytes):
            csv_path.write_bytes(result)
        else:  # a callable that replaces the file
            result(csv_path)
        return folder

    return mutate


def _csv_lines(text):
    return text.splitlines()


BAD_CSV = [
    lambda t, rng: "\n".join(line.split(",", 1)[1] for line in _csv_lines(t)) + "\n",  # no file column
    lambda t, rng: "\n".join(_csv_lines(t)[:2] + [_csv_lines(t)[2].rsplit(",", 1)[0]] + _csv_lines(t)[3:]) + "\n",
    lambda t, rng: "\n".join(_csv_lines(t)[:2] + [_csv_lines(t)[2] + ",extra"] + _csv_lines(t)[3:]) + "\n",
    lambda t, rng: t + "Alp14/cell0.png,Alp14," + "x" * 140000 + ",1\n",  # a 140 KB field
    lambda t, rng: t.encode("utf-8").replace(b"phase", b"ph\xe4se"),  # not UTF-8
    lambda t, rng: t + _csv_lines(t)[1] + "\n",  # a cell listed twice
    lambda t, rng: t.replace("Tea1/cell0.png,Tea1", "Tea1/cell0.png,Alp14"),  # the wrong class
    lambda t, rng: "",
    lambda t, rng: rng.randbytes(300),
    lambda t, rng: "\n".join(_csv_lines(t)[:-1]) + "\n",  # a cell without ground truth
    lambda t, rng: _csv_lines(t)[0] + "\n",
    lambda t, rng: t.replace("file,", "file,file,", 1),
    lambda t, rng: t.replace('"', "").replace("Alp14/cell1.png", 'Alp14/cell1.png"unclosed'),
    lambda t, rng: (lambda p: (p.unlink(), os.mkfifo(p))),
    lambda t, rng: (lambda p: (p.unlink(), p.mkdir())),
]


def _non_utf8_folder(folder: Path, rng) -> Path:
    protein = _pick(rng, sorted(d for d in folder.iterdir() if d.is_dir()))
    os.rename(bytes(protein), bytes(protein.parent) + b"/Tea\xff" + rng.randbytes(2).replace(b"/", b"_").replace(b"\0", b"_"))
    return folder


def _stray_file(folder: Path, rng) -> Path:
    protein = _pick(rng, sorted(d for d in folder.iterdir() if d.is_dir()))
    _pick(rng, [lambda: (protein / "notes.txt").write_text("x"), lambda: os.mkfifo(protein / "cell9.png.tmp"),
                lambda: (protein / "cellX.png").write_bytes(b"x")])()
    return folder


def _opaque_rgba(folder: Path, rng) -> Path:
    cell = _pick(rng, sorted(folder.glob("*/cell*.png")))
    cell.write_bytes(_rgba(cell, rng))
    return folder


LIN_MUTATIONS = [
    ("cell PNG", "error", _replace_cell(BAD_CELLS)),
    ("ground_truth.csv", "error", _truth_csv(BAD_CSV)),
    ("protein folder name not UTF-8", "error", _non_utf8_folder),
    ("stray entries", "intact", _stray_file),
    ("opaque RGBA cell", "intact", _opaque_rgba),
]


def _replace_section_file(sub, makers):
    def mutate(stack: Path, rng) -> Path:
        target = stack / sub / _pick(rng, sorted(p.name for p in (stack / sub).iterdir()))
        _pick(rng, makers)(target, rng)
        return stack

    return mutate


def _write_tif(array):
    def write(target: Path, rng):
        import tifffile

        target.unlink()
        tifffile.imwrite(target, array)

    return write


def _write_png(array_of):
    def write(target: Path, rng):
        import imageio.v3 as iio

        iio.imwrite(target, array_of(rng), extension=".png")

    return write


def _nan_mask(rng):
    return np.where(np.random.default_rng(rng.randrange(99)).random((32, 32)) < 0.2, np.nan, 0).astype(np.float32)


BAD_RAW = [
    _write_tif(np.zeros((32, 32), np.float32)),
    _write_tif(np.zeros((32, 32, 3), np.uint8)),
    _write_tif(np.zeros((2, 32, 32), np.uint8)),
    _write_tif(np.zeros((32, 32), np.int16)),
    _write_tif(np.zeros((16, 16), np.uint8)),  # unlike the other sections and its masks
    lambda t, rng: truncate(t, rng),
    lambda t, rng: garbage(t, rng),
    lambda t, rng: fifo(t, rng),
    lambda t, rng: directory(t, rng),
]
def _mask_as_tif(array_of):
    """Replace a mask PNG by a TIFF of the same section (read first, as ``NN.tif`` precedes ``NN.png``)."""

    def write(target: Path, rng):
        import tifffile

        target.unlink()
        tifffile.imwrite(target.with_suffix(".tif"), array_of(rng))

    return write


BAD_MASKS = [
    _mask_as_tif(_nan_mask),
    _mask_as_tif(lambda rng: -np.ones((32, 32), np.int16)),
    _write_png(lambda rng: np.zeros((16, 32), np.uint8)),
    _write_png(lambda rng: np.zeros((32, 32, 3), np.uint8)),
    lambda t, rng: truncate(t, rng),
    lambda t, rng: flip_byte(t, rng),
    lambda t, rng: garbage(t, rng),
    lambda t, rng: fifo(t, rng),
    lambda t, rng: t.unlink(),
]

VNC_MUTATIONS = [
    ("raw section", "error", _replace_section_file("raw", BAD_RAW)),
    ("membrane mask", "error", _replace_section_file("membranes", BAD_MASKS)),
    ("mitochondria mask", "error", _replace_section_file("mitochondria", BAD_MASKS)),
    ("raw section flipped byte", "any", _replace_section_file("raw", [lambda t, rng: flip_byte(t, rng)])),
]


def _as_tif(array_of):
    def mutate(path: Path, rng) -> Path:
        import tifffile

        target = path.with_suffix(".tif")
        path.unlink()
        tifffile.imwrite(target, array_of(rng))
        return target

    return mutate


def _png_labels(array_of):
    def mutate(path: Path, rng) -> Path:
        import imageio.v3 as iio

        iio.imwrite(path, array_of(rng))
        return path

    return mutate


def _tif_zero(path: Path, rng) -> Path:
    target = _as_tif(lambda rng: np.ones((2, 2), np.uint8))(path, rng)
    return _tif_tags(target, rng)


LABEL_MUTATIONS = FILE_MUTATIONS + [
    ("flipped byte", "error", flip_byte),  # every PNG chunk carries a CRC
    ("appended bytes", "intact", append_garbage),
    ("codes outside 0/1/2", "error", _png_labels(lambda rng: np.full((8, 8), rng.randrange(3, 256), np.uint8))),
    ("RGB", "error", _png_labels(lambda rng: np.zeros((8, 8, 3), np.uint8))),
    ("NaN codes (float TIFF)", "error", _as_tif(lambda rng: np.full((8, 8), np.nan, np.float32))),
    ("negative codes (int16 TIFF)", "error", _as_tif(lambda rng: -np.ones((8, 8), np.int16))),
    ("a stack of maps (TIFF)", "error", _as_tif(lambda rng: np.zeros((2, 8, 8), np.uint8))),
    ("0x0 or huge TIFF header", "error", _tif_zero),
]


def _model_meta(change):
    """Rewrite a model file with changed metadata (``change(meta, rng)`` returns the new JSON value)."""

    def mutate(path: Path, rng) -> Path:
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["biogans"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        value = change(meta, rng)
        text = value if isinstance(value, str) and value.startswith("RAW:") else json.dumps(value)
        save_file(tensors, str(path), metadata={"biogans": text.removeprefix("RAW:")})
        return path

    return mutate


def _set(keys, values):
    """Set ``meta[k0][k1]...`` to a drawn hostile value (deleting it for ``DELETE``)."""

    def change(meta, rng):
        target = meta
        for k in keys[:-1]:
            target = target[k]
        value = _pick(rng, values)
        if value is DELETE:
            target.pop(keys[-1], None)
        else:
            target[keys[-1]] = value
        return meta

    return _model_meta(change)


DELETE = object()


def _model_tensors(change):
    def mutate(path: Path, rng) -> Path:
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        floats = sorted(k for k, v in tensors.items() if v.is_floating_point() and v.numel())
        change(tensors, _pick(rng, floats), rng)
        save_file(tensors, str(path), metadata=header)
        return path

    return mutate


def _poison(tensors, key, rng):
    value = tensors[key].clone()
    value.view(-1)[rng.randrange(value.numel())] = _pick(rng, [float("nan"), float("inf"), float("-inf")])
    tensors[key] = value


def _retype(tensors, key, rng):
    import torch

    tensors[key] = tensors[key].to(_pick(rng, [torch.int32, torch.int64, torch.uint8, torch.bool]))


def _reshape(tensors, key, rng):
    value = tensors[key]
    tensors[key] = value.reshape(-1)[:-1].clone() if value.numel() > 1 else value.reshape(1, 1).repeat(2, 1)


def _drop(tensors, key, rng):
    del tensors[key]


def _extra(tensors, key, rng):
    tensors[key + "_extra"] = tensors[key].clone()


def _rename(tensors, key, rng):
    tensors["renamed." + key] = tensors.pop(key)


TENSOR_MUTATIONS = [
    ("NaN or infinite weight", "error", _model_tensors(_poison)),
    ("integer or bool weights", "error", _model_tensors(_retype)),
    ("tensor of another shape", "error", _model_tensors(_reshape)),
    ("missing tensor", "error", _model_tensors(_drop)),
    ("extra tensor", "error", _model_tensors(_extra)),
    ("renamed tensor", "error", _model_tensors(_rename)),
]
MODEL_FILE_MUTATIONS = FILE_MUTATIONS + [
    ("flipped byte", "any", flip_byte),
    ("metadata not an object", "error", _model_meta(lambda m, rng: _pick(rng, [[1, 2], None, 5, "star", True]))),
    ("metadata not JSON", "error", _model_meta(lambda m, rng: "RAW:" + _pick(rng, ["{", "", "nan", "[1,", "\xff"]))),
    ("kind", "error", _set(["kind"], [DELETE, "train-state", "x", 5, None])),
    ("format", "error", _set(["format"], [99, "1", -1, None, 1.5])),
]
BIG = [10**6, 10**9, 10**30, 0, -1, 1.5, True, "64", None, [64]]

FLUORESCENCE_MUTATIONS = MODEL_FILE_MUTATIONS + TENSOR_MUTATIONS + [
    ("config", "error", _set(["config"], [DELETE, None, [], "star", {}, {"arch": "star"}])),
    ("config arch", "error", _set(["config", "arch"], [DELETE, "nope", 5, None, "dcgan", "em-generator"])),
    ("config width", "error", _set(["config", "width"], BIG + [8])),
    ("config nz", "error", _set(["config", "nz"], BIG + [16])),
    ("config nz_red", "error", _set(["config", "nz_red"], BIG + [8, 2])),
    ("config n_classes", "error", _set(["config", "n_classes"], BIG + [3, 1])),
    ("config image_size", "error", _set(["config", "image_size"], [[0, 0], [100000, 100000], [48], "48x80",
                                                                   [48.0, 80.0], [96, 160], None, [-48, 80]])),
    ("config red_widths", "error", _set(["config", "red_widths"], [[1], "x", [0, 0, 0, 0], [10**9] * 4, [1, 1, 1, 1]])),
    ("class_names", "error", _set(["class_names"], [DELETE, [], "ab", [""], [1, 2], ["A"], ["A", "A"], None, 5,
                                                    ["A", "B", "C"], ["  ", "B"]])),
    ("image_size", "error", _set(["image_size"], [[1, 1], [96, 160], "x"])),
    ("channel_names", "error", _set(["channel_names"], [5, [], [""], "abc"])),
]
EM_MUTATIONS = MODEL_FILE_MUTATIONS + TENSOR_MUTATIONS + [
    ("mode", "error", _set(["mode"], [DELETE, None, "x", 5, "joint", "conditional"])),
    ("label_downsample", "error", _set(["label_downsample"], [0, 100, 1.5, "2", None, -1])),
    ("crop", "error", _set(["crop"], [0, 10**6, "256", 1.5, -256])),
    ("label_generator", "error", _set(["label_generator"], [DELETE, None, [], {"arch": "nope"}, {"arch": "unet"}])),
    ("label_generator width", "error", _set(["label_generator", "width"], BIG + [8])),
    ("label_generator n_layers", "error", _set(["label_generator", "n_layers"], BIG + [3, 50])),
    ("label_generator nz", "error", _set(["label_generator", "nz"], BIG + [4])),
    ("image_generator", "error", _set(["image_generator"], [DELETE, None, [], {"arch": "label-generator"}])),
    ("image_generator n_blocks", "error", _set(["image_generator", "n_blocks"], BIG + [3, 40])),
    ("image_generator width", "error", _set(["image_generator", "width"], BIG + [8])),
]

FORMATS = {
    # name: (write a valid input, read it, mutations)
    "LIN folder": (base_lin_folder, read_cells, LIN_MUTATIONS),
    ".h5": (base_h5, read_cells, H5_MUTATIONS),
    ".tif": (base_tif, read_cells, TIF_MUTATIONS),
    "VNC folder": (base_vnc_folder, read_vnc_folder, VNC_MUTATIONS),
    "label map": (base_label_map, read_label_map, LABEL_MUTATIONS),
    "fluorescence model": (base_fluorescence_model, read_fluorescence_model, FLUORESCENCE_MUTATIONS),
    "EM model": (base_em_model, read_em_model, EM_MUTATIONS),
}


# --------------------------------------------------------------------------------------------
# One input: write, mutate, read (in this process or a child), classify


def _names_file(message: str, path: Path) -> bool:
    return "\n" not in message and (path.name in message or os.fsdecode(bytes(path))[-30:] in message)


def classify(expect: str, path: Path, original: dict, read) -> tuple[str, str]:
    """Read ``path`` here and return ``(outcome, detail)``; ``original`` is the unmutated read."""
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # it logs what it then raises or repairs
    errors = _errors()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = read(path)
        except errors as err:
            message = str(err)
            return ("clean error" if _names_file(message, path) else "unnamed error"), message
        except AssertionError as err:
            return "silent wrong", f"read breaks an invariant: {err}"
        except MemoryError:
            return "crash", "MemoryError"
        except Exception as err:  # noqa: BLE001 - the point is to catch what the product lets through
            frame = traceback.extract_tb(err.__traceback__)[-1]
            return "traceback", f"{type(err).__name__}: {str(err)[:200]} ({Path(frame.filename).name}:{frame.lineno})"
    if expect == "error":
        return "silent wrong", "a mutation that must be refused was read"
    if result == original:
        return "read", ""
    if expect == "intact":
        return "silent wrong", "a harmless change read differently"
    return "undetected", "a byte flip no checksum covers changed the values read"


def prepare(fmt: str, work: Path, rng: random.Random, which: int | None = None):
    """Write a valid input of ``fmt`` in ``work``, read it, then apply mutation ``which`` (else a random one).

    Returns ``(description, expectation, path, original read, reader)``.
    """
    write, read, mutations = FORMATS[fmt]
    name, expect, mutate = mutations[rng.randrange(len(mutations)) if which is None else which]
    base = write(work)
    original = read(base)
    DRAWN.clear()
    path = mutate(base, rng)
    return f"{name}: {', '.join(DRAWN)}" if DRAWN else name, expect, path, original, read


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def run_in_child(expect, path, original, read, timeout: float, memory: int) -> tuple[str, str]:
    """Fork; the child reads under RLIMIT_AS (its size now + ``memory``) and reports through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(r)
        try:
            limit = _vm_size() + memory
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            outcome = classify(expect, path, original, read)
        except BaseException as err:  # noqa: BLE001
            outcome = ("crash", f"{type(err).__name__} in the harness")
        os.write(w, json.dumps(outcome).encode()[:60000])
        os._exit(0)
    os.close(w)
    ready, _, _ = select.select([r], [], [], timeout)
    data = b""
    if ready:
        while chunk := os.read(r, 65536):
            data += chunk
    os.close(r)
    if not ready:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return "hang", f"no answer in {timeout:.0f} s"
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "crash", f"killed by signal {os.WTERMSIG(status)}"
    if not data:
        return "crash", f"exit status {os.WEXITSTATUS(status)} without an answer"
    return tuple(json.loads(data))


COLUMNS = ("inputs", "clean error", "unnamed error", "read", "undetected", "traceback", "hang", "crash", "silent wrong")


def fuzz_format(fmt: str, n: int, seed: int, timeout: float, memory: int, examples: int) -> tuple[Counter, dict]:
    counts, samples, by_mutation = Counter(), {}, Counter()
    rng = random.Random(f"{fmt}-{seed}")
    for i in range(n):
        with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
            try:
                name, expect, path, original, read = prepare(fmt, Path(tmp), rng)
            except Exception as err:  # a broken mutation is the harness's bug, not the product's
                counts["harness error"] += 1
                samples.setdefault("harness error", []).append(f"{type(err).__name__}: {err}")
                continue
            outcome, detail = run_in_child(expect, path, original, read, timeout, memory)
        counts["inputs"] += 1
        counts[outcome] += 1
        if outcome not in ("clean error", "read"):
            by_mutation[(outcome, name.split(":")[0])] += 1
            if len(samples.setdefault(outcome, [])) < examples:
                samples[outcome].append(f"[{name}] {detail}")
    for (outcome, mutation), count in sorted(by_mutation.items()):
        samples.setdefault(outcome, []).append(f"{count} of these from '{mutation}'")
    return counts, samples


def table(results: dict) -> str:
    lines = ["| format | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for fmt, counts in results.items():
        lines.append(f"| {fmt} | " + " | ".join(str(counts.get(c, 0)) for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1000, help="inputs per format")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated, of: {', '.join(FORMATS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per input before it counts as a hang")
    parser.add_argument("--memory-gib", type=float, default=2.0, help="memory a child may add to its parent's")
    parser.add_argument("--examples", type=int, default=3, help="details shown per bad outcome")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        parser.error(f"unknown formats {unknown}; one of {list(FORMATS)}")
    results = {}
    for fmt in formats:
        start = time.perf_counter()
        counts, samples = fuzz_format(fmt, args.inputs, args.seed, args.timeout, int(args.memory_gib * 2**30),
                                      args.examples)
        results[fmt] = counts
        print(f"{fmt}: {dict(counts)} in {time.perf_counter() - start:.0f} s", flush=True)
        for outcome, details in samples.items():
            for detail in details:
                print(f"  {outcome}: {detail}", flush=True)
    print()
    print(table(results))
    bad = sum(c.get(k, 0) for c in results.values() for k in ("traceback", "hang", "crash", "silent wrong"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
