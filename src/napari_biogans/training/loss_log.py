"""``losses.csv`` of a run folder: one row per logged iteration, shared by both trainers."""

from __future__ import annotations

import csv
from pathlib import Path

from ..atomic import atomic_open, write_error

FILE = "losses.csv"


def append(run_dir, row: dict) -> None:
    """Append ``row`` (``iteration``, ``seconds`` and the losses); the first row writes the header."""
    path = Path(run_dir) / FILE
    new = not path.exists()
    try:
        with open(path, "a", newline="") as f:  # an append: a kill loses at most this row
            names = ["iteration", "seconds", *sorted(set(row) - {"iteration", "seconds"})]
            writer = csv.DictWriter(f, fieldnames=names)
            if new:
                writer.writeheader()
            writer.writerow(row)
    except OSError as err:
        raise write_error(err, path) from None


def truncate(run_dir, iteration: int) -> None:
    """On resume, drop rows written after the checkpoint at ``iteration`` (those iterations run again)
    and a last row cut short by a kill; the file is rewritten atomically."""
    path = Path(run_dir) / FILE
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows:
        with atomic_open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(r for r in rows if _whole(r) and int(r["iteration"]) <= iteration)


def _whole(row: dict) -> bool:
    return None not in row and None not in row.values() and row["iteration"].isdigit()


def read(run_dir, up_to: int | None = None) -> dict[str, list]:
    """``losses.csv`` of a run folder as {name: [(iteration, value)]}, rows up to ``up_to``."""
    path = Path(run_dir) / FILE
    history: dict[str, list] = {}
    if not path.is_file():
        return history
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            it = int(row["iteration"])
            if up_to is not None and it > up_to:
                continue
            for key, value in row.items():
                if key not in ("iteration", "seconds") and value not in (None, ""):
                    history.setdefault(key, []).append((it, float(value)))
    return history
