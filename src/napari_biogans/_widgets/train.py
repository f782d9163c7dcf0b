"""Train: the core's training job (:func:`napari_biogans.training.session.train_job`) in a background
worker, for fluorescence cells and for EM.

Fluorescence models train with :class:`~napari_biogans.training.trainer.Trainer` on cells
(simulated, a LIN folder / .h5 / .tif, or two image layers); EM models (SGAN, DSGAN, JointGAN,
conditional) with :class:`~napari_biogans.training.em_trainer.EMTrainer` on the sections of a VNC
stack folder. The job is started with ``workers.start_job`` and its typed updates (about three a
second) drive the loss curves, the preview layer, the progress bar and the status line, which
also says what the run will cost (speed, total time, training-state size). Pause and Cancel set
the job's :class:`~napari_biogans.jobs.StopFlag`: the trainer saves a checkpoint at the next
iteration; Resume continues the run folder. When a run ends its model file is registered, so it
shows up in the Generate and Cell cycle (or Paint EM) model lists at once (and after a restart).
``biogans train`` and ``biogans train-em`` run the same trainers from a shell.
"""

from __future__ import annotations

import time
from pathlib import Path

from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QProgressBar, QVBoxLayout, QWidget

from ..jobs import StopFlag, Update
from ..training import TRAIN_MODELS
from ..training.events import STATE_FILE, TrainEvent
from ..training.session import RunResult, RunStarted, train_job
from . import _common, forms, model_picker
from .loss_plot import LossPlot, curve_order
from .train_data import EM_SOURCE, TrainDataPanel
from .workers import start_job

EM_MODES = ["dsgan", "sgan", "joint", "conditional"]
OBJECTIVES = ["wgan-gp", "wgan", "gan", "lsgan", "hinge"]
# train_config keys a resumed run takes from the controls; every other key comes from the run itself
RUN_CONTROLS = {"iterations", "device", "checkpoint_every", "log_every", "preview_every", "preview_count", "amp",
                "compile"}


