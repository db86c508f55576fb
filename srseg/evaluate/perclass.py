"""Per-class quality: metrics restricted to the pixels of each COCO-Stuff class (or coarse group).

Why: the paper's claim is that semantics help *texture*; a gain concentrated in grass, water or
foliage and absent on flat walls is the signature to look for, and a whole-image mean hides it.

Per image and class ``c`` (label = training ids on the HR grid, 255 ignored, cropped by the same
border as the whole-image metrics) we keep sums, so classes pool over images by pixel count:

- ``count``: pixels of ``c``; ``sse_y``: sum of squared Y errors over them (Y as in
  :mod:`srseg.metrics`, rounded BT.601 luma). Pooled PSNR = 10 log10(255^2 / (sum sse / sum count));
  identical pixels give ``inf``, a class with no pixels ``nan``.
- ``ssim_sum`` / ``ssim_count``: the SSIM *map* (Gaussian 11x11, sigma 1.5, 'valid' region as in
  :mod:`srseg.metrics`) summed over the map pixels whose window centre lies in ``c``. The map is
  (H-10, W-10) and its pixel (i, j) is centred on image pixel (i+5, j+5), so the label is cropped by
  5 px to align. Pooled SSIM = sum ssim_sum / sum ssim_count.
- ``lpips_sum``: the LPIPS spatial map summed over the pixels of ``c`` (pooled = / sum count).

CIs of a class gain are BCa bootstrap intervals over the images that contain the class (the
pooled values are recomputed per resample), so a class seen in three images gets an honest, wide
interval; a class seen in fewer than three images gets none ("n/a"), see
:mod:`srseg.evaluate.stats`. Over several training seeds (:meth:`PerClassAccumulator.seed_gains`)
the class gain is the mean over seeds of each seed's pooled gain, and its interval resamples the
seeds, then the images that contain the class (two-way bootstrap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from srseg.evaluate.stats import IMAGES_ONLY, SEEDS_AND_IMAGES, bca_statistic, two_way_bootstrap
from srseg.metrics import SSIM_MARGIN, rgb_to_y, ssim_map

IGNORE_INDEX = 255


def crop(array: np.ndarray, border: int) -> np.ndarray:
    """Remove ``border`` pixels from every side of the first two axes."""
    if border < 0:
        raise ValueError(f"crop border must be >= 0, got {border}")
    return array[border:-border, border:-border] if border else array


def _sums(label: np.ndarray, num_classes: int, weights: np.ndarray | None = None) -> np.ndarray:
    flat = label.reshape(-1).astype(np.int64)
    w = None if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    return np.bincount(flat, weights=w, minlength=256)[:num_classes].astype(np.float64)


def class_pixel_counts(label: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes,) pixel counts of a training-id label map (255 = ignore is not counted)."""
    arr = np.asarray(label)
    bad = arr[(arr >= num_classes) & (arr != IGNORE_INDEX)]
    if bad.size:
        raise ValueError(f"label holds ids {sorted(set(bad.tolist()))[:5]} >= num_classes {num_classes} (not 255)")
    return _sums(arr, num_classes).astype(np.int64)


@dataclass
class ImageClassStats:
    """Per-class sums for one image and one method (arrays of length num_classes)."""

    count: np.ndarray
    sse_y: np.ndarray
    ssim_sum: np.ndarray
    ssim_count: np.ndarray
    lpips_sum: np.ndarray | None = None


def image_class_stats(
    pred: np.ndarray,
    ref: np.ndarray,
    label: np.ndarray,
    num_classes: int,
    crop_border: int,
    lpips_map: np.ndarray | None = None,
) -> ImageClassStats:
    """Per-class sums of one (H, W, 3) uint8 prediction against its reference.

    ``label`` is the full-size (H, W) training-id map; ``lpips_map`` (optional) is the LPIPS spatial
    map of the *border-cropped* images, shape (H - 2 b, W - 2 b).
    """
    if pred.shape != ref.shape or pred.shape[:2] != label.shape:
        raise ValueError(f"per-class: pred {pred.shape}, ref {ref.shape} and label {label.shape} must share H, W")
    lab = crop(np.asarray(label), crop_border)
    y_p, y_r = rgb_to_y(crop(pred, crop_border)), rgb_to_y(crop(ref, crop_border))
    count = class_pixel_counts(lab, num_classes).astype(np.float64)
    sse = _sums(lab, num_classes, (y_p - y_r) ** 2)
    inner = lab[SSIM_MARGIN:-SSIM_MARGIN, SSIM_MARGIN:-SSIM_MARGIN]
    smap = ssim_map(y_p, y_r)
    ssim_sum = _sums(inner, num_classes, smap)
    ssim_count = _sums(inner, num_classes)
    lp = None
    if lpips_map is not None:
        lmap = np.asarray(lpips_map, dtype=np.float64)
        if lmap.shape != lab.shape:
            raise ValueError(f"per-class: LPIPS map {lmap.shape} does not match the cropped label {lab.shape}")
        lp = _sums(lab, num_classes, lmap)
    return ImageClassStats(count, sse, ssim_sum, ssim_count, lp)


