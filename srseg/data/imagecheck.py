"""Is a downloaded COCO image whole? Used where no published checksum exists (the official hosts
publish none for single images).

Two checks: every byte decodes, and the decoded size is the one the annotation (label map or
COCO JSON) gives for that image id. JPEGs go through libjpeg-turbo (``simplejpeg``) with its
warnings treated as errors: Pillow accepts files whose tail was zero-filled or whose scan data was
overwritten (libjpeg only warns "Corrupt JPEG data" and fills in grey), and those are exactly the
damages a broken transfer or disk produces. Other formats are fully decoded by Pillow.
"""

from __future__ import annotations

import io
from pathlib import Path

import simplejpeg
from PIL import Image

_JPEG_SOI = b"\xff\xd8"


class ImageCheckError(ValueError):
    """The image is damaged or is not the one the annotation describes; the message says how."""


def decoded_size(data: bytes) -> tuple[int, int]:
    """(width, height) after decoding every byte; ImageCheckError when any part is damaged."""
    if data.startswith(_JPEG_SOI):
        try:
            pixels = simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True)
        except ValueError as exc:
            raise ImageCheckError(f"damaged JPEG ({exc})") from None
        return int(pixels.shape[1]), int(pixels.shape[0])
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.size
    except Exception as exc:  # Pillow raises many types for damaged files
        raise ImageCheckError(f"not a decodable image ({type(exc).__name__}: {exc})") from None


def check_image(path: str | Path, expected_size: tuple[int, int] | None) -> tuple[int, int]:
    """Decode ``path`` completely and compare with ``expected_size`` (width, height); returns the size."""
    size = decoded_size(Path(path).read_bytes())
    if expected_size is not None and tuple(expected_size) != size:
        raise ImageCheckError(
            f"decodes to {size[0]}x{size[1]}, but the annotation says {expected_size[0]}x{expected_size[1]}"
        )
    return size
