"""The one training loop, checkpoint and resume that the fluorescence and the EM trainers share.

A trainer holds its networks in ``self.models`` and their Adam optimisers in ``self.optimizers``
(dicts by name, as stylegan2-ada's phases: an optimiser phase is a name, the models it steps and
how often), so saving, resuming, the finiteness check and the gradient all-reduce are written
here once. A trainer supplies only its ``step()`` (one iteration, losses as 0-d tensors, no host
sync), ``preview()``, ``model_meta()`` and ``save_model(path)``, plus its own random streams
(``extra_state`` / ``restore_extra_state`` / ``reseed``) and resume checks (``check_resumable``).

``run(stop)`` is a job of the one progress protocol (:mod:`napari_biogans.jobs`): it yields
``Update(done=iteration, total=iterations, stage="training", payload=TrainEvent)`` per logged
iteration and a last one whose event has ``finished`` set; it writes ``losses.csv``, checkpoints
on schedule, when ``stop`` (a :class:`~napari_biogans.jobs.StopFlag`) or :meth:`request_stop`
asks, and at the end, and turns a non-finite loss or weight into :class:`TrainingDiverged`. Under
``torchrun`` only rank 0 writes logs, previews and checkpoints, and the ranks agree on a stop at
logged iterations (a signal may reach them at different ones), so all stop at the same iteration.

Rank 0 holds the run folder's lock (:func:`.run_folder.lock`) from construction to :meth:`close`,
and every checkpoint is one step (:func:`.run_folder.commit`): ``train_state.safetensors`` and the
model file always hold the same iteration.

A run folder's ``train_state.safetensors`` holds every model (``<name>.<key>``), every optimiser
(``opt<name>.<param>.<key>`` tensors, the rest in the JSON metadata), torch's RNG states and the
trainer's own streams: an exact resume on one process.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .. import atomic, checkpoints
from ..jobs import Job, StopFlag, Update
from . import loss_log, run_folder
from .distributed import any_rank, average_gradients, rank_seed
from .events import STATE_FILE, TrainEvent, TrainingDiverged  # noqa: F401  (TrainingDiverged: public here too)

KEPT_MODELS = "models"  # a run folder's kept model files (``keep_models_every``), one per kept iteration


def optimizer_state(prefix: str, optimizer) -> tuple[dict, dict]:
    """Split an optimiser state dict into tensors (safetensors) and JSON (everything else)."""
    state = optimizer.state_dict()
    tensors, per_param = {}, {}
    for pid, values in state["state"].items():
        entry = {}
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{pid}.{name}"] = value
            else:
                entry[name] = value
        per_param[str(pid)] = {"tensors": [n for n, v in values.items() if torch.is_tensor(v)], "values": entry}
    return tensors, {"param_groups": state["param_groups"], "state": per_param}


def restore_optimizer(prefix: str, optimizer, tensors: dict, saved: dict) -> None:
    """Undo :func:`optimizer_state`."""
    state = {}
    for pid, entry in saved["state"].items():
        values = dict(entry["values"])
        for name in entry["tensors"]:
            values[name] = tensors[f"{prefix}.{pid}.{name}"]
        state[int(pid)] = values
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    # moments come back contiguous; fused Adam on CUDA needs them in their parameter's memory layout
    # (channels-last convolution weights)
    for param, values in optimizer.state.items():
        for name, value in values.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                values[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def torch_rng_state(device: torch.device) -> dict:
    """torch's CPU (and the device's CUDA) random state as checkpoint tensors ``rng.torch`` / ``rng.cuda``."""
    state = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["rng.cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_torch_rng(tensors: dict, device: torch.device) -> None:
    """Undo :func:`torch_rng_state` from a checkpoint's tensors."""
    torch.set_rng_state(tensors["rng.torch"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)


class TrainingLoop:
    """``run()``, ``request_stop()``, ``save()`` and resume for a trainer (see the module docstring).

    A subclass sets ``config``, ``run_dir``, ``models``, ``optimizers``, ``rank``, ``world``, ``device``,
    ``data_hash`` and ``model_file`` and calls :meth:`_start` at the end of its ``__init__``.
    """

    rank, world = 0, 1
    model_file = "model.safetensors"
    data_noun = "data"  # "resume with the same <data_noun>"
    check_every_step = False  # True: look for NaN after every step (one host sync per step)
    divergence_hint = "Try a lower learning rate."

    def _start(self, resume: bool) -> None:
        """Fresh run (refusing a folder that holds one) or resume from the run folder's state; rank 0
        takes the folder's lock first (a second writer is refused before anything is read or written)."""
        every, checkpoint = self.config.keep_models_every, self.config.checkpoint_every
        if every and every % checkpoint:
            raise ValueError(f"keep-models-every {every} is not a multiple of checkpoint-every {checkpoint}: "
                             "no model would be kept")
        self.iteration = 0
        self.last_checkpoint: Path | None = None
        self.saved_iteration: int | None = None  # the iteration the run folder's checkpoint holds
        self._stop = False
        self._lock = run_folder.lock(self.run_dir) if self.rank == 0 else None
        try:
            if resume:
                self._resume()
            elif self.rank == 0 and self.state_path.exists():
                raise FileExistsError(f"{self.run_dir} already holds a training run; resume it or choose a new folder")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Let the next writer into the run folder (also done by the process's end)."""
        if getattr(self, "_lock", None) is not None:
            self._lock.release()
            self._lock = None

    # -- paths ---------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE_FILE

    @property
    def model_path(self) -> Path:
        return self.run_dir / self.model_file

    # -- hooks a trainer may override ----------------------------------------------------------
    def extra_state(self) -> tuple[dict, dict]:
        """The trainer's own state for the train state: (tensors, JSON metadata)."""
        return {}, {}

    def restore_extra_state(self, tensors: dict, meta: dict) -> None:
        """Undo :meth:`extra_state`."""

    def reseed(self, seed: int) -> None:
        """A resumed rank > 0 restarts its random streams from ``seed``."""
        torch.manual_seed(seed)

    def saved_configs(self, meta: dict) -> dict:
        """The models' configs a train state was written with."""
        return meta.get("configs", {})

    def check_resumable(self, meta: dict) -> None:
        """Raise a CheckpointError when the train state cannot continue in this trainer."""
        configs = {name: model.config for name, model in self.models.items()}
        if self.saved_configs(meta) != configs:
            raise checkpoints.CheckpointError(
                f"{self.state_path}: holds a run with models {self.saved_configs(meta)}, not the {configs} asked for")

    # -- optimiser steps -----------------------------------------------------------------------
    def optimizer_step(self, names, loss: torch.Tensor) -> None:
        """Backward ``loss``, average the gradients across ranks, then step the optimisers ``names``."""
        for name in names:
            self.optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        for name in names:
            optimizer = self.optimizers[name]
            average_gradients((p for group in optimizer.param_groups for p in group["params"]), self.world)
            optimizer.step()

    # -- checkpoints ---------------------------------------------------------------------------
    def _weights_finite(self) -> bool:
        return all(torch.isfinite(p).all() for m in self.models.values() for p in m.parameters())

    def _kept(self) -> str:
        if self.saved_iteration is None:
            return "no checkpoint was saved"
        return f"the last good checkpoint {self.state_path} (iteration {self.saved_iteration}) is kept"

    def save(self) -> Path | None:
        """Write the train state and the model file as one step (rank 0 only; every rank checks the
        weights); a non-finite weight raises :class:`TrainingDiverged` and never overwrites the last good
        checkpoint."""
        if not self._weights_finite():
            raise TrainingDiverged(f"weights became non-finite at iteration {self.iteration}; training stopped, "
                                   f"{self._kept()}. {self.divergence_hint}")
        if self.rank != 0:
            return None
        if self.saved_iteration == self.iteration:
            return self.state_path  # already saved (a stop or the end at a checkpoint iteration)
        tensors, opt_meta = {}, {}
        for name, model in self.models.items():
            tensors.update({f"{name}.{k}": v for k, v in model.state_dict().items()})
        for name, optimizer in self.optimizers.items():
            opt_tensors, opt_meta[name] = optimizer_state(f"opt{name}", optimizer)
            tensors.update(opt_tensors)
        tensors.update(torch_rng_state(self.device))
        extra_tensors, extra_meta = self.extra_state()
        tensors.update(extra_tensors)
        meta = {
            "kind": "train-state",
            "configs": {name: model.config for name, model in self.models.items()},
            "optimizers": opt_meta,
            "iteration": self.iteration,
            "data_sha256": self.data_hash,
            "train_config": asdict(self.config),
            **extra_meta,
        }

        def write(folder: Path) -> None:
            checkpoints.save(folder / STATE_FILE, tensors, meta)
            self.save_model(folder / self.model_file)

        run_folder.commit(self.run_dir, self.iteration, (STATE_FILE, self.model_file), write)
        self.last_checkpoint, self.saved_iteration = self.state_path, self.iteration
        every = self.config.keep_models_every
        if every and self.iteration % every == 0:
            self._keep_model()
        return self.state_path

    def _keep_model(self) -> Path:
        """A copy of this checkpoint's model file that later checkpoints leave alone: a GAN's samples get
        better and worse again as it trains, so the best iteration is chosen afterwards, by measurement."""
        import shutil

        stem, suffix = self.model_file.rsplit(".", 1)
        target = self.run_dir / KEPT_MODELS / f"{stem}-{self.iteration:09d}.{suffix}"
        target.parent.mkdir(exist_ok=True)
        return atomic.atomic_write(target, lambda tmp: shutil.copyfile(self.run_dir / self.model_file, tmp))

    def _resume(self) -> None:
        tensors, meta = checkpoints.load(self.state_path, kind="train-state")
        self.check_resumable(meta)
        if meta["data_sha256"] != self.data_hash:
            raise checkpoints.CheckpointError(
                f"{self.state_path}: was trained on other data (hash {meta['data_sha256'][:12]}…); "
                f"resume with the same {self.data_noun}")
        for name, model in self.models.items():
            checkpoints.load_module_state(model, tensors, self.state_path, prefix=f"{name}.")
        for name, optimizer in self.optimizers.items():
            restore_optimizer(f"opt{name}", optimizer, tensors, meta["optimizers"][name])
        restore_torch_rng(tensors, self.device)
        self.restore_extra_state(tensors, meta)
        self.iteration = meta["iteration"]
        self.last_checkpoint, self.saved_iteration = self.state_path, self.iteration
        if self.rank:
            self.reseed(rank_seed(self.config.seed, self.rank, self.iteration))

    # -- the loop ------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the loop to save and return after the current iteration (safe from any thread)."""
        self._stop = True

    def _loss_values(self, losses: dict) -> dict[str, float]:
        values = dict(zip(losses, torch.stack([v.float() for v in losses.values()]).tolist()))  # one host sync
        if not all(math.isfinite(v) for v in values.values()):
            raise TrainingDiverged(f"non-finite loss at iteration {self.iteration} ({values}); training stopped, "
                                   f"{self._kept()}. {self.divergence_hint}")
        return values

    def _stopping(self, stop) -> bool:
        """Whether to stop now: asked on this process; under torchrun, asked on any rank, agreed at
        logged iterations (every rank reaches them together) so all ranks stop at the same one."""
        asked = bool(self._stop or stop)
        if self.world == 1:
            return asked
        if self.iteration % self.config.log_every:
            return False
        return any_rank(asked, self.device)

    def run(self, stop: StopFlag | None = None) -> Job:
        """Train to ``config.iterations`` (see the module docstring); returns the last :class:`TrainEvent`."""
        try:
            return (yield from self._run(stop))
        finally:
            self.close()  # the run folder is free for the next writer once this run has saved

    def _run(self, stop) -> Job:
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            loss_log.truncate(self.run_dir, self.iteration)
        start, t0 = self.iteration, time.perf_counter()
        while self.iteration < cfg.iterations and not self._stopping(stop):
            losses = self.step()
            i = self.iteration
            values = self._loss_values(losses) if self.check_every_step else None
            if i % cfg.log_every and i % cfg.checkpoint_every and i % cfg.preview_every and i != cfg.iterations:
                continue
            if values is None:
                values = self._loss_values(losses)
            seconds = time.perf_counter() - t0
            event = TrainEvent(iteration=i, total=cfg.iterations, losses=values, logged=[(i, values)],
                               iterations_per_s=(i - start) / max(seconds, 1e-9))
            if self.rank == 0:
                loss_log.append(self.run_dir, {"iteration": i, "seconds": round(seconds, 3), **values})
                if i % cfg.preview_every == 0:
                    event.preview = self.preview()
            if i % cfg.checkpoint_every == 0:
                event.checkpoint = self.save()
            yield Update(i, cfg.iterations, "training", event)
        final = self.save()
        stopped = self.iteration < cfg.iterations
        event = TrainEvent(
            iteration=self.iteration, total=cfg.iterations, checkpoint=final, finished=True,
            preview=self.preview() if self.rank == 0 else None,
            message=("stopped" if stopped else "finished") + f" at iteration {self.iteration}; saved {self.model_path}",
        )
        yield Update(self.iteration, cfg.iterations, "training", event)
        return event
