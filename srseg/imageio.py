"""Image file I/O with one contract: whatever is on disk comes back as (H, W, 3) uint8 RGB.

Every stage (degrade, evaluate, study) reads images through :func:`load_rgb` so that a grayscale
benchmark image, a CMYK JPEG or a 16-bit PNG is converted the same way everywhere, and a broken
file fails with an error that names it instead of a bare decoder traceback.

Conversion rules (chosen to match what SR benchmarks expect of an "RGB image"):

- EXIF orientation is applied, so pixels are in display orientation.
- Alpha (RGBA, LA, PA, palette transparency) is **dropped**, not composited: SR datasets store
  colour under the alpha, and compositing onto an arbitrary background would invent pixels.
- Grayscale (1, L, LA, I;16*) is replicated to three equal channels.
- CMYK is converted with Pillow's naive formula (no ICC colour management).
- 16-bit data (I;16, I;16B, I;16L, I, and 16-bit RGB/RGBA PNG) is scaled to 8 bits by
  ``round(v / 257)``, which maps 0 -> 0 and 65535 -> 255 exactly (Pillow itself would truncate
  16-bit RGB to the high byte).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from srseg.errors import SrsegError
from srseg.fileio import atomic_open, sha256_bytes

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})

# Pillow's ImageOps.exif_transpose operations for orientations 2..8, applied to numpy arrays.
_ORIENTATION_OPS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.swapaxes(a, 0, 1)[:, ::-1],
    7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
    8: lambda a: np.swapaxes(a, 0, 1)[::-1, :],
}


class ImageReadError(SrsegError):
    """An image file is missing, corrupt, truncated or in a mode we cannot convert to RGB."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: cannot read image ({reason})")


def _scale16(values: np.ndarray) -> np.ndarray:
    """round(v / 257) in integer arithmetic (no ties occur since 257 is odd)."""
    wide = np.clip(values.astype(np.int64), 0, 65535)
    return ((2 * wide + 257) // 514).astype(np.uint8)


def _png_bit_depth_and_color(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG IHDR chunk, or None when the bytes are not a PNG."""
    if len(data) < 26 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    return data[24], data[25]


def _decode_png16_rgb(data: bytes) -> np.ndarray | None:
    """Decode a 16-bit truecolour PNG to (H, W, C) integers via torchvision's libpng binding.

    Pillow only exposes such files as 8-bit (high byte, truncated), which would lose the rounding
    we want; torchvision keeps all 16 bits. torchvision 0.29 marks its image codecs deprecated,
    so the warning is silenced here and, should the codec disappear, None is returned and the
    caller falls back to Pillow's truncation (off by at most one level).
    """
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_png
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tensor = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.UNCHANGED)
    return tensor.permute(1, 2, 0).to(torch.int32).numpy()


def _exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # malformed EXIF must not make a readable image unreadable
        return 1


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Pillow image (already oriented) -> (H, W, 3) uint8 following the module's rules."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        gray = _scale16(np.asarray(image))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("LA", "La", "1"):
        image = image.convert("L")
    elif mode == "PA" or (mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")  # avoids Pillow's palette-transparency warning; alpha dropped below
    if image.mode == "L":
        gray = np.asarray(image, dtype=np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)  # a writable copy, not a view of Pillow's buffer


def load_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read any supported image file as an (H, W, 3) uint8 RGB array in display orientation.

    Raises :class:`ImageReadError` naming ``path`` when the file is missing, not an image,
    truncated, or in a mode that has no RGB meaning.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageReadError(path, exc.strerror or str(exc)) from exc
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            orientation = _exif_orientation(image)
            png = _png_bit_depth_and_color(data)
            wide = _decode_png16_rgb(data) if png is not None and png[0] == 16 and png[1] in (2, 6) else None
            if wide is not None:
                rgb = _scale16(wide[:, :, :3])
                op = _ORIENTATION_OPS.get(orientation)
                return np.ascontiguousarray(op(rgb) if op else rgb)
            if orientation != 1:
                image = ImageOps.exif_transpose(image)
            rgb = _to_rgb_array(image)
    except ImageReadError:
        raise
    except UnidentifiedImageError as exc:  # its message embeds a memory address; keep reasons stable
        raise ImageReadError(path, "not a recognised image format") from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError, KeyError, IndexError, EOFError, RuntimeError) as exc:
        raise ImageReadError(path, f"{type(exc).__name__}: {exc}") from exc
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageReadError(path, f"decoded to unexpected shape {rgb.shape}")
    return rgb


def save_png_atomic(path: str | os.PathLike[str], array: np.ndarray) -> str:
    """Write an (H, W, 3) or (H, W) uint8 array as PNG atomically; return the file's SHA-256.

    The final name appears only when the file is complete; the checksum comes from the bytes
    written, so manifests need not read the file back.
    """
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise ValueError(f"{path}: expected a uint8 array, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"{path}: expected shape (H, W, 3) or (H, W), got {arr.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buffer, format="PNG")
    data = buffer.getvalue()
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return sha256_bytes(data)


def list_images(directory: str | os.PathLike[str]) -> list[str]:
    """Relative POSIX paths of all images under ``directory`` (recursive), sorted.

    Extensions are matched case-insensitively; hidden files and folders (leading '.') are
    skipped so editor droppings and our own atomic-write temp files are never picked up.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            found.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(found)
