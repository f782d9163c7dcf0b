"""Writing evaluation files: numbers JSON and CSV can hold, and writes that never leave half a file."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np


def finite(value):
    """NaN and infinities become None (empty in CSV, null in JSON); numpy numbers become Python ones."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, np.ndarray):
        return finite(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def atomic_write(path: Path, write) -> Path:
    """``write(temporary path)``, then rename: a failed write leaves no half-written file."""
    partial = path.with_name(f".partial-{path.name}")  # same suffix: writers pick the format from it
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
