"""OME-TIFF and OME-Zarr: the one writer and reader of the product's images.

Every image the product writes (sampled cells, interpolations, EM renders, prepared crops, simulated
fields of view) goes through :func:`write`, which keeps what the file needs to be understood
elsewhere: the axes (declared for Bio-Formats / Fiji and the OME-Zarr readers), the channel names,
the physical pixel size and the product's own JSON (provenance, the "trained on simulated cells"
flag, class names). :func:`read` gives all of it back.

OME knows the axes T, C, Z, Y, X only, so a stack of cells is written along T (the JSON's
``stack_axis`` says "cell"); an interpolation's frames are T proper. In an OME-TIFF the JSON is the
image's OME ``Description``; in an OME-Zarr it is the root group's ``napari_biogans`` attribute.
The OME-Zarr writer is the ``ome-zarr`` package (the ``export`` extra).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write, temporary_name, write_error

ZARR_SUFFIX = ".ome.zarr"
TIFF_SUFFIXES = (".tif", ".tiff")
METADATA_KEY = "napari_biogans"  # the OME-Zarr root attribute holding the product's JSON
OME_AXES = "TCZYX"  # the order OME-Zarr requires (a subset of it, in this order)
MAX_BYTES = 2**33  # refuse to read more than 8 GiB from one file at once
_CHANNEL_COLOURS = ("FF0000", "00FF00", "00FFFF", "FFFF00", "FF00FF", "FF8000", "0080FF", "FFFFFF")


class OmeError(ValueError):
    """An OME-TIFF or OME-Zarr that cannot be read; the message names the file and the problem."""


@dataclass
class OmeImage:
    """An image as the product writes it: ``data`` with ``axes`` (e.g. "TCYX", "CYX", "YX"), one name
    per channel, the pixel size in µm (None: unknown), and the product's JSON (``{}`` for foreign files)."""

    data: np.ndarray
    axes: str
    channel_names: list[str] = field(default_factory=list)
    pixel_size_um: float | None = None
    metadata: dict = field(default_factory=dict)
    z_step_um: float | None = None


def is_zarr_path(path) -> bool:
    return str(path).rstrip("/\\").lower().endswith(ZARR_SUFFIX)


def is_ome_zarr(path) -> bool:
    """An existing OME-Zarr folder (zarr v2 or v3 with multiscales at its root)."""
    path = Path(path)
    if not path.is_dir():
        return False
    for name in ("zarr.json", ".zattrs"):
        try:
            text = (path / name).read_text()
        except OSError:
            continue
        return "multiscales" in text
    return False


def written_by_product(path) -> bool:
    """Whether ``path`` is an OME-TIFF or OME-Zarr carrying the product's JSON (cheap: no pixels are read)."""
    path = Path(path)
    try:
        if is_zarr_path(path):
            return is_ome_zarr(path) and METADATA_KEY in ((path / "zarr.json").read_text() if (path / "zarr.json")
                                                         .exists() else (path / ".zattrs").read_text())
        if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
            return False
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return bool(tif.is_ome and tiff_metadata(tif, path)[0])
    except Exception:  # unreadable: not ours, another reader may take it
        return False


def _check_axes(data: np.ndarray, axes: str) -> str:
    """``axes`` upper-cased: letters of TCZYX in that order, optionally ending in S (RGB samples, TIFF only)."""
    axes = axes.upper()
    spatial = axes[:-1] if axes.endswith("S") else axes
    if len(axes) != data.ndim or len(set(spatial)) != len(spatial) or any(a not in OME_AXES for a in spatial):
        raise ValueError(f"axes {axes!r} do not describe an array of shape {data.shape} (letters of {OME_AXES})")
    if [OME_AXES.index(a) for a in spatial] != sorted(OME_AXES.index(a) for a in spatial):
        raise ValueError(f"axes {axes!r} must follow the OME order {OME_AXES}")
    return axes


