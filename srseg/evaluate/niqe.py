"""NIQE (Mittal, Soundararajan and Bovik, IEEE SPL 2013): a no-reference naturalness score.

Why: GAN-trained SR is judged on how natural its textures look, which a no-reference statistic of
natural-scene regularity measures without assuming the HR image is the only right answer (lower
is better). Implemented from the paper and its reference MATLAB release's conventions:

- Gray image: MATLAB ``rgb2gray`` of the 8-bit RGB (0.2989 R + 0.5870 G + 0.1140 B, rounded),
  as float64 on 0..255, cropped to a multiple of the patch size (top-left kept).
- MSCN coefficients ``(I - mu) / (sigma + 1)`` with a 7x7 Gaussian window (sigma 7/6,
  replicated borders) for the local mean and standard deviation.
- Patches of ``patch_size`` (96) px; per patch 18 features: the GGD fit of the MSCN values
  (shape, variance) and, for the four neighbour products (horizontal, vertical, two diagonals,
  circularly shifted within the patch), the AGGD fit (shape, mean, left and right variances).
- Two scales: the image, and its MATLAB-bicubic half (patches of ``patch_size / 2``): 36 features.
- A pristine model is a multivariate Gaussian (``mu``, ``cov``) fitted to the features of the
  *sharpest* patches of pristine images: patches whose mean local sigma exceeds
  ``sharpness_threshold`` (0.75) times the image's sharpest patch.
- NIQE = sqrt((mu_p - mu_t)^T pinv((cov_p + cov_t) / 2) (mu_p - mu_t)), with (mu_t, cov_t) the
  same Gaussian fitted to all patches of the test image.

Parameters live in an ``.npz`` with ``mu`` (36,) and ``cov`` (36, 36) (and optionally
``patch_size``); :func:`fit_niqe_params` / :func:`save_niqe_params` make one from real images.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import correlate1d
from scipy.special import gamma as gamma_fn

from srseg.degrade.bicubic import imresize
from srseg.fileio import atomic_open

logger = logging.getLogger(__name__)

NUM_FEATURES = 36
DEFAULT_PATCH_SIZE = 96
DEFAULT_SHARPNESS_THRESHOLD = 0.75
_GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
_SHAPES = np.arange(0.2, 10.0 + 5e-4, 0.001)  # candidate shape parameters, as the reference code
_GGD_RATIO = gamma_fn(1.0 / _SHAPES) * gamma_fn(3.0 / _SHAPES) / gamma_fn(2.0 / _SHAPES) ** 2
_AGGD_RATIO = gamma_fn(2.0 / _SHAPES) ** 2 / (gamma_fn(1.0 / _SHAPES) * gamma_fn(3.0 / _SHAPES))
_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))


class NiqeParamsError(ValueError):
    """A NIQE parameter file is missing or does not hold a valid (mu, cov) model."""


@dataclass(frozen=True)
class NiqeModel:
    """The pristine multivariate Gaussian and the patch size it was fitted with."""

    mu: np.ndarray  # (36,)
    cov: np.ndarray  # (36, 36)
    patch_size: int = DEFAULT_PATCH_SIZE


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2gray`` of an (H, W, 3) uint8 image, as float64 0..255 (rounded like uint8 output)."""
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"niqe: expected an (H, W, 3) uint8 image, got {arr.dtype} {arr.shape}")
    return np.floor(arr.astype(np.float64) @ _GRAY + 0.5)


def _gaussian_window() -> np.ndarray:
    offsets = np.arange(7, dtype=np.float64) - 3.0
    g = np.exp(-(offsets**2) / (2.0 * (7.0 / 6.0) ** 2))
    return g / g.sum()


