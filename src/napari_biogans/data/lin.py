"""LIN cell stacks: the released folder layout, HDF5 and multi-page TIFF.

A LIN split folder (``LIN_Normalized_WT_size-48-80_train/``) holds one sub-folder per green
protein, each holding ``cell<N>.png`` files: 8-bit RGB, 48 x 80 (or 96 x 160), red = Bgs4,
green = the folder's protein, blue = 0, background 0 outside the segmented cell.

Everything here returns a :class:`CellStack`: images ``(N, 2, H, W)`` uint8, a class index per
cell, the class names and the file names. Simulated folders also carry ``ground_truth.csv``
(phase, length, growth mode, ...), which the reader attaches as ``CellStack.truth``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CHANNEL_NAMES = ("Bgs4", "protein")
RELEASED_SIZES = ((48, 80), (96, 160))
CELL_FILE = re.compile(r"^cell(\d+)\.png$", re.IGNORECASE)
TRUTH_FILE = "ground_truth.csv"
H5_SUFFIXES = (".h5", ".hdf5")
TIFF_SUFFIXES = (".tif", ".tiff")


class LinFormatError(ValueError):
    """Input that is not a valid LIN stack; the message names the file and what was expected."""


@dataclass
class CellStack:
    """Two-channel cells with their classes.

    ``images`` is ``(N, 2, H, W)`` uint8 (red Bgs4, green protein). ``description`` says where the
    cells come from; ``simulated`` is True for the project's simulator output so that models
    trained on it can say so.
    """

    images: np.ndarray
    class_index: np.ndarray
    class_names: list[str]
    file_names: list[str]
    channel_names: tuple[str, str] = CHANNEL_NAMES
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    description: str = ""
    simulated: bool = False
    pixel_size_um: float | None = None

    def __post_init__(self):
        self.images = np.asarray(self.images)
        self.class_index = np.asarray(self.class_index, dtype=np.int64)
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[1] != 2:
            raise LinFormatError(f"cell stack must be (N, 2, H, W), got {self.images.shape}")
        if self.images.dtype != np.uint8:
            raise LinFormatError(f"cell stack must be uint8, got {self.images.dtype}")
        if len(self.class_index) != n or len(self.file_names) != n:
            raise LinFormatError(
                f"{n} cells but {len(self.class_index)} class indices and {len(self.file_names)} file names"
            )
        if n and (self.class_index.min() < 0 or self.class_index.max() >= len(self.class_names)):
            raise LinFormatError(f"class index outside 0..{len(self.class_names) - 1}")
        for key, values in self.truth.items():
            if len(values) != n:
                raise LinFormatError(f"ground truth '{key}' has {len(values)} values for {n} cells")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[2:])

    def as_float(self) -> np.ndarray:
        """Images as float32 in [-1, 1], each channel mapped with mean 0.5 and std 0.5 (METHODS A.1)."""
        return to_float(self.images)

    def subset(self, indices) -> "CellStack":
        indices = np.asarray(indices, dtype=np.int64)
        return CellStack(
            images=self.images[indices],
            class_index=self.class_index[indices],
            class_names=list(self.class_names),
            file_names=[self.file_names[i] for i in indices],
            channel_names=self.channel_names,
            truth={k: v[indices] for k, v in self.truth.items()},
            description=self.description,
            simulated=self.simulated,
            pixel_size_um=self.pixel_size_um,
        )

    def select_classes(self, names) -> "CellStack":
        """Only the cells of the named classes, re-indexed in the order given."""
        missing = [n for n in names if n not in self.class_names]
        if missing:
            raise LinFormatError(f"classes {missing} not in this stack; it has {self.class_names}")
        old = [self.class_names.index(n) for n in names]
        keep = np.flatnonzero(np.isin(self.class_index, old))
        sub = self.subset(keep)
        remap = np.full(len(self.class_names), -1, dtype=np.int64)
        remap[old] = np.arange(len(old))
        sub.class_index = remap[sub.class_index]
        sub.class_names = list(names)
        return sub

    def counts(self) -> dict[str, int]:
        return {name: int((self.class_index == i).sum()) for i, name in enumerate(self.class_names)}


def to_float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 127.5 - 1.0


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_float`, clipping to [-1, 1] first."""
    return np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Folder of PNGs (the released layout)


def _cell_files(class_dir: Path) -> tuple[list[tuple[int, Path]], int]:
    cells, skipped = [], 0
    for entry in class_dir.iterdir():
        match = CELL_FILE.match(entry.name)
        if match and entry.is_file():
            cells.append((int(match.group(1)), entry))
        else:
            skipped += 1
    cells.sort()
    return cells, skipped