class TrainWidget(QWidget):
    """Train a fluorescence or EM GAN inside napari: data, model, objective, progress, loss curves, preview.

    Buttons: Start (a fresh run folder), Pause (stop with a checkpoint), Resume (continue the run
    folder), Cancel (stop, the last checkpoint is kept). A finished run's model file is registered
    and appears in the Generate (or Paint EM) model list.
    """

    PREVIEW_LAYER = "training preview"

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self._active = False
        self.stop_flag = StopFlag()
        self._stop_reason = None
        self._estimate = ""
        self._device_text = ""
        self.last_result: RunResult | None = None
        self.destroyed.connect(self._stop_on_close)  # a bound method: see forms.follow_layers
        self.data = TrainDataPanel(napari_viewer, skip_layer=self.PREVIEW_LAYER)

        # -- model and run -------------------------------------------------------------------
        self.arch = QComboBox()
        self.arch.setToolTip("Cells: star (one red tower shared by a green tower per protein: all proteins on one "
                             "cell), multichannel (one network for all channels), one-class (a model per protein), the -sep "
                             "variants of both (green-on-red separable: red never sees green), "
                             "separable / dcgan (every protein pooled); conditional: projection (one class-conditional "
                             "network, all proteins on one red cell; train it with wgan-gp: hinge stalled on these cells), cgan (label "
                             "concatenated), multichannel-masked (one channel per protein, others masked). EM: dsgan "
                             "(labels and image end to end), sgan (label GAN, then image GAN), joint (one GAN over "
                             "image and labels), conditional (mitochondria given membranes)")
        self.objective = forms.combo(OBJECTIVES, "Loss: wgan-gp is the papers' choice and the most stable",
                                     _common.get_setting("train/objective", "wgan-gp"))
        self.iterations = forms.spin(1, 10_000_000, _common.get_int_setting("train/iterations", 5000),
                                     "Generator iterations to train to (Resume can raise it)")
        self.batch = forms.spin(1, 4096, _common.get_int_setting("train/batch", 64), "Cells per protein in each batch")
        self.width = forms.spin(2, 1024, _common.get_int_setting("train/width", 64),
                                "Base width of generator and critic (64 is the papers'; smaller trains faster). "
                                "EM: the width of G_x and its critic; G_y and its critics get half")
        self.lr = forms.double_spin(0.0, 0.1, float(_common.get_setting("train/lr", 0.0)), "Adam learning rate; "
                                    "'reference' (0) uses the paper's rate for the chosen objective or EM model. Lower "
                                    "it when a run diverges", decimals=6, step=0.00005)
        self.lr.setSpecialValueText("reference")
        self.device = model_picker.DeviceCombo("train/device")
        default_dir = Path(_common.get_setting("train/run_root", str(Path.home() / "biogans-runs"))) / _run_name("star")
        self.run_dir = _common.PathEdit("train/run_dir", "Run folder: checkpoints, generator.safetensors and "
                                        "losses.csv go here; Resume continues the run in it", folder=True,
                                        default=str(default_dir))
        new_dir = forms.button("New", "A fresh, empty run folder next to the current one", self.new_run_dir)

        # -- buttons, progress, plot ---------------------------------------------------------
        self.start_button = forms.button("Start", "Start a new run in the run folder", self.start)
        self.pause_button = forms.button("Pause", "Stop at the next iteration and save a checkpoint; Resume continues",
                                         self.pause)
        self.resume_button = forms.button("Resume", "Continue the run in the run folder from its last checkpoint "
                                          "(to the iterations above)", self.resume)
        self.cancel_button = forms.button("Cancel", "Stop at the next iteration; the last checkpoint is saved and kept",
                                          self.cancel)
        self.progress = QProgressBar()
        self.progress.setToolTip("Iterations done")
        self.progress.setFormat("%v / %m")
        self.status = forms.text_label("Iteration, speed, latest losses and the device")
        self.simulated_label = QLabel("⚠ training on simulated cells: the model will say so")
        self.simulated_label.setStyleSheet("color: #e3b617;")
        self.simulated_label.setToolTip("Models trained on the simulator are marked as such everywhere")
        self.simulated_label.setVisible(False)
        self.plot = LossPlot(napari_viewer, height=2.2)
        self.plot.setToolTip("Losses per iteration (critic, generator and, for Wasserstein objectives, the "
                             "critic's estimate of the Wasserstein distance)")


        form = QFormLayout()
        form.addRow("data", self.data.source)
        form.addRow(self.data)
        form.addRow("model", self.arch)
        form.addRow("objective", self.objective)
        form.addRow("iterations", self.iterations)
        form.addRow("batch size", self.batch)
        form.addRow("width", self.width)
        form.addRow("learning rate", self.lr)
        form.addRow("device", self.device)
        form.addRow("run folder", forms.row(self.run_dir, new_dir, stretch_last=False))
        self.form = form
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(forms.row(self.start_button, self.pause_button, self.resume_button, self.cancel_button))
        layout.addWidget(self.progress)
        layout.addWidget(self.simulated_label)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)
        layout.addStretch(1)

        self.data.changed.connect(self._source_changed)
        self.run_dir.edit.textChanged.connect(lambda *_: self._set_buttons(False) if not self.running else None)
        self._source_changed()
        self._set_buttons(False)
        self.plot.draw_losses()

    @property
    def em(self) -> bool:
        """True when the chosen data are EM sections (and the models EM models)."""
        return self.data.em

    def _source_changed(self) -> None:
        choices = EM_MODES if self.em else TRAIN_MODELS
        if [self.arch.itemText(i) for i in range(self.arch.count())] != choices:
            self.arch.clear()
            self.arch.addItems(choices)
            saved = _common.get_setting("train/em_mode" if self.em else "train/arch", choices[0])
            self.arch.setCurrentText(saved if saved in choices else choices[0])
        forms.set_row_visible(self.form, self.objective, not self.em)

    # -- run control ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True from Start until the worker's ``finished`` reached the GUI thread."""
        return self._active

    def _set_buttons(self, running: bool) -> None:
        has_state = (Path(self.run_dir.text()) / STATE_FILE).is_file() if self.run_dir.text() else False
        self.start_button.setEnabled(not running)
        self.resume_button.setEnabled(not running and has_state)
        self.pause_button.setEnabled(running)
        self.cancel_button.setEnabled(running)

    def new_run_dir(self) -> None:
        current = Path(self.run_dir.text()) if self.run_dir.text() else Path.home() / "biogans-runs" / "x"
        self.run_dir.set_text(str(current.parent / _run_name(self.arch.currentText())))
        self._set_buttons(self.running)

    def config(self):
        """The core's TrainConfig (cells) or EMTrainConfig (EM) for the controls' values."""
        from ..devices import resolve_device

        iterations = self.iterations.value()
        on_gpu = resolve_device(self.device.device()).type != "cpu"
        lr = self.lr.value() or None
        for key, value in (("train/em_mode" if self.em else "train/arch", self.arch.currentText()),
                           ("train/objective", self.objective.currentText()), ("train/iterations", iterations),
                           ("train/batch", self.batch.value()), ("train/width", self.width.value()),
                           ("train/lr", self.lr.value()), ("train/em_crop", self.data.em_crop.value())):
            _common.set_setting(key, value)
        common = dict(iterations=iterations, batch_size=self.batch.value(), device=self.device.device(),
                      checkpoint_every=min(500, max(10, iterations // 10)), log_every=10 if on_gpu else 1,
                      preview_every=iterations + 1)  # previews are drawn on demand, throttled
        if self.em:
            from ..training.em_trainer import EMTrainConfig

            if self.data.em_crop.value() % 64:
                raise ValueError(f"crop {self.data.em_crop.value()} is not a multiple of 64")
            half = max(2, self.width.value() // 2)
            return EMTrainConfig(mode=self.arch.currentText(), crop=self.data.em_crop.value(),
                                 image_width=self.width.value(), image_d_width=self.width.value(), label_width=half,
                                 label_d_width=half, reconstructor_width=half,
                                 **({"lr": lr} if lr else {}), **common)
        from ..training.trainer import TrainConfig

        return TrainConfig(arch=self.arch.currentText(), objective=self.objective.currentText(),
                           width=self.width.value(), lr=lr, preview_count=4, **common)

    def start(self):
        """Start a new run in the run folder; returns the worker (None if it could not start)."""
        return self._launch(resume=False)

    def resume(self):
        """Continue the run in the run folder from its checkpoint, with its own model settings."""
        state = Path(self.run_dir.text()) / "train_state.safetensors"
        try:
            card = model_picker.read_card(state)
        except ValueError as err:
            _common.report_error(err, "choose a run folder that holds train_state.safetensors")
            return None
        saved = card.get("train_config", {})
        if ("mode" in saved) != self.em:  # the run folder holds the other kind of model
            self.data.source.setCurrentText(EM_SOURCE if "mode" in saved else "file or folder")
        for combo, key in ((self.arch, "mode" if self.em else "arch"), (self.objective, "objective")):
            if key in saved:
                combo.setCurrentText(saved[key])
        for spin, key in ((self.batch, "batch_size"), (self.width, "image_width" if self.em else "width"),
                          (self.data.em_crop, "crop")):
            if saved.get(key):
                spin.setValue(int(saved[key]))
        self.lr.setValue(float(saved.get("lr") or 0.0))
        if self.iterations.value() <= card.get("iteration", 0):
            _common.report_error(f"the run is already at iteration {card.get('iteration')}",
                                 "raise 'iterations' to train further")
            return None
        from ..training import loss_log

        self.plot.history = loss_log.read(self.run_dir.text(), up_to=card.get("iteration"))
        # everything that shapes the models comes from the run itself (a CLI run may differ from the controls)
        kept = {k: v for k, v in saved.items() if k not in RUN_CONTROLS}
        if saved.get("keep_models_every"):  # its kept models need the run's own checkpoint rhythm
            kept["checkpoint_every"] = saved["checkpoint_every"]
        return self._launch(resume=True, saved=kept)

    def _launch(self, resume: bool, saved: dict | None = None):
        if self.running:
            return None
        run_dir = self.run_dir.text()
        if not run_dir:
            _common.report_error("no run folder", "choose one, or press New")
            return None
        if not resume and (Path(run_dir) / STATE_FILE).exists():
            _common.report_error(f"{run_dir} already holds a training run",
                                 "press Resume to continue it, or New for a fresh folder")
            return None
        try:
            spec = self.data.data_spec()
            config = self.config()
        except ValueError as err:
            _common.report_error(err, "check the data source")
            return None
        for key, value in (saved or {}).items():
            if hasattr(config, key):
                setattr(config, key, tuple(value) if isinstance(value, list) else value)
        _common.set_setting("train/run_root", str(Path(run_dir).parent))
        if not resume:
            self.plot.history = {}
        self.plot.draw_losses()
        self.stop_flag = StopFlag()
        self._stop_reason, self._estimate, self.last_result = None, "", None
        self.progress.setRange(0, config.iterations)
        self.status.setText("loading the data…")
        self.worker = start_job(train_job, config, spec, run_dir, resume, self.stop_flag,
                                what=f"Training {self.arch.currentText()}", on_update=self._on_update,
                                on_done=self._on_returned, on_error=self._on_error, on_finished=self._on_finished)
        self._active = True
        self._set_buttons(True)
        return self.worker

    def pause(self) -> None:
        self._stop_reason = "paused"
        self.status.setText("pausing: saving a checkpoint at the next iteration…")
        self.stop_flag.set()

    def _stop_on_close(self, *_) -> None:
        """A run outlives no closed widget: it saves and stops."""
        self.stop_flag.set()

    def cancel(self) -> None:
        self._stop_reason = "cancelled"
        self.status.setText("cancelling: saving a checkpoint at the next iteration…")
        self.stop_flag.set()

    # -- job callbacks (GUI thread) ----------------------------------------------------------
    def _on_update(self, update: Update) -> None:
        payload = update.payload
        if isinstance(payload, RunStarted):
            self.simulated_label.setVisible(payload.simulated)
            self._device_text, self._estimate = payload.device, payload.estimate
            self._show_status(f"training on {payload.device}: {payload.data}, from iteration {payload.iteration}")
        elif isinstance(payload, TrainEvent):
            self.plot.add(payload.logged)
            latest = payload.logged[-1][1] if payload.logged else {}
            parts = [f"iteration {payload.iteration} / {payload.total}", f"{payload.iterations_per_s:.2f} it/s"]
            parts += [f"{k} {latest[k]:.3g}" for k in curve_order(latest)[:3]]
            self._show_status(" · ".join(parts + [self._device_text]))
            if payload.preview is not None:
                self._show_preview(payload.preview, payload.iteration)
            self.plot.draw_losses(force=payload.finished)
        if update.stage == "training":
            self.progress.setValue(update.done)

    def _show_status(self, text: str) -> None:
        self.status.setText(f"{text}\n{self._estimate}" if self._estimate else text)

    def _show_preview(self, preview, iteration: int) -> None:
        from ..training.previews import preview_image, preview_layout

        image = preview_image(preview)
        metadata = {"run_dir": self.run_dir.text(), "iteration": iteration, "layout": preview_layout(preview)}
        name = self.PREVIEW_LAYER
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if getattr(layer, "rgb", False) and layer.data.shape == image.shape:
                layer.data = image
                layer.metadata = metadata
                return
            self.viewer.layers.remove(layer)
        self.viewer.add_image(image, name=name, rgb=True, metadata=metadata)

    def _on_returned(self, result: RunResult) -> None:
        self.last_result = result
        if result.model_path:
            model_picker.model_registry.register(result.model_path)
        where = f"; model {result.model_path} (now in the Generate model list)" if result.model_path else ""
        if result.stopped:
            how = self._stop_reason or "stopped"
            self.status.setText(f"{how} at iteration {result.iteration}; checkpoint kept, Resume continues{where}")
        else:
            self.status.setText(f"finished {result.iteration} iterations{where}")

    def _on_error(self, err) -> None:
        from ..checkpoints import CheckpointError
        from ..training.events import TrainingDiverged

        if isinstance(err, TrainingDiverged):
            what = "resume from the last checkpoint with another objective or a lower learning rate"
        elif isinstance(err, FileExistsError):
            what = "press Resume to continue it, or New for a fresh folder"
        elif isinstance(err, CheckpointError):
            what = "resume with the same data and model settings, or start a new run folder"
        elif isinstance(err, FileNotFoundError):
            what = "choose an existing VNC stack folder" if self.em else "choose an existing LIN folder, .h5 or .tif file"
        else:
            what = "check the data and settings"
        self.status.setText(f"failed: {err}")
        _common.report_error(err, what)
        for stem in model_picker.RUN_FILE_STEMS:  # what the run saved before failing stays usable
            model = Path(self.run_dir.text()) / f"{stem}.safetensors"
            if model.is_file():
                model_picker.model_registry.register(model)

    def _on_finished(self) -> None:
        self._active = False
        self._set_buttons(False)


def _run_name(arch: str) -> str:
    return f"{arch}-{time.strftime('%Y%m%d-%H%M%S')}"
