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
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_folder, atomic_write
from . import guards

CHANNEL_NAMES = ("Bgs4", "protein")
RELEASED_SIZES = ((48, 80), (96, 160))
CELL_FILE = re.compile(r"^cell(\d+)\.png$", re.IGNORECASE)
TRUTH_FILE = "ground_truth.csv"
H5_SUFFIXES = (".h5", ".hdf5")
TIFF_SUFFIXES = (".tif", ".tiff")
# bounds on what a file may declare, checked before any pixel is read
MAX_CELL_SIDE = 4096
MAX_CLASSES = 10_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOUR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale + alpha", 6: "RGBA"}
# ground_truth.csv may hold this many bytes per cell (plus 1 MiB); the simulator writes ~150
TRUTH_BYTES_PER_CELL = 4096


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
        if n and min(self.images.shape[2:]) < 1:
            raise LinFormatError(f"cells of {self.images.shape[2]}x{self.images.shape[3]} pixels hold nothing")
        _check_names(self.class_names, "class names")
        if len(set(self.class_names)) != len(self.class_names):
            raise LinFormatError(f"class names repeat: {self.class_names}")
        _check_names(self.channel_names, "channel names", length=2)
        _check_names(self.file_names, "file names")
        if self.class_index.ndim != 1 or len(self.class_index) != n or len(self.file_names) != n:
            raise LinFormatError(
                f"{n} cells but {len(self.class_index)} class indices and {len(self.file_names)} file names"
            )
        if n and (self.class_index.min() < 0 or self.class_index.max() >= len(self.class_names)):
            raise LinFormatError(f"class index outside 0..{len(self.class_names) - 1}")
        for key, values in self.truth.items():
            if np.ndim(values) != 1 or len(values) != n:
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


def _check_names(names, what: str, length: int | None = None) -> None:
    """A list (or tuple) of non-empty strings, of ``length`` items when given."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(x, str) and x for x in names):
        raise LinFormatError(f"{what} must be a list of non-empty names, got {_short(names)}")
    if length is not None and len(names) != length:
        raise LinFormatError(f"{what} has {len(names)} names; expected {length}")


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    try:
        if not path.is_dir():
            return False
        for sub in path.iterdir():
            if sub.is_dir() and any(CELL_FILE.match(f.name) for f in os.scandir(sub)):
                return True
    except OSError:  # unreadable folders are not ours to open
        return False
    return False


def _png_header(path) -> tuple[int, int, int, int]:
    """``(height, width, bit depth, colour type)`` from the PNG's IHDR chunk, before any pixel is decoded."""
    guards.regular_file(path, LinFormatError)
    with open(path, "rb") as f:
        head = f.read(29)
    if len(head) < 29 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise LinFormatError(f"{_shown(path)}: not a PNG file (no PNG signature and header)")
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    return height, width, depth, colour


