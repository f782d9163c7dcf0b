"""Train: the core's trainers in a background worker, for fluorescence cells and for EM.

Fluorescence models train with :class:`~napari_biogans.training.trainer.Trainer` on cells
(simulated, a LIN folder / .h5 / .tif, or two image layers); EM models (SGAN, DSGAN, JointGAN)
with :class:`~napari_biogans.training.em_trainer.EMTrainer` on the sections of a VNC stack
folder. A generator worker iterates the trainer's ``run()`` and yields throttled updates (about three a
second): iteration, new loss values and, at most that often, a preview from fixed codes. The GUI
thread draws the loss curves, updates the preview layer, napari's progress bar and the status
line. Pause and Cancel both ask the trainer to stop (``request_stop``), which saves a checkpoint
at the next iteration; Resume continues the run folder. When a run ends its model file is
registered, so it shows up in the Generate and Cell cycle (or Paint EM) model lists at once
(and after a restart). ``biogans train`` and ``biogans train-em`` run the same loops from a shell.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ..training import TRAIN_MODELS
from . import _common, model_picker

EM_MODES = ["dsgan", "sgan", "joint", "conditional"]
OBJECTIVES = ["wgan-gp", "wgan", "gan", "lsgan", "hinge"]
SOURCES = ["simulate cells", "file or folder", "layers", "VNC EM sections"]
EM_SOURCE = SOURCES[3]
UPDATE_EVERY_S = 0.3  # throttle: yields (and previews) at most ~3 per second
PLOTTED = ("critic", "generator", "wasserstein")  # first on the plot; any other losses follow
MAX_CURVES = 6
# train_config keys a resumed run takes from the controls; every other key comes from the run itself
RUN_CONTROLS = {"iterations", "device", "checkpoint_every", "log_every", "preview_every", "preview_count", "amp",
                "compile"}
PLOT_EVERY_S = 1.0  # loss curves redraw at most once a second while training
MAX_PLOTTED_POINTS = 2000


class _Control:
    """Shared between the GUI and one worker: the stop request and the trainer it applies to."""

    def __init__(self):
        self.stopping = False
        self.trainer = None

    def stop(self, *_) -> None:
        self.stopping = True
        trainer = self.trainer
        if trainer is not None:
            trainer.request_stop()


def parse_sections(text: str) -> list[int]:
    """``"0-9"`` or ``"0, 1, 5-7"`` -> sorted section numbers."""
    sections = set()
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            lo, _, hi = part.partition("-")
            sections.update(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise ValueError(f"sections '{text}': write numbers and ranges such as 0-9 or 0, 2, 5-7") from None
    if not sections:
        raise ValueError("no sections chosen: write numbers and ranges such as 0-9")
    return sorted(sections)


def load_em_sections(folder, sections: list[int]):
    """(images, labels, description) of the labelled sections of a VNC stack folder."""
    from ..data import em

    if not str(folder).strip() or not Path(folder).is_dir():
        raise FileNotFoundError(f"VNC folder '{folder}' not found: choose a stack folder with raw/, membranes/ "
                                "and mitochondria/")
    available = em.section_indices(folder)
    missing = [i for i in sections if i not in available]
    if missing:
        raise ValueError(f"{folder} has no sections {missing}; it has {available}")
    images, labels = em.read_sections(folder, sections)
    if labels is None:
        raise ValueError(f"{folder}: training needs membrane and mitochondria labels beside raw/")
    return images, labels, f"VNC {Path(folder).name} sections {','.join(f'{i:02d}' for i in sections)}"


def load_cells(spec):
    """A CellStack from ``("simulate", n, proteins, seed)``, ``("path", path)`` or ``("stack", stack)``."""
    kind = spec[0]
    if kind == "simulate":
        from ..data.simulator import simulate_stack

        _, n, proteins, seed = spec
        return simulate_stack(n_per_class=n, proteins=proteins or None, seed=seed)
    if kind == "path":
        from ..data.lin import read_cells

        path = Path(spec[1])
        if not str(spec[1]).strip() or not path.exists():
            raise FileNotFoundError(f"training data '{spec[1]}' not found: choose a LIN folder, .h5 or .tif stack")
        return read_cells(path)
    return spec[1]


def _train_job(config, data_spec, run_dir, resume: bool, control: _Control):
    """Worker body: yields dicts ('started', then 'update's), returns the run's summary."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # leave the other cores to napari's GUI thread
    try:
        return (yield from _train_loop(config, data_spec, run_dir, resume, control))
    finally:
        torch.set_num_threads(threads)


