"""Full-reference image quality metrics with the SR field's conventions, so our numbers compare
with published tables.

Convention (see design.md, "Conventions"):

- Inputs are 8-bit RGB. ``psnr_y``/``ssim_y`` are computed on the luma of BT.601 limited-range
  YCbCr as MATLAB's ``rgb2ycbcr``: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``.
- **Y is rounded to an integer (as MATLAB, whose rgb2ycbcr returns uint8 for uint8 input)
  before PSNR/SSIM.** Why: that is the convention of the MATLAB evaluation scripts behind the
  published tables, and it is the one that reproduces the project's golden values (bicubic x4:
  Set5 28.42 dB / 0.8104; skimage astronaut 26.841 / 0.8419, coffee 27.285 / 0.7636, chelsea
  31.461 / 0.8053). Leaving Y unrounded (BasicSR's ``to_y_channel``) gives +0.003..0.015 dB and
  +0.001 SSIM, outside those tolerances.
- ``crop_border`` pixels (default: the scale) are removed from every side before measuring.
- SSIM: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, mean over the 'valid'
  region only (no padding), as Wang et al.'s ``ssim_index.m`` and BasicSR.
- PSNR uses peak 255 on the (rounded) values in float64; identical images give ``inf``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from srseg.degrade.bicubic import modcrop
from srseg.imageio import list_images, load_rgb

_Y_COEFFS = np.array([65.481, 128.553, 24.966], dtype=np.float64) / 255.0
_SSIM_C1 = (0.01 * 255.0) ** 2
_SSIM_C2 = (0.03 * 255.0) ** 2
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5


def rgb_to_y(rgb: np.ndarray, *, quantize: bool = True) -> np.ndarray:
    """Luma (16..235) of an (..., 3) uint8 RGB array as float64, rounded like MATLAB's uint8 output.

    ``quantize=False`` keeps the fractional part (BasicSR's convention), for comparison only.
    """
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim < 1 or arr.shape[-1] != 3:
        raise ValueError(f"rgb_to_y: expected uint8 (..., 3) RGB, got {arr.dtype} {arr.shape}")
    y = 16.0 + arr.astype(np.float64) @ _Y_COEFFS
    return np.floor(y + 0.5) if quantize else y


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of two same-shape arrays; ``inf`` when identical."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"psnr: shapes differ {x.shape} vs {y.shape}")
    mse = float(np.mean((x - y) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / mse)


def _gaussian_window() -> np.ndarray:
    offsets = np.arange(_SSIM_WINDOW, dtype=np.float64) - (_SSIM_WINDOW - 1) / 2.0
    g = np.exp(-(offsets**2) / (2.0 * _SSIM_SIGMA**2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D float64 array with the 1-D window g along both axes."""
    n = len(g)
    rows = img.shape[0] - n + 1
    acc = g[0] * img[:rows]
    for k in range(1, n):
        acc = acc + g[k] * img[k : k + rows]
    cols = img.shape[1] - n + 1
    out = g[0] * acc[:, :cols]
    for k in range(1, n):
        out = out + g[k] * acc[:, k : k + cols]
    return out


SSIM_WINDOW = _SSIM_WINDOW
SSIM_MARGIN = _SSIM_WINDOW // 2  # pixels lost per border by the 'valid' SSIM map


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM map of two (H, W) arrays on the 0..255 scale over the 'valid' region (H-10, W-10).

    Its mean is the image SSIM; per-class SSIM averages it over a (shifted) class mask.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"ssim_map: expected two equal (H, W) arrays, got {x.shape} and {y.shape}")
    if min(x.shape) < _SSIM_WINDOW:
        raise ValueError(
            f"ssim_map: image {x.shape[1]}x{x.shape[0]} is smaller than the {_SSIM_WINDOW}x{_SSIM_WINDOW} window"
        )
    g = _gaussian_window()
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    sigma_xx = _filter_valid(x * x, g) - mu_xx
    sigma_yy = _filter_valid(y * y, g) - mu_yy
    sigma_xy = _filter_valid(x * y, g) - mu_xy
    num = (2.0 * mu_xy + _SSIM_C1) * (2.0 * sigma_xy + _SSIM_C2)
    den = (mu_xx + mu_yy + _SSIM_C1) * (sigma_xx + sigma_yy + _SSIM_C2)
    return num / den


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of (H, W) arrays on the 0..255 scale; (H, W, C) arrays give the mean over channels."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ {x.shape} vs {y.shape}")
    if x.ndim not in (2, 3):
        raise ValueError(f"ssim: expected (H, W) or (H, W, C), got shape {x.shape}")
    if x.shape[0] < _SSIM_WINDOW or x.shape[1] < _SSIM_WINDOW:
        raise ValueError(
            f"ssim: image {x.shape[0]}x{x.shape[1]} is smaller than the {_SSIM_WINDOW}x{_SSIM_WINDOW} window"
        )
    if x.ndim == 2:
        return float(np.mean(ssim_map(x, y)))
    return float(np.mean([np.mean(ssim_map(x[:, :, c], y[:, :, c])) for c in range(x.shape[2])]))