def is_lin_folder(path) -> bool:
    """Cheap check: a directory with at least one sub-folder holding a ``cell<N>.png``."""
    path = Path(path)
    if not path.is_dir():
        return False
    for sub in path.iterdir():
        if sub.is_dir() and any(CELL_FILE.match(f.name) for f in os.scandir(sub)):
            return True
    return False


def read_png_cell(path, size: tuple[int, int] | None = None) -> np.ndarray:
    """One LIN PNG as (2, H, W) uint8, or a :class:`LinFormatError` naming the file."""
    import imageio.v3 as iio

    try:
        pixels = iio.imread(path)
    except Exception as err:  # imageio raises many types for broken files
        raise LinFormatError(f"{path}: not a readable PNG ({err})") from None
    if pixels.dtype != np.uint8:
        raise LinFormatError(f"{path}: expected an 8-bit RGB PNG, got {pixels.dtype} pixels")
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise LinFormatError(
            f"{path}: expected an RGB PNG (red = Bgs4, green = protein), got shape {pixels.shape}"
        )
    if size is not None and pixels.shape[:2] != tuple(size):
        pixels = _resize(pixels[..., :2], size)
    elif size is None and pixels.shape[:2] not in RELEASED_SIZES:
        raise LinFormatError(
            f"{path}: expected {' or '.join(f'{h}x{w}' for h, w in RELEASED_SIZES)} pixels, "
            f"got {pixels.shape[0]}x{pixels.shape[1]} (pass size=(H, W) to resize)"
        )
    return np.ascontiguousarray(np.moveaxis(pixels[..., :2], -1, 0))


def _resize(pixels: np.ndarray, size) -> np.ndarray:
    from skimage.transform import resize

    out = resize(pixels, tuple(size) + pixels.shape[2:], order=1, anti_aliasing=True, preserve_range=True)
    return np.round(out).astype(np.uint8)


def read_lin_folder(
    path,
    size: tuple[int, int] | None = None,
    classes: list[str] | None = None,
    skip_bad: bool = False,
) -> CellStack:
    """Read one split of the released layout: ``path/<protein>/cell<N>.png``.

    Classes are sorted by name (their index is their rank, as in the reference code); cells by
    the integer N. Files that are not ``cell<N>.png`` are skipped with one warning that counts
    them. A broken or wrong-sized cell file raises :class:`LinFormatError`, or with
    ``skip_bad=True`` is skipped and counted in a warning. ``size`` resizes every cell.
    """
    root = Path(path)
    if not root.exists():
        raise LinFormatError(f"{root}: no such folder")
    if not root.is_dir():
        raise LinFormatError(f"{root}: expected a LIN folder (one sub-folder per protein), got a file")
    class_dirs = sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: d.name)
    if classes is not None:
        by_name = {d.name: d for d in class_dirs}
        missing = [c for c in classes if c not in by_name]
        if missing:
            raise LinFormatError(f"{root}: no folder for {missing}; found {sorted(by_name)}")
        class_dirs = [by_name[c] for c in sorted(classes)]

    images, class_index, file_names, class_names = [], [], [], []
    ignored, broken = 0, []
    expected = tuple(size) if size is not None else None
    for class_dir in class_dirs:
        cells, skipped = _cell_files(class_dir)
        ignored += skipped
        if not cells:
            continue
        label = len(class_names)
        class_names.append(class_dir.name)
        for _, file in cells:
            try:
                cell = read_png_cell(file, size)
                if expected is None:
                    expected = cell.shape[1:]
                elif cell.shape[1:] != expected:
                    raise LinFormatError(
                        f"{file}: expected {expected[0]}x{expected[1]} like the cells before it, "
                        f"got {cell.shape[1]}x{cell.shape[2]} (pass size=(H, W) to resize)"
                    )
            except LinFormatError:
                if not skip_bad:
                    raise
                broken.append(file)
                continue
            images.append(cell)
            class_index.append(label)
            file_names.append(f"{class_dir.name}/{file.name}")
    if ignored:
        warnings.warn(f"{root}: skipped {ignored} entries that are not cell<N>.png files", stacklevel=2)
    if broken:
        warnings.warn(
            f"{root}: skipped {len(broken)} unreadable or wrong-sized cells, first: {broken[0]}", stacklevel=2
        )
    if not images:
        raise LinFormatError(
            f"{root}: no cell<N>.png files found; expected <protein>/cell<N>.png sub-folders "
            "as in LIN_Normalized_WT_size-48-80_train/"
        )
    stack = CellStack(
        images=np.stack(images),
        class_index=np.array(class_index),
        class_names=class_names,
        file_names=file_names,
        description=f"LIN folder {root.name}",
    )
    _attach_truth(stack, root / TRUTH_FILE)
    return stack


