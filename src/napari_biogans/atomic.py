"""The one way the product writes a file: a temporary file beside it, fsync, then an atomic rename.

A reader never sees half a file, a kill or a full disk never damages what was saved before, and
two processes never share a temporary name (``tempfile.mkstemp``: unique per call). The temporary
file is removed after any error. A failed write raises :class:`WriteError`, an ``OSError`` whose
message is one line naming the file the user asked for (``cannot write <path>: no space left on
device``), whatever temporary name the system call failed on.

* :func:`atomic_write` ``(path, write)``: ``write(tmp)`` writes through any library that takes a path
  (tifffile, imageio, h5py, matplotlib, numpy); the temporary name keeps ``path``'s suffix, since
  those libraries choose the format from it;
* :func:`atomic_open` ``(path, mode)``: a file object, for text, CSV and bytes;
* :func:`atomic_folder` ``(path)``: a whole folder written under a temporary name, then renamed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

TEMP_MARK = ".partial"  # in every temporary name: ``.<name>.<random>.partial<suffix>``

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, the user's umask decides what they become


class WriteError(OSError):
    """A write failed (read-only folder, full disk, no permission); ``str()`` is one line naming the file."""

    def __str__(self) -> str:
        return self.strerror


def describe_os_error(err: OSError, path) -> str:
    """``cannot write <path>: read-only file system`` (the system's reason, in lower case)."""
    reason = os.strerror(err.errno) if err.errno else str(err)
    return f"cannot write {path}: {reason[:1].lower()}{reason[1:]}"


def write_error(err: OSError, path) -> WriteError:
    """``err`` as a :class:`WriteError` naming ``path`` (the file the user asked for, not a temporary one)."""
    return WriteError(err.errno or errno.EIO, describe_os_error(err, path))


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder) -> None:
    """Make a rename in ``folder`` durable (best effort: some file systems refuse to fsync a folder)."""
    with contextlib.suppress(OSError):
        _fsync(folder)


def _remove(path) -> None:
    with contextlib.suppress(OSError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def temporary_name(path: Path, folder: bool = False) -> Path:
    """A new, unique temporary file (or folder) beside ``path``, already created."""
    if folder:
        name = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMP_MARK, dir=path.parent)
        os.chmod(name, 0o777 & ~_UMASK)
        return Path(name)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{TEMP_MARK}{path.suffix}", dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~_UMASK)
    return Path(name)


def is_temporary(path) -> bool:
    """Whether ``path`` is one of this module's temporary files or folders."""
    name = Path(path).name
    return name.startswith(".") and TEMP_MARK in name


def replace(tmp, path) -> None:
    """``os.replace`` after an fsync of ``tmp``, then of the folder (the one rename every write ends in)."""
    if os.path.isfile(tmp):
        _fsync(tmp)
    os.replace(tmp, path)
    fsync_folder(Path(path).parent)


@contextlib.contextmanager
def _temporary(path: Path, folder: bool = False):
    """A temporary file (or folder) beside ``path`` that becomes ``path`` when the block ends without an
    error and is removed otherwise; an ``OSError`` leaves as a :class:`WriteError` naming ``path``.
    Writing to a symbolic link writes the file it points to (a run folder's links stay links)."""
    shown = path
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(path, folder)
        yield tmp
        if folder:
            os.rename(tmp, path)  # never onto an existing folder
            fsync_folder(path.parent)
        else:
            replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            _remove(tmp)
        if isinstance(err, OSError):
            raise write_error(err, shown) from None
        raise


def atomic_write(path, write) -> Path:
    """Call ``write(tmp)``, then move ``tmp`` onto ``path`` atomically; returns ``path``."""
    path = Path(path)
    with _temporary(path) as tmp:
        write(tmp)
    return path


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", **kwargs):
    """``with atomic_open(path, "w", newline="") as f:``: ``path`` appears, whole, when the block ends
    without an error; ``kwargs`` go to :func:`open`."""
    if "w" not in mode:
        raise ValueError(f"atomic_open writes a new file: mode 'w' or 'wb', not {mode!r}")
    with _temporary(Path(path)) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def write_text(path, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding=encoding))


def write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


@contextlib.contextmanager
def atomic_folder(path):
    """``with atomic_folder(root) as tmp:`` fill the temporary folder ``tmp``; it becomes ``root`` (which
    must not exist yet) when the block ends without an error, and is removed otherwise."""
    with _temporary(Path(path), folder=True) as tmp:
        yield tmp
