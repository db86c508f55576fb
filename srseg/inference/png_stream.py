"""Write an 8-bit PNG band by band, so an image never has to be whole in memory.

Why not Pillow: to save an image Pillow needs all of it as one ``Image`` (and keeps RGB at four
bytes per pixel), so a 24000x24000 output would cost 2.3 GB on top of the pixels themselves.
PNG is a zlib stream of filtered scanlines, which can be produced as the rows arrive: memory is
one band plus zlib's window, whatever the image size.

Filter: every row uses PNG's "Up" filter (difference to the row above). It costs one subtraction
per byte, and on super-resolved images (smooth, so rows are similar) it compresses nearly as well
as per-row adaptive filtering, which in NumPy is slower than the compression itself.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (gray, gray+alpha, RGB, RGBA)
_UP_FILTER = 2
_IDAT_SIZE = 1 << 20  # bytes per IDAT chunk


class PNGStreamWriter:
    """``write_rows`` (H_i, W, C) uint8 bands top to bottom, then ``close``; ``handle`` gets a PNG.

    ``close`` refuses to finish a file with fewer or more rows than announced, so a caller that
    stops early never produces a valid-looking truncated image.
    """

    def __init__(self, handle: BinaryIO, width: int, height: int, channels: int, compress_level: int = 1) -> None:
        if channels not in _COLOR_TYPES:
            raise ValueError(f"PNG needs 1-4 channels, got {channels}")
        if not (1 <= width <= 2**31 - 1 and 1 <= height <= 2**31 - 1):
            raise ValueError(f"PNG size must be 1..2^31-1 per side, got {width}x{height}")
        if not 0 <= compress_level <= 9:
            raise ValueError(f"compress_level must be 0..9, got {compress_level}")
        self._handle = handle
        self.width, self.height, self.channels = width, height, channels
        self.rows_written = 0
        self._previous = np.zeros(width * channels, dtype=np.uint8)  # "Up" sees zeros above row 0
        self._zlib = zlib.compressobj(compress_level)
        self._pending = bytearray()
        header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
        handle.write(PNG_SIGNATURE)
        self._chunk(b"IHDR", header)

    def write_rows(self, band: np.ndarray) -> None:
        """Append rows: an (h, width, channels) (or (h, width) for one channel) uint8 array."""
        rows = np.asarray(band)
        if rows.ndim == 2:
            rows = rows[:, :, None]
        if rows.dtype != np.uint8 or rows.shape[1:] != (self.width, self.channels):
            raise ValueError(
                f"expected uint8 rows of shape (h, {self.width}, {self.channels}), got {rows.dtype} {rows.shape}"
            )
        if self.rows_written + rows.shape[0] > self.height:
            raise ValueError(f"more rows than the announced height {self.height}")
        flat = rows.reshape(rows.shape[0], -1)
        above = np.empty_like(flat)
        above[0] = self._previous
        above[1:] = flat[:-1]
        filtered = np.empty((flat.shape[0], flat.shape[1] + 1), dtype=np.uint8)
        filtered[:, 0] = _UP_FILTER
        np.subtract(flat, above, out=filtered[:, 1:])  # uint8 arithmetic wraps: PNG's modulo 256
        self._previous = flat[-1].copy()
        self.rows_written += flat.shape[0]
        self._pending += self._zlib.compress(filtered)
        self._flush_chunks(final=False)

    def close(self) -> None:
        """Finish the stream (IDAT rest, IEND); the image must be complete."""
        if self.rows_written != self.height:
            raise ValueError(f"PNG stopped after {self.rows_written} of {self.height} rows")
        self._pending += self._zlib.flush()
        self._flush_chunks(final=True)
        self._chunk(b"IEND", b"")

    def _flush_chunks(self, final: bool) -> None:
        while len(self._pending) >= _IDAT_SIZE or (final and self._pending):
            data = bytes(self._pending[:_IDAT_SIZE])
            del self._pending[:_IDAT_SIZE]
            self._chunk(b"IDAT", data)

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self._handle.write(struct.pack(">I", len(data)) + kind)
        self._handle.write(data)
        self._handle.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))