def write(path, data, axes: str, channel_names=None, pixel_size_um: float | None = None, metadata: dict | None = None,
          z_step_um: float | None = None, labels: np.ndarray | None = None) -> Path:
    """Write ``data`` as an OME-Zarr (a path ending in ``.ome.zarr``) or an OME-TIFF (``.tif``), atomically
    (a temporary file or folder renamed into place); returns the path. ``labels`` (Y, X): an OME-Zarr's
    label image (``<path>/labels/labels``), which OME-Zarr viewers (napari-ome-zarr) show over the image."""
    data = np.asarray(data)
    axes = _check_axes(data, axes)
    n_channels = data.shape[axes.index("C")] if "C" in axes else 1
    names = [str(n) for n in (channel_names or [f"channel {k}" for k in range(n_channels)])]
    if len(names) != n_channels:
        raise ValueError(f"{len(names)} channel names for {n_channels} channels")
    image = OmeImage(data, axes, names, pixel_size_um, dict(metadata or {}), z_step_um)
    path = Path(path)
    if is_zarr_path(path):
        if axes.endswith("S"):
            raise ValueError(f"{path}: RGB images go to OME-TIFF (.tif); OME-Zarr has no RGB samples")
        return _write_zarr(path, image, labels)
    if labels is not None:
        raise ValueError(f"{path}: label images go inside an OME-Zarr (.ome.zarr)")
    if path.suffix.lower() not in TIFF_SUFFIXES:
        raise ValueError(f"{path}: write images to .tif (OME-TIFF) or .ome.zarr")
    return _write_tiff(path, image)


def _write_tiff(path: Path, image: OmeImage) -> Path:
    import tifffile

    meta = {"axes": image.axes, "Channel": {"Name": image.channel_names},
            "Description": json.dumps(image.metadata)}
    if image.pixel_size_um:
        meta.update(PhysicalSizeX=image.pixel_size_um, PhysicalSizeXUnit="µm",
                    PhysicalSizeY=image.pixel_size_um, PhysicalSizeYUnit="µm")
    if image.z_step_um:
        meta.update(PhysicalSizeZ=image.z_step_um, PhysicalSizeZUnit="µm")
    photometric = "rgb" if image.axes.endswith("S") else "minisblack"
    return atomic_write(path, lambda tmp: tifffile.imwrite(tmp, image.data, ome=True, photometric=photometric,
                                                           metadata=meta, compression="zlib"))


def _write_zarr(path: Path, image: OmeImage, labels: np.ndarray | None = None) -> Path:
    import zarr
    from ome_zarr.writer import write_image

    if path.exists() and not is_ome_zarr(path):
        raise FileExistsError(f"{path}: exists and is not an OME-Zarr; choose a new name")
    scale = {a.lower(): (image.pixel_size_um if a in "YX" and image.pixel_size_um else 1.0) for a in image.axes}
    units = {a.lower(): "micrometer" for a in "YX" if image.pixel_size_um}
    if image.z_step_um and "Z" in image.axes:
        scale["z"], units["z"] = image.z_step_um, "micrometer"
    omero = {"channels": [{"label": name, "color": _CHANNEL_COLOURS[k % len(_CHANNEL_COLOURS)], "active": True,
                           "window": _window(image.data)} for k, name in enumerate(image.channel_names)]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, folder=True)  # the old store stays whole until the new one is complete
    try:
        root = zarr.open_group(str(tmp), mode="w")
        chunks = tuple(1 if a in "TCZ" else min(n, 1024) for a, n in zip(image.axes, image.data.shape))
        write_image(image.data, root, scale_factors=(), axes=[a.lower() for a in image.axes], scale=scale,
                    axes_units=units or None, storage_options={"chunks": chunks}, omero=omero)
        root.attrs[METADATA_KEY] = json.loads(json.dumps(image.metadata))
        if labels is not None:
            from ome_zarr.writer import write_labels

            scale = {"y": image.pixel_size_um, "x": image.pixel_size_um} if image.pixel_size_um else None
            write_labels(np.asarray(labels), root, name="labels", scaler=None, scale_factors=(), axes=["y", "x"],
                         scale=scale)
        if path.exists():
            shutil.rmtree(path)
        os.rename(tmp, path)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise write_error(err, path) from None
        raise
    return path


def _window(data: np.ndarray) -> dict:
    """The display range of an OME-Zarr channel: the dtype's range for integers, the data's for floats."""
    if data.dtype.kind in "ui":
        info = np.iinfo(data.dtype)
        low, high = float(info.min), float(info.max)
    else:
        low, high = (float(data.min()), float(data.max())) if data.size else (0.0, 1.0)
    return {"min": low, "max": high, "start": low, "end": high}


def read(path) -> OmeImage:
    """An OME-TIFF or OME-Zarr as an :class:`OmeImage`; foreign files give ``metadata == {}``."""
    path = Path(path)
    if not path.exists():
        raise OmeError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_zarr(path)
    return _read_tiff(path)


