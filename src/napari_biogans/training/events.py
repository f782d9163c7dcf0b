"""What a training run reports, without torch: the Train widget imports these at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

STATE_FILE = "train_state.safetensors"


class TrainingDiverged(RuntimeError):
    """Losses became NaN or infinite; the message names the last good checkpoint."""


@dataclass
class TrainEvent:
    """The payload of a training update: one logged iteration (or the end of the run)."""

    iteration: int
    total: int
    losses: dict = field(default_factory=dict)  # this iteration's losses
    iterations_per_s: float = 0.0
    preview: object = None  # the trainer's preview: an array of cells, or an EM label/image pair
    checkpoint: Path | None = None
    finished: bool = False  # the run ended (done or stopped) and saved
    message: str = ""
    logged: list = field(default_factory=list)  # [(iteration, losses)] since the previous event (throttled jobs)
