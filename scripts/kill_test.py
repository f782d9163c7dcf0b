"""Kill test: SIGKILL tiny ``biogans train`` runs at random moments and check that no work is corrupted.

One run folder is trained, killed, checked and resumed again and again (``--resume``), so every
kill lands on a folder that earlier kills and resumes wrote. Half the kills come at a random
moment, half the instant a checkpoint write is seen in progress (a temporary file or folder of
:mod:`napari_biogans.atomic` appears). After each kill:

* ``train_state.safetensors`` and the model file load (``checkpoints.load`` / ``load_generator``);
* both hold the same iteration (the checkpoint is one step);
* at most one checkpoint interval was lost (the last iteration in ``losses.csv`` minus the saved one);
* the next ``--resume`` continues from the saved iteration (its first new row is the next one) and
  removes the temporary files the kill left.

At the end the run is resumed to its last iteration: no temporary file is left, and ``losses.csv``
holds every iteration exactly once. Prints a table (Markdown) and exits 1 on any failure.

    nice -n 10 env OMP_NUM_THREADS=1 python scripts/kill_test.py --kills 24 --out /work/runs/faults/kill
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from napari_biogans import atomic, checkpoints
from napari_biogans.training.events import STATE_FILE

MODEL_FILE = "generator.safetensors"


def make_data(folder: Path) -> Path:
    from napari_biogans.data import lin
    from napari_biogans.data.simulator import simulate_stack

    path = folder / "cells.h5"
    if not path.exists():
        lin.write_h5(simulate_stack(n_per_class=8, proteins=["Tea1", "Sid2"], seed=0), path)
    return path


def train(data: Path, run: Path, args, resume: bool) -> subprocess.Popen:
    command = [sys.executable, "-m", "napari_biogans.cli", "train", "--data", str(data), "--out", str(run),
               "--width", "8", "--nz", "16", "--batch-size", "2", "--device", "cpu", "--iterations",
               str(args.iterations), "--checkpoint-every", str(args.checkpoint_every), "--log-every", "1",
               "--objective", "lsgan"]
    if resume:
        command.append("--resume")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)


def logged(run: Path) -> list[int]:
    """Iterations in losses.csv (whole rows only)."""
    path = run / "losses.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [int(r["iteration"]) for r in csv.DictReader(f)
                if None not in r.values() and (r["iteration"] or "").isdigit()]


def temporaries(run: Path) -> list[Path]:
    return [p for p in run.rglob("*") if atomic.is_temporary(p)]


def writing(run: Path) -> bool:
    """A checkpoint write in progress: a temporary file or folder in the run or checkpoints folder."""
    for folder in (run, run / "checkpoints"):
        try:
            with os.scandir(folder) as entries:
                if any(atomic.is_temporary(e.name) for e in entries):
                    return True
        except OSError:
            pass
    return False


def inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


def wait_for_row(run: Path, after: int, process: subprocess.Popen, old_file: int | None,
                 timeout: float = 300) -> bool:
    """Wait until losses.csv logs an iteration above ``after`` in a file other than ``old_file`` (a
    resume rewrites it, atomically, before its first row: the rows a kill left do not count)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and process.poll() is None:
        if inode(run / "losses.csv") != old_file:
            rows = logged(run)
            if rows and rows[-1] > after:
                return True
        time.sleep(0.05)
    return False


def kill(process: subprocess.Popen, run: Path, mode: str, rng: random.Random, interval: int) -> bool:
    """SIGKILL at a random moment, or as soon as a checkpoint write is seen; False if the run ended first."""
    if mode == "random":
        end = time.monotonic() + rng.uniform(0.2, 4.0)
        while time.monotonic() < end and process.poll() is None:
            time.sleep(0.01)
    else:
        end = time.monotonic() + 60 * interval
        while time.monotonic() < end and process.poll() is None and not writing(run):
            time.sleep(0.0005)
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    process.wait()
    return True


def check_checkpoint(run: Path) -> tuple[int | None, str]:
    """(the iteration both files hold, problem or "")."""
    try:
        _, state = checkpoints.load(run / STATE_FILE, kind="train-state")
        _, meta = checkpoints.load_generator(run / MODEL_FILE)
    except checkpoints.CheckpointError as err:
        return None, f"does not load: {err}"
    if state["iteration"] != meta["iterations"]:
        return None, f"train_state at {state['iteration']}, generator at {meta['iterations']}"
    return state["iteration"], ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=24)
    parser.add_argument("--checkpoint-every", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=100000, help="the killed runs' length (never reached)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="kill-test", help="work folder (emptied first)")
    parser.add_argument("--time-limit", type=float, default=30.0, metavar="MINUTES", help="stop killing after this")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(args.out)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data, run = make_data(work), work / "run"
    deadline = time.monotonic() + 60 * args.time_limit

    rows, failures = [], 0
    process = train(data, run, args, resume=False)
    saved, old_file = args.checkpoint_every, None  # the first kill comes after the first checkpoint
    left_by_last_kill: list[Path] = []
    for k in range(args.kills):
        if time.monotonic() > deadline:
            break
        if not wait_for_row(run, saved, process, old_file):
            print(process.communicate()[0][-2000:])
            print(f"kill {k + 1}: the run did not train")
            return 1
        gone = not any(p.exists() for p in left_by_last_kill)  # this resume removed what the last kill left
        rows_now = logged(run)
        continued = rows_now[: rows_now.index(saved + 1) + 1 if saved + 1 in rows_now else None] == list(
            range(1, saved + 2))  # rows 1..saved kept, then saved + 1 from the resumed run
        mode = "random" if k % 2 == 0 else "during write"
        if not kill(process, run, mode, rng, args.checkpoint_every):
            print(f"kill {k + 1}: the run ended before it was killed; use more --iterations")
            return 1
        progress = logged(run)[-1]
        iteration, problem = check_checkpoint(run)
        lost = None if iteration is None else progress - iteration
        left_by_last_kill = temporaries(run)
        ok = not problem and lost <= args.checkpoint_every and gone and continued
        failures += not ok
        rows.append((k + 1, mode, progress, iteration, lost, len(left_by_last_kill), "yes" if gone else "NO",
                     "yes" if continued else "NO", problem or "consistent"))
        saved, old_file = iteration or 0, inode(run / "losses.csv")
        process = train(data, run, args, resume=True)

    process.send_signal(signal.SIGKILL)  # the last resume was only started: finish the run a little further on
    process.wait()
    last = max(logged(run)) + 2 * args.checkpoint_every
    args.iterations = last
    finish = train(data, run, args, resume=True)
    out = finish.communicate()[0]
    final, problem = check_checkpoint(run)
    strays = temporaries(run)
    once = logged(run) == list(range(1, last + 1))
    failures += bool(problem or strays or not once or final != last)

    print("| kill | when | last logged | saved iteration | lost | temp files left | removed by resume | "
          "resume continued | checkpoint |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join("-" if v is None else str(v) for v in row) + " |")
    print()
    lost = [r[4] for r in rows if r[4] is not None]
    print(f"{len(rows)} kills ({sum(r[1] == 'during write' for r in rows)} during checkpoint writes), checkpoint every "
          f"{args.checkpoint_every} iterations: {sum(r[8] != 'consistent' for r in rows)} corrupted or inconsistent "
          f"checkpoints, at most {max(lost, default=0)} iterations lost; final resume to {final}: "
          f"{len(strays)} temporary files left, losses.csv holds every iteration once: {once}")
    if problem or final != last:
        print(out[-2000:])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