def write_lin_folder(stack: CellStack, path) -> Path:
    """Write the released layout (RGB PNGs, blue = 0) plus ``ground_truth.csv`` when known.

    Cells are numbered ``cell<k>.png`` within their class in stack order. The folder is written
    under a temporary name and renamed when complete, so no half-written split is left behind.
    """
    import imageio.v3 as iio

    root = Path(path)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root}: folder exists and is not empty; choose a new output folder")
    tmp = root.with_name(f".{root.name}.partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    counters = dict.fromkeys(range(len(stack.class_names)), 0)
    names = []
    for cell, label in zip(stack.images, stack.class_index):
        protein = stack.class_names[label]
        (tmp / protein).mkdir(exist_ok=True)
        name = f"{protein}/cell{counters[label]}.png"
        counters[label] += 1
        rgb = np.zeros(cell.shape[1:] + (3,), dtype=np.uint8)
        rgb[..., 0], rgb[..., 1] = cell[0], cell[1]
        iio.imwrite(tmp / name, rgb)
        names.append(name)
    if stack.truth:
        _write_truth(tmp / TRUTH_FILE, names, stack)
    if root.exists():
        root.rmdir()
    tmp.rename(root)
    return root


def _write_truth(path: Path, names: list[str], stack: CellStack) -> None:
    keys = sorted(stack.truth)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "class", *keys])
        for i, name in enumerate(names):
            row = [name, stack.class_names[stack.class_index[i]]]
            row += [_csv_value(stack.truth[k][i]) for k in keys]
            writer.writerow(row)


def _csv_value(value):
    return repr(float(value)) if isinstance(value, (float, np.floating)) else value