def _make_trainer(config, data_spec, run_dir, resume: bool):
    """(trainer, what the 'started' update says about the data)."""
    if data_spec[0] == "vnc":
        from ..training.em_trainer import EMTrainer

        images, labels, description = load_em_sections(data_spec[1], data_spec[2])
        trainer = EMTrainer(config, images, labels, run_dir, resume=resume, description=description)
        return trainer, {"simulated": False, "data": f"{len(images)} EM sections of {images.shape[1]}×{images.shape[2]}"}
    from ..training.trainer import Trainer

    stack = load_cells(data_spec)
    trainer = Trainer(config, stack, run_dir, resume=resume)
    return trainer, {"simulated": bool(stack.simulated),
                     "data": f"{len(stack)} cells, {len(stack.class_names)} protein(s)"}


def _train_loop(config, data_spec, run_dir, resume: bool, control: _Control):
    import torch

    from ..devices import describe_device

    trainer, about = _make_trainer(config, data_spec, run_dir, resume)
    device = trainer.device
    try:
        if control.stopping:
            return {"stopped": True, "iteration": trainer.iteration, "model_path": None,
                    "message": "cancelled before training started"}
        control.trainer = trainer
        if control.stopping:
            trainer.request_stop()
        yield {"kind": "started", "iteration": trainer.iteration, "total": config.iterations,
               "device": describe_device(device), **about}
        last_update = last_preview = 0.0
        losses = []
        for event in trainer.run():
            if event.losses:
                losses.append((event.iteration, event.losses))
            now = time.perf_counter()
            if not (event.done or now - last_update >= UPDATE_EVERY_S):
                continue
            preview = event.preview
            if preview is None and now - last_preview >= UPDATE_EVERY_S:
                preview = trainer.preview()
            if preview is not None:
                last_preview = now
            yield {"kind": "update", "iteration": event.iteration, "total": event.total, "losses": losses,
                   "speed": event.iterations_per_s, "preview": preview, "done": event.done,
                   "message": event.message, "checkpoint": str(event.checkpoint) if event.checkpoint else None}
            losses = []
            last_update = time.perf_counter()
        return {"stopped": trainer.iteration < config.iterations, "iteration": trainer.iteration,
                "model_path": str(trainer.model_path) if trainer.model_path.exists() else None,
                "state_path": str(trainer.state_path), "message": ""}
    finally:
        control.trainer = None
        del trainer  # free the model, critic and optimiser state (and GPU memory) now, not at the next run
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def preview_montage(preview: np.ndarray) -> np.ndarray:
    """Trainer preview (n, C, 2, H, W) in [-1, 1] -> RGB grid: one row per code, one column per protein."""
    from ..data.lin import to_uint8
    from ..data.montage import make_montage

    n, c, _, h, w = preview.shape
    cells = to_uint8(preview).reshape(n * c, 2, h, w)
    return make_montage(cells, ncols=c if c > 1 else min(n, 4))


def em_preview_pair(preview, gap: int = 4) -> np.ndarray:
    """EM trainer preview -> RGB: the generated label map (napari's label colours) beside its image."""
    from ..data.em import LABEL_COLORS

    colors = np.zeros((3, 3), dtype=np.uint8)  # cytoplasm stays black
    for code, rgba in LABEL_COLORS.items():
        if code:
            colors[code] = np.round(np.asarray(rgba[:3]) * 255)
    labels = colors[preview.labels]
    image = np.repeat(preview.image[..., None], 3, axis=-1)
    h, w = preview.labels.shape
    out = np.zeros((h, 2 * w + gap, 3), dtype=np.uint8)
    out[:, :w], out[:, w + gap :] = labels, image
    return out


def preview_image(preview) -> np.ndarray:
    return preview_montage(preview) if isinstance(preview, np.ndarray) else em_preview_pair(preview)