def read_png_cell(path, size: tuple[int, int] | None = None) -> np.ndarray:
    """One LIN PNG as (2, H, W) uint8, or a :class:`LinFormatError` naming the file.

    Accepted: 8-bit RGB; 8-bit RGBA whose alpha is opaque everywhere (alpha dropped); palette
    PNGs, expanded through their palette (refused if any pixel is transparent). Refused: 16-bit
    and other bit depths (no rescaling is guessed: a 16-bit file may hold 12-bit values), grayscale.
    Every chunk's CRC is verified, so a damaged file is refused rather than read as other pixels.
    """
    from PIL import Image

    height, width, depth, colour = _png_header(path)
    kind = PNG_COLOUR_TYPES.get(colour, f"colour type {colour}")
    if depth != 8 and colour != 3:
        raise LinFormatError(
            f"{_shown(path)}: expected an 8-bit RGB PNG, got a {depth}-bit {kind} PNG "
            "(LIN cells are 8-bit; convert it without guessing a rescaling)"
        )
    if colour not in (2, 3, 6):
        raise LinFormatError(
            f"{_shown(path)}: expected an RGB PNG (red = Bgs4, green = protein), got a {kind} PNG"
        )
    for side, what in ((height, "height"), (width, "width")):
        guards.check_side(side, f"the cell's {what}", _shown(path), LinFormatError, MAX_CELL_SIDE)
    if size is None and (height, width) not in RELEASED_SIZES:
        raise LinFormatError(
            f"{_shown(path)}: expected {' or '.join(f'{h}x{w}' for h, w in RELEASED_SIZES)} pixels, "
            f"got {height}x{width} (pass size=(H, W) to resize)"
        )
    guards.png_end(path, LinFormatError)
    try:
        with Image.open(path) as image:
            image.verify()  # every chunk's CRC
        with Image.open(path) as image:
            mode = image.mode
            pixels = np.asarray(image.convert("RGBA") if mode in ("P", "RGBA") else image)
    except Exception as err:  # Pillow raises many types for damaged files
        raise LinFormatError(f"{_shown(path)}: not a readable PNG ({err})") from None
    if pixels.shape != (height, width, 4 if mode in ("P", "RGBA") else 3) or pixels.dtype != np.uint8:
        raise LinFormatError(f"{_shown(path)}: decoded to {pixels.shape} {pixels.dtype}, not 8-bit RGB")
    if pixels.shape[2] == 4 and (pixels[..., 3] != 255).any():
        raise LinFormatError(
            f"{_shown(path)}: has transparent pixels; LIN cells are opaque RGB (red = Bgs4, green = protein)"
        )
    if size is not None and pixels.shape[:2] != tuple(size):
        pixels = _resize(pixels[..., :2], size)
    return np.ascontiguousarray(np.moveaxis(pixels[..., :2], -1, 0))


def _shown(path) -> str:
    return guards.display_name(path)


def _resize(pixels: np.ndarray, size) -> np.ndarray:
    from skimage.transform import resize

    out = resize(pixels, tuple(size) + pixels.shape[2:], order=1, anti_aliasing=True, preserve_range=True)
    return np.round(out).astype(np.uint8)


