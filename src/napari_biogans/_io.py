"""npe2 readers, writer and sample data. Plain functions returning layer-data tuples: no napari import."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from .data import em, lin
from .sampling import is_red_channel


def cell_layers(stack: lin.CellStack, name: str, scale=(1.0, 1.0)) -> list[tuple]:
    """Two image layers (red Bgs4, green protein), each (N, H, W), stacked over cells."""
    metadata = {
        "source": stack.description,
        "simulated": stack.simulated,
        "class_names": list(stack.class_names),
        "class_index": stack.class_index.tolist(),
        "file_names": list(stack.file_names),
        "channel_names": list(stack.channel_names),
        "truth": {k: np.asarray(v).tolist() for k, v in stack.truth.items()},
    }
    common = {
        "blending": "additive",
        "contrast_limits": (0, 255),
        "scale": (1.0, *scale),
        "axis_labels": ("cell", "y", "x"),
        "metadata": metadata,
    }
    red, green = stack.channel_names
    return [
        (stack.images[:, 0], {**common, "name": f"{name} {red}", "colormap": "red"}, "image"),
        (stack.images[:, 1], {**common, "name": f"{name} {green}", "colormap": "green"}, "image"),
    ]


GREEN_COLORMAPS = ("green", "cyan", "yellow", "magenta", "bop orange", "bop blue", "gray")


def sample_layers(images: np.ndarray, channel_names: list[str], name: str, metadata: dict) -> list[tuple]:
    """Generated cells (n, channels, H, W): red Bgs4 channels in red, each protein additive in its own
    green-ish colormap; the first red and the first protein are visible."""
    layers, greens = [], 0
    for k, channel in enumerate(channel_names):
        if is_red_channel(channel):
            colormap = "red"
        else:
            colormap, greens = GREEN_COLORMAPS[greens % len(GREEN_COLORMAPS)], greens + 1
        layers.append(
            (
                images[:, k],
                {
                    "name": f"{name} {channel}",
                    "colormap": colormap,
                    "blending": "additive",
                    "contrast_limits": (0, 255),
                    "axis_labels": ("cell", "y", "x"),
                    "metadata": {**metadata, "channel": channel},
                    "visible": k <= 1,
                },
                "image",
            )
        )
    return layers


def get_lin_reader(path):
    if isinstance(path, list) or not lin.is_lin_folder(path):
        return None
    return read_lin_layers


def read_lin_layers(path) -> list[tuple]:
    stack = lin.read_lin_folder(path)
    return cell_layers(stack, Path(path).name)


def get_h5_reader(path):
    if isinstance(path, list) or not lin.is_cell_h5(path):
        return None
    return read_h5_layers


def read_h5_layers(path) -> list[tuple]:
    samples = lin.read_h5_samples(path)
    if samples is not None:
        images, channel_names, provenance = samples
        return sample_layers(images, channel_names, Path(path).stem, {"provenance": provenance})
    stack = lin.read_h5(path)
    return cell_layers(stack, Path(path).stem, scale=lin.read_h5_scale(path))


def get_ome_reader(path):
    """Our reader for the OME-TIFF / OME-Zarr files the product writes (cells, samples, interpolations, EM
    renders), which keeps their channel names, provenance and labels; None for any other file."""
    from . import ome

    if isinstance(path, list) or not ome.written_by_product(path):
        return None
    return read_ome_layers


def read_ome_layers(path) -> list[tuple]:
    """Layers of an OME file the product wrote: a cell stack, samples or frames (one layer per channel,
    as Generate cells shows them), or an EM render with its label map."""
    from . import ome

    image = ome.read(path)
    meta, name = image.metadata, Path(str(path).rstrip("/\\")).name.split(".")[0]
    if "class_names" in meta:
        stack = lin.read_cells(path)
        size = image.pixel_size_um or 1.0
        return cell_layers(stack, name, scale=(size, size))
    if image.axes == "TCYX":
        layers = sample_layers(image.data, image.channel_names, name,
                               {"provenance": meta.get("provenance", {}), "pixel_size_um": image.pixel_size_um,
                                "simulated_training_data": meta.get("simulated_training_data", False)})
        axis = meta.get("stack_axis", "cell")
        return [(data, {**kwargs, "axis_labels": (axis, "y", "x")}, kind) for data, kwargs, kind in layers]
    metadata = {**meta, "pixel_size_um": image.pixel_size_um}
    layers = [(image.data, {"name": name, "metadata": metadata}, "image")]
    labels = ome.read_labels(path) if ome.is_zarr_path(path) else None
    if labels is not None:
        layers.append((labels, {"name": f"{name} labels", "opacity": 0.5,
                                "colormap": {None: (0, 0, 0, 0), **em.LABEL_COLORS},
                                "metadata": {"label_names": em.LABEL_NAMES}}, "labels"))
    return layers


def write_ome(path: str, layer_data: list[tuple]) -> list[str]:
    """Image layers of one shape ((N, H, W) or (H, W)) as one OME-TIFF (``.tif``) or OME-Zarr (``.ome.zarr``):
    one channel per layer, named after it, with the first layer's provenance and pixel size."""
    from . import ome

    arrays = [np.asarray(data) for data, _, _ in layer_data]
    if not arrays or any(a.shape != arrays[0].shape for a in arrays) or arrays[0].ndim not in (2, 3):
        shapes = [a.shape for a in arrays]
        raise ValueError(f"{path}: select image layers of one shape, (cells, y, x) or (y, x); got {shapes}")
    first = layer_data[0][1].get("metadata", {}) or {}
    metadata = {k: v for k, v in first.items() if k not in ("channel", "codes") and _is_json(v)}
    if first.get("stack_axis") or len(arrays[0].shape) == 3:
        metadata.setdefault("stack_axis", "cell")
    names = [str(kwargs.get("name", f"channel {k}")) for k, (_, kwargs, _) in enumerate(layer_data)]
    data = np.stack(arrays, axis=-3)
    axes = "TCYX" if data.ndim == 4 else "CYX"
    written = ome.write(path if ome.is_zarr_path(path) or Path(path).suffix.lower() in (".tif", ".tiff")
                        else f"{path}.tif", data, axes, names, first.get("pixel_size_um"), metadata)
    return [str(written)]


