"""Generators as ONNX models and bioimage.io model packages (``biogans export``, the Export buttons).

What an export computes, so that other tools reproduce the product's pixels:

* a **fluorescence generator**: noise codes in, cells out. The red part of the code is its own input
  (``z_red``, then ``z_green``) where the model has one, else one input ``z``; the output ``cells`` is
  ``(n, channels, H, W)`` float32 in 0..255 with the channels of :func:`napari_biogans.sampling.channel_names`
  for every protein. Rounding it gives the pixels ``biogans sample`` writes for the same codes.
* the **EM image generator** G_x: a label map in (``labels``, ``(n, 1, H, W)`` float32 codes 0 = cytoplasm,
  1 = membrane, 2 = mitochondria; sides multiples of the generator's factor, any size up to ``max_side``),
  the EM image out (``em``, 0..255). The noise is part of the exported model: the product's noise field
  for ``seed`` (:func:`napari_biogans.rendering.noise_field`) depends on position only, so the export
  renders what :func:`napari_biogans.rendering.render` renders with ``noise_seed=seed``.

Every export runs its own file on a test input and compares it with torch before it reports success
(ONNX through ``onnxruntime``; a bioimage.io package through ``bioimageio.core``, which also checks it
against the test output stored inside). The libraries come with the ``export`` extra.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import replace, temporary_name
from .jobs import Job, Update

FORMATS = ("onnx", "bioimageio")
OPSET = 17
TOLERANCE = 1e-2  # grey levels (of 255) between onnxruntime and torch; float error is ~1e-4
DEFAULT_MAX_SIDE = 2048
LICENSE = "BSD-3-Clause"  # the product's licence, which its shipped weights carry
CITATIONS = {
    "fluorescence": ("Osokin A, Chessel A, Carazo Salas RE, Vaggi F. GANs for Biological Image Synthesis. ICCV 2017.",
                     "https://arxiv.org/abs/1708.04692"),
    "em": ("Han L, Murphy RF, Ramanan D. Learning Generative Models of Tissue Organization with Supervised GANs. "
           "WACV 2018.", "10.1109/WACV.2018.00080"),
}
INPUT_TEXT = {"z": "standard normal noise code", "z_red": "standard normal code of the red (Bgs4) cell",
              "z_green": "standard normal code of the green proteins",
              "labels": "label codes 0 = cytoplasm, 1 = membrane, 2 = mitochondria"}
SIMULATED_NOTE = ("Trained on SIMULATED fission-yeast cells (the napari-biogans simulator), not on real LIN "
                  "images: its cells show what the simulator draws, not real protein localisation.")


class ExportError(RuntimeError):
    """An export that cannot be made or does not reproduce the model; the message says why."""


@dataclass
class Exportable:
    """A model ready to export: ``module`` maps the named ``inputs`` (test values, in order) to ``output``."""

    module: object  # torch.nn.Module
    inputs: dict[str, np.ndarray]
    output: str
    kind: str  # "fluorescence" or "em"
    meta: dict
    channel_names: list[str]
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)
    factor: int = 1  # EM: label map sides are multiples of this
    max_side: int = 0  # EM: the largest side the built-in noise covers


@dataclass
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float  # between the exported file's output and torch's, in grey levels
    size_bytes: int


# --------------------------------------------------------------------------------------------
# What is exported


def _modules():
    """The wrapper modules, defined on first use so that importing this module does not import torch."""
    import torch
    from torch import nn

    class FluorescenceCells(nn.Module):
        """Codes -> cells (n, channels, H, W) in 0..255, channels as :func:`sampling.pairs_to_channels`."""

        def __init__(self, generator):
            super().__init__()
            self.generator, self.shares_red = generator, bool(generator.shares_red)

        def forward(self, *codes):
            pairs = self.generator(torch.cat(codes, 1) if len(codes) > 1 else codes[0])
            if self.shares_red:
                channels = torch.cat([pairs[:, :1, 0], pairs[:, :, 1]], 1)
            else:
                channels = pairs.flatten(1, 2)
            return (channels.clamp(-1, 1) + 1) * 127.5

    class EMRender(nn.Module):
        """Label codes (n, 1, H, W) -> EM image (n, 1, H, W) in 0..255 with the product's noise for one seed."""

        def __init__(self, image_generator, noise: np.ndarray):
            super().__init__()
            self.generator, self.factor = image_generator, int(image_generator.factor)
            self.register_buffer("noise", torch.from_numpy(noise)[None])

        def forward(self, labels):
            y = torch.cat([labels == 1, labels == 2], 1).to(labels.dtype) * 2 - 1  # rendering.labels_to_tensor
            rows, cols = labels.shape[2] // self.factor, labels.shape[3] // self.factor
            z = self.noise[:, :, :rows, :cols].expand(labels.shape[0], -1, -1, -1)
            return (self.generator(y, z).clamp(-1, 1) + 1) * 127.5

    return FluorescenceCells, EMRender