def _class_dirs(root: Path, classes) -> list[Path]:
    class_dirs = sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: d.name)
    if classes is not None:
        by_name = {d.name: d for d in class_dirs}
        missing = [c for c in classes if c not in by_name]
        if missing:
            raise LinFormatError(f"{_shown(root)}: no folder for {missing}; found {sorted(by_name)}")
        class_dirs = [by_name[c] for c in sorted(classes)]
    return class_dirs


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
    Protein folder names must be printable UTF-8: they are written into model files and tables.
    """
    root = Path(path)
    if not root.exists():
        raise LinFormatError(f"{_shown(root)}: no such folder")
    if not root.is_dir():
        raise LinFormatError(f"{_shown(root)}: expected a LIN folder (one sub-folder per protein), got a file")
    try:
        return _read_lin_folder(root, size, classes, skip_bad)
    except PermissionError as err:
        raise LinFormatError(f"{_shown(err.filename or root)}: permission denied") from None


def _read_lin_folder(root: Path, size, classes, skip_bad) -> CellStack:
    found, class_names, ignored = [], [], 0
    for class_dir in _class_dirs(root, classes):
        cells, skipped = _cell_files(class_dir)
        ignored += skipped
        if not cells:
            continue
        if _shown(class_dir.name) != class_dir.name:
            raise LinFormatError(
                f"{_shown(class_dir)}: folder name is not printable UTF-8; rename it (protein names go into model files)"
            )
        found += [(len(class_names), class_dir.name, file) for _, file in cells]
        class_names.append(class_dir.name)
    if ignored:
        warnings.warn(f"{_shown(root)}: skipped {ignored} entries that are not cell<N>.png files", stacklevel=3)
    if not found:
        raise LinFormatError(
            f"{_shown(root)}: no cell<N>.png files found; expected <protein>/cell<N>.png sub-folders "
            "as in LIN_Normalized_WT_size-48-80_train/"
        )
    # the stack is allocated once, after the first cell gives its size and the memory is checked
    images, kept, broken = None, [], []
    expected = tuple(size) if size is not None else None
    for label, protein, file in found:
        try:
            cell = read_png_cell(file, size)
            if expected is not None and cell.shape[1:] != expected:
                raise LinFormatError(
                    f"{_shown(file)}: expected {expected[0]}x{expected[1]} like the cells before it, "
                    f"got {cell.shape[1]}x{cell.shape[2]} (pass size=(H, W) to resize)"
                )
        except LinFormatError:
            if not skip_bad:
                raise
            broken.append(file)
            continue
        if images is None:
            expected = cell.shape[1:]
            guards.check_allocation(len(found) * cell.nbytes, f"{len(found)} cells", root, LinFormatError)
            images = np.empty((len(found),) + cell.shape, dtype=np.uint8)
        images[len(kept)] = cell
        kept.append((label, f"{protein}/{file.name}"))
    if broken:
        warnings.warn(
            f"{_shown(root)}: skipped {len(broken)} unreadable or wrong-sized cells, first: {_shown(broken[0])}",
            stacklevel=3,
        )
    if not kept:
        raise LinFormatError(f"{_shown(root)}: none of the {len(found)} cell<N>.png files could be read")
    stack = CellStack(
        images=images[: len(kept)],
        class_index=np.array([label for label, _ in kept]),
        class_names=class_names,
        file_names=[name for _, name in kept],
        description=f"LIN folder {_shown(root.name)}",
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
    if root.exists():
        root.rmdir()
    with atomic_folder(root) as tmp:  # a unique temporary folder, renamed when complete, removed on error
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
    if not path.exists():
        return
    guards.regular_file(path, LinFormatError)
    shown = _shown(path)
    limit = (1 << 20) + TRUTH_BYTES_PER_CELL * len(stack)
    if path.stat().st_size > limit:
        raise LinFormatError(f"{shown}: {path.stat().st_size:,} bytes for {len(stack)} cells; expected at most {limit:,}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, strict=True)
            header = next(reader, None)
            if not header or header[0] != "file" or len(set(header)) != len(header) or not all(header):
                raise LinFormatError(
                    f"{shown}: expected a header 'file,class,...' of distinct column names, got {_short(header)}"
                )
            rows = {}
            for row in reader:
                if len(row) != len(header):
                    raise LinFormatError(f"{shown}, line {reader.line_num}: {len(row)} fields, the header has {len(header)}")
                if row[0] in rows:
                    raise LinFormatError(f"{shown}, line {reader.line_num}: '{row[0]}' is listed twice")
                rows[row[0]] = row
    except UnicodeDecodeError as err:
        raise LinFormatError(f"{shown}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise LinFormatError(f"{shown}: not a readable CSV ({err})") from None
    missing = [n for n in stack.file_names if n not in rows]
    if missing:
        raise LinFormatError(f"{shown}: no ground truth for {len(missing)} cells, first {missing[0]}")
    if "class" in header:
        column = header.index("class")
        wrong = [n for n, c in zip(stack.file_names, stack.class_index) if rows[n][column] != stack.class_names[c]]
        if wrong:
            raise LinFormatError(f"{shown}: the class of {len(wrong)} cells differs from their folder, first {wrong[0]}")
    for column, key in enumerate(header):
        if key not in ("file", "class"):
            stack.truth[key] = _parse_column([rows[n][column] for n in stack.file_names])
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
    path = Path(path)
    atomic_write(path, lambda tmp: _write_h5(tmp, stack, scale))
    return path


def _write_h5(tmp, stack: CellStack, scale) -> None:
    import h5py

    # libver "latest": checksummed metadata (HDF5 >= 1.10), so damage anywhere is refused rather than read
    with h5py.File(tmp, "w", libver="latest") as f:
        # fletcher32: a checksum per chunk, so a damaged file is refused rather than read as other pixels
        f.create_dataset("cells", data=stack.images, compression="gzip", compression_opts=4, fletcher32=True)
        f.create_dataset("class_index", data=stack.class_index, fletcher32=True)
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
            truth.create_dataset(key, data=np.char.encode(values, "utf-8") if values.dtype.kind == "U" else values,
                                 fletcher32=True)


def is_cell_h5(path) -> bool:
    path = Path(path)
    if path.suffix.lower() not in H5_SUFFIXES or not path.is_file():
        return False
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "cells" in f or "samples" in f
    except Exception:  # a damaged file is not ours to claim; read_h5 says what is wrong with it
        return False


def _open_h5(path: Path):
    import h5py

    guards.regular_file(path, LinFormatError)
    try:
        return h5py.File(path, "r")
    except Exception as err:  # h5py raises OSError and others for damaged superblocks
        raise LinFormatError(f"{_shown(path)}: not a readable HDF5 file ({err})") from None


def _read_h5_with(path, reader):
    """``reader(file, path)`` on an open HDF5 file; a damaged file's low-level errors become one line."""
    path = Path(path)
    f = _open_h5(path)
    try:
        with f:
            return reader(f, path)
    except LinFormatError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as err:  # h5py on damaged objects
        raise LinFormatError(f"{_shown(path)}: damaged HDF5 file ({err})") from None


