"""Diagnostics: how close a generator comes to real cells, as ``biogans evaluate`` measures it.

A thin view over the core's evaluation (METHODS D): :func:`~napari_biogans.evaluation.reconstruction.reconstruct`
(latent optimisation, L2 against the NLL of the found codes, the nearest-neighbour baseline),
:func:`~napari_biogans.evaluation.c2st.generator_c2st` (one critic per split and protein) and
:func:`~napari_biogans.evaluation.c2st.real_vs_real` (the reference: real cells against real
cells). The plots are the CLI's figures (:mod:`napari_biogans.evaluation.plots`) drawn in napari's
theme colours, and every table exports to the same CSV columns the CLI writes.

The core functions report progress through a callback instead of yielding, so each job runs the
core in a helper thread inside a generator worker, which turns the reports into yields (one per
percent, for napari's activity dock). Cancel raises inside that callback: the core stops at its
next report.
"""

from __future__ import annotations

import csv
import queue
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..evaluation import plots
from . import _common, model_picker

SOURCES = ["file or folder", "layers"]
GROUP = "reconstruction"  # layer group of the reconstruction layers (replaced on every run)
GAP_PX = 4  # between a real cell and its reconstruction, side by side
TEST_BATCHES = 10  # held-out batch pairs per critic: the CLI's default
JOIN_S = 1.0  # how long a cancelled job waits for the core to reach its next report
PROGRESS_STEPS = 101  # yields of a job: "started", then one per percent
CELL_FILTER = "Cell stacks (*.h5 *.hdf5 *.tif *.tiff)"


class Cancelled(Exception):
    """The user pressed Cancel."""


class MismatchError(ValueError):
    """The cells do not fit the model (proteins or image size), or the training cells do not fit the cells."""


# --------------------------------------------------------------------------------------------
# Pure helpers (no Qt, no layers)


def match_model(stack, generator, meta):
    """The cells the model can be judged on, as the CLI picks them: its proteins, in its order.

    Pooled ("any protein") models take every cell. Raises :class:`MismatchError` when a protein
    of the model is missing or the image sizes differ.
    """
    if tuple(stack.image_size) != tuple(generator.image_size):
        raise MismatchError("the cells are {}×{} px, the model makes {}×{} px".format(
            *stack.image_size, *generator.image_size))
    if generator.n_classes == 1:
        return stack
    names = list(meta["class_names"])
    missing = [n for n in names if n not in stack.class_names]
    if missing:
        raise MismatchError(f"the model '{meta.get('name')}' has proteins {missing} that the cells lack "
                            f"(they hold {list(stack.class_names)})")
    return stack.select_classes(names)


def pick_cells(n_total: int, n: int) -> np.ndarray:
    """Rows of the cells to reconstruct: all, or a seeded random subset (the CLI's ``--max-cells``)."""
    if n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(0).choice(n_total, n, replace=False))


def nn_baseline(stack, rows: np.ndarray, pool=None) -> np.ndarray:
    """Nearest-neighbour L2 of the cells ``stack[rows]``, each against cells of its own protein.

    With ``pool`` (the training split) the neighbours are its cells, as in the paper. Without it
    they are the *other* cells of the stack (leave one out): a stand-in that is easier to beat (a
    test split is smaller than a training split, so its nearest cells are farther). NaN where a
    protein has no other cell.
    """
    from ..evaluation.reconstruction import nearest_neighbour_l2

    nn = np.full(len(rows), np.nan)
    for label, name in enumerate(stack.class_names):
        mine = np.flatnonzero(stack.class_index[rows] == label)
        if not len(mine):
            continue
        if pool is not None:
            candidates = pool.images[pool.class_index == pool.class_names.index(name)]
            if len(candidates):
                nn[mine] = nearest_neighbour_l2(stack.images[rows[mine]], candidates)[0]
            continue
        same = np.flatnonzero(stack.class_index == label)
        for k in mine:
            others = same[same != rows[k]]
            if len(others):
                nn[k] = nearest_neighbour_l2(stack.images[rows[k]][None], stack.images[others])[0][0]
    return nn


