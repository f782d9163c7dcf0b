"""A training run folder's two guarantees: one writer at a time, and a checkpoint that is one step.

**One writer.** :func:`lock` takes an exclusive ``fcntl.flock`` on ``run.lock`` in the folder and
writes the holder (pid, host, start time) into it; a second process (or a second trainer in this
one) is refused with :class:`RunFolderBusy` naming the holder. The kernel drops the lock when its
process dies, so a killed run never blocks the next one.

**One step.** A checkpoint's files (``train_state.safetensors`` and the model file) are written
into a new folder ``checkpoints/<iteration>/``; one atomic rename of the symbolic link ``current``
then switches both at once, and the run folder's own ``train_state.safetensors`` and model file are
fixed links into ``current/``. After any kill both names resolve to the same iteration. A folder
written before this layout (two plain files), or a copy that followed the links (``shutil.copytree``,
a zip), is adopted on its first checkpoint: its pair is linked into a checkpoint folder first, so no
moment shows two iterations. Where symbolic links are not
available (Windows), the two files are written one after the other, as before.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import socket
from pathlib import Path

from .. import atomic

LOCK_FILE = "run.lock"
CHECKPOINTS = "checkpoints"
CURRENT = "current"
LINKS = os.name != "nt"


class RunFolderBusy(RuntimeError):
    """Another process trains into this run folder."""


class RunLock:
    """The held lock of a run folder; :meth:`release` (or the process's end) lets the next writer in."""

    def __init__(self, file, path: Path):
        self._file, self.path = file, path

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the flock
            self._file = None


def lock(run_dir) -> RunLock:
    """Hold ``run_dir``'s lock (creating the folder), or raise :class:`RunFolderBusy` naming the holder."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / LOCK_FILE
        file = open(path, "a+")
    except OSError as err:
        raise atomic.write_error(err, run_dir / LOCK_FILE) from None
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here
        return RunLock(file, path)
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        holder = file.read().strip() or "another process"
        file.close()
        raise RunFolderBusy(f"{run_dir} is being trained by {holder}; wait for it to finish, stop it, or choose "
                            "another output folder") from None
    since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    file.seek(0)
    file.truncate()
    file.write(f"pid {os.getpid()} on {socket.gethostname()} since {since}\n")
    file.flush()
    remove_strays(run_dir)  # only the lock's holder may: a temporary file of a live writer is never stray
    return RunLock(file, path)


def remove_strays(run_dir: Path) -> None:
    """Temporary files and unfinished checkpoint folders left by a killed run."""
    for folder in (run_dir, run_dir / CHECKPOINTS):
        if folder.is_dir():
            for entry in folder.iterdir():
                if atomic.is_temporary(entry):
                    _remove(entry)
    current = _current_folder(run_dir)
    if current is not None:
        for entry in (run_dir / CHECKPOINTS).iterdir():
            if entry.name != current.name:
                _remove(entry)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _current_folder(run_dir: Path) -> Path | None:
    link = run_dir / CURRENT
    if not link.is_symlink():
        return None
    return run_dir / os.readlink(link)


def _link(run_dir: Path, name: str, target: str) -> None:
    """Make ``run_dir/name`` a symbolic link to ``target`` in one atomic rename."""
    path = run_dir / name
    if path.is_symlink() and os.readlink(path) == target:
        return
    tmp = atomic.temporary_name(path)
    try:
        tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _adopt_plain_files(run_dir: Path, names) -> None:
    """A folder written before checkpoint folders: link its pair into one, and the names to it."""
    if not any((run_dir / name).is_file() and not (run_dir / name).is_symlink() for name in names):
        return
    present = [name for name in names if (run_dir / name).is_file()]
    with atomic.atomic_folder(run_dir / CHECKPOINTS / f"adopted-{os.getpid()}") as tmp:
        for name in present:
            source = os.path.realpath(run_dir / name)
            try:
                os.link(source, tmp / name)
            except OSError:
                shutil.copy2(source, tmp / name)
    current = run_dir / CURRENT
    if current.is_dir() and not current.is_symlink():  # a copy that followed the links: the pair is its content
        shutil.rmtree(current)
    _link(run_dir, CURRENT, f"{CHECKPOINTS}/adopted-{os.getpid()}")
    for name in present:
        _link(run_dir, name, f"{CURRENT}/{name}")


def commit(run_dir, iteration: int, names: tuple[str, ...], write) -> None:
    """Write one checkpoint: ``write(folder)`` writes the files ``names`` into ``folder``; then they
    replace the run folder's ``names`` together (see the module docstring)."""
    run_dir = Path(run_dir)
    if not LINKS:
        write(run_dir)
        return
    try:
        (run_dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        _adopt_plain_files(run_dir, names)
        name, n = f"{iteration:09d}", 1
        while (run_dir / CHECKPOINTS / name).exists():  # saved twice at one iteration (stop at a checkpoint)
            name, n = f"{iteration:09d}-{n}", n + 1
        with atomic.atomic_folder(run_dir / CHECKPOINTS / name) as tmp:
            write(tmp)
        _link(run_dir, CURRENT, f"{CHECKPOINTS}/{name}")  # the one step that switches the pair
        for file in names:
            _link(run_dir, file, f"{CURRENT}/{file}")
        atomic.fsync_folder(run_dir)
    except OSError as err:
        raise atomic.write_error(err, run_dir / names[0]) from None
    for entry in (run_dir / CHECKPOINTS).iterdir():  # earlier checkpoints, and one a kill left unswitched
        if entry.name != name:
            _remove(entry)