def _h5_object(f, name: str, path, kind):
    """The object ``name`` if it is a ``kind`` (Dataset or Group) stored in this file, None if absent."""
    import h5py

    link = f.get(name, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        raise LinFormatError(f"{_shown(path)}: '{name}' is a {type(link).__name__}; expected data stored in the file")
    obj = f[name]
    if not isinstance(obj, kind):
        raise LinFormatError(f"{_shown(path)}: '{name}' is a {type(obj).__name__}; expected a {kind.__name__}")
    return obj


def _check_images(ds, name: str, path, channels: int | None) -> None:
    """A uint8 (N, C, H, W) dataset: shape, size and the memory reading it needs, checked before reading."""
    shape = tuple(ds.shape or ())
    if ds.dtype != np.uint8 or len(shape) != 4:
        raise LinFormatError(f"{_shown(path)}: '{name}' must be uint8 of shape (N, C, H, W), got {shape} {ds.dtype}")
    n, c, h, w = shape
    if channels is not None and c != channels:
        raise LinFormatError(f"{_shown(path)}: '{name}' has {c} channels per cell; expected {channels} (red, green)")
    if n < 1 or not 1 <= c <= 64:
        raise LinFormatError(f"{_shown(path)}: '{name}' holds {n} cells of {c} channels; expected at least one")
    guards.check_side(h, "the cells' height", _shown(path), LinFormatError, MAX_CELL_SIDE)
    guards.check_side(w, "the cells' width", _shown(path), LinFormatError, MAX_CELL_SIDE)
    guards.check_allocation(n * c * h * w, f"{n} cells of {h}x{w}", path, LinFormatError)


def _text(value, key: str, path) -> str:
    """An attribute or metadata value that must be text (bytes are decoded as UTF-8)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise LinFormatError(f"{_shown(path)}: '{key}' is not UTF-8 text") from None
    if not isinstance(value, str):
        raise LinFormatError(f"{_shown(path)}: '{key}' must be text, got {type(value).__name__} {_short(value)}")
    try:
        value.encode("utf-8")  # h5py hands undecodable bytes over as surrogates
    except UnicodeEncodeError:
        raise LinFormatError(f"{_shown(path)}: '{key}' is not UTF-8 text") from None
    return str(value)


def _json_text(value, key: str, path):
    try:
        return json.loads(_text(value, key, path))
    except json.JSONDecodeError as err:
        raise LinFormatError(f"{_shown(path)}: '{key}' is not valid JSON ({err.msg})") from None


def _names(value, key: str, path, length: int | None = None) -> list[str]:
    """A list of non-empty strings (of ``length`` items when given)."""
    try:
        _check_names(value, f"'{key}'", length)
    except LinFormatError as err:
        raise LinFormatError(f"{_shown(path)}: {err}") from None
    return list(value)


def _flag(value, key: str, path) -> bool:
    """A yes/no value stored as a boolean (or 0/1): never the truthiness of a word like "no"."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise LinFormatError(f"{_shown(path)}: '{key}' must be true or false, got {_short(value)}")


def _class_names(value, key, path) -> list[str]:
    names = _names(value, key, path)
    if not 1 <= len(names) <= MAX_CLASSES or len(set(names)) != len(names):
        raise LinFormatError(f"{_shown(path)}: '{key}' must hold 1 to {MAX_CLASSES} distinct names, got {_short(names)}")
    return names


def _class_index(values, n: int, n_classes: int, path) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (n,) or (n and values.dtype.kind not in "iu"):
        raise LinFormatError(f"{_shown(path)}: 'class_index' must be {n} integers, got {values.shape} {values.dtype}")
    if n and (values.min() < 0 or values.max() >= n_classes):
        raise LinFormatError(f"{_shown(path)}: 'class_index' outside 0..{n_classes - 1} (the class names)")
    return values.astype(np.int64)


def _truth_column(ds, key: str, n: int, path) -> np.ndarray:
    if ds.shape != (n,) or ds.dtype.kind not in "biufSO":
        raise LinFormatError(f"{_shown(path)}: truth '{key}' must be {n} numbers or strings, got {ds.shape} {ds.dtype}")
    values = ds[()]
    if values.dtype.kind in "SO":
        values = np.array([_text(v, f"truth/{key}", path) for v in values.tolist()])
    return values


def read_h5(path) -> CellStack:
    """A cell stack written by :func:`write_h5`; structure, types and sizes are checked before the pixels are read."""
    return _read_h5_with(path, _read_h5_stack)


def _read_h5_stack(f, path: Path) -> CellStack:
    import h5py

    ds = _h5_object(f, "cells", path, h5py.Dataset)
    if ds is None:
        raise LinFormatError(f"{_shown(path)}: no 'cells' dataset; expected a napari-biogans cell stack (N, 2, H, W)")
    _check_images(ds, "cells", path, channels=2)
    n = ds.shape[0]
    attrs = f.attrs
    class_names = _class_names(_json_text(attrs["class_names"], "class_names", path), "class_names", path) \
        if "class_names" in attrs else ["unknown"]
    index_ds = _h5_object(f, "class_index", path, h5py.Dataset)
    if index_ds is not None and (index_ds.shape != (n,) or index_ds.dtype.kind not in "iu"):
        raise LinFormatError(f"{_shown(path)}: 'class_index' must be {n} integers, got {index_ds.shape} {index_ds.dtype}")
    file_names = _names(_json_text(attrs["file_names"], "file_names", path), "file_names", path, n) \
        if "file_names" in attrs else [f"cell{i}" for i in range(n)]
    channel_names = _names(_json_text(attrs["channel_names"], "channel_names", path), "channel_names", path, 2) \
        if "channel_names" in attrs else list(CHANNEL_NAMES)
    description = _text(attrs["description"], "description", path) if "description" in attrs else _shown(path.name)
    simulated = _flag(attrs["simulated"], "simulated", path) if "simulated" in attrs else False
    pixel_size = None
    if "pixel_size_um" in attrs:
        pixel_size = _positive_numbers(attrs["pixel_size_um"], "pixel_size_um", path, 1)[0]
    truth = {}
    group = _h5_object(f, "truth", path, h5py.Group)
    for key in group or ():
        truth[key] = _truth_column(_h5_object(group, key, path, h5py.Dataset), key, n, path)
    images = ds[()]
    class_index = _class_index(index_ds[()] if index_ds is not None else np.zeros(n, np.int64), n, len(class_names), path)
    return _stack(
        path,
        images=images,
        class_index=class_index,
        class_names=class_names,
        file_names=file_names,
        channel_names=tuple(channel_names),
        truth=truth,
        description=description,
        simulated=simulated,
        pixel_size_um=pixel_size,
    )


def _stack(path, **fields) -> CellStack:
    try:
        return CellStack(**fields)
    except LinFormatError as err:  # the stack's own checks do not know the file
        raise LinFormatError(f"{_shown(path)}: {err}") from None


def _positive_numbers(value, key: str, path, length: int) -> list[float]:
    values = np.ravel(np.asarray(value))
    if values.shape != (length,) or values.dtype.kind not in "iuf" or not (np.isfinite(values) & (values > 0)).all():
        raise LinFormatError(f"{_shown(path)}: '{key}' must be {length} finite positive numbers, got {_short(value)}")
    return [float(v) for v in values]


def read_h5_samples(path):
    """``(images (n, channels, H, W), channel names, provenance)`` of a generated-samples file, else None."""
    import h5py

    def reader(f, path):
        ds = _h5_object(f, "samples", path, h5py.Dataset)
        if ds is None:
            return None
        _check_images(ds, "samples", path, channels=None)
        channels = ds.shape[1]
        names = _names(_json_text(f.attrs["channel_names"], "channel_names", path), "channel_names", path, channels) \
            if "channel_names" in f.attrs else [f"channel {k}" for k in range(channels)]
        provenance = _json_text(f.attrs["provenance"], "provenance", path) if "provenance" in f.attrs else {}
        if not isinstance(provenance, dict):
            raise LinFormatError(f"{_shown(path)}: 'provenance' must be a JSON object, got {_short(provenance)}")
        return ds[()], names, provenance

    return _read_h5_with(path, reader)


def read_h5_scale(path) -> tuple[float, float]:
    def reader(f, path):
        return tuple(_positive_numbers(f.attrs["scale"], "scale", path, 2)) if "scale" in f.attrs else (1.0, 1.0)

    return _read_h5_with(path, reader)


def write_tiff(stack: CellStack, path) -> Path:
    """An OME-TIFF (or, for a ``.ome.zarr`` path, an OME-Zarr) of the cells ``(N, 2, H, W)`` along T, with the
    channel names, the pixel size when known, and class and file names in the JSON metadata."""
    from .. import ome

    metadata = {
        "stack_axis": "cell",
        "class_names": stack.class_names,
        "class_index": stack.class_index.tolist(),
        "channel_names": list(stack.channel_names),
        "file_names": stack.file_names,
        "description": stack.description,
        "simulated": stack.simulated,
    }
    metadata["crc32"] = _metadata_crc(metadata)
    # zlib's own checksum covers the pixels, crc32 the names and classes
    return ome.write(path, stack.images, "TCYX", list(stack.channel_names), stack.pixel_size_um, metadata)


def _metadata_crc(meta: dict) -> int:
    """CRC-32 of a TIFF's JSON metadata (less tifffile's ``shape`` and the CRC itself)."""
    kept = {k: v for k, v in meta.items() if k not in ("shape", "crc32", "stack_axis")}
    return zlib.crc32(json.dumps(kept, sort_keys=True).encode("utf-8"))


def read_tiff(path) -> CellStack:
    """A stack written by :func:`write_tiff` (or any uint8 (N, 2, H, W) or (2, H, W) TIFF)."""
    import tifffile

    path = Path(path)
    guards.regular_file(path, LinFormatError)
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise LinFormatError(f"{_shown(path)}: a TIFF without images")
            series = tif.series[0]
            shape = tuple(series.shape)
            if len(shape) == 3 and shape[0] == 2:
                shape = (1,) + shape
            if len(shape) != 4 or shape[1] != 2:
                raise LinFormatError(f"{_shown(path)}: expected a cell stack of shape (N, 2, H, W), got {shape}")
            if series.dtype != np.uint8:
                raise LinFormatError(f"{_shown(path)}: expected uint8 cells, got {series.dtype}")
            n, _, h, w = shape
            guards.check_side(h, "the cells' height", _shown(path), LinFormatError, MAX_CELL_SIDE)
            guards.check_side(w, "the cells' width", _shown(path), LinFormatError, MAX_CELL_SIDE)
            if n < 1:
                raise LinFormatError(f"{_shown(path)}: holds no cells")
            guards.check_allocation(n * 2 * h * w, f"{n} cells of {h}x{w}", path, LinFormatError)
            meta, pixel_size = _tiff_json(tif, path)
            images = series.asarray().reshape(shape)
    except LinFormatError:
        raise
    except Exception as err:  # tifffile and its codecs raise many types for damaged files
        raise LinFormatError(f"{_shown(path)}: not a readable TIFF ({err})") from None
    return _stack_from_json(path, images, meta, pixel_size)


def _tiff_json(tif, path) -> tuple[dict, float | None]:
    """(the JSON a TIFF carries, its pixel size in µm or None): tifffile's shaped description, or the OME
    Description and physical size of an OME-TIFF."""
    if tif.shaped_metadata:
        return tif.shaped_metadata[0], None
    if tif.is_ome:
        from .. import ome

        try:
            return ome.tiff_metadata(tif, path)
        except ome.OmeError as err:
            raise LinFormatError(str(err)) from None
    return {}, None


def read_ome_zarr(path) -> CellStack:
    """A cell stack written as OME-Zarr (:func:`write_tiff` with a ``.ome.zarr`` path): (N, 2, H, W) along T."""
    from .. import ome

    try:
        image = ome.read(path)
    except ome.OmeError as err:
        raise LinFormatError(str(err)) from None
    images = image.data
    if image.axes in ("CYX",) and images.shape[0] == 2:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != 2 or image.axes not in ("TCYX", "CYX"):
        raise LinFormatError(f"{_shown(path)}: expected a cell stack of axes TCYX and shape (N, 2, H, W), "
                             f"got {image.axes} {images.shape}")
    if images.dtype != np.uint8:
        raise LinFormatError(f"{_shown(path)}: expected uint8 cells, got {images.dtype}")
    return _stack_from_json(path, images, image.metadata, image.pixel_size_um)


def _stack_from_json(path, images: np.ndarray, meta, pixel_size_um: float | None = None) -> CellStack:
    """A cell stack from its pixels and the JSON :func:`write_tiff` records (names, classes, CRC-32)."""
    path = Path(path)
    n = len(images)
    if not isinstance(meta, dict):
        meta = {}
    if "crc32" in meta and meta["crc32"] != _metadata_crc(meta):
        raise LinFormatError(f"{_shown(path)}: its metadata (names, classes) is damaged: the CRC-32 does not match")
    class_names = _class_names(meta["class_names"], "class_names", path) if "class_names" in meta else ["unknown"]
    index = meta.get("class_index", [0] * n)
    if not isinstance(index, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in index):
        raise LinFormatError(f"{_shown(path)}: 'class_index' must be a list of integers, got {_short(index)}")
    return _stack(
        path,
        images=images,
        class_index=_class_index(np.array(index, dtype=np.int64), n, len(class_names), path),
        class_names=class_names,
        file_names=_names(meta["file_names"], "file_names", path, n) if "file_names" in meta
        else [f"cell{i}" for i in range(n)],
        channel_names=tuple(_names(meta.get("channel_names", list(CHANNEL_NAMES)), "channel_names", path, 2)),
        description=_text(meta["description"], "description", path) if "description" in meta else _shown(path.name),
        simulated=_flag(meta.get("simulated", False), "simulated", path),
        pixel_size_um=pixel_size_um,
    )


def read_cells(path, **kwargs) -> CellStack:
    """Any supported cell stack: a LIN folder, ``.h5``/``.hdf5``, ``.tif``/``.tiff`` (OME or not) or ``.ome.zarr``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise LinFormatError(f"{_shown(path)}: no such file or folder")
    if path.is_dir() and path.name.lower().endswith(".ome.zarr"):
        return read_ome_zarr(path)
    if path.is_dir():
        return read_lin_folder(path, **kwargs)
    if suffix in H5_SUFFIXES:
        return read_h5(path)
    if suffix in TIFF_SUFFIXES:
        return read_tiff(path)
    raise LinFormatError(f"{_shown(path)}: expected a LIN folder, an .h5 or a .tif cell stack (or an .ome.zarr)")


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
