"""Fields of view: a red (cell outline) and a green (protein) channel, many cells per image.

A :class:`Field` is what the preparation needs: two 2-D float channels (z-stacks already
projected), the physical pixel size when known, and optionally a label image from another
segmenter (cellpose, YeaZ, ilastik). It comes from TIFF / OME-TIFF files (:func:`read_field`)
or from arrays that napari holds (:func:`field_from_arrays`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FIELD_SUFFIXES = (".tif", ".tiff")
PROJECTIONS = ("max", "sum")
MAX_ELEMENTS = 2**31  # refuse to allocate more than this many values from one file
LABEL_SUFFIXES = ("_labels", "_masks", "_cp_masks", "_seg", "_label")
_UNITS_UM = {"µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "\\u00b5m": 1.0,
             "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3}


class FieldError(ValueError):
    """A field of view that cannot be used; the message names the file and what was expected."""


@dataclass
class Field:
    """Two projected channels ``(H, W)`` float32, their names, the pixel size (µm) and labels."""

    red: np.ndarray
    green: np.ndarray
    source: str
    pixel_size_um: float | None = None
    channel_names: tuple[str, str] = ("red", "green")
    labels: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.red.shape


def project(data: np.ndarray, z_axis: int | None, how: str = "max") -> np.ndarray:
    """A z-stack's ``max`` or ``sum`` projection along ``z_axis`` (None: already 2-D), as float32."""
    if how not in PROJECTIONS:
        raise FieldError(f"projection must be one of {PROJECTIONS}, got {how!r}")
    if z_axis is None:
        return np.asarray(data, dtype=np.float32)
    data = np.asarray(data)
    return (data.max(axis=z_axis) if how == "max" else data.sum(axis=z_axis, dtype=np.float64)).astype(np.float32)