def _read_tiff(path: Path) -> OmeImage:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise OmeError(f"{path}: a TIFF without images")
            series = tif.series[0]
            data, axes = series.asarray(), series.axes.upper()
            names, size, z_step, description = _ome_pixels(tif.ome_metadata) if tif.is_ome else ([], None, None, "")
            if tif.shaped_metadata and not description:  # a plain tifffile TIFF with the product's JSON
                description = json.dumps({k: v for k, v in tif.shaped_metadata[0].items() if k != "shape"})
    except OmeError:
        raise
    except Exception as err:  # tifffile and its codecs raise many types for damaged files
        raise OmeError(f"{path}: not a readable TIFF ({err})") from None
    return OmeImage(data, axes, names, size, _json_object(description, path), z_step)


_UNITS_UM = {"µm": 1.0, "um": 1.0, "micrometer": 1.0, "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3}


def _ome_pixels(xml: str):
    """(channel names, pixel size µm, z step µm, Image Description text) of an OME-XML document."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except (ET.ParseError, TypeError):
        return [], None, None, ""
    image = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Image"), None)
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return [], None, None, ""
    names = [c.get("Name", "") for c in pixels if c.tag.rsplit("}", 1)[-1] == "Channel"]

    def size(key):
        value, factor = pixels.get(f"PhysicalSize{key}"), _UNITS_UM.get(pixels.get(f"PhysicalSize{key}Unit", "µm"))
        return float(value) * factor if value and factor else None

    description = next((e.text or "" for e in (image if image is not None else [])
                        if e.tag.rsplit("}", 1)[-1] == "Description"), "")
    return names, size("X"), size("Z"), description


def tiff_metadata(tif, path) -> tuple[dict, float | None]:
    """(the product's JSON, the pixel size in µm) of an open OME-TIFF (``tifffile.TiffFile``)."""
    _, size, _, description = _ome_pixels(tif.ome_metadata)
    return _json_object(description, path), size


def _json_object(text: str, path) -> dict:
    """The product's JSON from a description; ``{}`` for another program's text."""
    if not text or not text.lstrip().startswith("{"):
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise OmeError(f"{path}: its metadata (provenance) is damaged: not valid JSON") from None
    return value if isinstance(value, dict) else {}


def _read_zarr(path: Path) -> OmeImage:
    import zarr

    try:
        root = zarr.open_group(str(path), mode="r")
        attrs = dict(root.attrs)
        ome = attrs.get("ome", attrs)  # OME-Zarr 0.5 nests its metadata under "ome"; 0.4 does not
        multiscale = ome["multiscales"][0]
        axes = "".join(a if isinstance(a, str) else a["name"] for a in multiscale["axes"]).upper()
        dataset = multiscale["datasets"][0]
        array = root[dataset["path"]]
        if int(np.prod(array.shape, dtype=np.int64)) * array.dtype.itemsize > MAX_BYTES:
            raise OmeError(f"{path}: an array of {array.shape} {array.dtype} is too large to read at once")
        data = np.asarray(array[...])
        scale = next((t["scale"] for t in dataset.get("coordinateTransformations", []) if t.get("type") == "scale"),
                     None)
        channels = (ome.get("omero") or {}).get("channels", [])
    except OmeError:
        raise
    except Exception as err:  # zarr raises many types for folders that are not OME-Zarr
        raise OmeError(f"{path}: not a readable OME-Zarr ({type(err).__name__}: {err})") from None
    if len(axes) != data.ndim:
        raise OmeError(f"{path}: declares axes {axes!r} for an array of shape {data.shape}")
    size = float(scale[axes.index("X")]) if scale and "X" in axes else None
    z_step = float(scale[axes.index("Z")]) if scale and "Z" in axes else None
    names = [str(c.get("label", "")) for c in channels]
    metadata = attrs.get(METADATA_KEY, {})
    return OmeImage(data, axes, names, size, metadata if isinstance(metadata, dict) else {}, z_step)


def read_labels(path, name: str = "labels") -> np.ndarray | None:
    """The label image ``name`` of an OME-Zarr (:func:`write_labels`), None when it has none."""
    import zarr

    try:
        group = zarr.open_group(str(Path(path) / "labels" / name), mode="r")
        return np.asarray(group["s0"][...])
    except Exception:  # no labels group: the image has no labels
        return None