def pooled_psnr(sse: np.ndarray | float, count: np.ndarray | float) -> np.ndarray:
    """PSNR (peak 255) of pooled squared errors: inf where sse == 0 < count, nan where count == 0."""
    s, c = np.asarray(sse, dtype=np.float64), np.asarray(count, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mse = s / c
        out = 10.0 * np.log10(255.0 * 255.0 / mse)
    return np.where(c > 0, out, np.nan)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


@dataclass
class _ClassRecords:
    """Per-image rows for one class: image index, count, and per method the sums."""

    images: list[int] = field(default_factory=list)
    count: list[float] = field(default_factory=list)
    ssim_count: list[float] = field(default_factory=list)
    sse: dict[str, list[float]] = field(default_factory=dict)
    ssim: dict[str, list[float]] = field(default_factory=dict)
    lpips: dict[str, list[float]] = field(default_factory=dict)


class PerClassAccumulator:
    """Collects per-image class sums for several methods and pools them into class tables.

    Memory is proportional to (images x classes present per image), not images x all classes.
    """

    def __init__(self, class_names: Sequence[str], methods: Sequence[str]) -> None:
        self.class_names = tuple(class_names)
        self.methods = tuple(methods)
        self._records: dict[int, _ClassRecords] = {}
        self.has_lpips = True

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def add(self, image_index: int, stats: dict[str, ImageClassStats]) -> None:
        """Record one image's stats for every method (same label, so the counts agree)."""
        if set(stats) != set(self.methods):
            raise ValueError(f"per-class: stats for {sorted(stats)} but methods are {sorted(self.methods)}")
        first = stats[self.methods[0]]
        if any(s.lpips_sum is None for s in stats.values()):
            self.has_lpips = False
        for c in np.flatnonzero(first.count > 0):
            rec = self._records.setdefault(int(c), _ClassRecords())
            rec.images.append(image_index)
            rec.count.append(float(first.count[c]))
            rec.ssim_count.append(float(first.ssim_count[c]))
            for m in self.methods:
                s = stats[m]
                rec.sse.setdefault(m, []).append(float(s.sse_y[c]))
                rec.ssim.setdefault(m, []).append(float(s.ssim_sum[c]))
                rec.lpips.setdefault(m, []).append(float(s.lpips_sum[c]) if s.lpips_sum is not None else math.nan)

    def classes(self) -> list[int]:
        return sorted(self._records)

    def records(self, class_id: int) -> _ClassRecords:
        """The per-image sums of one class (for statistics across models, e.g. over seeds)."""
        return self._records[class_id]

    def pixel_counts(self) -> dict[int, int]:
        return {c: int(sum(r.count)) for c, r in self._records.items()}

    def pixel_counts_by_image(self, class_id: int) -> dict[int, int]:
        """Pixels of ``class_id`` in each image that contains it."""
        rec = self._records.get(class_id)
        return {} if rec is None else {i: int(c) for i, c in zip(rec.images, rec.count)}

    def image_gains(self, class_id: int, a: str, b: str) -> dict[int, float]:
        """Per image containing ``class_id``: class PSNR_Y of ``a`` minus that of ``b``."""
        rec = self._records.get(class_id)
        if rec is None:
            return {}
        count = np.asarray(rec.count)
        gain = pooled_psnr(np.asarray(rec.sse[a]), count) - pooled_psnr(np.asarray(rec.sse[b]), count)
        return dict(zip(rec.images, gain.tolist()))

    def table(
        self,
        compare: tuple[str, str] | None = None,
        n_boot: int = 1000,
        seed: int = 0,
        confidence: float = 0.95,
    ) -> list[dict[str, object]]:
        """One row per class seen: pooled metrics per method, and ``compare[0] - compare[1]`` gains.

        Keys: ``class_id``, ``class``, ``pixels``, ``images``, ``<method>.psnr_y``,
        ``<method>.ssim_y``, ``<method>.lpips`` (if LPIPS maps were given) and with ``compare``:
        ``psnr_y_gain`` (+ ``psnr_y_gain_ci_lo/hi``), ``ssim_y_gain``, ``lpips_gain`` (a - b; for
        LPIPS a negative gain is an improvement).
        """
        if compare is not None:
            unknown = [m for m in compare if m not in self.methods]
            if unknown:
                raise ValueError(f"per-class compare names {unknown} are not evaluated methods {list(self.methods)}")
        rows: list[dict[str, object]] = []
        for c in self.classes():
            rec = self._records[c]
            count = np.asarray(rec.count)
            scount = np.asarray(rec.ssim_count)
            row: dict[str, object] = {
                "class_id": c,
                "class": self.class_names[c],
                "pixels": int(count.sum()),
                "images": len(rec.images),
            }
            values: dict[str, dict[str, float]] = {}
            for m in self.methods:
                sse, ssim = np.asarray(rec.sse[m]), np.asarray(rec.ssim[m])
                v = {
                    "psnr_y": float(pooled_psnr(sse.sum(), count.sum())),
                    "ssim_y": float(_ratio(ssim.sum(), scount.sum())),
                }
                if self.has_lpips:
                    v["lpips"] = float(_ratio(np.asarray(rec.lpips[m]).sum(), count.sum()))
                values[m] = v
                row.update({f"{m}.{k}": val for k, val in v.items()})
            if compare is not None:
                a, b = compare
                with np.errstate(invalid="ignore"):
                    for k in values[a]:
                        row[f"{k}_gain"] = values[a][k] - values[b][k]
                sa, sb = np.asarray(rec.sse[a]), np.asarray(rec.sse[b])

                def stat(idx: np.ndarray) -> np.ndarray:
                    n = count[idx].sum(axis=1)
                    with np.errstate(invalid="ignore"):
                        return pooled_psnr(sa[idx].sum(axis=1), n) - pooled_psnr(sb[idx].sum(axis=1), n)

                lo, hi = bca_statistic(len(rec.images), stat, n_boot, seed, confidence)
                row["psnr_y_gain_ci_lo"], row["psnr_y_gain_ci_hi"] = lo, hi
            rows.append(row)
        return rows


def _seed_gain(
    sse_a: np.ndarray, sse_b: np.ndarray, count: np.ndarray, seeds_idx: np.ndarray, images_idx: np.ndarray
) -> np.ndarray:
    """Mean over the resampled seeds of the pooled PSNR gain over the resampled images: (k,) values.

    ``sse_a``/``sse_b``: (seeds, images) squared-error sums; ``count``: (images,) class pixels.
    """
    n = count[images_idx].sum(axis=1)[:, None]  # (k, 1)
    picked_a = sse_a[seeds_idx[:, :, None], images_idx[:, None, :]].sum(axis=2)  # (k, seeds drawn)
    picked_b = sse_b[seeds_idx[:, :, None], images_idx[:, None, :]].sum(axis=2)
    with np.errstate(invalid="ignore"):
        return (pooled_psnr(picked_a, n) - pooled_psnr(picked_b, n)).mean(axis=1)


def seed_gain_rows(
    acc: PerClassAccumulator,
    a: Sequence[str],
    b: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[dict[str, object]]:
    """Per class: PSNR_Y gain of method ``a`` over ``b``, each given as its models in seed order.

    Seeds pair by position (the same seed trains both arms); an arm with one model is compared
    with every seed of the other. Keys: ``class_id``, ``class``, ``pixels``, ``images``,
    ``seeds``, ``psnr_y_gain`` (mean over seeds), ``psnr_y_gain_ci_lo/hi``, ``ci_covers`` and
    ``psnr_y_gain_per_seed`` (space-separated). One seed: BCa over images, as :meth:`table`.
    """
    n_seeds = max(len(a), len(b))
    if min(len(a), len(b)) not in (1, n_seeds):
        raise ValueError(f"per-class seeds: {list(a)} and {list(b)} pair neither seed by seed nor one against all")
    a_models = list(a) * (n_seeds if len(a) == 1 else 1)
    b_models = list(b) * (n_seeds if len(b) == 1 else 1)
    rows: list[dict[str, object]] = []
    for c in acc.classes():
        rec = acc.records(c)
        count = np.asarray(rec.count)
        sse_a = np.asarray([rec.sse[m] for m in a_models])
        sse_b = np.asarray([rec.sse[m] for m in b_models])
        everything = np.arange(len(rec.images))[None, :]
        per_seed = [
            float(_seed_gain(sse_a[s : s + 1], sse_b[s : s + 1], count, np.zeros((1, 1), dtype=int), everything)[0])
            for s in range(n_seeds)
        ]
        if n_seeds == 1:
            lo, hi = bca_statistic(
                len(rec.images),
                lambda idx: _seed_gain(sse_a, sse_b, count, np.zeros((len(idx), 1), dtype=int), idx),
                n_boot,
                seed,
                confidence,
            )
        else:
            lo, hi = two_way_bootstrap(
                n_seeds,
                len(rec.images),
                lambda s_idx, i_idx: _seed_gain(sse_a, sse_b, count, s_idx, i_idx),
                n_boot,
                seed,
                confidence,
            )
        rows.append(
            {
                "class_id": c,
                "class": acc.class_names[c],
                "pixels": int(count.sum()),
                "images": len(rec.images),
                "seeds": n_seeds,
                "psnr_y_gain": float(np.mean(per_seed)),
                "psnr_y_gain_ci_lo": lo,
                "psnr_y_gain_ci_hi": hi,
                "ci_covers": IMAGES_ONLY if n_seeds == 1 else SEEDS_AND_IMAGES,
                "psnr_y_gain_per_seed": " ".join(f"{g:.4f}" for g in per_seed),
            }
        )
    return rows