def field_from_arrays(red, green, source: str, pixel_size_um=None, labels=None, project_how: str = "max",
                      channel_names=("red", "green")) -> Field:
    """A field from two arrays of the same shape, each ``(H, W)`` or a z-stack ``(Z, H, W)``."""
    red, green = np.asarray(red), np.asarray(green)
    if red.shape != green.shape:
        raise FieldError(f"{source}: red {red.shape} and green {green.shape} must have the same shape")
    if red.ndim not in (2, 3):
        raise FieldError(f"{source}: expected a (Y, X) image or a (Z, Y, X) stack per channel, got {red.shape}")
    for name, channel in (("red", red), ("green", green)):
        if channel.dtype.kind not in "uif" or not np.isfinite(channel).all():
            raise FieldError(f"{source}: the {name} channel must hold finite numbers, got {channel.dtype}")
    z_axis = 0 if red.ndim == 3 else None
    red, green = project(red, z_axis, project_how), project(green, z_axis, project_how)
    if labels is not None:
        labels = check_labels(labels, red.shape, source)
    if pixel_size_um is not None and not (np.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise FieldError(f"{source}: the pixel size must be a positive number of µm, got {pixel_size_um}")
    return Field(red=red, green=green, source=source, labels=labels, channel_names=tuple(channel_names),
                 pixel_size_um=None if pixel_size_um is None else float(pixel_size_um))


def check_labels(labels, shape, source: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[0] == 1:
        labels = labels[0]
    if labels.shape != tuple(shape):
        raise FieldError(f"{source}: the label image is {labels.shape}, the field is {tuple(shape)}")
    if labels.dtype.kind not in "ui" and not (labels.dtype.kind == "f" and np.all(labels == np.round(labels))):
        raise FieldError(f"{source}: a label image holds integer cell ids, got {labels.dtype}")
    if labels.min() < 0:
        raise FieldError(f"{source}: label ids must be >= 0 (0 = background)")
    return labels.astype(np.int32)


# --------------------------------------------------------------------------------------------
# TIFF and OME-TIFF


def read_tiff(path) -> tuple[np.ndarray, str, float | None, list[str]]:
    """``(data, axes, pixel size in µm or None, channel names)`` of a TIFF's first series."""
    import tifffile

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            if int(np.prod(series.shape, dtype=np.int64)) > MAX_ELEMENTS:
                raise FieldError(f"{path}: {series.shape} is too large to read at once")
            data, axes = series.asarray(), series.axes.upper()
            size, names = _ome_metadata(tif) if tif.is_ome else (None, [])
            if size is None:
                size = _imagej_pixel_size(tif)
    except FieldError:
        raise
    except Exception as err:  # tifffile raises many types for broken files
        raise FieldError(f"{path}: not a readable TIFF ({err})") from None
    return data, axes, size, names


def _ome_metadata(tif) -> tuple[float | None, list[str]]:
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(tif.ome_metadata)
    except (ET.ParseError, TypeError):
        return None, []
    pixels = next((e for e in root.iter() if e.tag.endswith("}Pixels") or e.tag == "Pixels"), None)
    if pixels is None:
        return None, []
    names = [c.get("Name", "") for c in pixels if c.tag.endswith("Channel")]
    size = pixels.get("PhysicalSizeX")
    factor = _UNITS_UM.get(pixels.get("PhysicalSizeXUnit", "µm").lower())
    return (float(size) * factor if size and factor else None), names


def _imagej_pixel_size(tif) -> float | None:
    meta = tif.imagej_metadata or {}
    factor = _UNITS_UM.get(str(meta.get("unit", "")).lower())
    tag = tif.pages[0].tags.get("XResolution")
    if not factor or tag is None:
        return None
    numerator, denominator = tag.value
    return float(denominator) / float(numerator) * factor if numerator else None


def _channel_axis(data: np.ndarray, axes: str, path) -> tuple[np.ndarray, str]:
    """Move the channel axis first; take a single time point; RGB samples count as channels."""
    if "T" in axes:
        if data.shape[axes.index("T")] > 1:
            raise FieldError(f"{path}: a time series ({data.shape[axes.index('T')]} time points); "
                             "save one time point per file")
        data, axes = data.take(0, axis=axes.index("T")), axes.replace("T", "")
    if "C" not in axes and "S" in axes:
        axes = axes.replace("S", "C")
    if "C" not in axes:
        # unnamed leading axes (tifffile says Q or I): a small first axis is taken as channels
        if data.ndim >= 3 and data.shape[0] <= 8:
            axes = "C" + axes[1:]
        else:
            return data[None], "C" + axes
    c = axes.index("C")
    return np.moveaxis(data, c, 0), "C" + axes[:c] + axes[c + 1:]


def read_field(image=None, red=None, green=None, red_channel: int = 0, green_channel: int = 1, labels=None,
               pixel_size_um: float | None = None, project_how: str = "max") -> Field:
    """A field from one multichannel TIFF (``image`` with channel indices) or two single-channel
    TIFFs (``red``, ``green``), z-stacks projected; the pixel size given, or from the metadata."""
    if (image is None) == (red is None or green is None):
        raise FieldError("give either one multichannel image or both a red and a green image")
    if image is not None:
        data, axes, size, names = read_tiff(image)
        data, axes = _channel_axis(data, axes, image)
        n = data.shape[0]
        for name, index in (("red", red_channel), ("green", green_channel)):
            if not 0 <= index < n:
                raise FieldError(f"{image}: no {name} channel {index}; the image has {n} channel(s) (axes {axes})")
        channels = [data[red_channel], data[green_channel]]
        channel_names = [names[i] if i < len(names) and names[i] else f"channel {i}"
                         for i in (red_channel, green_channel)]
        source = str(image)
    else:
        channels, sizes, channel_names = [], [], []
        for name, path in (("red", red), ("green", green)):
            data, axes, size, names = read_tiff(path)
            data, axes = _channel_axis(data, axes, path)
            if data.shape[0] != 1:
                raise FieldError(f"{path}: expected one {name} channel, got {data.shape[0]} (axes {axes})")
            channels.append(data[0])
            sizes.append(size)
            channel_names.append(names[0] if names and names[0] else Path(path).stem)
        size = sizes[0] if sizes[0] is not None else sizes[1]
        source = f"{red} + {green}"
    label_image = None
    if labels is not None:
        label_data, _, _, _ = read_tiff(labels)
        label_image = check_labels(np.squeeze(label_data), channels[0].shape[-2:], str(labels))
    if channels[0].ndim > 3:
        raise FieldError(f"{source}: expected (Z, Y, X) or (Y, X) per channel, got {channels[0].shape}")
    return field_from_arrays(channels[0], channels[1], source, pixel_size_um or size, label_image, project_how,
                             channel_names)


def find_fields(folder) -> list[Path]:
    """The TIFF fields of a folder, sorted, leaving out label images (``*_labels.tif``, ``*_masks.tif``...)."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FIELD_SUFFIXES and p.is_file())
    return [p for p in files if not p.stem.lower().endswith(LABEL_SUFFIXES)]


def labels_for(field_path, labels) -> Path | None:
    """The label image of ``field_path``: ``labels`` itself (a file), or in ``labels`` (a folder) the
    file of the same name or with a segmenter's suffix (``_labels``, ``_masks``, ``_cp_masks``, ...)."""
    if labels is None:
        return None
    labels = Path(labels)
    if labels.is_file():
        return labels
    stem = Path(field_path).stem
    for suffix in ("",) + LABEL_SUFFIXES:
        for ext in FIELD_SUFFIXES:
            candidate = labels / f"{stem}{suffix}{ext}"
            if candidate.is_file() and candidate.resolve() != Path(field_path).resolve():
                return candidate
    raise FieldError(f"{labels}: no label image for {Path(field_path).name} (tried {stem}.tif, {stem}_labels.tif, "
                     f"{stem}_masks.tif, ...)")


def write_field_tiff(path, image: np.ndarray, pixel_size_um: float, channel_names, z_step_um: float | None = None):
    """An OME-TIFF of a field, ``(C, Y, X)`` or ``(Z, C, Y, X)``, with pixel size and channel names."""
    import tifffile

    path = Path(path)
    axes = "ZCYX" if image.ndim == 4 else "CYX"
    metadata = {"axes": axes, "PhysicalSizeX": pixel_size_um, "PhysicalSizeXUnit": "µm",
                "PhysicalSizeY": pixel_size_um, "PhysicalSizeYUnit": "µm",
                "Channel": {"Name": list(channel_names)}}
    if z_step_um:
        metadata.update(PhysicalSizeZ=z_step_um, PhysicalSizeZUnit="µm")
    from ..atomic import atomic_write

    return atomic_write(path, lambda tmp: tifffile.imwrite(tmp, image, ome=True, metadata=metadata,
                                                           compression="zlib"))


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "protein"
