"""CIs (t, percentile and BCa bootstrap) and paired differences on inputs whose answer is known,
and the coverage they reach at the small sample sizes evaluation really has."""

from __future__ import annotations

import math

import numpy as np
import pytest

from srseg.evaluate.stats import (
    IMAGES_ONLY,
    MIN_CI_IMAGES,
    SEEDS_AND_IMAGES,
    bca_statistic,
    bootstrap_ci,
    bootstrap_statistic,
    mean_ci,
    paired_difference,
    seed_summary,
    summarize,
    t_interval,
    two_way_bootstrap,
)


def test_ci_of_a_constant_is_degenerate() -> None:
    lo, hi = bootstrap_ci(np.full(40, 28.5), n_boot=500, seed=3)
    assert lo == hi == pytest.approx(28.5)


def test_ci_of_a_known_sample_covers_the_mean_with_the_expected_width() -> None:
    rng = np.random.default_rng(12)
    sample = rng.normal(10.0, 2.0, size=400)
    lo, hi = bootstrap_ci(sample, n_boot=2000, seed=0)
    assert lo < sample.mean() < hi
    assert lo < 10.0 < hi
    expected = 2 * 1.96 * sample.std(ddof=1) / math.sqrt(sample.size)  # normal-theory width
    assert hi - lo == pytest.approx(expected, rel=0.15)


def test_ci_is_deterministic_with_the_seed() -> None:
    sample = np.random.default_rng(1).exponential(size=50)
    assert bootstrap_ci(sample, 300, seed=7) == bootstrap_ci(sample, 300, seed=7)
    assert bootstrap_ci(sample, 300, seed=7) != bootstrap_ci(sample, 300, seed=8)


def test_chunked_resampling_matches_a_single_chunk() -> None:
    """More replicates than one chunk: still one seeded stream, so the interval is stable."""
    sample = np.arange(30, dtype=float)
    a = bootstrap_ci(sample, 1000, seed=5)
    b = bootstrap_ci(sample, 1000, seed=5)
    assert a == b and a[0] < 14.5 < a[1]


def test_paired_difference_ci_excludes_zero_for_a_planted_shift() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(27.0, 3.0, size=60)  # large between-image spread
    a = base + 0.2 + rng.normal(0.0, 0.05, size=60)  # small but consistent gain
    result = paired_difference(a, base, n_boot=1000, seed=0)
    assert result.ci[0] > 0.0
    assert result.mean == pytest.approx(0.2, abs=0.03)
    assert result.frac_improved > 0.95 and result.n == 60
    # Lower-is-better metrics count a decrease as an improvement.
    flipped = paired_difference(a, base, n_boot=100, seed=0, higher_is_better=False)
    assert flipped.frac_improved < 0.05


def test_paired_difference_without_a_shift_covers_zero() -> None:
    rng = np.random.default_rng(4)
    base = rng.normal(0.8, 0.05, size=80)
    noisy = base + rng.normal(0.0, 0.01, size=80)
    lo, hi = paired_difference(noisy, base, 1000, seed=0).ci
    assert lo < 0.0 < hi


def test_nans_are_dropped_and_edge_cases_are_explicit() -> None:
    s = summarize([1.0, float("nan"), 3.0], n_boot=100)
    assert s.mean == 2.0 and s.n == 2
    assert all(math.isnan(v) for v in bootstrap_ci([1.0, 2.0], n_boot=0))
    assert all(math.isnan(v) for v in bootstrap_ci([], n_boot=10))
    inf = summarize([math.inf, math.inf, math.inf], n_boot=50)  # infinite values: bootstrap fallback
    assert inf.mean == math.inf and inf.ci == (math.inf, math.inf)
    same = paired_difference([math.inf, 30.0], [math.inf, 29.0], n_boot=50)
    assert same.n == 1 and same.mean == 1.0  # identical reconstructions (inf - inf) are dropped
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1.0, 2.0], [1.0], n_boot=10)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci([1.0], n_boot=-1)


def test_bootstrap_statistic_supports_pooled_statistics() -> None:
    sse = np.array([10.0, 40.0, 90.0])
    count = np.array([10.0, 10.0, 10.0])
    lo, hi = bootstrap_statistic(3, lambda idx: sse[idx].sum(axis=1) / count[idx].sum(axis=1), 500, seed=0)
    assert 1.0 <= lo <= hi <= 9.0


def test_fewer_than_three_images_get_no_interval() -> None:
    assert MIN_CI_IMAGES == 3
    assert all(math.isnan(v) for v in summarize([28.0, 29.0], n_boot=100).ci)
    assert all(math.isnan(v) for v in paired_difference([1.0, 2.0], [0.0, 0.5], n_boot=100).ci)
    assert all(math.isnan(v) for v in bca_statistic(2, lambda idx: idx.mean(axis=1).astype(float), 200, seed=0))
    lo, hi = summarize([28.0, 29.0, 30.0], n_boot=100).ci
    assert lo < 29.0 < hi


def test_t_interval_matches_the_textbook_formula() -> None:
    values = np.array([0.8, 1.1, 0.9, 1.4, 0.7, 1.0, 1.2, 0.9])
    lo, hi = t_interval(values)
    half = 2.3646242510102993 * values.std(ddof=1) / math.sqrt(values.size)  # t(0.975, df=7)
    assert (lo, hi) == pytest.approx((values.mean() - half, values.mean() + half))
    assert mean_ci(values) == (lo, hi)
    with pytest.raises(ValueError, match="finite"):
        t_interval([1.0, math.inf, 2.0])


