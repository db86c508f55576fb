"""Uncertainty for evaluation numbers: CIs over images for means, paired differences, pooled stats.

Why over images: the test images are the sample we generalise from, so the interval must say
whether a 0.05 dB gain is more than which images happened to be drawn. Paired differences use
the *same* images for both methods, which removes the large between-image variance that an
unpaired comparison would carry.

Which interval, and why (evaluation sets here are often small: 5 report images in the demo):

- Means of per-image values (:func:`mean_ci`, used by :func:`summarize` and
  :func:`paired_difference`): Student's t interval, ``mean +- t(n-1) * sd / sqrt(n)``. Exact for
  normal data and close to nominal for the symmetric, light-tailed per-image PSNR/SSIM values,
  already at n = 8, where the percentile bootstrap covers only ~89% for a nominal 95% (it
  resamples with the plug-in variance, too small by (n-1)/n, and misses the t tails;
  ``tests/evaluate/test_eval_stats.py`` simulates both). When a value is infinite (PSNR of two
  identical images) the t interval is undefined and the percentile bootstrap (nearest rank) is
  used instead.
- Pooled statistics that are not means of per-image values (per-class PSNR from summed squared
  errors, :func:`bca_statistic`): bias-corrected and accelerated (BCa) bootstrap over images,
  which corrects the percentile interval's bias and skew (Efron 1987).
- Fewer than :data:`MIN_CI_IMAGES` images: no interval at all, ``(nan, nan)`` (shown as "n/a"),
  never a zero-width one that claims certainty.
- Several training seeds per method (:mod:`srseg.seeds`): a value per (seed, image), and the
  interval must cover both the luck of the seeds and the choice of images (:func:`seed_summary`,
  :func:`two_way_bootstrap`). Seeds and images are *crossed* (every seed's model is scored on the
  same images), so each bootstrap replicate resamples the seeds, then the images once for all of
  them (Owen's "pigeonhole" bootstrap). Resampling images independently per seed would treat an
  image's difficulty as independent across seeds and shrink the interval by up to sqrt(seeds).
  With one seed the interval covers images only (the t interval above) and says so. With few seeds
  the percentile interval is optimistic (3 seeds: ``tests/evaluate/test_eval_stats.py`` measures
  its coverage); it is still the honest direction compared with pooling the seeds' images.

Conventions: ``confidence`` = 0.95 by default; bootstrap draws come from
``numpy.random.default_rng(seed)``, so the same inputs and seed always give the same interval;
NaN values (a metric that could not be computed for an image) are dropped first, and paired
differences drop the images where either side is NaN; ``n_boot = 0`` disables resampling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

MIN_CI_IMAGES = 3
_CHUNK = 256  # bootstrap replicates drawn at once; bounds memory at _CHUNK * n indices


@dataclass(frozen=True)
class Summary:
    """Mean of a per-image metric with its CI over images (see :func:`mean_ci`)."""

    mean: float
    ci: tuple[float, float]
    n: int


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` per image: mean, CI (:func:`mean_ci`), the fraction of images where ``a`` is
    better and the worst image's difference (the smallest ``a - b``, or the largest for
    lower-is-better metrics)."""

    mean: float
    ci: tuple[float, float]
    frac_improved: float
    n: int
    worst: float = float("nan")


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
    replicates = np.concatenate(
        [np.asarray(statistic(idx), dtype=np.float64) for idx in bootstrap_indices(n, n_boot, seed)]
    )
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


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student's t interval of the mean of finite ``values``; ``(nan, nan)`` below MIN_CI_IMAGES."""
    _check(0, confidence)
    arr = _as_vector(values, "t_interval")
    if arr.size < MIN_CI_IMAGES:
        return (float("nan"), float("nan"))
    if not np.all(np.isfinite(arr)):
        raise ValueError("t_interval: values must be finite (use mean_ci, which falls back to the bootstrap)")
    mean = float(arr.mean())
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2.0, arr.size - 1)) * float(arr.std(ddof=1)) / np.sqrt(arr.size)
    return (mean - half, mean + half)