def reconstruction_table(result: dict) -> tuple[list[str], list[list]]:
    """Per-cell values, the columns of the CLI's ``reconstruction.csv``."""
    cells, rec, nn = result["cells"], result["reconstruction"], result["nn_l2"]
    header = ["file", "protein", "l2", "nll", "nll_start", "nn_l2"]
    rows = [[cells.file_names[i], cells.class_names[cells.class_index[i]], float(rec.l2[i]), float(rec.nll[i]),
             float(rec.nll_start[i]), "" if np.isnan(nn[i]) else float(nn[i])] for i in range(len(cells))]
    return header, rows


def c2st_table(report: dict) -> tuple[list[str], list[list]]:
    """Per-protein summaries and split scores, the columns of the CLI's ``c2st.csv``."""
    splits = len(next(iter(report.values()))["scores"])
    header = ["protein", "median", "mad", "mean", "std", *[f"split{s}" for s in range(splits)]]
    rows = [[name, r["median"], r["mad"], r["mean"], r["std"], *map(float, r["scores"])] for name, r in report.items()]
    return header, rows


def matrix_table(names: list[str], matrix: np.ndarray) -> tuple[list[str], list[list]]:
    """A real-vs-real score matrix (rows: set A, columns: set B), as the CLI's ``real_vs_real.csv``."""
    return ["A \\ B", *names], [[name, *map(float, matrix[i])] for i, name in enumerate(names)]


