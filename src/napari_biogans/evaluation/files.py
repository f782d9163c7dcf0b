"""Numbers that evaluation files (JSON, CSV) can hold; files are written through :mod:`napari_biogans.atomic`."""

from __future__ import annotations

import math

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
