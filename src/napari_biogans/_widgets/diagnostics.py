"""Diagnostics: how close a generator comes to real cells, as ``biogans evaluate`` measures it.

A thin view over the evaluation pipeline (:mod:`napari_biogans.evaluation.pipeline`, METHODS D):
reconstruction (latent optimisation, L2 against the NLL of the found codes, the nearest-neighbour
baseline), the C2ST (one critic per split and protein) and the real-vs-real reference. The
pipeline's jobs run through ``workers.start_job``; the numbers, figures and CSV files are the
ones ``biogans evaluate`` makes from the same inputs (:mod:`napari_biogans.evaluation.outputs`).
Its inputs and its job are in :mod:`.diagnostics_cells`, how results are shown in
:mod:`.diagnostics_results`.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QAbstractItemView, QFileDialog, QFormLayout, QTableWidget, QTabWidget, QVBoxLayout, QWidget

from ..evaluation import outputs, pipeline
from ..evaluation.calibrate import CPU_CRITIC
from . import _common, forms, model_picker
from .diagnostics_cells import CellSource, evaluation_job
from .diagnostics_results import GROUP, METHODS, draw, fill_c2st_table, reconstruction_layers
from .workers import start_job


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
        self.reconstruction = None  # the pipeline's ReconstructionEvaluation, once run
        self.c2st = None  # its C2STEvaluation
        self.real_vs_real = None  # its RealVsRealEvaluation

        # -- cells, model, device -----------------------------------------------------------
        self.train_path = _common.PathEdit(
            "diagnostics/train", "Optional: the training split the model learned from (LIN folder, .h5 or .tif). "
            "The nearest-neighbour baseline searches it and real vs real takes set A from it. Empty: the "
            "baseline is the nearest other cell of the same protein in the cells above, and real vs real "
            "compares two halves of those cells", file_filter=forms.CELL_FILTER)
        self.train_path.edit.setPlaceholderText("optional: the training split")
        self.model = model_picker.ModelPicker("diagnostics/model")
        self.device = model_picker.DeviceCombo("diagnostics/device")

        # -- reconstruction -----------------------------------------------------------------
        self.n_cells = forms.setting_spin(
            1, 1_000_000, "diagnostics/cells", 64, "Real cells to reconstruct; from a larger stack a fixed random "
            "subset (seed 0, as 'biogans evaluate reconstruct --max-cells')")
        self.restarts = forms.setting_spin(
            1, 100, "diagnostics/restarts", 5, "Random starting codes per cell; the best one is kept (the paper "
            "used 5)")
        self.steps = forms.setting_spin(
            1, 100_000, "diagnostics/steps", 50, "L-BFGS iterations per start, each of up to 20 inner steps as in "
            "torch's L-BFGS (the paper used 50)")
        self.mode = forms.combo(["regular", "separable"], "regular: optimise the whole code on both channels; "
                                "separable (star and separable models): the red code on the red channel, then the "
                                "green code on the green channel", _common.get_setting("diagnostics/mode", "regular"))
        self.reconstruct_button = forms.button("Reconstruct", "Find the codes that best reproduce the real cells "
                                               "(in the background), then show them as layers and plot them",
                                               self.run_reconstruction)
        self.summary = forms.text_label("Median ± MAD over the cells: reconstruction L2 against the nearest-"
                                        "neighbour baseline, and the NLL of the found codes against the prior",
                                        selectable=True)
        self.scatter = _common.PlotCanvas(napari_viewer, height=2.6)
        self.scatter.setToolTip("Each dot a cell: its reconstruction error (L2) and how likely its code is under "
                                "the prior (NLL). Dots left of the dashed line beat the nearest real cell; dots "
                                "inside the band have codes as plausible as random ones")
        self.export_reconstruction = forms.button(
            "Export CSV…", "Save the per-cell L2, NLL and nearest-neighbour L2",
            lambda: self.export("reconstruction"))

        # -- C2ST ---------------------------------------------------------------------------
        self.c2st_steps = forms.setting_spin(1, 1_000_000, "diagnostics/c2st_steps", 5000,
                                             "Training steps of each C2ST critic (the paper used 5000)")
        self.splits = forms.setting_spin(
            1, 100, "diagnostics/splits", 10, "Splits of the cells into critic-training and scoring halves; one "
            "critic each (the paper used 10). Median and MAD are over the splits")
        self.critic_width = forms.setting_spin(
            1, 1024, "diagnostics/critic_width", 64, "Base width of the C2ST critics (64 as in the paper; smaller is "
            "faster)")
        self.batch = forms.setting_spin(1, 4096, "diagnostics/batch", 64, "Cells per critic batch (64 as in the paper)")
        self.critic_lr = forms.double_spin(0.0, 0.1, float(_common.get_setting("diagnostics/critic_lr", 0.0)),
                                           "The critics' Adam learning rate; 'reference' (0) uses the objective's "
                                           "(1e-4 for wgan-gp), which leaves a short CPU critic untrained",
                                           decimals=6, step=0.0001)
        self.critic_lr.setSpecialValueText("reference")
        self.cpu_budget_button = forms.button(
            "Calibrated CPU budget", "Fill in the critic budget measured to pass its controls on a CPU: "
            f"{CPU_CRITIC['splits']} splits × {CPU_CRITIC['steps']} steps, width {CPU_CRITIC['width']}, batch "
            f"{CPU_CRITIC['batch_size']}, learning rate {CPU_CRITIC['lr']:g} (docs/evaluation.md)", self.use_cpu_budget)
        self.algorithm = forms.combo(
            ALGORITHMS, "The critics' objective: wgan-gp is the one the paper reports (score ≈ 0 for "
            "indistinguishable sets, higher when they differ); gan scores lie in (−∞, 0], ≈ −1.39 when the "
            "critic cannot tell the sets apart", _common.get_setting("diagnostics/algorithm", "wgan-gp"))
        self.method = forms.combo(
            METHODS, "fast feature test: a linear classifier on features of a network trained once per data set, "
            "with a permutation p-value and its own controls (about a minute a protein on a CPU); paper's critic "
            "C2ST: the settings below (hours on a CPU); auto: fast on a CPU, the paper's on a GPU",
            _common.get_setting("diagnostics/method", "auto"))
        self.trust = forms.text_label("Whether the last C2ST or real-vs-real result passed its controls (real vs "
                                      "real indistinguishable, blur σ=1 px and another protein detected) at its "
                                      "budget", selectable=True)
        self.c2st_button = forms.button("Run C2ST", "Train critics to tell generated from real cells, per protein "
                                        "and split, in the background", self.run_c2st)
        self.rvr_button = forms.button("Real vs real", "The reference: the same test with real cells on both "
                                       "sides, every protein against every protein, with the settings above",
                                       self.run_real_vs_real)
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
        self.export_c2st = forms.button("Export C2ST CSV…", "Save the C2ST table with the score of every split",
                                        lambda: self.export("c2st"))
        self.export_matrix = forms.button("Export matrix CSV…", "Save the real vs real matrix (mean over splits)",
                                          lambda: self.export("real-vs-real"))

        # -- shared -------------------------------------------------------------------------
        self.cancel_button = forms.button("Cancel", "Stop the running job at its next progress report", self.cancel)
        self.status = forms.text_label("What the widget is doing, or what the last job did")

        top = QFormLayout()
        self.cells = CellSource(napari_viewer, self, top)
        # the inputs' parts, as the tests and the settings know them
        self.source, self.data_path = self.cells.source, self.cells.data_path
        self.red_layer, self.green_layer = self.cells.pair.red, self.cells.pair.green
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
        c2st_form.addRow("method", self.method)
        c2st_form.addRow("critic steps", self.c2st_steps)
        c2st_form.addRow("splits", self.splits)
        c2st_form.addRow("critic width", self.critic_width)
        c2st_form.addRow("batch size", self.batch)
        c2st_form.addRow("learning rate", self.critic_lr)
        c2st_form.addRow("objective", self.algorithm)
        c2st_form.addRow("", self.cpu_budget_button)
        c2st_layout = QVBoxLayout(c2st_page)
        c2st_layout.addLayout(c2st_form)
        c2st_layout.addWidget(forms.row(self.c2st_button, self.rvr_button))
        c2st_layout.addWidget(self.trust)
        c2st_layout.addWidget(self.table)
        c2st_layout.addWidget(self.c2st_plot)
        c2st_layout.addWidget(self.matrix_plot)
        c2st_layout.addWidget(forms.row(self.export_c2st, self.export_matrix))
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
        layout.addWidget(forms.row(self.cancel_button, self.status, stretch_last=True))

        self.model.changed.connect(lambda *_: self._set_busy(self.busy))
        napari_viewer.events.theme.connect(self._redraw)
        self.destroyed.connect(self._disconnect_viewer)
        self._set_busy(False)

    def _disconnect_viewer(self, *_) -> None:
        _common._disconnect(self.viewer.events.theme, self._redraw)

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

    def reconstruction_settings(self) -> pipeline.ReconstructionSettings:
        return pipeline.ReconstructionSettings(steps=self.steps.value(), restarts=self.restarts.value(),
                                               mode=self.mode.currentText(), max_cells=self.n_cells.value())

    def c2st_settings(self) -> pipeline.C2STSettings:
        return pipeline.C2STSettings(steps=self.c2st_steps.value(), splits=self.splits.value(),
                                     width=self.critic_width.value(), batch_size=self.batch.value(),
                                     algorithm=self.algorithm.currentText(), lr=self.critic_lr.value() or None)

    def use_cpu_budget(self) -> None:
        """The paper's critic at the budget calibrated on a CPU (``calibrate.CPU_CRITIC``)."""
        for spin, key in ((self.splits, "splits"), (self.c2st_steps, "steps"), (self.critic_width, "width"),
                          (self.batch, "batch_size"), (self.critic_lr, "lr")):
            spin.setValue(CPU_CRITIC[key])
        self.algorithm.setCurrentText("wgan-gp")
        self.method.setCurrentText(outputs.CRITIC_METHOD)

    def run_reconstruction(self):
        """Reconstruct the cells in a worker; returns it (None when nothing could start)."""
        forms.remember(self.n_cells, self.restarts, self.steps)
        _common.set_setting("diagnostics/mode", self.mode.currentText())
        return self._launch("reconstruction", self.reconstruction_settings())

    def run_c2st(self):
        """C2ST of the model against the cells in a worker (the fast feature test or the paper's critics, as
        the method says); returns it (None when nothing could start)."""
        from ..devices import resolve_device
        from ..evaluation.fast_test import FastTestSettings

        settings = self._remember_c2st()
        _common.set_setting("diagnostics/method", self.method.currentText())
        try:
            device = resolve_device(self.device.device())
        except (ValueError, RuntimeError) as err:
            _common.report_error(err, "choose another device")
            return None
        if pipeline.c2st_method(METHODS[self.method.currentText()], device) == "critic":
            return self._launch("c2st", settings)
        return self._launch("fast-c2st", FastTestSettings())

    def run_real_vs_real(self):
        """The real-vs-real matrix of the cells in a worker; returns it (None when nothing could start)."""
        return self._launch("real-vs-real", self._remember_c2st())

    def _remember_c2st(self) -> pipeline.C2STSettings:
        forms.remember(self.c2st_steps, self.splits, self.critic_width, self.batch)
        _common.set_setting("diagnostics/algorithm", self.algorithm.currentText())
        _common.set_setting("diagnostics/critic_lr", self.critic_lr.value())
        return self.c2st_settings()

    def _launch(self, kind: str, settings):
        """Start the pipeline's ``kind`` job on the chosen cells; the result is shown on this thread."""
        if self.busy:
            self.status.setText("still running: wait, or Cancel")
            return None
        if kind != "real-vs-real" and self.model.path() is None:
            _common.report_error("no model chosen", "train one in the Train widget or choose a file with Browse…")
            return None
        try:
            spec = self.cells.spec()
        except ValueError as err:
            _common.report_error(err, "choose a LIN folder, .h5 or .tif of real cells, or a red and a green cell "
                                 "layer of the same shape")
            return None
        worker = start_job(evaluation_job, kind, spec, self.train_path.text(), self.model.path(),
                           self.device.device(), settings, what=f"Diagnostics: {kind}",
                           on_update=lambda update: self._progress(kind, update),
                           on_done=self._show, on_error=lambda err: self._failed(kind, err),
                           on_finished=self._finished)
        worker.aborted.connect(lambda: self._cancelled(kind))  # quit() happens on this thread, after this line
        self.destroyed.connect(worker.quit)
        self.worker = worker
        self._active = True
        self._set_busy(True)
        self.status.setText(f"{kind}: loading the cells and the model…")
        return worker

    def _progress(self, kind: str, update) -> None:
        if update.payload is not None:  # the pipeline's estimate of a long C2ST on a CPU
            from napari.utils.notifications import show_info

            seconds, cheap, cheap_seconds = update.payload
            show_info(f"{kind}: about {pipeline.duration(seconds)} on this CPU. For a quicker, noisier score: "
                      f"{cheap.splits} splits, {cheap.steps} critic steps, critic width {cheap.width}, batch "
                      f"{cheap.batch_size}, learning rate {cheap.lr:g} (the Calibrated CPU budget button; about "
                      f"{pipeline.duration(cheap_seconds)}), or a GPU. Cancel stops it.")
        self.status.setText(f"{kind}: running {update.stage} {100 * update.done // max(1, update.total)}%")

    def _finished(self) -> None:
        self._active = False
        self._set_busy(False)

    def cancel(self) -> None:
        if self.busy:
            self.status.setText("cancelling…")
            self.worker.quit()

    def _cancelled(self, kind: str) -> None:
        self.status.setText(f"{kind} cancelled")
        _common.report_error(f"{kind} cancelled; earlier results are unchanged", "start it again with its button")

    def _failed(self, kind: str, err) -> None:
        from ..checkpoints import CheckpointError
        from ..data.lin import LinFormatError

        if isinstance(err, LinFormatError):
            todo = ("choose a LIN split folder (one sub-folder per protein holding cell<N>.png), an .h5 or a .tif "
                    "cell stack")
        elif isinstance(err, pipeline.MismatchError):
            todo = "choose cells of the model's proteins and image size, or a model trained on these cells"
        elif isinstance(err, CheckpointError):
            todo = "choose another model file"
        else:
            todo = "check the settings; fewer cells, a smaller batch or width needs less memory, or try the cpu"
        self.status.setText(f"{kind} failed: {err}")
        _common.report_error(err, todo)

    # -- results (GUI thread) ----------------------------------------------------------------
    def _show(self, done) -> None:
        result, scale, model_path = done
        device = result.provenance.device
        if isinstance(result, pipeline.ReconstructionEvaluation):
            before = len(self.viewer.layers)
            _common.add_or_update_layers(self.viewer, reconstruction_layers(result, scale, model_path), group=GROUP)
            if len(self.viewer.layers) != before:
                self.viewer.reset_view()
            self.reconstruction = result
            self.summary.setText(outputs.describe(result))
            self.status.setText(f"reconstruction done on {device}")
        elif isinstance(result, (pipeline.C2STEvaluation, pipeline.FastC2STEvaluation)):
            self.c2st = result
            fill_c2st_table(self.table, result)
            self.trust.setText(f"C2ST: {result.trust.line()}")
            if isinstance(result, pipeline.FastC2STEvaluation):
                self.status.setText(f"C2ST done on {device} ({outputs.FAST_METHOD})")
            else:
                s = result.settings
                self.status.setText(f"C2ST done on {device} ({outputs.CRITIC_METHOD}: {s.algorithm}, {s.steps} "
                                    f"steps, {s.splits} splits)")
        else:
            self.real_vs_real = result
            self.trust.setText(f"real vs real: {result.trust.line()}")
            self.status.setText(f"real vs real done on {device}: rows {result.sets[0]}, columns {result.sets[1]}")
        self._redraw()

    def _redraw(self, *_) -> None:
        """Redraw every plot: their colours come from the theme, so a theme change needs a redraw."""
        for canvas, result in ((self.scatter, self.reconstruction), (self.c2st_plot, self.c2st),
                               (self.matrix_plot, self.real_vs_real)):
            draw(canvas, result)

    # -- export ------------------------------------------------------------------------------
    def result_for(self, kind: str):
        return {"reconstruction": self.reconstruction, "c2st": self.c2st, "real-vs-real": self.real_vs_real}[kind]

    def export(self, kind: str):
        """Ask for a file and write the ``kind`` table to it, as ``biogans evaluate`` writes it; returns the
        path (None if not written)."""
        result = self.result_for(kind)
        if result is None:
            _common.report_error(f"no {kind} results to export yet", f"run {kind} first")
            return None
        start = Path(_common.get_setting("folders/export", str(Path.home()))) / f"{outputs.stem(result)}.csv"
        file, _ = QFileDialog.getSaveFileName(self, f"Export {kind} as CSV", str(start), "CSV (*.csv)")
        if not file:
            return None
        try:
            path = outputs.write_table(result, file)
        except OSError as err:
            _common.report_error(err, "choose a folder you can write to")
            return None
        _common.set_setting("folders/export", str(path.parent))
        self.status.setText(f"{kind} table saved to {path}")
        return path