def _is_json(value) -> bool:
    import json

    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def write_cells_h5(path: str, layer_data: list[tuple]) -> list[str]:
    """Write image layers of equal shape (N, H, W) as one cell stack with their names and scale.

    The first layer is the red channel and the second the green, as the readers produce them.
    Provenance and class names are taken from the first layer's metadata when present.
    """
    if len(layer_data) != 2:
        raise ValueError(f"select exactly two image layers (red Bgs4, then green protein); got {len(layer_data)}")
    (red, red_meta, _), (green, green_meta, _) = layer_data
    red, green = np.asarray(red), np.asarray(green)
    if red.shape != green.shape:
        raise ValueError(f"the two layers differ in shape: {red.shape} and {green.shape}")
    if red.ndim == 2:
        red, green = red[None], green[None]
    images = np.stack([red, green], axis=1)
    if images.dtype != np.uint8:
        images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    path = Path(path)
    if path.suffix.lower() not in lin.H5_SUFFIXES:
        path = path.with_suffix(".h5")
    try:
        stack = _layers_stack(images, red_meta, green_meta)
    except lin.LinFormatError as err:  # layer metadata that is not a cell stack's
        raise lin.LinFormatError(f"{path}: cannot save these layers as a cell stack ({err})") from None
    scale = tuple(red_meta.get("scale", (1.0, 1.0, 1.0)))[-2:]
    lin.write_h5(stack, path, scale=scale)
    return [str(path)]


def _layers_stack(images, red_meta, green_meta) -> lin.CellStack:
    """The cell stack two layers hold; classes, names and provenance from the first layer's metadata."""
    meta, n = red_meta.get("metadata", {}), len(images)
    return lin.CellStack(
        images=images,
        class_index=np.asarray(meta.get("class_index", [0] * n)),
        class_names=list(meta.get("class_names", ["unknown"])),
        file_names=list(meta.get("file_names", [f"cell{i}" for i in range(n)])),
        channel_names=(red_meta.get("name", "red"), green_meta.get("name", "green")),
        truth={k: np.asarray(v) for k, v in meta.get("truth", {}).items()},
        description=str(meta.get("source", "napari layers")),
        simulated=bool(meta.get("simulated", False)),
    )


def simulated_lin_sample() -> list[tuple]:
    """A small simulated LIN set: 8 proteins x 12 cells, seed 0, labelled as simulated."""
    from .data.simulator import simulate_stack

    stack = simulate_stack(n_per_class=12, seed=0)
    return cell_layers(stack, "simulated LIN")


def vnc_sample() -> list[tuple]:
    """A 512 x 512 crop of real VNC section 10 with its membrane and mitochondria labels."""
    import imageio.v3 as iio

    folder = resources.files("napari_biogans.data") / "samples"
    image = iio.imread(folder / "vnc_section10_raw.png")
    labels = iio.imread(folder / "vnc_section10_labels.png")
    # In pixels, like every layer the plugin makes (generated cells, renders): the 4.6 nm EM pixels and
    # the 200 nm fluorescence pixels are 40x apart, so in one physical frame one of them is a speck,
    # and mixing µm with pixel layers makes napari drop units with a warning. The size stays in metadata.
    source = "Drosophila VNC ssTEM stack 1, section 10 (Gerhard et al. 2013, CC BY-NC-SA 3.0)"
    metadata = {"source": source, "pixel_size_nm": 4.6}
    return [
        (image, {"name": "VNC section 10", "metadata": metadata}, "image"),
        (
            labels,
            {
                "name": "VNC section 10 labels",
                "opacity": 0.5,
                "colormap": {None: (0, 0, 0, 0), **em.LABEL_COLORS},
                "metadata": {**metadata, "label_names": em.LABEL_NAMES},
            },
            "labels",
        ),
    ]
