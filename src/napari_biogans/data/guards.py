"""Checks every reader makes before it opens a file or allocates pixels.

A hostile or damaged file must not hang a reader (a FIFO named ``cells.h5``) or make it allocate
more memory than the machine has (a 1 KB header claiming 100,000 x 100,000 pixels). Each check
raises the caller's error type (``LinFormatError``, ``EMFormatError``, ``CheckpointError``) with
one line that names the file.
"""

from __future__ import annotations

import os
import stat

# a read may take at most this fraction of the memory available when it starts
MEMORY_FRACTION = 0.5
# the largest side of anything the product reads as one image (cells, EM sections, label maps)
MAX_SIDE = 65536


def display_name(path) -> str:
    """``path`` as one line of text that any writer can encode: undecodable bytes of the name
    become U+FFFD and control characters (a newline in a file name) are escaped."""
    text = os.fsencode(os.fspath(path)).decode("utf-8", "replace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def regular_file(path, error: type[Exception]) -> None:
    """Refuse at once anything that is not a regular file: opening a FIFO or a device would block."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{display_name(path)}: no such file") from None
    except OSError as err:
        raise error(f"{display_name(path)}: cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        raise error(f"{display_name(path)}: not a regular file (a folder, pipe or device)")


def available_memory() -> int:
    """Bytes of memory available now (psutil comes with napari)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_allocation(nbytes: int, what: str, path, error: type[Exception]) -> None:
    """Refuse to allocate ``nbytes`` for ``what`` when it exceeds the share of memory a read may take."""
    budget = int(MEMORY_FRACTION * available_memory())
    if nbytes > budget:
        raise error(
            f"{display_name(path)}: {what} would need {nbytes / 2**30:.1f} GiB of memory, more than the "
            f"{budget / 2**30:.1f} GiB this machine can spare; the file is damaged or too large to read at once"
        )


def check_side(side: int, what: str, path, error: type[Exception], largest: int = MAX_SIDE) -> None:
    if not 1 <= side <= largest:
        raise error(f"{display_name(path)}: {what} is {side} pixels; expected 1 to {largest}")


PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the empty IEND chunk and its CRC: every PNG ends so


def png_end(path, error: type[Exception]) -> None:
    """Refuse a PNG whose last chunk is not an intact IEND: Pillow's CRC check stops before it."""
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - len(PNG_END)))
        if f.read() != PNG_END:
            raise error(f"{display_name(path)}: not a readable PNG (truncated or damaged: no intact IEND chunk at its end)")
