"""PNG files written by hand, for the readers' hostile-input tests and ``scripts/fuzz.py``.

Pillow, imageio and scikit-image refuse to write what these tests need: a header that claims
0 x 0 pixels, or 16-bit RGB. Tests import this module because ``scripts/`` is on pytest's
``pythonpath`` (pyproject.toml).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

GREY, RGB, GREY_ALPHA = 0, 2, 4  # PNG colour types


def png_bytes(pixels: np.ndarray, depth: int = 8, colour: int = RGB) -> bytes:
    """The bytes of a PNG of ``pixels`` ((H, W) or (H, W, samples)) at ``depth`` 8 or 16 bits, with
    whatever width and height ``pixels`` has, zero included; ``colour`` is the header's colour type."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w = pixels.shape[:2]
    dtype = ">u2" if depth == 16 else np.uint8
    raw = b"".join(b"\0" + np.ascontiguousarray(row, dtype=dtype).tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
