"""The Diagnostics widget's inputs and its job: the real cells it judges a model on (a LIN folder,
.h5 or .tif stack, or a red and a green cell layer of the viewer), read with the training cells and
the model in a worker, then the evaluation pipeline's job."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from qtpy.QtWidgets import QFormLayout

from ..evaluation import pipeline
from ..jobs import Update
from . import _common, forms, model_picker
from .diagnostics_results import GROUP

SOURCES = ["file or folder", "layers"]


def load_cells(spec):
    """``(stack, (dy, dx) pixel scale)`` from ``("path", text)`` or ``("stack", stack, scale)``."""
    if spec[0] == "stack":
        return spec[1], spec[2]
    from ..data.lin import H5_SUFFIXES, read_cells, read_h5_scale

    stack = read_cells(spec[1])
    return stack, read_h5_scale(spec[1]) if Path(spec[1]).suffix.lower() in H5_SUFFIXES else (1.0, 1.0)


@contextmanager
def _leave_a_core():
    """Cap torch's threads for the job so napari's GUI thread keeps a core."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - 1))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def evaluation_job(kind: str, spec, train_path: str, model_path, device: str, settings):
    """Read the inputs, then run the pipeline's ``kind`` job; returns ``(result, pixel scale, model file)``.

    The training cells serve the reconstruction's nearest-neighbour baseline and real vs real's set A.
    """
    from ..data.lin import read_cells
    from ..devices import resolve_device

    cells, scale = load_cells(spec)
    train = read_cells(train_path) if train_path and kind not in ("c2st", "fast-c2st") else None
    meta = {}
    if kind == "real-vs-real":
        torch_device = resolve_device(device)
        job = pipeline.real_vs_real_job(cells, settings, torch_device, train=train)
        critics = settings.splits * len(cells.class_names) ** 2
    else:
        generator, meta, torch_device = model_picker.load_generator_cached(model_path, device)
        job = {"c2st": pipeline.c2st_job, "fast-c2st": pipeline.fast_c2st_job}.get(kind)
        job = (job(generator, meta, cells, settings, torch_device) if job else
               pipeline.reconstruction_job(generator, meta, cells, settings, torch_device, train=train))
        critics = settings.splits * generator.n_classes if kind == "c2st" else 0
    budget = pipeline.c2st_budget(settings, critics, cells.image_size, torch_device) if critics else None
    if budget:  # a long C2ST on a CPU: the widget says how long, and what is cheaper
        yield Update(0, 0, "estimating its time", payload=budget)
    with _leave_a_core():
        result = yield from job
    return result, scale, meta.get("path")


class CellSource:
    """The rows "data", "cells", "red layer" and "green layer" of a form: a cell file or folder, or a red and a
    green layer of the viewer (not the widget's own reconstructions)."""

    def __init__(self, viewer, owner, form: QFormLayout):
        self.form = form
        self.source = forms.combo(SOURCES, "Real cells to judge the model on: a LIN folder / .h5 / .tif stack "
                                  "(ideally the held-out test split), or a red and a green cell layer already in "
                                  "the viewer", _common.get_setting("diagnostics/source", SOURCES[0]))
        self.data_path = _common.PathEdit(
            "diagnostics/data", "A LIN split folder (one sub-folder per protein of cell<N>.png), or an .h5 / .tif "
            "cell stack: the real cells to reconstruct and to test against", file_filter=forms.CELL_FILTER)
        self.pair = forms.CellLayerPair(
            viewer, owner, "Image layer of red Bgs4 cells (cells, H, W), as the LIN and .h5 readers make it",
            "Image layer of the green protein, same shape; the proteins come from the red layer's metadata",
            results_group=GROUP)
        form.addRow("data", self.source)
        form.addRow("cells", self.data_path)
        form.addRow("red layer", self.pair.red)
        form.addRow("green layer", self.pair.green)
        self.source.currentIndexChanged.connect(self._source_changed)
        self._source_changed()

    def _source_changed(self, *_) -> None:
        layers = self.source.currentText() == "layers"
        forms.set_row_visible(self.form, self.data_path, not layers)
        for combo in (self.pair.red, self.pair.green):
            forms.set_row_visible(self.form, combo, layers)
        _common.set_setting("diagnostics/source", self.source.currentText())

    def spec(self):
        """What the worker reads: a path, or (on this thread) a copy of the chosen layers' cells."""
        if self.source.currentText() == "layers":
            red, green = self.pair.layers()
            return ("stack", _common.stack_from_layers(red, green), tuple(float(s) for s in red.scale[-2:]))
        if not self.data_path.text():
            raise ValueError("no cells chosen")
        return ("path", self.data_path.text())
