"""A training run as one job, for the Train widget: load the data, build the trainer, say what the
run will cost, train with throttled updates, free the memory. Qt-free (``_widgets.train`` starts it
with ``_widgets.workers.start_job``; ``biogans train`` drives the trainer itself).

Updates: ``stage="loading"`` while the data load, then ``stage="training"`` with a
:class:`RunStarted` payload, then :class:`~napari_biogans.training.loop.TrainEvent` payloads at
most every ``update_every_s`` (their ``logged`` holds every logged iteration since the last one,
and a preview is drawn on demand at most that often). Returns a :class:`RunResult`.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path

from ..jobs import Job, StopFlag, Update


@dataclass(frozen=True)
class RunStarted:
    iteration: int
    total: int
    device: str
    data: str  # what the run trains on, in words
    simulated: bool
    estimate: str  # speed, total time and sizes on disk (estimate.Estimate.describe), plus advice if slow


@dataclass(frozen=True)
class RunResult:
    iteration: int
    stopped: bool
    model_path: str | None  # None: no model file written
    state_path: str


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


def cost(trainer) -> str:
    """What the run will cost (:mod:`.estimate`), with the cheaper setting when it is impractical here."""
    from . import estimate

    if hasattr(trainer, "data"):  # fluorescence
        n_classes, size = trainer.G.n_classes, trainer.data.image_size
        found = estimate.fluorescence(trainer.config, n_classes, size)
    else:
        n_classes, size = 0, None
        found = estimate.em(trainer.config)
    advice = estimate.advice(trainer.config, n_classes, size, found)
    return found.describe(trainer.config.iterations) + (f". {advice}" if advice else "")


def _make_trainer(config, data_spec, run_dir, resume: bool):
    """(trainer, the data in words, simulated?)."""
    if data_spec[0] == "vnc":
        from .em_trainer import EMTrainer

        images, labels, description = load_em_sections(data_spec[1], data_spec[2])
        trainer = EMTrainer(config, images, labels, run_dir, resume=resume, description=description)
        return trainer, f"{len(images)} EM sections of {images.shape[1]}×{images.shape[2]}", False
    from .trainer import Trainer

    stack = load_cells(data_spec)
    trainer = Trainer(config, stack, run_dir, resume=resume)
    return trainer, f"{len(stack)} cells, {len(stack.class_names)} protein(s)", bool(stack.simulated)


def train_job(config, data_spec, run_dir, resume: bool, stop: StopFlag, update_every_s: float = 0.3,
              threads: int | None = 1) -> Job:
    """The run (see the module docstring); ``threads``: torch's CPU threads meanwhile (1 leaves the
    other cores to napari's GUI thread; None: unchanged)."""
    import torch

    from ..devices import describe_device

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield Update(0, config.iterations, "loading")
        trainer, data, simulated = _make_trainer(config, data_spec, run_dir, resume)
        device = trainer.device
        try:
            if stop:
                return RunResult(trainer.iteration, True, None, str(trainer.state_path))
            yield Update(trainer.iteration, config.iterations, "training",
                         RunStarted(trainer.iteration, config.iterations, describe_device(device), data, simulated,
                                    cost(trainer)))
            yield from _throttled(trainer, stop, update_every_s)
            return RunResult(trainer.iteration, trainer.iteration < config.iterations,
                             str(trainer.model_path) if trainer.model_path.exists() else None, str(trainer.state_path))
        finally:
            trainer.close()  # the run folder's lock: the next run may start while this memory is freed
            del trainer  # free the models and optimiser state (and GPU memory) now, not at the next run
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        torch.set_num_threads(previous_threads)


def _throttled(trainer, stop: StopFlag, every_s: float) -> Job:
    """The trainer's updates at most every ``every_s`` (and the last), each with the iterations logged
    since the one before and, at most that often, a preview."""
    last_update = last_preview = 0.0
    logged = []
    for update in trainer.run(stop):
        event = update.payload
        logged += event.logged
        now = time.perf_counter()
        if not (event.finished or now - last_update >= every_s):
            continue
        if event.preview is None and now - last_preview >= every_s:
            event.preview = trainer.preview()
        if event.preview is not None:
            last_preview = now
        event.logged = logged
        yield update
        logged = []
        last_update = time.perf_counter()
