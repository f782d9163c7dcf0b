"""The Diagnostics widget's inputs and its job: the real cells it judges a model on (a LIN folder,
.h5 or .tif stack, or a red and a green cell layer of the viewer), read with the training cells and
the model in a worker, then the evaluation pipeline's job."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from qtpy.QtWidgets import QComboBox, QFormLayout

from ..evaluation import pipeline
from ..jobs import Update
from . import _common, model_picker
from .diagnostics_results import GROUP

SOURCES = ["file or folder", "layers"]
CELL_FILTER = "Cell stacks (*.h5 *.hdf5 *.tif *.tiff)"


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
    """The rows "data", "cells", "red layer" and "green layer" of a form, kept in step with the viewer's layers."""

    def __init__(self, viewer, form: QFormLayout):
        self.viewer, self.form = viewer, form
        self.source = QComboBox()
        self.source.addItems(SOURCES)
        self.source.setCurrentText(_common.get_setting("diagnostics/source", SOURCES[0]))
        self.source.setToolTip("Real cells to judge the model on: a LIN folder / .h5 / .tif stack (ideally the "
                               "held-out test split), or a red and a green cell layer already in the viewer")
        self.data_path = _common.PathEdit(
            "diagnostics/data", "A LIN split folder (one sub-folder per protein of cell<N>.png), or an .h5 / .tif "
            "cell stack: the real cells to reconstruct and to test against", file_filter=CELL_FILTER)
        self.red_layer = QComboBox()
        self.red_layer.setToolTip("Image layer of red Bgs4 cells (cells, H, W), as the LIN and .h5 readers make it")
        self.green_layer = QComboBox()
        self.green_layer.setToolTip("Image layer of the green protein, same shape; the proteins come from the red "
                                    "layer's metadata")
        form.addRow("data", self.source)
        form.addRow("cells", self.data_path)
        form.addRow("red layer", self.red_layer)
        form.addRow("green layer", self.green_layer)
        self.source.currentIndexChanged.connect(self._source_changed)
        viewer.layers.events.inserted.connect(self.refresh_layers)
        viewer.layers.events.removed.connect(self.refresh_layers)
        self.refresh_layers()
        self._source_changed()

    def disconnect(self) -> None:
        for emitter in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            _common._disconnect(emitter, self.refresh_layers)

    def _source_changed(self, *_) -> None:
        layers = self.source.currentText() == "layers"
        _common.set_row_visible(self.form, self.data_path, not layers)
        for combo in (self.red_layer, self.green_layer):
            _common.set_row_visible(self.form, combo, layers)
        _common.set_setting("diagnostics/source", self.source.currentText())

    def refresh_layers(self, *_) -> None:
        from napari.layers import Image

        layers = [layer for layer in self.viewer.layers
                  if isinstance(layer, Image) and layer.ndim == 3 and not layer.rgb]
        names = [layer.name for layer in layers]
        # our own reconstruction layers are results, not a default input
        inputs = [layer.name for layer in layers if layer.metadata.get("biogans_group") != GROUP]
        red_now, green_now = self.red_layer.currentText(), self.green_layer.currentText()
        reds = [n for n in inputs if n.endswith("Bgs4")]
        red = red_now if red_now in names else (reds or inputs or names or [""])[0]
        prefix = red[: -len("Bgs4")] if red.endswith("Bgs4") else None
        greens = [n for n in names if n != red]
        green = green_now if green_now in greens else next(
            (n for n in greens if prefix and n.startswith(prefix)), greens[0] if greens else "")
        for combo, choice in ((self.red_layer, red), (self.green_layer, green)):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            combo.setCurrentText(choice)
            combo.blockSignals(False)

    def spec(self):
        """What the worker reads: a path, or (on this thread) a copy of the chosen layers' cells."""
        if self.source.currentText() == "layers":
            red_name, green_name = self.red_layer.currentText(), self.green_layer.currentText()
            if not red_name or not green_name:
                raise ValueError("choose a red and a green image layer of cells (cells, H, W)")
            red, green = self.viewer.layers[red_name], self.viewer.layers[green_name]
            return ("stack", _common.stack_from_layers(red, green), tuple(float(s) for s in red.scale[-2:]))
        if not self.data_path.text():
            raise ValueError("no cells chosen")
        return ("path", self.data_path.text())