def image_metrics(pred: np.ndarray, ref: np.ndarray, crop_border: int) -> dict[str, float]:
    """``psnr_y``, ``ssim_y`` and ``psnr_rgb`` of two same-size (H, W, 3) uint8 images."""
    p, r = np.asarray(pred), np.asarray(ref)
    for name, arr in (("pred", p), ("ref", r)):
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"image_metrics: {name} must be (H, W, 3) uint8, got {arr.dtype} {arr.shape}")
    if p.shape != r.shape:
        raise ValueError(f"image_metrics: pred {p.shape} and ref {r.shape} differ in size")
    if crop_border < 0:
        raise ValueError(f"image_metrics: crop_border must be >= 0, got {crop_border}")
    if crop_border:
        if p.shape[0] <= 2 * crop_border or p.shape[1] <= 2 * crop_border:
            raise ValueError(f"image_metrics: crop_border {crop_border} leaves nothing of {p.shape[0]}x{p.shape[1]}")
        p = p[crop_border:-crop_border, crop_border:-crop_border]
        r = r[crop_border:-crop_border, crop_border:-crop_border]
    y_p, y_r = rgb_to_y(p), rgb_to_y(r)
    return {"psnr_y": psnr(y_p, y_r), "ssim_y": ssim(y_p, y_r), "psnr_rgb": psnr(p, r)}


def _pair_key(relative: str, scale: int) -> tuple[str, str]:
    """(exact key, key with a trailing 'x4' / '_x4' / '-x4' removed) for a relative image path."""
    stem = str(Path(relative).with_suffix(""))
    return stem, re.sub(rf"[_-]?x{scale}$", "", stem, flags=re.IGNORECASE)


def _pair_files(
    pred_files: list[str], ref_files: list[str], scale: int, pred_dir: Path, ref_dir: Path
) -> list[tuple[str, str]]:
    refs = {str(Path(f).with_suffix("")): f for f in ref_files}
    pairs: dict[str, str] = {}
    unmatched: list[str] = []
    for pred in pred_files:
        exact, loose = _pair_key(pred, scale)
        ref = refs.get(exact) or refs.get(loose)
        if ref is None:
            unmatched.append(pred)
            continue
        if ref in pairs:
            raise ValueError(f"evaluate: {pred_dir / pred} and {pred_dir / pairs[ref]} both pair with {ref_dir / ref}")
        pairs[ref] = pred
    if unmatched:
        raise ValueError(f"evaluate: no reference in {ref_dir} for predictions {unmatched[:5]}")
    missing = [f for f in ref_files if f not in pairs]
    if missing:
        raise ValueError(f"evaluate: no prediction in {pred_dir} for references {missing[:5]}")
    return [(pairs[ref], ref) for ref in ref_files]


def evaluate_folders(
    pred_dir: str | os.PathLike[str],
    ref_dir: str | os.PathLike[str],
    scale: int,
    crop_border: int | None = None,
) -> dict[str, Any]:
    """Metrics of every prediction against its reference, plus their means.

    Returns ``{"scale", "crop_border", "count", "mean": {metric: value}, "images": {name: {metric:
    value}}}`` where ``name`` is the reference's relative path without extension.

    Files pair by relative path without extension; a prediction may carry an ``x{scale}`` suffix
    (``babyx4.png`` pairs with ``baby.png``). Each reference is modcropped to a multiple of
    ``scale`` (top-left kept), the benchmark convention; a remaining size mismatch is an error
    naming both files. ``crop_border`` defaults to ``scale``.
    """
    pred_root, ref_root = Path(pred_dir), Path(ref_dir)
    border = scale if crop_border is None else crop_border
    pairs = _pair_files(list_images(pred_root), list_images(ref_root), scale, pred_root, ref_root)
    if not pairs:
        raise ValueError(f"evaluate: no images in {ref_root}")
    per_image: dict[str, dict[str, float]] = {}
    for pred_name, ref_name in pairs:
        pred = load_rgb(pred_root / pred_name)
        ref = modcrop(load_rgb(ref_root / ref_name), scale)
        if pred.shape != ref.shape:
            raise ValueError(
                f"evaluate: {pred_root / pred_name} is {pred.shape[1]}x{pred.shape[0]} but "
                f"{ref_root / ref_name} modcropped by {scale} is {ref.shape[1]}x{ref.shape[0]}"
            )
        per_image[str(Path(ref_name).with_suffix(""))] = image_metrics(pred, ref, border)
    names = ("psnr_y", "ssim_y", "psnr_rgb")
    mean = {name: float(np.mean([m[name] for m in per_image.values()])) for name in names}
    return {"scale": scale, "crop_border": border, "count": len(per_image), "mean": mean, "images": per_image}