def _attach_truth(stack: CellStack, path: Path) -> None:
    """Attach the simulator's ground truth, aligned by file name; mark the stack as simulated."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = {row["file"]: row for row in csv.DictReader(f)}
    missing = [n for n in stack.file_names if n not in rows]
    if missing:
        raise LinFormatError(f"{path}: no ground truth for {len(missing)} cells, first {missing[0]}")
    keys = [k for k in next(iter(rows.values())) if k not in ("file", "class")]
    for key in keys:
        values = [rows[n][key] for n in stack.file_names]
        stack.truth[key] = _parse_column(values)
    stack.simulated = True
    stack.description += " (simulated by napari-biogans)"


def _parse_column(values: list[str]) -> np.ndarray:
    try:
        return np.array([float(v) for v in values])
    except ValueError:
        return np.array(values)


def find_lin_splits(root) -> dict[str, Path]:
    """``{'train': ..., 'test': ...}`` for a release root holding ``*_train`` and ``*_test``."""
    root = Path(root)
    splits = {}
    for role in ("train", "test"):
        found = sorted(d for d in root.glob(f"*_{role}") if d.is_dir())
        if len(found) > 1:
            raise LinFormatError(f"{root}: several *_{role} folders: {[d.name for d in found]}")
        if found:
            splits[role] = found[0]
    if not splits:
        raise LinFormatError(f"{root}: no *_train or *_test folders of the LIN release")
    return splits


# --------------------------------------------------------------------------------------------
# HDF5 and TIFF stacks


def write_h5(stack: CellStack, path, scale=(1.0, 1.0)) -> Path:
    """HDF5 with ``cells`` (N, 2, H, W), ``class_index``, names, ground truth and scale; atomic."""
    import h5py

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("cells", data=stack.images, compression="gzip", compression_opts=4)
        f.create_dataset("class_index", data=stack.class_index)
        f.attrs["class_names"] = json.dumps(stack.class_names)
        f.attrs["channel_names"] = json.dumps(list(stack.channel_names))
        f.attrs["file_names"] = json.dumps(stack.file_names)
        f.attrs["description"] = stack.description
        f.attrs["simulated"] = bool(stack.simulated)
        f.attrs["scale"] = np.asarray(scale, dtype=np.float64)
        if stack.pixel_size_um is not None:
            f.attrs["pixel_size_um"] = float(stack.pixel_size_um)
        truth = f.create_group("truth")
        for key, values in stack.truth.items():
            values = np.asarray(values)
            truth.create_dataset(key, data=values.astype("S") if values.dtype.kind == "U" else values)
    os.replace(tmp, path)
    return path


def is_cell_h5(path) -> bool:
    path = Path(path)
    if path.suffix.lower() not in H5_SUFFIXES or not path.is_file():
        return False
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "cells" in f or "samples" in f
    except OSError:
        return False


def read_h5(path) -> CellStack:
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise LinFormatError(f"{path}: not a readable HDF5 file ({err})") from None
    with f:
        if "cells" not in f:
            raise LinFormatError(f"{path}: no 'cells' dataset; expected a napari-biogans cell stack (N, 2, H, W)")
        images = f["cells"][()]
        n = len(images)
        class_index = f["class_index"][()] if "class_index" in f else np.zeros(n, dtype=np.int64)
        class_names = _json_attr(f, "class_names", ["unknown"])
        truth = {}
        for key, ds in f.get("truth", {}).items():
            values = ds[()]
            truth[key] = values.astype(str) if values.dtype.kind == "S" else values
        stack = CellStack(
            images=images,
            class_index=class_index,
            class_names=class_names,
            file_names=_json_attr(f, "file_names", [f"cell{i}" for i in range(n)]),
            channel_names=tuple(_json_attr(f, "channel_names", list(CHANNEL_NAMES))),
            truth=truth,
            description=str(f.attrs.get("description", path.name)),
            simulated=bool(f.attrs.get("simulated", False)),
            pixel_size_um=float(f.attrs["pixel_size_um"]) if "pixel_size_um" in f.attrs else None,
        )
    return stack


def read_h5_samples(path):
    """``(images (n, channels, H, W), channel names, provenance)`` of a generated-samples file, else None."""
    import h5py

    with h5py.File(path, "r") as f:
        if "samples" not in f:
            return None
        return f["samples"][()], _json_attr(f, "channel_names", []), _json_attr(f, "provenance", {})


def read_h5_scale(path) -> tuple[float, float]:
    import h5py

    with h5py.File(path, "r") as f:
        return tuple(float(s) for s in f.attrs.get("scale", (1.0, 1.0)))


def _json_attr(f, key, default):
    return json.loads(f.attrs[key]) if key in f.attrs else default


def write_tiff(stack: CellStack, path) -> Path:
    """Multi-page TIFF (N, 2, H, W) with class names and file names in the JSON description."""
    import tifffile

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    metadata = {
        "axes": "QCYX",
        "class_names": stack.class_names,
        "class_index": stack.class_index.tolist(),
        "channel_names": list(stack.channel_names),
        "file_names": stack.file_names,
        "description": stack.description,
        "simulated": stack.simulated,
    }
    tifffile.imwrite(tmp, stack.images, metadata=metadata, compression="zlib")
    os.replace(tmp, path)
    return path


def read_tiff(path) -> CellStack:
    import tifffile

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            images = tif.asarray()
            meta = (tif.shaped_metadata or [{}])[0] or {}
    except Exception as err:
        raise LinFormatError(f"{path}: not a readable TIFF ({err})") from None
    if images.ndim == 3 and images.shape[0] == 2:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != 2:
        raise LinFormatError(f"{path}: expected a cell stack of shape (N, 2, H, W), got {images.shape}")
    if images.dtype != np.uint8:
        raise LinFormatError(f"{path}: expected uint8 cells, got {images.dtype}")
    n = len(images)
    return CellStack(
        images=images,
        class_index=np.asarray(meta.get("class_index", [0] * n)),
        class_names=list(meta.get("class_names", ["unknown"])),
        file_names=list(meta.get("file_names", [f"cell{i}" for i in range(n)])),
        channel_names=tuple(meta.get("channel_names", CHANNEL_NAMES)),
        description=str(meta.get("description", path.name)),
        simulated=bool(meta.get("simulated", False)),
    )


def read_cells(path, **kwargs) -> CellStack:
    """Any supported cell stack: a LIN folder, ``.h5``/``.hdf5`` or ``.tif``/``.tiff``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise LinFormatError(f"{path}: no such file or folder")
    if path.is_dir():
        return read_lin_folder(path, **kwargs)
    if suffix in H5_SUFFIXES:
        return read_h5(path)
    if suffix in TIFF_SUFFIXES:
        return read_tiff(path)
    raise LinFormatError(f"{path}: expected a LIN folder, an .h5 or a .tif cell stack")


# --------------------------------------------------------------------------------------------
# C2ST splits


def c2st_splits(stack: CellStack, n_splits: int = 10) -> list[dict[str, np.ndarray]]:
    """The reference's C2ST splits of a (test) stack: ``[{'test': idx, 'train': idx}, ...]``.

    For split s and each class: sort the class's file names as strings (the reference sorted
    ``os.listdir`` output, so ``cell10`` precedes ``cell2``), shuffle with Python's ``random``
    seeded ``s + 1``, first half (floor) in role "test", the rest in role "train".
    """
    import random

    splits = []
    for s in range(n_splits):
        roles = {"test": [], "train": []}
        for label in range(len(stack.class_names)):
            members = np.flatnonzero(stack.class_index == label)
            by_name = sorted(members, key=lambda i: os.path.basename(stack.file_names[i]))
            random.Random(s + 1).shuffle(by_name)
            half = len(by_name) // 2
            roles["test"] += by_name[:half]
            roles["train"] += by_name[half:]
        splits.append({role: np.array(idx, dtype=np.int64) for role, idx in roles.items()})
    return splits