def write_csv(path, header: list[str], rows: list[list]) -> Path:
    """Write a table; floats keep full precision, so reading the file back gives the same numbers."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --------------------------------------------------------------------------------------------
# Worker bodies (no Qt, no layers)


class _Control:
    """Shared between the GUI and one job: the cancel request."""

    def __init__(self):
        self.stop = threading.Event()

    def cancel(self, *_) -> None:
        self.stop.set()


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


def _stream(control: _Control, compute, *args, phases: int = 1, **kwargs):
    """Run ``compute(*args, progress=…, **kwargs)`` in a helper thread; yield 0 as it starts, then
    once per percent done (``PROGRESS_STEPS`` yields at most). Returns what ``compute`` returns.

    ``phases``: how many times the core counts from 0 to its total (separable reconstruction runs
    L-BFGS twice). A core that reports rarely (real vs real: once per group of critics) may finish
    its current group in the background after a cancel.
    """
    reports: queue.SimpleQueue = queue.SimpleQueue()
    outcome: dict = {}
    state = {"phase": 0, "last": 0}

    def progress(done, total):
        if control.stop.is_set():
            raise Cancelled
        if done < state["last"]:
            state["phase"] += 1
        state["last"] = done
        reports.put((state["phase"] * total + done) / (phases * total))

    def target():
        try:
            outcome["result"] = compute(*args, progress=progress, **kwargs)
        except BaseException as err:  # handed to the worker thread, which reports it
            outcome["error"] = err

    thread = threading.Thread(target=target, name="biogans-diagnostics", daemon=True)
    thread.start()
    yield 0
    shown = 0
    while thread.is_alive() or not reports.empty():
        if control.stop.is_set():
            thread.join(JOIN_S)
            raise Cancelled
        try:
            percent = min(100, int(100 * reports.get(timeout=0.1)))
        except queue.Empty:
            continue
        while shown < percent:
            shown += 1
            yield shown
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def load_cells(spec):
    """``(stack, (dy, dx) pixel scale)`` from ``("path", text)`` or ``("stack", stack, scale)``."""
    if spec[0] == "stack":
        return spec[1], spec[2]
    from ..data.lin import H5_SUFFIXES, read_cells, read_h5_scale

    stack = read_cells(spec[1])
    return stack, read_h5_scale(spec[1]) if Path(spec[1]).suffix.lower() in H5_SUFFIXES else (1.0, 1.0)


def _training_cells(train_path: str, names: list[str]):
    """The training split for the nearest-neighbour baseline, checked to hold every protein of ``names``."""
    from ..data.lin import read_cells

    if not train_path:
        return None
    train = read_cells(train_path)
    missing = [n for n in names if n not in train.class_names]
    if missing:
        raise MismatchError(f"the training cells ({train.description}) lack {missing}")
    return train


def _reconstruct_job(spec, train_path, model_path, device, params, control):
    from ..evaluation.reconstruction import reconstruct

    stack, scale = load_cells(spec)
    generator, meta, torch_device = model_picker.load_generator_cached(model_path, device)
    stack = match_model(stack, generator, meta)
    train = _training_cells(train_path, stack.class_names)
    rows = pick_cells(len(stack), params["cells"])
    cells = stack.subset(rows)
    slots = cells.class_index if generator.n_classes > 1 else np.zeros(len(cells), dtype=int)
    with _leave_a_core():
        result = yield from _stream(control, reconstruct, generator, cells.as_float(), slots, mode=params["mode"],
                                    restarts=params["restarts"], steps=params["steps"], device=torch_device,
                                    phases=2 if params["mode"] == "separable" else 1)
        nn = nn_baseline(stack, rows, train)
    return {"cells": cells, "reconstruction": result, "nn_l2": nn, "scale": scale,
            "nn_source": "training cells" if train is not None else "other cells of the stack",
            "nz": generator.nz, "meta": meta, "device": str(torch_device), "params": params}


def _c2st_job(spec, model_path, device, params, control):
    from ..evaluation.c2st import generator_c2st

    stack, _ = load_cells(spec)
    generator, meta, torch_device = model_picker.load_generator_cached(model_path, device)
    stack = match_model(stack, generator, meta)
    with _leave_a_core():
        report = yield from _stream(control, generator_c2st, generator, stack, list(meta["class_names"]),
                                    n_splits=params["splits"], device=torch_device, steps=params["steps"],
                                    batch_size=params["batch_size"], test_batches=TEST_BATCHES,
                                    width=params["width"], algorithm=params["algorithm"])
    return {"report": report, "meta": meta, "device": str(torch_device), "params": params}


def _real_vs_real_job(spec, train_path, device, params, control):
    from ..data.lin import c2st_splits, read_cells
    from ..devices import resolve_device
    from ..evaluation.c2st import real_vs_real

    stack, _ = load_cells(spec)
    names = list(stack.class_names)
    train = read_cells(train_path) if train_path else None
    if train is not None:  # the paper's table: A from the training split, B from the held-out cells
        names = [n for n in names if n in train.class_names]
        if not names:
            raise MismatchError(f"the training cells ({train.description}) share no protein with the cells")
        a, b, sets = train, stack, ("A (training cells)", "B (the cells)")
    else:  # two disjoint halves of the stack, so the diagonal compares different cells of one protein
        halves = c2st_splits(stack, 1)[0]
        a, b, sets = stack.subset(halves["train"]), stack.subset(halves["test"]), ("A (half of the cells)",
                                                                                    "B (the other half)")
    torch_device = resolve_device(device)
    with _leave_a_core():
        scores = yield from _stream(control, real_vs_real, a, b, names, n_splits=params["splits"],
                                    device=torch_device, steps=params["steps"], batch_size=params["batch_size"],
                                    test_batches=TEST_BATCHES, width=params["width"], algorithm=params["algorithm"])
    return {"names": names, "scores": scores, "mean": np.nanmean(scores, axis=0), "sets": sets,
            "device": str(torch_device), "params": params}


# --------------------------------------------------------------------------------------------
# The dock widget


class DiagnosticsWidget(QWidget):
    """Reconstruction and C2ST of a generator against real cells, with plots, tables and CSV export.

    Results: layers ``reconstruction: real <channel>`` (the cells reconstructed) and
    ``reconstruction: <model> <channel>`` (their reconstructions, to the right of them), with
    provenance, L2, NLL and codes in ``metadata``; the L2-vs-NLL scatter; the C2ST table and plot;
    the real-vs-real matrix.
    """

    def __init__(self, napari_viewer):
        super().__init__()
        from ..evaluation.c2st import ALGORITHMS

        self.viewer = napari_viewer
        self.worker = None
        self._active = False
        self.control = _Control()
        self.reconstruction: dict | None = None
        self.c2st: dict | None = None
        self.real_vs_real: dict | None = None

        # -- cells, model, device -----------------------------------------------------------
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
        self.train_path = _common.PathEdit(
            "diagnostics/train", "Optional: the training split the model learned from (LIN folder, .h5 or .tif). "
            "The nearest-neighbour baseline searches it and real vs real takes set A from it. Empty: the "
            "baseline is the nearest other cell of the same protein in the cells above, and real vs real "
            "compares two halves of those cells", file_filter=CELL_FILTER)
        self.train_path.edit.setPlaceholderText("optional: the training split")
        self.model = model_picker.ModelPicker("diagnostics/model")
        self.device = model_picker.DeviceCombo("diagnostics/device")

        # -- reconstruction -----------------------------------------------------------------
        self.n_cells = _spin(1, 1_000_000, "diagnostics/cells", 64,
                             "Real cells to reconstruct; from a larger stack a fixed random subset (seed 0, as "
                             "'biogans evaluate reconstruct --max-cells')")
        self.restarts = _spin(1, 100, "diagnostics/restarts", 5,
                              "Random starting codes per cell; the best one is kept (the paper used 5)")
        self.steps = _spin(1, 100_000, "diagnostics/steps", 50,
                           "L-BFGS iterations per start, each of up to 20 inner steps as in torch's L-BFGS "
                           "(the paper used 50)")
        self.mode = QComboBox()
        self.mode.addItems(["regular", "separable"])
        self.mode.setCurrentText(_common.get_setting("diagnostics/mode", "regular"))
        self.mode.setToolTip("regular: optimise the whole code on both channels; separable (star and separable "
                             "models): the red code on the red channel, then the green code on the green channel")
        self.reconstruct_button = _common.button("Reconstruct", "Find the codes that best reproduce the real cells "
                                          "(in the background), then show them as layers and plot them",
                                          self.run_reconstruction)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary.setToolTip("Median ± MAD over the cells: reconstruction L2 against the nearest-neighbour "
                                "baseline, and the NLL of the found codes against the prior")
        self.scatter = _common.PlotCanvas(napari_viewer, height=2.6)
        self.scatter.setToolTip("Each dot a cell: its reconstruction error (L2) and how likely its code is under "
                                "the prior (NLL). Dots left of the dashed line beat the nearest real cell; dots "
                                "inside the band have codes as plausible as random ones")
        self.export_reconstruction = _common.button("Export CSV…", "Save the per-cell L2, NLL and nearest-neighbour L2",
                                             lambda: self.export("reconstruction"))

        # -- C2ST ---------------------------------------------------------------------------
        self.c2st_steps = _spin(1, 1_000_000, "diagnostics/c2st_steps", 5000,
                                "Training steps of each C2ST critic (the paper used 5000)")
        self.splits = _spin(1, 100, "diagnostics/splits", 10,
                            "Splits of the cells into critic-training and scoring halves; one critic each (the "
                            "paper used 10). Median and MAD are over the splits")
        self.critic_width = _spin(1, 1024, "diagnostics/critic_width", 64,
                                  "Base width of the C2ST critics (64 as in the paper; smaller is faster)")
        self.batch = _spin(1, 4096, "diagnostics/batch", 64, "Cells per critic batch (64 as in the paper)")
        self.algorithm = QComboBox()
        self.algorithm.addItems(list(ALGORITHMS))
        self.algorithm.setCurrentText(_common.get_setting("diagnostics/algorithm", "wgan-gp"))
        self.algorithm.setToolTip("The critics' objective: wgan-gp is the one the paper reports (score ≈ 0 for "
                                  "indistinguishable sets, higher when they differ); gan scores lie in (−∞, 0], "
                                  "≈ −1.39 when the critic cannot tell the sets apart")
        self.c2st_button = _common.button("Run C2ST", "Train critics to tell generated from real cells, per protein and "
                                   "split, in the background", self.run_c2st)
        self.rvr_button = _common.button("Real vs real", "The reference: the same test with real cells on both sides, "
                                  "every protein against every protein, with the settings above", self.run_real_vs_real)
        self.table = QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels(["protein", "median", "MAD", "mean", "std", "splits"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setToolTip("C2ST score per protein over the splits; 'all' averages the proteins in each split")
        self.c2st_plot = _common.PlotCanvas(napari_viewer, height=2.8)
        self.c2st_plot.MARGINS_PX = (66, 10, 12, 58)  # room for the two-line score label and slanted names
        self.c2st_plot.setToolTip("C2ST scores: a dot per split, the median as a bar; compare with the real vs "
                                  "real diagonal")
        self.matrix_plot = _common.PlotCanvas(napari_viewer, height=3.0)
        self.matrix_plot.MARGINS_PX = (58, 10, 12, 64)
        self.matrix_plot.setToolTip("Real vs real C2ST, mean over splits: row = set A, column = set B; the "
                                    "diagonal is the score of two real sets of one protein")
        self.export_c2st = _common.button("Export C2ST CSV…", "Save the C2ST table with the score of every split",
                                   lambda: self.export("c2st"))
        self.export_matrix = _common.button("Export matrix CSV…", "Save the real vs real matrix (mean over splits)",
                                     lambda: self.export("real-vs-real"))

        # -- shared -------------------------------------------------------------------------
        self.cancel_button = _common.button("Cancel", "Stop the running job at its next progress report", self.cancel)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setToolTip("What the widget is doing, or what the last job did")

        top = self._top = QFormLayout()
        top.addRow("data", self.source)
        top.addRow("cells", self.data_path)
        top.addRow("red layer", self.red_layer)
        top.addRow("green layer", self.green_layer)
        top.addRow("training cells", self.train_path)
        top.addRow("model", self.model)
        top.addRow("device", self.device)

        rec_page = QWidget()
        rec_form = QFormLayout()
        rec_form.addRow("cells", self.n_cells)
        rec_form.addRow("restarts", self.restarts)
        rec_form.addRow("iterations", self.steps)
        rec_form.addRow("mode", self.mode)
        rec_layout = QVBoxLayout(rec_page)
        rec_layout.addLayout(rec_form)
        rec_layout.addWidget(self.reconstruct_button)
        rec_layout.addWidget(self.summary)
        rec_layout.addWidget(self.scatter)
        rec_layout.addWidget(self.export_reconstruction)
        rec_layout.addStretch(1)

        c2st_page = QWidget()
        c2st_form = QFormLayout()
        c2st_form.addRow("critic steps", self.c2st_steps)
        c2st_form.addRow("splits", self.splits)
        c2st_form.addRow("critic width", self.critic_width)
        c2st_form.addRow("batch size", self.batch)
        c2st_form.addRow("objective", self.algorithm)
        c2st_layout = QVBoxLayout(c2st_page)
        c2st_layout.addLayout(c2st_form)
        c2st_layout.addWidget(_common.row(self.c2st_button, self.rvr_button))
        c2st_layout.addWidget(self.table)
        c2st_layout.addWidget(self.c2st_plot)
        c2st_layout.addWidget(self.matrix_plot)
        c2st_layout.addWidget(_common.row(self.export_c2st, self.export_matrix))
        c2st_layout.addStretch(1)

        self.tabs = QTabWidget()
        self.tabs.addTab(rec_page, "Reconstruction")
        self.tabs.addTab(c2st_page, "C2ST")
        self.tabs.setTabToolTip(0, "Can the model reproduce real cells? (latent optimisation)")
        self.tabs.setTabToolTip(1, "Can a critic tell the model's cells from real ones? (two-sample test)")
        self.tabs.setToolTip("Reconstruction: can the model reproduce real cells? C2ST: can a critic tell its "
                             "cells from real ones?")
        self.tabs.tabBar().setToolTip(self.tabs.toolTip())  # also covers the bar's scroll arrows
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.tabs)
        layout.addWidget(_common.row(self.cancel_button, self.status, stretch_last=True))

        self.source.currentIndexChanged.connect(self._source_changed)
        self.model.changed.connect(lambda *_: self._set_busy(self.busy))
        napari_viewer.layers.events.inserted.connect(self._refresh_layers)
        napari_viewer.layers.events.removed.connect(self._refresh_layers)
        napari_viewer.events.theme.connect(self._redraw)
        self.destroyed.connect(self._disconnect_viewer)
        self._refresh_layers()
        self._source_changed()
        self._set_busy(False)

    def _disconnect_viewer(self, *_) -> None:
        for emitter, callback in ((self.viewer.layers.events.inserted, self._refresh_layers),
                                  (self.viewer.layers.events.removed, self._refresh_layers),
                                  (self.viewer.events.theme, self._redraw)):
            _common._disconnect(emitter, callback)

    # -- cells -------------------------------------------------------------------------------
    def _source_changed(self, *_) -> None:
        layers = self.source.currentText() == "layers"
        _common.set_row_visible(self._top, self.data_path, not layers)
        for combo in (self.red_layer, self.green_layer):
            _common.set_row_visible(self._top, combo, layers)
        _common.set_setting("diagnostics/source", self.source.currentText())

    def _refresh_layers(self, *_) -> None:
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

    def _data_spec(self):
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

    # -- jobs --------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True from a job's start until its worker's ``finished`` reached the GUI thread."""
        return self._active

    def _set_busy(self, busy: bool) -> None:
        has_model = self.model.path() is not None
        self.reconstruct_button.setEnabled(not busy and has_model)
        self.c2st_button.setEnabled(not busy and has_model)
        self.rvr_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def _c2st_params(self) -> dict:
        params = {"steps": self.c2st_steps.value(), "splits": self.splits.value(),
                  "width": self.critic_width.value(), "batch_size": self.batch.value(),
                  "algorithm": self.algorithm.currentText()}
        _remember(self.c2st_steps, self.splits, self.critic_width, self.batch)
        _common.set_setting("diagnostics/algorithm", params["algorithm"])
        return params

    def run_reconstruction(self):
        """Reconstruct the cells in a worker; returns it (None when nothing could start)."""
        params = {"cells": self.n_cells.value(), "restarts": self.restarts.value(), "steps": self.steps.value(),
                  "mode": self.mode.currentText()}
        _remember(self.n_cells, self.restarts, self.steps)
        _common.set_setting("diagnostics/mode", params["mode"])
        return self._launch("reconstruction", _reconstruct_job, self._show_reconstruction, True,
                            self.train_path.text(), self.model.path(), self.device.device(), params)

    def run_c2st(self):
        """C2ST of the model against the cells in a worker; returns it (None when nothing could start)."""
        params = self._c2st_params()
        return self._launch("c2st", _c2st_job, self._show_c2st, True, self.model.path(), self.device.device(),
                            params)

    def run_real_vs_real(self):
        """The real-vs-real matrix of the cells in a worker; returns it (None when nothing could start)."""
        params = self._c2st_params()
        return self._launch("real-vs-real", _real_vs_real_job, self._show_real_vs_real, False,
                            self.train_path.text(), self.device.device(), params)

    def _launch(self, what: str, job, done, needs_model: bool, *args):
        """Run ``job(cells spec, *args, control)`` in a worker; ``done`` gets its result on this thread."""
        from napari.qt.threading import create_worker

        if self.busy:
            self.status.setText("still running: wait, or Cancel")
            return None
        if needs_model and self.model.path() is None:
            _common.report_error("no model chosen", "train one in the Train widget or choose a file with Browse…")
            return None
        try:
            spec = self._data_spec()
        except ValueError as err:
            _common.report_error(err, "choose a LIN folder, .h5 or .tif of real cells, or a red and a green cell "
                                 "layer of the same shape")
            return None
        self.control = _Control()
        self.destroyed.connect(self.control.cancel)
        worker = create_worker(job, spec, *args, self.control, _start_thread=False,
                               _progress={"total": PROGRESS_STEPS, "desc": f"Diagnostics: {what}"},
                               _connect={"errored": lambda err: self._failed(what, err)})
        worker.yielded.connect(lambda percent: self.status.setText(f"{what}: {percent}%" if percent else
                                                                   f"{what}: running…"))
        worker.aborted.connect(self.control.cancel)  # napari's own cancel (worker.quit) stops the core too
        worker.returned.connect(done)
        worker.finished.connect(self._finished)
        self.worker = worker
        self._active = True
        self._set_busy(True)
        self.status.setText(f"{what}: loading the cells and the model…")
        worker.start()
        return worker

    def _finished(self) -> None:
        self._active = False
        self._set_busy(False)

    def cancel(self) -> None:
        if self.busy:
            self.status.setText("cancelling…")
            self.control.cancel()

    def _failed(self, what: str, err) -> None:
        from ..checkpoints import CheckpointError
        from ..data.lin import LinFormatError

        if isinstance(err, Cancelled):
            self.status.setText(f"{what} cancelled")
            _common.report_error(f"{what} cancelled; earlier results are unchanged", "start it again with its button")
            return
        if isinstance(err, LinFormatError):
            todo = ("choose a LIN split folder (one sub-folder per protein holding cell<N>.png), an .h5 or a .tif "
                    "cell stack")
        elif isinstance(err, MismatchError):
            todo = "choose cells of the model's proteins and image size, or a model trained on these cells"
        elif isinstance(err, CheckpointError):
            todo = "choose another model file"
        else:
            todo = "check the settings; fewer cells, a smaller batch or width needs less memory, or try the cpu"
        self.status.setText(f"{what} failed: {err}")
        _common.report_error(err, todo)

    # -- results (GUI thread) ----------------------------------------------------------------
    def _show_reconstruction(self, result: dict) -> None:
        from .._io import cell_layers
        from ..data.lin import CellStack, to_uint8
        from ..evaluation.reconstruction import median_mad

        cells, rec, meta, scale = result["cells"], result["reconstruction"], result["meta"], result["scale"]
        model = meta.get("name", "model")
        provenance = {"model": model, "weights_sha256": meta.get("sha256"), "model_path": meta.get("path"),
                      "device": result["device"], "data": cells.description, "seed": 0, **result["params"],
                      "simulated_training_data": bool(meta.get("simulated_training_data", False))}
        rebuilt = CellStack(images=to_uint8(rec.images), class_index=cells.class_index,
                            class_names=list(cells.class_names), file_names=list(cells.file_names),
                            channel_names=cells.channel_names, description=f"reconstruction by {model}",
                            simulated=cells.simulated)
        per_cell = {"l2": rec.l2.tolist(), "nll": rec.nll.tolist(), "nn_l2": result["nn_l2"].tolist()}
        beside = (0.0, 0.0, (cells.image_size[1] + GAP_PX) * scale[1])
        layer_data = [(data, {**kwargs, "metadata": {**kwargs["metadata"], "provenance": provenance, **per_cell}}, kind)
                      for data, kwargs, kind in cell_layers(cells, f"{GROUP}: real", scale)]
        layer_data += [(data, {**kwargs, "translate": beside,
                               "metadata": {**kwargs["metadata"], "provenance": provenance, **per_cell,
                                            "codes": rec.z}}, kind)
                       for data, kwargs, kind in cell_layers(rebuilt, f"{GROUP}: {model}", scale)]
        before = len(self.viewer.layers)
        _common.add_or_update_layers(self.viewer, layer_data, group=GROUP)
        if len(self.viewer.layers) != before:
            self.viewer.reset_view()

        self.reconstruction = result
        nn = result["nn_l2"][np.isfinite(result["nn_l2"])]
        l2, nll = median_mad(rec.l2), median_mad(rec.nll)
        prior_mean, prior_sd = plots.prior_nll(result["nz"])
        text = f"{len(cells)} cells · L2 {l2[0]:.3f} ± {l2[1]:.3f} (median ± MAD)"
        if len(nn):
            base = median_mad(nn)
            beats = int(np.sum(rec.l2[np.isfinite(result['nn_l2'])] < nn))
            text += (f" vs nearest neighbour {base[0]:.3f} ± {base[1]:.3f} ({result['nn_source']}; the model is "
                     f"closer for {beats} of {len(nn)} cells)")
        text += f" · NLL {nll[0]:.1f} ± {nll[1]:.1f} vs prior {prior_mean:.1f} ± {prior_sd:.1f} (mean ± sd)"
        self.summary.setText(text)
        self.status.setText(f"reconstruction done on {result['device']}")
        self._draw_scatter()

    def _show_c2st(self, result: dict) -> None:
        self.c2st = result
        report = result["report"]
        self.table.setRowCount(len(report))
        for i, (name, r) in enumerate(report.items()):
            values = [name, *(f"{r[k]:.3f}" for k in ("median", "mad", "mean", "std")), str(r["n"])]
            for j, value in enumerate(values):
                self.table.setItem(i, j, QTableWidgetItem(value))
        self.table.resizeColumnsToContents()
        # show every row: a handful of proteins, no need to scroll
        self.table.setFixedHeight(self.table.horizontalHeader().height() + 2 * self.table.frameWidth()
                                  + sum(self.table.rowHeight(i) for i in range(self.table.rowCount())))
        self.status.setText(f"C2ST done on {result['device']} ({result['params']['algorithm']}, "
                            f"{result['params']['steps']} steps, {result['params']['splits']} splits)")
        self._draw_c2st()

    def _show_real_vs_real(self, result: dict) -> None:
        self.real_vs_real = result
        self.status.setText(f"real vs real done on {result['device']}: rows {result['sets'][0]}, "
                            f"columns {result['sets'][1]}")
        self._draw_matrix()

    # -- plots -------------------------------------------------------------------------------
    def _style(self, canvas) -> dict:
        """The core plots' style in the viewer's theme colours, on a transparent background."""
        canvas.apply_theme()
        accent, secondary = canvas.line_colors()[:2]
        return {"foreground": canvas.colors["text"], "background": "none", "accent": accent, "secondary": secondary}

    def _redraw(self, *_) -> None:
        """Redraw every plot: their colours come from the theme, so a theme change needs a redraw."""
        self._draw_scatter()
        self._draw_c2st()
        self._draw_matrix()

    def _draw_scatter(self) -> None:
        canvas, result = self.scatter, self.reconstruction
        canvas.ax.clear()
        if result is not None:
            rec, nn = result["reconstruction"], result["nn_l2"]
            plots.reconstruction_scatter(canvas.ax, rec.l2, rec.nll, nn_l2=nn[np.isfinite(nn)], nz=result["nz"],
                                         style=self._style(canvas), label=f"{len(rec.l2)} cells",
                                         nn_label=f"nearest neighbour, median ({result['nn_source']})")
        _finish(canvas)

    def _draw_c2st(self) -> None:
        canvas = self.c2st_plot
        canvas.ax.clear()
        if self.c2st is not None:
            plots.c2st_scores(canvas.ax, self.c2st["report"], style=self._style(canvas))
        _finish(canvas)

    def _draw_matrix(self) -> None:
        canvas, result = self.matrix_plot, self.real_vs_real
        canvas.ax.clear()
        if result is not None:
            plots.score_matrix(canvas.ax, result["mean"], result["names"], style=self._style(canvas),
                               title="real vs real C2ST (mean over splits)")
            canvas.ax.set_ylabel(result["sets"][0])  # which cells A and B are depends on the training split
            canvas.ax.set_xlabel(result["sets"][1])
        _finish(canvas)

    # -- export ------------------------------------------------------------------------------
    def table_for(self, what: str):
        """``(header, rows)`` of a result table, or None before its job has run."""
        if what == "reconstruction":
            return reconstruction_table(self.reconstruction) if self.reconstruction else None
        if what == "c2st":
            return c2st_table(self.c2st["report"]) if self.c2st else None
        return matrix_table(self.real_vs_real["names"], self.real_vs_real["mean"]) if self.real_vs_real else None

    def export(self, what: str):
        """Ask for a file and write the ``what`` table to it as CSV; returns the path (None if not written)."""
        table = self.table_for(what)
        if table is None:
            _common.report_error(f"no {what} results to export yet", f"run {what} first")
            return None
        start = Path(_common.get_setting("folders/export", str(Path.home()))) / f"{what}.csv"
        file, _ = QFileDialog.getSaveFileName(self, f"Export {what} as CSV", str(start), "CSV (*.csv)")
        if not file:
            return None
        try:
            path = write_csv(file, *table)
        except OSError as err:
            _common.report_error(err, "choose a folder you can write to")
            return None
        _common.set_setting("folders/export", str(path.parent))
        self.status.setText(f"{what} table saved to {path}")
        return path


def _finish(canvas) -> None:
    """Dock-sized text (the core's figures are sized for PNG files), then draw."""
    ax = canvas.ax
    for label in (ax.xaxis.label, ax.yaxis.label):
        label.set_fontsize(8)
    ax.title.set_fontsize(9)
    canvas.draw()


def _spin(lo: int, hi: int, key: str, default: int, tooltip: str) -> QSpinBox:
    spin = _common.spin(lo, hi, _common.get_int_setting(key, default), tooltip)
    spin.setProperty("settings_key", key)  # saved by _remember when a job starts
    return spin


def _remember(*spins: QSpinBox) -> None:
    for spin in spins:
        _common.set_setting(spin.property("settings_key"), spin.value())