class TrainWidget(QWidget):
    """Train a fluorescence GAN inside napari: data, model, objective, progress, loss curves, preview.

    Buttons: Start (a fresh run folder), Pause (stop with a checkpoint), Resume (continue the run
    folder), Cancel (stop, the last checkpoint is kept). A finished run's ``generator.safetensors``
    is registered and appears in the Generate model list.
    """

    PREVIEW_LAYER = "training preview"

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self._active = False
        self.control = _Control()
        self.history: dict[str, list] = {}
        self.pbar = None
        self._stop_reason = None
        self.last_result: dict | None = None
        self._lines: dict = {}
        self._last_plot = 0.0
        self._pbar_busy = self._pbar_close_pending = False
        self.destroyed.connect(self.control.stop)

        # -- data ----------------------------------------------------------------------------
        self.source = QComboBox()
        self.source.addItems(SOURCES)
        self.source.setCurrentText(_common.get_setting("train/source", SOURCES[0]))
        self.source.setToolTip("Cells to learn from: simulated fission yeast, a LIN folder / .h5 / .tif stack, "
                               "or a red and a green image layer already in the viewer")
        self.sim_n = QSpinBox()
        self.sim_n.setRange(1, 100_000)
        self.sim_n.setValue(_common.get_int_setting("train/sim_n", 100))
        self.sim_n.setToolTip("Simulated cells per protein")
        self.sim_proteins = QLineEdit(_common.get_setting("train/sim_proteins", ""))
        self.sim_proteins.setPlaceholderText("all eight proteins")
        self.sim_proteins.setToolTip("Comma-separated proteins to simulate (Alp14, Arp3, Cki2, Fim1, Mkh1, Sid2, "
                                     "Tea1, Tea4); empty = all eight")
        self.sim_seed = QSpinBox()
        self.sim_seed.setRange(0, 2**31 - 1)
        self.sim_seed.setToolTip("Seed of the simulated cells (the same seed gives the same cells, so Resume works)")
        self.data_path = _common.PathEdit(
            "train/data", "A LIN split folder (one sub-folder per protein), an .h5 or a .tif cell stack",
            file_filter="Cell stacks (*.h5 *.hdf5 *.tif *.tiff)", folder=True)
        self.red_layer = QComboBox()
        self.red_layer.setToolTip("Image layer of red Bgs4 cells, (cells, H, W)")
        self.green_layer = QComboBox()
        self.green_layer.setToolTip("Image layer of the green protein, same shape as the red one; class names "
                                    "come from the red layer's metadata when it has them")
        self.vnc_path = _common.PathEdit(
            "train/vnc", "A VNC stack folder: raw/NN.tif sections with membranes/ and mitochondria/ label masks",
            folder=True)
        self.vnc_sections = QLineEdit(_common.get_setting("train/vnc_sections", "0-9"))
        self.vnc_sections.setToolTip("Sections to train on, e.g. 0-9 (the papers' training sections; 10-19 are "
                                     "kept for validation)")
        self.em_crop = _common.spin(64, 4096, _common.get_int_setting("train/em_crop", 256),
                             "Side of the random crops the EM models train on (a multiple of 64; the paper's is 512)")
        self.em_crop.setSingleStep(64)

        sim_page, path_page, layer_page, vnc_page = QWidget(), QWidget(), QWidget(), QWidget()
        sim_form = QFormLayout(sim_page)
        sim_form.addRow("cells per protein", self.sim_n)
        sim_form.addRow("proteins", self.sim_proteins)
        sim_form.addRow("seed", self.sim_seed)
        path_form = QFormLayout(path_page)
        path_form.addRow("cells", self.data_path)
        layer_form = QFormLayout(layer_page)
        layer_form.addRow("red layer", self.red_layer)
        layer_form.addRow("green layer", self.green_layer)
        vnc_form = QFormLayout(vnc_page)
        vnc_form.addRow("VNC folder", self.vnc_path)
        vnc_form.addRow("sections", self.vnc_sections)
        vnc_form.addRow("crop", self.em_crop)
        for form in (sim_form, path_form, layer_form, vnc_form):
            form.setContentsMargins(0, 0, 0, 0)
        self.source_pages = QStackedWidget()
        for page in (sim_page, path_page, layer_page, vnc_page):
            self.source_pages.addWidget(page)

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
        self.objective = QComboBox()
        self.objective.addItems(OBJECTIVES)
        self.objective.setCurrentText(_common.get_setting("train/objective", "wgan-gp"))
        self.objective.setToolTip("Loss: wgan-gp is the papers' choice and the most stable")
        self.iterations = _common.spin(1, 10_000_000, _common.get_int_setting("train/iterations", 5000),
                                "Generator iterations to train to (Resume can raise it)")
        self.batch = _common.spin(1, 4096, _common.get_int_setting("train/batch", 64), "Cells per protein in each batch")
        self.width = _common.spin(2, 1024, _common.get_int_setting("train/width", 64),
                           "Base width of generator and critic (64 is the papers'; smaller trains faster). "
                           "EM: the width of G_x and its critic; G_y and its critics get half")
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(0.0, 0.1)
        self.lr.setSingleStep(0.00005)
        self.lr.setSpecialValueText("reference")
        self.lr.setValue(float(_common.get_setting("train/lr", 0.0)))
        self.lr.setToolTip("Adam learning rate; 'reference' (0) uses the paper's rate for the chosen objective "
                           "or EM model. Lower it when a run diverges")
        self.device = model_picker.DeviceCombo("train/device")
        default_dir = Path(_common.get_setting("train/run_root", str(Path.home() / "biogans-runs"))) / _run_name("star")
        self.run_dir = _common.PathEdit("train/run_dir", "Run folder: checkpoints, generator.safetensors and "
                                        "losses.csv go here; Resume continues the run in it", folder=True,
                                        default=str(default_dir))
        new_dir = QPushButton("New")
        new_dir.setToolTip("A fresh, empty run folder next to the current one")
        new_dir.clicked.connect(self.new_run_dir)

        # -- buttons, progress, plot ---------------------------------------------------------
        self.start_button = _common.button("Start", "Start a new run in the run folder", self.start)
        self.pause_button = _common.button("Pause", "Stop at the next iteration and save a checkpoint; Resume continues",
                                    self.pause)
        self.resume_button = _common.button("Resume", "Continue the run in the run folder from its last checkpoint "
                                     "(to the iterations above)", self.resume)
        self.cancel_button = _common.button("Cancel", "Stop at the next iteration; the last checkpoint is saved and kept",
                                     self.cancel)
        self.progress = QProgressBar()
        self.progress.setToolTip("Iterations done")
        self.progress.setFormat("%v / %m")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setToolTip("Iteration, speed, latest losses and the device")
        self.simulated_label = QLabel("⚠ training on simulated cells: the model will say so")
        self.simulated_label.setStyleSheet("color: #e3b617;")
        self.simulated_label.setToolTip("Models trained on the simulator are marked as such everywhere")
        self.simulated_label.setVisible(False)
        self.plot = _common.PlotCanvas(napari_viewer, height=2.2)
        self.plot.top_extra_px = 16  # the legend sits in a row above the curves
        self.plot.setToolTip("Losses per iteration (critic, generator and, for Wasserstein objectives, the "
                             "critic's estimate of the Wasserstein distance)")

        form = QFormLayout()
        form.addRow("data", self.source)
        form.addRow(self.source_pages)
        form.addRow("model", self.arch)
        form.addRow("objective", self.objective)
        form.addRow("iterations", self.iterations)
        form.addRow("batch size", self.batch)
        form.addRow("width", self.width)
        form.addRow("learning rate", self.lr)
        form.addRow("device", self.device)
        form.addRow("run folder", _common.row(self.run_dir, new_dir, stretch_last=False))
        self.form = form
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(_common.row(self.start_button, self.pause_button, self.resume_button, self.cancel_button))
        layout.addWidget(self.progress)
        layout.addWidget(self.simulated_label)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)
        layout.addStretch(1)

        self.source.currentIndexChanged.connect(self._source_changed)
        self.run_dir.edit.textChanged.connect(lambda *_: self._set_running(False) if not self.running else None)
        napari_viewer.layers.events.inserted.connect(self._refresh_layers)
        napari_viewer.layers.events.removed.connect(self._refresh_layers)
        self.destroyed.connect(self._disconnect_layers_events)
        self._refresh_layers()
        self._source_changed()
        self._set_running(False)
        self._draw_losses()

    def _disconnect_layers_events(self, *_):
        for emitter in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            _common._disconnect(emitter, self._refresh_layers)

    # -- data source ---------------------------------------------------------------------------
    @property
    def em(self) -> bool:
        """True when the chosen data are EM sections (and the models EM models)."""
        return self.source.currentText() == EM_SOURCE

    def _source_changed(self, *_):
        self.source_pages.setCurrentIndex(self.source.currentIndex())
        _common.set_setting("train/source", self.source.currentText())
        choices = EM_MODES if self.em else TRAIN_MODELS
        if [self.arch.itemText(i) for i in range(self.arch.count())] != choices:
            self.arch.clear()
            self.arch.addItems(choices)
            saved = _common.get_setting("train/em_mode" if self.em else "train/arch", choices[0])
            self.arch.setCurrentText(saved if saved in choices else choices[0])
        _common.set_row_visible(self.form, self.objective, not self.em)

    def _image_layers(self):
        from napari.layers import Image

        return [layer for layer in self.viewer.layers
                if isinstance(layer, Image) and layer.ndim == 3 and not layer.rgb and layer.name != self.PREVIEW_LAYER]

    def _refresh_layers(self, event=None) -> None:
        """List the (cells, H, W) image layers; pair a red Bgs4 layer with a different green one."""
        try:
            red_now, green_now = self.red_layer.currentText(), self.green_layer.currentText()
        except RuntimeError:
            return
        names = [layer.name for layer in self._image_layers()]
        red = red_now if red_now in names else next((n for n in names if n.endswith("Bgs4")), names[0] if names else "")
        greens = [n for n in names if n != red]
        green = green_now if green_now in greens else next(
            (n for n in greens if not n.endswith("Bgs4")), greens[0] if greens else "")
        for combo, choice in ((self.red_layer, red), (self.green_layer, green)):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            combo.setCurrentText(choice)
            combo.blockSignals(False)

    def _data_spec(self):
        source = self.source.currentText()
        if source == "simulate cells":
            proteins = [p.strip() for p in self.sim_proteins.text().replace(";", ",").split(",") if p.strip()]
            _common.set_setting("train/sim_n", self.sim_n.value())
            _common.set_setting("train/sim_proteins", self.sim_proteins.text())
            return ("simulate", self.sim_n.value(), proteins, self.sim_seed.value())
        if source == "file or folder":
            return ("path", self.data_path.text())
        if source == EM_SOURCE:
            _common.set_setting("train/vnc_sections", self.vnc_sections.text())
            return ("vnc", self.vnc_path.text(), parse_sections(self.vnc_sections.text()))
        return ("stack", self._stack_from_layers())

    def _stack_from_layers(self):
        red_name, green_name = self.red_layer.currentText(), self.green_layer.currentText()
        if not red_name or not green_name:
            raise ValueError("choose a red and a green image layer of cells (cells, H, W)")
        return _common.stack_from_layers(self.viewer.layers[red_name], self.viewer.layers[green_name])

    # -- run control ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True from Start until the worker's ``finished`` reached the GUI thread."""
        return self._active

    def _set_running(self, running: bool) -> None:
        has_state = (Path(self.run_dir.text()) / "train_state.safetensors").is_file() if self.run_dir.text() else False
        self.start_button.setEnabled(not running)
        self.resume_button.setEnabled(not running and has_state)
        self.pause_button.setEnabled(running)
        self.cancel_button.setEnabled(running)

    def new_run_dir(self) -> None:
        current = Path(self.run_dir.text()) if self.run_dir.text() else Path.home() / "biogans-runs" / "x"
        self.run_dir.set_text(str(current.parent / _run_name(self.arch.currentText())))
        self._set_running(self.running)

    def config(self):
        """The core's TrainConfig (cells) or EMTrainConfig (EM) for the controls' values."""
        from ..devices import resolve_device

        iterations = self.iterations.value()
        on_gpu = resolve_device(self.device.device()).type != "cpu"
        lr = self.lr.value() or None
        for key, value in (("train/em_mode" if self.em else "train/arch", self.arch.currentText()),
                           ("train/objective", self.objective.currentText()), ("train/iterations", iterations),
                           ("train/batch", self.batch.value()), ("train/width", self.width.value()),
                           ("train/lr", self.lr.value()), ("train/em_crop", self.em_crop.value())):
            _common.set_setting(key, value)
        common = dict(iterations=iterations, batch_size=self.batch.value(), device=self.device.device(),
                      checkpoint_every=min(500, max(10, iterations // 10)), log_every=10 if on_gpu else 1,
                      preview_every=iterations + 1)  # previews are drawn on demand, throttled
        if self.em:
            from ..training.em_trainer import EMTrainConfig

            if self.em_crop.value() % 64:
                raise ValueError(f"crop {self.em_crop.value()} is not a multiple of 64")
            half = max(2, self.width.value() // 2)
            return EMTrainConfig(mode=self.arch.currentText(), crop=self.em_crop.value(),
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
            self.source.setCurrentText(EM_SOURCE if "mode" in saved else "file or folder")
        for combo, key in ((self.arch, "mode" if self.em else "arch"), (self.objective, "objective")):
            if key in saved:
                combo.setCurrentText(saved[key])
        for spin, key in ((self.batch, "batch_size"), (self.width, "image_width" if self.em else "width"),
                          (self.em_crop, "crop")):
            if saved.get(key):
                spin.setValue(int(saved[key]))
        self.lr.setValue(float(saved.get("lr") or 0.0))
        if self.iterations.value() <= card.get("iteration", 0):
            _common.report_error(f"the run is already at iteration {card.get('iteration')}",
                                 "raise 'iterations' to train further")
            return None
        from ..training import loss_log

        self.history = loss_log.read(self.run_dir.text(), up_to=card.get("iteration"))
        # everything that shapes the models comes from the run itself (a CLI run may differ from the controls)
        kept = {k: v for k, v in saved.items() if k not in RUN_CONTROLS}
        return self._launch(resume=True, saved=kept)

    def _launch(self, resume: bool, saved: dict | None = None):
        from napari.qt.threading import create_worker
        from napari.utils import progress

        if self.running:
            return None
        run_dir = self.run_dir.text()
        if not run_dir:
            _common.report_error("no run folder", "choose one, or press New")
            return None
        if not resume and (Path(run_dir) / "train_state.safetensors").exists():
            _common.report_error(f"{run_dir} already holds a training run",
                                 "press Resume to continue it, or New for a fresh folder")
            return None
        try:
            spec = self._data_spec()
            config = self.config()
        except ValueError as err:
            _common.report_error(err, "check the data source")
            return None
        for key, value in (saved or {}).items():
            if hasattr(config, key):
                setattr(config, key, tuple(value) if isinstance(value, list) else value)
        _common.set_setting("train/run_root", str(Path(run_dir).parent))
        if not resume:
            self.history = {}
        self._draw_losses()
        self.control = _Control()
        self.destroyed.connect(self.control.stop)
        self._stop_reason = None
        self.last_result = None
        self.progress.setRange(0, config.iterations)
        self._close_pbar()
        self.pbar = progress(total=config.iterations, desc=f"Training {self.arch.currentText()}")
        self.status.setText("loading the cells…")
        worker = create_worker(_train_job, config, spec, run_dir, resume, self.control,
                               _connect={"errored": self._on_error}, _start_thread=False)
        worker.yielded.connect(self._on_update)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._active = True
        self._set_running(True)
        worker.start()
        return worker

    def pause(self) -> None:
        self._stop_reason = "paused"
        self.status.setText("pausing: saving a checkpoint at the next iteration…")
        self.control.stop()

    def cancel(self) -> None:
        self._stop_reason = "cancelled"
        self.status.setText("cancelling: saving a checkpoint at the next iteration…")
        self.control.stop()

    # -- worker callbacks (GUI thread) -------------------------------------------------------
    def _on_update(self, update: dict) -> None:
        # napari's progress bar runs QApplication.processEvents() when it moves, so later worker
        # callbacks can run inside this one: move it last, and ignore anything after the run ended.
        if not self._active or self.last_result is not None:
            return
        if update["kind"] == "started":
            self.simulated_label.setVisible(update["simulated"])
            self._device_text = update["device"]
            self.status.setText(f"training on {update['device']}: {update['data']}, from iteration "
                                f"{update['iteration']}")
            self._set_progress(update["iteration"])
            return
        for iteration, losses in update["losses"]:
            for key, value in losses.items():
                self.history.setdefault(key, []).append((iteration, value))
        latest = update["losses"][-1][1] if update["losses"] else {}
        parts = [f"iteration {update['iteration']} / {update['total']}", f"{update['speed']:.2f} it/s"]
        parts += [f"{k} {latest[k]:.3g}" for k in _curve_order(latest)[:3]]
        parts.append(getattr(self, "_device_text", ""))
        self.status.setText(" · ".join(p for p in parts if p))
        if update["preview"] is not None:
            self._show_preview(update["preview"], update["iteration"])
        self._draw_losses(force=update["done"])
        self._set_progress(update["iteration"])

    def _set_progress(self, iteration: int) -> None:
        self.progress.setValue(iteration)
        pbar = self.pbar
        if pbar is not None and not self._pbar_busy and iteration > pbar.n:
            self._pbar_busy = True
            try:
                pbar.update(iteration - pbar.n)
            finally:
                self._pbar_busy = False
        if self._pbar_close_pending:
            self._close_pbar()

    def _close_pbar(self) -> None:
        if self._pbar_busy:  # finished while napari's bar was processing events: close it afterwards
            self._pbar_close_pending = True
            return
        self._pbar_close_pending = False
        if self.pbar is not None:
            self.pbar.close()
            self.pbar = None

    def _show_preview(self, preview, iteration: int) -> None:
        image = preview_image(preview)
        layout = "rows: fixed codes; columns: proteins" if isinstance(preview, np.ndarray) else \
            "left: generated label map (membrane blue, mitochondria orange); right: its EM image"
        metadata = {"run_dir": self.run_dir.text(), "iteration": iteration, "layout": layout}
        name = self.PREVIEW_LAYER
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if getattr(layer, "rgb", False) and layer.data.shape == image.shape:
                layer.data = image
                layer.metadata = metadata
                return
            self.viewer.layers.remove(layer)
        self.viewer.add_image(image, name=name, rgb=True, metadata=metadata)

    def _on_returned(self, result: dict) -> None:
        self.last_result = result
        path = result.get("model_path")
        if path:
            model_picker.model_registry.register(path)
        where = f"; model {path} (now in the Generate model list)" if path else ""
        if result.get("stopped"):
            how = self._stop_reason or "stopped"
            self.status.setText(f"{how} at iteration {result['iteration']}; checkpoint kept, Resume continues{where}")
        else:
            self.status.setText(f"finished {result['iteration']} iterations{where}")

    def _on_error(self, err) -> None:
        from ..checkpoints import CheckpointError
        from ..training.trainer import TrainingDiverged

        if isinstance(err, TrainingDiverged):
            what = "resume from the last checkpoint with another objective or a lower learning rate"
        elif isinstance(err, FileExistsError):
            what = "press Resume to continue it, or New for a fresh folder"
        elif isinstance(err, CheckpointError):
            what = "resume with the same data and model settings, or start a new run folder"
        elif isinstance(err, FileNotFoundError):
            what = "choose an existing VNC stack folder" if self.em else "choose an existing LIN folder, .h5 or .tif file"
        else:
            what = "check the data and settings; a smaller batch or width needs less memory"
        self.status.setText(f"failed: {err}")
        _common.report_error(err, what)
        for stem in model_picker.RUN_FILE_STEMS:  # what the run saved before failing stays usable
            model = Path(self.run_dir.text()) / f"{stem}.safetensors"
            if model.is_file():
                model_picker.model_registry.register(model)

    def _on_finished(self) -> None:
        self._active = False
        self._close_pbar()
        self._set_running(False)

    # -- plot --------------------------------------------------------------------------------
    def _draw_losses(self, force: bool = True) -> None:
        """Loss curves; during training at most once a second (``force=False``), lines updated in place."""
        now = time.perf_counter()
        if not force and now - self._last_plot < PLOT_EVERY_S:
            return
        self._last_plot = now
        ax = self.plot.ax
        keys = _curve_order(self.history)[:MAX_CURVES]
        if not self._lines or any(key not in self._lines for key in keys):
            ax.clear()
            ax.set_xlabel("iteration", fontsize=8)
            ax.set_ylabel("loss", fontsize=8)
            self._lines = {}
            for color, key in zip(self.plot.line_colors(), keys or PLOTTED):
                (self._lines[key],) = ax.plot([], [], color=color, linewidth=1.2, label=key)
        shown = []
        for key, line in self._lines.items():
            points = self.history.get(key, [])
            step = max(1, len(points) // MAX_PLOTTED_POINTS)
            if points:
                x, y = np.asarray(points[::step], dtype=float).T
                line.set_data(x, y)
                shown.append(line)
            else:
                line.set_data([], [])
        if shown:
            legend = ax.get_legend()
            if legend is None or len(legend.get_texts()) != len(shown):
                ax.legend(handles=shown, fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=len(shown),
                          frameon=False, borderaxespad=0.2, handlelength=1.5)
            ax.relim()
            ax.autoscale_view()
        self.plot.draw()

def _curve_order(losses) -> list[str]:
    """Loss names to plot: the fluorescence trio first, then the rest (EM losses) alphabetically."""
    return [k for k in PLOTTED if k in losses] + sorted(k for k in losses if k not in PLOTTED)


def _run_name(arch: str) -> str:
    return f"{arch}-{time.strftime('%Y%m%d-%H%M%S')}"