def fluorescence_exportable(generator, meta: dict, n: int = 4, seed: int = 0) -> Exportable:
    """A fluorescence generator (eval mode) and its card, with ``n`` test codes drawn with ``seed``."""
    from .sampling import channel_names, latent_codes

    FluorescenceCells, _ = _modules()
    generator = generator.cpu().float().eval()
    # conditional batch norm (projection) follows a reshape by traced sizes, which the ONNX exporter cannot
    # carry through batch norm: those models export for one cell at a time (bioimage.io's fixed batch is 1)
    fixed_batch = any(type(m).__name__ == "ConditionalBatchNorm2d" for m in generator.modules())
    n = 1 if fixed_batch else n
    z = latent_codes(n, generator.nz, generator.nz_red, seed)
    inputs = {"z_red": z[:, : generator.nz_red], "z_green": z[:, generator.nz_red :]} if generator.nz_red else {"z": z}
    names = channel_names(list(meta["class_names"]), None, generator.shares_red)
    dynamic = {} if fixed_batch else {name: {0: "batch"} for name in (*inputs, "cells")}
    return Exportable(FluorescenceCells(generator).eval(), inputs, "cells", "fluorescence", meta, names, dynamic)


def em_exportable(image_generator, meta: dict, labels: np.ndarray | None = None, seed: int = 0,
                  max_side: int = DEFAULT_MAX_SIDE, label_generator_model=None) -> Exportable:
    """The EM image generator with the noise of ``seed`` built in for maps up to ``max_side``; ``labels``
    (H, W) codes is the test input (default: drawn by the model's label generator, else a fixed pattern)."""
    from .rendering import noise_field

    _, EMRender = _modules()
    generator = image_generator.cpu().float().eval()
    f = int(generator.factor)
    cells = math.ceil(max_side / f)
    module = EMRender(generator, noise_field(generator.nz, cells, cells, seed)).eval()
    if labels is None:
        side = max(2 * f, 128 // f * f)
        labels = (label_generator_model.sample_labels(side, side, seed) if label_generator_model is not None
                  else _pattern(side))
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] % f or labels.shape[1] % f:
        raise ExportError(f"the test label map must be 2-D with sides multiples of {f}, got {labels.shape}")
    inputs = {"labels": labels.astype(np.float32)[None, None]}
    dynamic = {"labels": {0: "batch", 2: "height", 3: "width"}, "em": {0: "batch", 2: "height", 3: "width"}}
    return Exportable(module, inputs, "em", "em", meta, ["EM"], dynamic, factor=f, max_side=cells * f)