def mscn(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(MSCN coefficients, local sigma) of a float64 image; borders replicated."""
    g = _gaussian_window()

    def blur(a: np.ndarray) -> np.ndarray:
        return correlate1d(correlate1d(a, g, axis=0, mode="nearest"), g, axis=1, mode="nearest")

    mu = blur(gray)
    sigma = np.sqrt(np.abs(blur(gray * gray) - mu * mu))
    return (gray - mu) / (sigma + 1.0), sigma


def _blocks(image: np.ndarray, size: int) -> np.ndarray:
    """(P, size, size) non-overlapping blocks in row-major order; image dims are multiples of size."""
    rows, cols = image.shape[0] // size, image.shape[1] // size
    return image[: rows * size, : cols * size].reshape(rows, size, cols, size).swapaxes(1, 2).reshape(-1, size, size)


def _ggd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (P, n): GGD shape and variance by moment matching."""
    sigma_sq = np.mean(x * x, axis=1)
    e_abs = np.mean(np.abs(x), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = sigma_sq / (e_abs * e_abs)
    shape = _SHAPES[np.argmin(np.abs(rho[:, None] - _GGD_RATIO[None, :]), axis=1)]
    return np.where(np.isfinite(rho), shape, np.nan), sigma_sq


def _aggd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of (P, n): AGGD shape, left std and right std by moment matching."""
    neg, pos = x < 0, x > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.sqrt(np.sum(x * x * neg, axis=1) / np.sum(neg, axis=1))
        right = np.sqrt(np.sum(x * x * pos, axis=1) / np.sum(pos, axis=1))
        gamma_hat = left / right
        r_hat = np.mean(np.abs(x), axis=1) ** 2 / np.mean(x * x, axis=1)
        r_norm = r_hat * (gamma_hat**3 + 1.0) * (gamma_hat + 1.0) / (gamma_hat**2 + 1.0) ** 2
    shape = _SHAPES[np.argmin((_AGGD_RATIO[None, :] - r_norm[:, None]) ** 2, axis=1)]
    return np.where(np.isfinite(r_norm), shape, np.nan), left, right


def _patch_features(blocks: np.ndarray) -> np.ndarray:
    """(P, 18) NIQE features of (P, s, s) MSCN blocks."""
    flat = blocks.reshape(blocks.shape[0], -1)
    shape, variance = _ggd(flat)
    feats = [shape, variance]
    for dy, dx in _SHIFTS:
        pair = (blocks * np.roll(blocks, (dy, dx), axis=(1, 2))).reshape(blocks.shape[0], -1)
        alpha, left, right = _aggd(pair)
        with np.errstate(invalid="ignore"):
            const = np.sqrt(gamma_fn(1.0 / alpha)) / np.sqrt(gamma_fn(3.0 / alpha))
            mean = (right - left) * (gamma_fn(2.0 / alpha) / gamma_fn(1.0 / alpha)) * const
        feats += [alpha, mean, left * left, right * right]
    return np.stack(feats, axis=1)


def niqe_features(rgb: np.ndarray, patch_size: int = DEFAULT_PATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(features (P, 36), sharpness (P,)) of every ``patch_size`` patch of an 8-bit RGB image."""
    if patch_size < 4 or patch_size % 2:
        raise ValueError(f"niqe: patch_size must be an even integer >= 4, got {patch_size!r}")
    gray = to_gray(rgb)
    rows, cols = gray.shape[0] // patch_size, gray.shape[1] // patch_size
    if rows == 0 or cols == 0:
        raise ValueError(
            f"niqe: image {gray.shape[1]}x{gray.shape[0]} is smaller than one {patch_size}x{patch_size} patch"
        )
    gray = gray[: rows * patch_size, : cols * patch_size]
    coeffs, sigma = mscn(gray)
    sharpness = _blocks(sigma, patch_size).mean(axis=(1, 2))
    first = _patch_features(_blocks(coeffs, patch_size))
    half = imresize(torch.from_numpy(gray)[None], scale=0.5).numpy()[0]
    second = _patch_features(_blocks(mscn(half)[0], patch_size // 2))
    return np.concatenate([first, second], axis=1), sharpness


def _gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of (P, 36) features; rows with a NaN dropped, as MATLAB's nancov."""
    rows = features[~np.isnan(features).any(axis=1)]
    if rows.shape[0] == 0:
        raise ValueError("niqe: no patch produced finite features (flat image?)")
    mu = rows.mean(axis=0)
    cov = np.cov(rows, rowvar=False) if rows.shape[0] > 1 else np.zeros((rows.shape[1], rows.shape[1]))
    return mu, cov


def fit_niqe_params(
    images: Iterable[np.ndarray],
    patch_size: int = DEFAULT_PATCH_SIZE,
    sharpness_threshold: float = DEFAULT_SHARPNESS_THRESHOLD,
) -> NiqeModel:
    """Fit the pristine model to the sharpest patches of 8-bit RGB ``images``."""
    if not 0.0 <= sharpness_threshold <= 1.0:
        raise ValueError(f"sharpness_threshold must lie in [0, 1], got {sharpness_threshold!r}")
    selected: list[np.ndarray] = []
    count = 0
    for image in images:
        features, sharpness = niqe_features(image, patch_size)
        selected.append(features[sharpness > sharpness_threshold * sharpness.max()])
        count += 1
    if not selected:
        raise ValueError("fit_niqe_params: no images given")
    stacked = np.concatenate(selected)
    if stacked.shape[0] <= NUM_FEATURES:
        logger.warning(
            "NIQE model fitted on only %d patches (< %d features): covariance is singular",
            stacked.shape[0],
            NUM_FEATURES,
        )
    mu, cov = _gaussian(stacked)
    logger.info("NIQE model fitted on %d sharp patches from %d images", stacked.shape[0], count)
    return NiqeModel(mu, cov, patch_size)


def save_niqe_params(path: str | os.PathLike[str], model: NiqeModel) -> Path:
    """Write ``mu``, ``cov`` and ``patch_size`` to an ``.npz`` file atomically."""
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        np.savez(handle, mu=model.mu, cov=model.cov, patch_size=np.int64(model.patch_size))
    return path


def load_niqe_params(path: str | os.PathLike[str]) -> NiqeModel:
    """Read and validate a pristine model ``.npz`` (``mu`` (36,), ``cov`` (36, 36), optional ``patch_size``)."""
    path = Path(path)
    if not path.is_file():
        raise NiqeParamsError(f"NIQE parameter file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except (OSError, ValueError) as exc:
        raise NiqeParamsError(f"{path}: not a readable .npz file ({exc})") from exc
    missing = [key for key in ("mu", "cov") if key not in arrays]
    if missing:
        raise NiqeParamsError(f"{path}: missing arrays {missing} (has {sorted(arrays)})")
    mu, cov = arrays["mu"].astype(np.float64).reshape(-1), arrays["cov"].astype(np.float64)
    if mu.shape != (NUM_FEATURES,) or cov.shape != (NUM_FEATURES, NUM_FEATURES):
        raise NiqeParamsError(
            f"{path}: mu must be ({NUM_FEATURES},) and cov ({NUM_FEATURES}, {NUM_FEATURES}), got {mu.shape} and "
            f"{cov.shape}"
        )
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(cov))):
        raise NiqeParamsError(f"{path}: mu/cov hold non-finite values")
    patch_size = int(arrays["patch_size"]) if "patch_size" in arrays else DEFAULT_PATCH_SIZE
    return NiqeModel(mu, cov, patch_size)


def niqe(rgb: np.ndarray, model: NiqeModel, crop_border: int = 0) -> float:
    """NIQE of an 8-bit RGB image against a pristine model (lower = more natural)."""
    image = np.asarray(rgb)
    if crop_border:
        image = image[crop_border:-crop_border, crop_border:-crop_border]
    features, _ = niqe_features(image, model.patch_size)
    mu, cov = _gaussian(features)
    diff = model.mu - mu
    value = float(diff @ np.linalg.pinv((model.cov + cov) / 2.0) @ diff)
    return math.sqrt(max(value, 0.0))
