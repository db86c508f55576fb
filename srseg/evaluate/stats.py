"""Uncertainty for evaluation numbers: percentile bootstrap CIs over images and paired differences.

Why over images: the test images are the sample we generalise from, so resampling them (with
replacement) is what says whether a 0.05 dB gain is more than which images happened to be drawn.
Paired differences resample the *same* image indices for both methods, which removes the large
between-image variance that an unpaired comparison would carry.

Conventions:

- Percentile bootstrap, ``confidence`` = 0.95 by default, ``numpy.random.default_rng(seed)``:
  the same inputs and seed always give the same interval.
- NaN values (a metric that could not be computed for an image) are dropped first; paired
  differences drop the images where either side is NaN.
- ``n_boot = 0`` disables resampling: the interval is ``(nan, nan)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

_CHUNK = 256  # bootstrap replicates drawn at once; bounds memory at _CHUNK * n indices


@dataclass(frozen=True)
class Summary:
    """Mean of a per-image metric with its bootstrap CI over images."""

    mean: float
    ci: tuple[float, float]
    n: int


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` per image: mean, bootstrap CI and the fraction of images where ``a`` is better."""

    mean: float
    ci: tuple[float, float]
    frac_improved: float
    n: int


def _as_vector(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of numbers, got shape {arr.shape}")
    return arr


def _check(n_boot: int, confidence: float) -> None:
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ValueError(f"n_boot must be an integer >= 0, got {n_boot!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")


def bootstrap_indices(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of (k, n) resampling indices, ``n_boot`` rows in all, from one seeded generator."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_boot:
        k = min(_CHUNK, n_boot - done)
        yield rng.integers(0, n, size=(k, n))
        done += k


def bootstrap_statistic(
    n: int,
    statistic: Callable[[np.ndarray], np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile CI of ``statistic(indices)`` where ``indices`` is a (k, n) batch of resamples.

    ``statistic`` maps each row of indices to one number (returns shape (k,)); this lets pooled
    statistics (e.g. per-class PSNR from summed squared errors) use the same machinery as means.
    """
    _check(n_boot, confidence)
    if n == 0 or n_boot == 0:
        return (float("nan"), float("nan"))
    replicates = np.concatenate([np.asarray(statistic(idx), dtype=np.float64) for idx in bootstrap_indices(n, n_boot, seed)])
    return _percentiles(replicates, confidence)


def _percentiles(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100.0 * (1.0 - confidence) / 2.0
    replicates = replicates[~np.isnan(replicates)]
    if replicates.size == 0:
        return (float("nan"), float("nan"))
    # Linear interpolation would compute inf - inf = nan when a replicate is infinite (PSNR of
    # identical images); nearest-rank percentiles never do arithmetic on the values.
    method = "linear" if np.all(np.isfinite(replicates)) else "nearest"
    lo, hi = np.percentile(replicates, [tail, 100.0 - tail], method=method)
    return (float(lo), float(hi))


def _resampled_means(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    if np.all(np.isfinite(values)):
        return values[idx].mean(axis=1)
    with np.errstate(invalid="ignore"):
        return values[idx].mean(axis=1)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (NaNs dropped)."""
    arr = _as_vector(values, "bootstrap_ci")
    arr = arr[~np.isnan(arr)]
    return bootstrap_statistic(arr.size, lambda idx: _resampled_means(arr, idx), n_boot, seed, confidence)


def summarize(
    values: Sequence[float] | np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Summary:
    """Mean (NaNs dropped) with its bootstrap CI."""
    arr = _as_vector(values, "summarize")
    arr = arr[~np.isnan(arr)]
    mean = float(np.mean(arr)) if arr.size else float("nan")
    return Summary(mean, bootstrap_ci(arr, n_boot, seed, confidence), int(arr.size))


def paired_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    higher_is_better: bool = True,
) -> PairedDifference:
    """Per-image ``a - b``: mean, bootstrap CI of the mean, fraction of images where ``a`` wins.

    ``higher_is_better=False`` (LPIPS, NIQE) counts an image as improved when ``a < b``. Ties
    are not improvements. Images where either value is NaN are dropped.
    """
    x, y = _as_vector(a, "paired_difference a"), _as_vector(b, "paired_difference b")
    if x.shape != y.shape:
        raise ValueError(f"paired_difference: a has {x.size} values, b has {y.size}; pairs need equal lengths")
    keep = ~(np.isnan(x) | np.isnan(y))
    with np.errstate(invalid="ignore"):
        diff = x[keep] - y[keep]  # inf - inf = nan for two identical reconstructions
    diff = diff[~np.isnan(diff)]
    if diff.size == 0:
        return PairedDifference(float("nan"), (float("nan"), float("nan")), float("nan"), 0)
    improved = diff > 0 if higher_is_better else diff < 0
    return PairedDifference(
        mean=float(np.mean(diff)),
        ci=bootstrap_ci(diff, n_boot, seed, confidence),
        frac_improved=float(np.mean(improved)),
        n=int(diff.size),
    )