def _pattern(side: int) -> np.ndarray:
    """A label map of membranes on a grid with a mitochondrion in one cell (for models without G_y)."""
    labels = np.zeros((side, side), np.uint8)
    step = max(side // 4, 8)
    labels[::step] = labels[:, ::step] = 1
    labels[step // 3 : step // 2, step // 3 : step // 2] = 2
    return labels


def exportable(name_or_path, seed: int = 0) -> Exportable:
    """What the model ``name_or_path`` (catalogue name, file or run folder) exports, through the one loader."""
    from .models import loader

    loaded = loader.load(name_or_path, "cpu")
    if loaded.kind == loader.EM_KIND:
        model = loaded.model
        if model.image_generator is None:
            raise ExportError(f"{name_or_path}: a {model.meta['mode']} model has no image generator to export")
        sampler = model if model.meta.get("mode") in ("sgan", "dsgan") else None
        return em_exportable(model.image_generator, loaded.meta, seed=seed, label_generator_model=sampler)
    return fluorescence_exportable(loaded.model, loaded.meta, seed=seed)


def torch_output(ex: Exportable) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return ex.module(*(torch.from_numpy(v) for v in ex.inputs.values())).numpy()


# --------------------------------------------------------------------------------------------
# ONNX


def write_onnx(ex: Exportable, path) -> ExportResult:
    """The ONNX file of ``ex`` (opset 17, dynamic batch and, for EM, dynamic size), checked with onnxruntime."""
    import torch

    path = Path(path)
    tmp = temporary_name(path)
    args = tuple(torch.from_numpy(v) for v in ex.inputs.values())
    _export(ex, args, tmp, ex.dynamic or None)
    try:
        diff = float(np.abs(run_onnx(tmp, ex.inputs) - torch_output(ex)).max())
        if not diff <= TOLERANCE:
            raise ExportError(f"{path}: the ONNX model differs from torch by {diff:.3g} grey levels")
        replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(path, "onnx", diff, path.stat().st_size)


def _export(ex: Exportable, args, path: Path, dynamic) -> None:
    import torch

    with torch.no_grad():
        torch.onnx.export(ex.module, args, str(path), input_names=list(ex.inputs), output_names=[ex.output],
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)


def run_onnx(path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The first output of an ONNX model on ``inputs`` (name -> array), with onnxruntime on the CPU."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # small models; the machine is shared
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


# --------------------------------------------------------------------------------------------
# bioimage.io


def _identifier(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_") or "channel"


def _card_text(ex: Exportable) -> tuple[str, str, bool]:
    """(name, one-line description, simulated) of the model from its card."""
    meta = ex.meta
    simulated = bool(meta.get("simulated_training_data") or (meta.get("data") or {}).get("simulated"))
    name = f"napari-biogans {meta.get('name', 'model')}"
    if ex.kind == "em":
        description = (f"EM image generator G_x ({meta.get('mode', 'dsgan').upper()}): a label map of membranes and "
                       "mitochondria in, a synthetic electron-microscopy image out.")
    else:
        description = (f"Fluorescence cell generator ({(meta.get('config') or {}).get('arch', '?')}): noise codes in, "
                       f"fission-yeast cells out (channels {', '.join(ex.channel_names)}).")
    return name, description + (" " + SIMULATED_NOTE if simulated else ""), simulated


def _readme(ex: Exportable, seed: int) -> str:
    name, description, simulated = _card_text(ex)
    data = (ex.meta.get("data") or {}).get("description", "not recorded")
    lines = [f"# {name}", "", description, "", f"Training data: {data}.", ""]
    if ex.kind == "em":
        lines += [f"Input `labels`: (batch, 1, y, x) float32 codes 0 = cytoplasm, 1 = membrane, 2 = mitochondria; "
                  f"y and x are multiples of {ex.factor}, at most {ex.max_side}.",
                  f"Output `em`: (batch, 1, y, x) float32 in 0..255 (round for 8-bit). The generator's noise is built "
                  f"in (seed {seed}), so the same labels give the same image: the pixels of napari-biogans' "
                  f"one-pass renderer (`napari_biogans.rendering.render`, noise seed {seed}). Its tiled renderer "
                  f"(`render-em`, Paint EM) normalises tiles by a shared window, so its tone differs."]
    else:
        inputs = " and ".join(f"`{k}` (batch, {v.shape[1]})" for k, v in ex.inputs.items())
        lines += [f"Inputs: {inputs}, standard normal float32 codes"
                  + (" (the red Bgs4 part apart: keep `z_red`, change `z_green` for new proteins on the same cell)."
                     if "z_red" in ex.inputs else "."),
                  f"Output `cells`: (batch, {len(ex.channel_names)}, y, x) float32 in 0..255, channels "
                  f"{', '.join(ex.channel_names)} (round for 8-bit)."]
        if not ex.dynamic:
            lines.append("This model draws one cell per run (a batch of 1).")
    if simulated:
        lines += ["", f"**{SIMULATED_NOTE}**"]
    lines += ["", "Made with napari-biogans (`biogans export --format bioimageio`)."]
    return "\n".join(lines) + "\n"


def _cover(ex: Exportable, output: np.ndarray, path: Path) -> None:
    """A 2:1 PNG of the test output (bioimage.io covers are 2:1)."""
    import imageio.v3 as iio
    from skimage.transform import resize

    if ex.kind == "em":
        picture = np.concatenate([ex.inputs["labels"][0, 0] * 127.5, output[0, 0]], axis=1)
    else:
        first = output[0]
        picture = np.concatenate(list(first), axis=1) if len(first) > 1 else first[0]
    h, w = picture.shape
    rows = max(h, w // 2)
    canvas = np.zeros((rows, 2 * rows), np.float32)
    small = resize(picture, (min(rows, round(h * 2 * rows / w)), min(2 * rows, w * rows // h)), preserve_range=True)
    canvas[: small.shape[0], : small.shape[1]] = small
    iio.imwrite(path, np.clip(np.rint(canvas), 0, 255).astype(np.uint8))


def _descr(ex: Exportable, folder: Path, output: np.ndarray, seed: int):
    """The bioimage.io model description (spec 0.5) of ``ex`` over files in ``folder``."""
    from bioimageio.spec.model import v0_5 as spec

    from . import __version__

    citation, reference = CITATIONS[ex.kind]
    name, description, simulated = _card_text(ex)
    cite = spec.CiteEntry(text=citation, url=reference) if reference.startswith("http") else \
        spec.CiteEntry(text=citation, doi=reference)
    inputs, batch = [], spec.BatchAxis() if ex.dynamic else spec.BatchAxis(size=1)
    for key, value in ex.inputs.items():
        np.save(folder / f"test_{key}.npy", value)
        if ex.kind == "em":
            size = spec.ParameterizedSize(min=ex.factor, step=ex.factor)
            axes = [batch, spec.ChannelAxis(channel_names=["labels"]),
                    spec.SpaceInputAxis(id="y", size=size), spec.SpaceInputAxis(id="x", size=size)]
        else:
            axes = [batch, spec.ChannelAxis(channel_names=[f"{key}_{i}" for i in range(value.shape[1])])]
        inputs.append(spec.InputTensorDescr(id=key, axes=axes, test_tensor=spec.FileDescr(
            source=folder / f"test_{key}.npy"), description=INPUT_TEXT[key]))
    np.save(folder / f"test_{ex.output}.npy", output)
    if ex.kind == "em":
        out_axes = [batch, spec.ChannelAxis(channel_names=["em"]),
                    spec.SpaceOutputAxis(id="y", size=spec.SizeReference(tensor_id="labels", axis_id="y")),
                    spec.SpaceOutputAxis(id="x", size=spec.SizeReference(tensor_id="labels", axis_id="x"))]
    else:
        out_axes = [batch, spec.ChannelAxis(channel_names=[_identifier(c) for c in ex.channel_names]),
                    spec.SpaceOutputAxis(id="y", size=output.shape[2]),
                    spec.SpaceOutputAxis(id="x", size=output.shape[3])]
    outputs = [spec.OutputTensorDescr(id=ex.output, axes=out_axes,
                                      test_tensor=spec.FileDescr(source=folder / f"test_{ex.output}.npy"),
                                      data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 255.0)),
                                      description="0..255, round for 8-bit")]
    tags = ["napari-biogans", "gan", "image-synthesis", "pytorch", "onnx"]
    tags += ["electron-microscopy", "drosophila", "vnc", "membranes", "mitochondria"] if ex.kind == "em" else \
        ["fluorescence-light-microscopy", "fission-yeast", "schizosaccharomyces-pombe", "cells"]
    if simulated:
        tags.append("simulated-training-data")
    config = {"napari_biogans": {"model": ex.meta.get("name"), "weights_sha256": ex.meta.get("sha256"),
                                 "channel_names": ex.channel_names, "seed": seed, "simulated_training_data": simulated,
                                 "version": __version__}}
    return spec.ModelDescr(
        name=name, description=description[:1024], authors=[spec.Author(name="napari-biogans contributors")],
        cite=[cite], license=LICENSE, documentation=spec.FileDescr(source=folder / "README.md"),
        covers=[spec.FileDescr(source=folder / "cover.png")],
        inputs=inputs, outputs=outputs, tags=tags, version="0.1.0", config=json.loads(json.dumps(config)),
        weights=spec.WeightsDescr(onnx=spec.OnnxWeightsDescr(source=folder / "model.onnx", opset_version=OPSET)),
    )


def write_bioimageio(ex: Exportable, path, seed: int = 0) -> ExportResult:
    """A bioimage.io model package (zip; spec 0.5, ONNX weights, model card, test tensors, cover, citation,
    licence and the simulated-data note), validated offline and run with bioimage.io's own runner."""
    from bioimageio.spec import ValidationContext, save_bioimageio_package

    path = Path(path)
    if path.suffix.lower() != ".zip":
        path = path.with_name(path.name + ".zip")
    with tempfile.TemporaryDirectory(prefix="biogans-export-") as tmp:
        folder = Path(tmp)
        onnx = write_onnx(ex, folder / "model.onnx")
        output = torch_output(ex)
        (folder / "README.md").write_text(_readme(ex, seed))
        _cover(ex, output, folder / "cover.png")
        with ValidationContext(perform_io_checks=False):  # nothing is fetched: every file is local
            descr = _descr(ex, folder, output, seed)
            partial = temporary_name(path.with_suffix(".zip"))
            save_bioimageio_package(descr, output_path=partial)
        try:
            diff = max(onnx.max_abs_diff, check_bioimageio(partial, ex.inputs, output))
            replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    return ExportResult(path, "bioimageio", diff, path.stat().st_size)


def load_package(path):
    """A bioimage.io package's model description, validated offline; an ExportError names what is wrong."""
    from bioimageio.spec import InvalidDescr, ValidationContext, load_description

    with ValidationContext(perform_io_checks=False):
        descr = load_description(path, perform_io_checks=False)
    if isinstance(descr, InvalidDescr):
        raise ExportError(f"{path}: not a valid bioimage.io model: {descr.validation_summary.format()[:2000]}")
    return descr


def run_bioimageio(path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The first output of a bioimage.io package on ``inputs`` (name -> array), run by ``bioimageio.core``."""
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline

    descr = load_package(path)
    tensors = {}
    for tensor in descr.inputs:
        tensors[tensor.id] = Tensor.from_numpy(inputs[str(tensor.id)], dims=tuple(str(a.id) for a in tensor.axes))
    with create_prediction_pipeline(descr, devices=["cpu"]) as pipeline:
        result = pipeline.predict_sample_without_blocking(Sample(members=tensors, stat={}, id="export-check"))
    return np.asarray(next(iter(result.members.values())).data)


def check_bioimageio(path, inputs: dict[str, np.ndarray], expected: np.ndarray) -> float:
    """Run the package with bioimage.io's runner and compare with ``expected``; the max abs difference."""
    got = run_bioimageio(path, inputs)
    if got.shape != expected.shape:
        raise ExportError(f"{path}: bioimageio.core gave shape {got.shape}, torch {expected.shape}")
    diff = float(np.abs(got - expected).max())
    if not diff <= TOLERANCE:
        raise ExportError(f"{path}: bioimageio.core's output differs from torch by {diff:.3g} grey levels")
    return diff


# --------------------------------------------------------------------------------------------
# The one entry point (CLI and widgets)


def default_suffix(fmt: str) -> str:
    return ".onnx" if fmt == "onnx" else ".zip"


def export_job(model, fmt: str, out, seed: int = 0) -> Job:
    """Export ``model`` (catalogue name, file, run folder, or an :class:`Exportable`) as ``fmt`` to ``out``;
    returns the :class:`ExportResult`."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
    _check_libraries(fmt)
    yield Update(0, 3, "loading the model")
    ex = model if isinstance(model, Exportable) else exportable(model, seed=seed)
    yield Update(1, 3, f"writing {fmt}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = write_onnx(ex, out) if fmt == "onnx" else write_bioimageio(ex, out, seed)
    yield Update(3, 3, "checked")
    return result


def _check_libraries(fmt: str) -> None:
    import importlib.util

    needed = ["onnx", "onnxruntime"] + (["bioimageio.spec", "bioimageio.core"] if fmt == "bioimageio" else [])
    missing = [name for name in needed if importlib.util.find_spec(name.split(".")[0]) is None
               or importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"exporting to {fmt} needs {', '.join(missing)}: pip install 'napari-biogans[export]'")


def describe(result: ExportResult) -> str:
    return (f"{result.format} -> {result.path} ({result.size_bytes / 1e6:.2f} MB); checked: max |exported - torch| "
            f"= {result.max_abs_diff:.2g} grey levels")


__all__ = ["FORMATS", "Exportable", "ExportError", "ExportResult", "em_exportable", "export_job", "exportable",
           "fluorescence_exportable", "load_package", "run_bioimageio", "run_onnx", "write_bioimageio", "write_onnx"]