def mean_ci(
    values: Sequence[float] | np.ndarray, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """CI of the mean (NaNs dropped): t interval, or the percentile bootstrap when a value is infinite."""
    _check(n_boot, confidence)
    arr = _as_vector(values, "mean_ci")
    arr = arr[~np.isnan(arr)]
    if arr.size < MIN_CI_IMAGES:
        return (float("nan"), float("nan"))
    if np.all(np.isfinite(arr)):
        return t_interval(arr, confidence)
    return bootstrap_ci(arr, n_boot, seed, confidence)


def bca_statistic(
    n: int,
    statistic: Callable[[np.ndarray], np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """BCa bootstrap CI of a statistic of ``n`` images (``statistic`` as in :func:`bootstrap_statistic`).

    ``(nan, nan)`` below MIN_CI_IMAGES images or without resampling. Infinite replicates (a class
    reconstructed exactly) make the bias correction undefined: the percentile interval is used.
    """
    _check(n_boot, confidence)
    if n < MIN_CI_IMAGES or n_boot == 0:
        return (float("nan"), float("nan"))
    estimate = float(np.asarray(statistic(np.arange(n)[None, :]), dtype=np.float64)[0])
    replicates = np.concatenate(
        [np.asarray(statistic(idx), dtype=np.float64) for idx in bootstrap_indices(n, n_boot, seed)]
    )
    replicates = replicates[~np.isnan(replicates)]
    if replicates.size == 0 or not math.isfinite(estimate):
        return (float("nan"), float("nan"))
    if not np.all(np.isfinite(replicates)):
        return _percentiles(replicates, confidence)
    below = (np.sum(replicates < estimate) + 0.5 * np.sum(replicates == estimate)) / replicates.size
    below = min(max(below, 1.0 / (replicates.size + 1)), replicates.size / (replicates.size + 1))
    z0 = float(scipy_stats.norm.ppf(below))
    leave_one_out = np.array([np.delete(np.arange(n), i) for i in range(n)])
    jack = np.asarray(statistic(leave_one_out), dtype=np.float64)
    jack = jack[np.isfinite(jack)]
    spread = jack.mean() - jack if jack.size else np.zeros(1)
    denom = 6.0 * float(np.sum(spread**2)) ** 1.5
    accel = float(np.sum(spread**3)) / denom if denom > 0 else 0.0
    tail = (1.0 - confidence) / 2.0
    levels = []
    for z in scipy_stats.norm.ppf([tail, 1.0 - tail]):
        shifted = z0 + (z0 + z) / (1.0 - accel * (z0 + z))
        levels.append(100.0 * float(scipy_stats.norm.cdf(shifted)))
    lo, hi = np.percentile(replicates, levels)
    return (float(lo), float(hi))


def summarize(
    values: Sequence[float] | np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Summary:
    """Mean (NaNs dropped) with its CI (:func:`mean_ci`)."""
    arr = _as_vector(values, "summarize")
    arr = arr[~np.isnan(arr)]
    mean = float(np.mean(arr)) if arr.size else float("nan")
    return Summary(mean, mean_ci(arr, n_boot, seed, confidence), int(arr.size))


def paired_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    higher_is_better: bool = True,
) -> PairedDifference:
    """Per-image ``a - b``: mean, CI of the mean (:func:`mean_ci`), fraction of images where ``a``
    wins, and the worst image's difference.

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
        ci=mean_ci(diff, n_boot, seed, confidence),
        frac_improved=float(np.mean(improved)),
        n=int(diff.size),
        worst=float(diff.min() if higher_is_better else diff.max()),
    )


SEEDS_AND_IMAGES = "seeds and images"
IMAGES_ONLY = "images only (1 seed)"


@dataclass(frozen=True)
class SeedSummary:
    """Mean over seeds of per-seed means over images, with a CI over seeds and images.

    ``per_seed``: each seed's mean over the images; ``covers``: what the interval accounts for
    (:data:`SEEDS_AND_IMAGES`, or :data:`IMAGES_ONLY` with one seed); ``n_images``: the images
    every seed has a finite value for.
    """

    mean: float
    ci: tuple[float, float]
    per_seed: tuple[float, ...]
    n_images: int
    covers: str

    @property
    def n_seeds(self) -> int:
        return len(self.per_seed)


def two_way_bootstrap(
    n_seeds: int,
    n_images: int,
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile CI of ``statistic(seed_idx, image_idx)`` over crossed seed x image resamples.

    Each replicate draws ``n_seeds`` seeds and ``n_images`` images with replacement, the images
    once for all seeds (see the module docstring); ``statistic`` gets (k, n_seeds) and (k,
    n_images) index batches and returns (k,) values. ``(nan, nan)`` with fewer than 2 seeds or
    MIN_CI_IMAGES images, or without resampling.
    """
    _check(n_boot, confidence)
    if n_seeds < 2 or n_images < MIN_CI_IMAGES or n_boot == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    replicates = []
    done = 0
    while done < n_boot:
        k = min(_CHUNK, n_boot - done)
        seeds_idx = rng.integers(0, n_seeds, size=(k, n_seeds))
        images_idx = rng.integers(0, n_images, size=(k, n_images))
        replicates.append(np.asarray(statistic(seeds_idx, images_idx), dtype=np.float64))
        done += k
    return _percentiles(np.concatenate(replicates), confidence)


def seed_summary(
    values: Sequence[Sequence[float]] | np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> SeedSummary:
    """Summary of a (seeds, images) array: the grand mean and its CI (see :class:`SeedSummary`).

    Images with a NaN (or, with several seeds, a non-finite value) for any seed are dropped. One
    seed: :func:`mean_ci` over the images (t interval); several: :func:`two_way_bootstrap` of the
    grand mean.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(
            f"seed_summary: expected a (seeds, images) array with at least one seed, got shape {arr.shape}"
        )
    if arr.shape[0] == 1:
        row = arr[0][~np.isnan(arr[0])]
        with np.errstate(invalid="ignore"):
            mean = float(row.mean()) if row.size else float("nan")
        return SeedSummary(mean, mean_ci(row, n_boot, seed, confidence), (mean,), int(row.size), IMAGES_ONLY)
    arr = arr[:, np.all(np.isfinite(arr), axis=0)]
    if arr.shape[1] == 0:
        nan = float("nan")
        return SeedSummary(nan, (nan, nan), tuple(nan for _ in range(arr.shape[0])), 0, SEEDS_AND_IMAGES)
    per_seed = arr.mean(axis=1)

    def grand_mean(seeds_idx: np.ndarray, images_idx: np.ndarray) -> np.ndarray:
        return arr[seeds_idx[:, :, None], images_idx[:, None, :]].mean(axis=(1, 2))

    ci = two_way_bootstrap(arr.shape[0], arr.shape[1], grand_mean, n_boot, seed, confidence)
    return SeedSummary(
        float(per_seed.mean()), ci, tuple(float(v) for v in per_seed), int(arr.shape[1]), SEEDS_AND_IMAGES
    )