def _coverage(interval, n: int, trials: int, seed: int) -> float:
    """Share of ``trials`` normal samples of size ``n`` (true mean 0.5) whose interval holds 0.5."""
    rng = np.random.default_rng(seed)
    hits = 0
    for trial in range(trials):
        sample = rng.normal(0.5, 0.3, size=n)
        lo, hi = interval(sample, trial)
        hits += lo <= 0.5 <= hi
    return hits / trials


def test_small_sample_coverage_at_n8_is_close_to_nominal() -> None:
    """n = 8, nominal 95%: the interval the evaluation and the gate use (t) covers >= 93%; the
    percentile bootstrap it replaced covers ~89% here, which is why it was replaced."""
    t_cover = _coverage(lambda x, _: mean_ci(x), n=8, trials=4000, seed=1)
    assert t_cover >= 0.93, t_cover
    boot_cover = _coverage(lambda x, seed: bootstrap_ci(x, n_boot=400, seed=seed), n=8, trials=600, seed=2)
    assert boot_cover < 0.93, boot_cover


def test_bca_corrects_the_bias_of_a_skewed_pooled_statistic() -> None:
    """A ratio of sums (like pooled per-class MSE): BCa covers the plug-in value, percentile order holds."""
    rng = np.random.default_rng(3)
    sse, count = rng.gamma(2.0, 50.0, size=12), rng.integers(100, 1000, size=12).astype(float)

    def ratio(idx: np.ndarray) -> np.ndarray:
        return sse[idx].sum(axis=1) / count[idx].sum(axis=1)

    estimate = sse.sum() / count.sum()
    lo, hi = bca_statistic(12, ratio, n_boot=2000, seed=0)
    assert lo < estimate < hi
    assert bca_statistic(12, ratio, n_boot=2000, seed=0) == (lo, hi)  # seeded
    plo, phi = bootstrap_statistic(12, ratio, 2000, seed=0)
    assert abs((hi - lo) - (phi - plo)) < 0.5 * (phi - plo)  # same scale as the percentile interval


# ---------------------------------------------------------------------------- over seeds and images


def test_one_seed_is_the_t_interval_over_images_and_says_so() -> None:
    values = np.random.default_rng(4).normal(0.3, 0.2, size=(1, 9))
    summary = seed_summary(values)
    assert summary.covers == IMAGES_ONLY and summary.n_seeds == 1 and summary.n_images == 9
    assert summary.mean == pytest.approx(values.mean()) and summary.ci == pytest.approx(mean_ci(values[0]))


def test_several_seeds_report_per_seed_means_and_drop_images_a_seed_lacks() -> None:
    values = np.array([[1.0, 2.0, 3.0, np.nan, 5.0], [2.0, 3.0, 4.0, 9.0, 6.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    summary = seed_summary(values, n_boot=500, seed=1)
    assert summary.covers == SEEDS_AND_IMAGES and summary.n_images == 4  # image 3 has no value for seed 0
    assert summary.per_seed == pytest.approx((2.75, 3.75, 1.75))
    assert summary.mean == pytest.approx(np.mean(summary.per_seed))
    lo, hi = summary.ci
    assert lo < summary.mean < hi
    assert seed_summary(values, n_boot=500, seed=1).ci == summary.ci  # seeded: the same interval again
    assert np.isnan(two_way_bootstrap(1, 10, lambda s, i: np.zeros(len(s)))).all()  # one seed: no two-way interval


def _crossed(rng: np.random.Generator, seeds: int, images: int) -> np.ndarray:
    """A difference per (seed, image): true mean 0.5, a seed effect, an image effect shared by all
    seeds (the same images are scored for every seed) and noise."""
    return 0.5 + rng.normal(0, 0.2, (seeds, 1)) + rng.normal(0, 0.5, (1, images)) + rng.normal(0, 0.1, (seeds, images))


def test_crossed_bootstrap_covers_far_better_than_ignoring_the_seeds_or_nesting_the_images() -> None:
    """3 seeds x 20 images: resampling seeds, then the images once for all seeds, covers ~88% of the
    time (nominal 95%: the percentile interval is optimistic with 3 seeds, as the module says).
    Treating every (seed, image) value as an independent image, or resampling images
    independently per seed (a nested design this is not), covers far less."""
    rng = np.random.default_rng(11)
    trials, seeds, images = 400, 3, 20
    hits = {"crossed": 0, "pooled": 0, "nested": 0}
    for trial in range(trials):
        d = _crossed(rng, seeds, images)
        lo, hi = seed_summary(d, n_boot=300, seed=trial).ci
        hits["crossed"] += lo <= 0.5 <= hi
        lo, hi = mean_ci(d.ravel())
        hits["pooled"] += lo <= 0.5 <= hi
        inner = np.random.default_rng(trial)

        def nested(seed_idx: np.ndarray, _: np.ndarray, d: np.ndarray = d) -> np.ndarray:
            image_idx = inner.integers(0, images, size=(len(seed_idx), seeds, images))
            return d[seed_idx[:, :, None], image_idx].mean(axis=(1, 2))

        lo, hi = two_way_bootstrap(seeds, images, nested, n_boot=300, seed=trial)
        hits["nested"] += lo <= 0.5 <= hi
    coverage = {k: v / trials for k, v in hits.items()}
    assert coverage["crossed"] >= 0.83, coverage
    assert coverage["pooled"] <= 0.70 and coverage["nested"] <= 0.80, coverage
