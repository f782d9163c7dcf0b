"""The one training loop that the fluorescence and the EM trainers both run.

A trainer supplies ``step()`` (one iteration, losses as 0-d tensors, no host sync), ``save()``,
``preview()``, ``config`` (``iterations``, ``log_every``, ``checkpoint_every``,
``preview_every``), ``run_dir``, ``model_path``, ``iteration`` and ``last_checkpoint``; the
loop yields :class:`TrainEvent` s, writes ``losses.csv``, checkpoints on schedule, on a stop
request and at the end, and turns a non-finite loss into :class:`TrainingDiverged`. Under
``torchrun`` only rank 0 writes logs and previews.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import loss_log


class TrainingDiverged(RuntimeError):
    """Losses became NaN or infinite; the message names the last good checkpoint."""


@dataclass
class TrainEvent:
    iteration: int
    total: int
    losses: dict = field(default_factory=dict)
    iterations_per_s: float = 0.0
    preview: object = None  # the trainer's preview: an array of cells, or an EM label/image pair
    checkpoint: Path | None = None
    done: bool = False
    message: str = ""


class TrainingLoop:
    """``run()`` and ``request_stop()`` for a trainer (see the module docstring)."""

    rank = 0
    check_every_step = False  # True: look for NaN after every step (one host sync per step)
    divergence_hint = "Try a lower learning rate."
    _stop = False

    def request_stop(self) -> None:
        """Ask the loop to save and return after the current iteration (safe from any thread)."""
        self._stop = True

    def _loss_values(self, losses: dict) -> dict[str, float]:
        values = dict(zip(losses, torch.stack([v.float() for v in losses.values()]).tolist()))  # one host sync
        if not all(math.isfinite(v) for v in values.values()):
            kept = f"the last good checkpoint {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint yet"
            raise TrainingDiverged(f"non-finite loss at iteration {self.iteration} ({values}); training stopped, "
                                   f"{kept} is kept. {self.divergence_hint}")
        return values

    def run(self):
        """Train to ``config.iterations``, yielding a :class:`TrainEvent` per logged iteration and a last
        one with ``done`` set."""
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            loss_log.truncate(self.run_dir, self.iteration)
        start, t0 = self.iteration, time.perf_counter()
        while self.iteration < cfg.iterations and not self._stop:
            losses = self.step()
            i = self.iteration
            values = self._loss_values(losses) if self.check_every_step else None
            if i % cfg.log_every and i % cfg.checkpoint_every and i % cfg.preview_every and i != cfg.iterations:
                continue
            if values is None:
                values = self._loss_values(losses)
            seconds = time.perf_counter() - t0
            event = TrainEvent(iteration=i, total=cfg.iterations, losses=values,
                               iterations_per_s=(i - start) / max(seconds, 1e-9))
            if self.rank == 0:
                loss_log.append(self.run_dir, {"iteration": i, "seconds": round(seconds, 3), **values})
                if i % cfg.preview_every == 0:
                    event.preview = self.preview()
            if i % cfg.checkpoint_every == 0:
                event.checkpoint = self.save()
            yield event
        final = self.save()
        stopped = self._stop and self.iteration < cfg.iterations
        yield TrainEvent(
            iteration=self.iteration, total=cfg.iterations, checkpoint=final, done=True,
            preview=self.preview() if self.rank == 0 else None,
            message=("stopped" if stopped else "finished") + f" at iteration {self.iteration}; saved {self.model_path}",
        )
