"""Images in and out of ``srseg upscale``: what the network sees and what the output file holds.

Conversion rules (outputs are always 8-bit PNG):

- EXIF orientation is applied first, so the output is in display orientation (and carries no
  Orientation tag).
- Colour goes through the network as RGB floats in [0, 1]. Grayscale inputs (1, L, LA, I;16, I)
  are replicated to RGB and the output is converted back to one channel with ITU-R 601 luma, so a
  gray image stays gray. CMYK, YCbCr, palette etc. are converted to RGB by Pillow.
- 16-bit inputs (I;16 grayscale, 16-bit RGB/RGBA PNG) are read at full precision (v / 65535)
  and written as 8-bit, because the model was trained on 8-bit images and adds no real precision.
- Alpha (RGBA, LA, PA, palette transparency) is not fed to the network: it is upscaled separately
  with MATLAB-style bicubic (``imresize``) and re-attached, so transparency edges stay smooth.

Memory: a loaded image keeps the file's integer samples (1 byte each, 4 for 16-bit data); they
become floats one tile batch at a time (:func:`srseg.inference.tiling.super_resolve_bands`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_LUMA = (0.299, 0.587, 0.114)


class ImageError(ValueError):
    """An input image cannot be read or converted; the message names the file."""


@dataclass
class LoadedImage:
    """An image ready for the network: (3, H, W) colour and optional (1, H, W) alpha planes.

    Planes hold integers with ``white`` the value of full intensity (255, or 65535 for 16-bit
    files), or floats in [0, 1] with ``white=1``.
    """

    rgb: Tensor
    alpha: Tensor | None
    gray: bool
    white: float = 1.0

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.rgb.shape[2]), int(self.rgb.shape[1])

    @property
    def output_channels(self) -> int:
        """Channels of the output file: L, LA, RGB or RGBA."""
        return (1 if self.gray else 3) + (1 if self.alpha is not None else 0)


@dataclass(frozen=True)
class ImageHeader:
    """What the file header says, before any pixel is decoded."""

    width: int
    height: int
    bands: int


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (2..8) to an (H, W, C) array, as ImageOps.exif_transpose does."""
    ops: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: a.transpose(1, 0, 2)[:, ::-1],
        7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
        8: lambda a: a.transpose(1, 0, 2)[::-1],
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(array)) if op else array


def _planes(array: np.ndarray) -> Tensor:
    """(H, W, C) array -> (C, H, W) view, no copy (the planes are only ever read)."""
    with warnings.catch_warnings():  # Pillow's arrays are read-only; copying would double the memory
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array).permute(2, 0, 1)


def _split(planes: Tensor, colour: int, has_alpha: bool, white: float) -> LoadedImage:
    rgb = planes[:colour]
    if colour == 1:
        rgb = rgb.expand(3, -1, -1)  # a view: tiles are copied out of it one batch at a time
    alpha = planes[colour : colour + 1] if has_alpha else None
    return LoadedImage(rgb, alpha, gray=colour == 1, white=white)


def _is_png16_truecolour(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(26)
    return head.startswith(_PNG_SIGNATURE) and len(head) == 26 and head[24] == 16 and head[25] in (2, 6)


def _read_png16(path: Path, orientation: int) -> LoadedImage:
    """16-bit truecolour PNG at full precision (Pillow would truncate it to 8 bits)."""
    from torchvision.io import ImageReadMode, decode_png

    with warnings.catch_warnings():  # torchvision's image I/O is deprecated, still the only 16-bit PNG reader here
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = decode_png(torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8), ImageReadMode.UNCHANGED)
    array = _orient(decoded.permute(1, 2, 0).to(torch.int32).numpy(), orientation)
    return _split(_planes(np.ascontiguousarray(array)), 3, array.shape[2] == 4, 65535.0)


def _exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1) or 1)
    except Exception:  # malformed EXIF must not make a readable image unreadable
        return 1


def read_header(path: str | os.PathLike[str]) -> ImageHeader:
    """Size (in display orientation) and band count from the header; decodes no pixels."""
    path = Path(path)
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if _exif_orientation(opened) in (5, 6, 7, 8):
                width, height = height, width
            return ImageHeader(width, height, len(opened.getbands()))
    except UnidentifiedImageError:
        raise ImageError(f"{path}: cannot read image (not a recognised image format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc


def read_image(path: str | os.PathLike[str]) -> LoadedImage:
    """Read an image in display orientation following the module's conversion rules."""
    path = Path(path)
    try:
        with Image.open(path) as opened:  # the path, not a buffer: Pillow's messages then name the file
            opened.load()
            orientation = _exif_orientation(opened)
            if opened.format == "PNG" and _is_png16_truecolour(path):
                return _read_png16(path, orientation)
            image = ImageOps.exif_transpose(opened) if orientation != 1 else opened
            return _convert(image)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: cannot read image (not a recognised image format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc


def _convert(image: Image.Image) -> LoadedImage:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        values = np.clip(np.asarray(image, dtype=np.int32), 0, 65535)
        return _split(_planes(values[:, :, None]), 1, False, 65535.0)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("1", "La"):
        image = image.convert("L" if mode == "1" else "LA")
    elif mode in ("RGBa", "PA"):
        image = image.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.uint8).reshape(image.height, image.width, -1)
    colour = 1 if image.mode in _GRAY_MODES else 3
    return _split(_planes(array), colour, image.mode in ("LA", "RGBA"), 255.0)


def _to_uint8(x: Tensor) -> Tensor:
    return x.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def compose_band(rgb: Tensor, alpha: Tensor | None, gray: bool) -> np.ndarray:
    """(3, h, W) uint8 SR colour (+ (1, h, W) uint8 alpha) -> (h, W, C) uint8 rows of the output file."""
    planes = rgb
    if gray:
        weights = torch.tensor(_LUMA).view(3, 1, 1)
        planes = _to_uint8((rgb.float() * weights).sum(0, keepdim=True) / 255.0)
    if alpha is not None:
        planes = torch.cat([planes, alpha])
    return planes.permute(1, 2, 0).contiguous().numpy()
