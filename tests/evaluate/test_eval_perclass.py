"""Per-class metrics on the real COCO-Stuff sample labels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from srseg.data.classmap import get_class_map
from srseg.degrade.bicubic import imresize
from srseg.evaluate.perclass import (
    PerClassAccumulator,
    class_pixel_counts,
    image_class_stats,
    pooled_psnr,
    ssim_map,
)
from srseg.imageio import load_rgb
from srseg.metrics import image_metrics, rgb_to_y, ssim

SCALE = 4


def _labels(cocostuff_sample: Path) -> list[Path]:
    paths = sorted((cocostuff_sample / "stuffthingmaps" / "val2017").glob("*.png"))
    assert paths, f"no labels under {cocostuff_sample}"
    return paths


def _pair(cocostuff_sample: Path, stem: str, class_map: str = "fine171") -> tuple[np.ndarray, np.ndarray]:
    """(HR (H, W, 3) uint8, training-id label (H, W)), modcropped to the scale."""
    hr = load_rgb(cocostuff_sample / "images" / "val2017" / f"{stem}.jpg")
    with Image.open(cocostuff_sample / "stuffthingmaps" / "val2017" / f"{stem}.png") as img:
        raw = np.asarray(img, dtype=np.uint8)
    h, w = raw.shape[0] - raw.shape[0] % SCALE, raw.shape[1] - raw.shape[1] % SCALE
    return np.ascontiguousarray(hr[:h, :w]), get_class_map(class_map).apply(raw[:h, :w])


def _bicubic(hr: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(hr).permute(2, 0, 1)
    return imresize(imresize(t, 1.0 / SCALE), float(SCALE)).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("name", ["fine171", "coarse8"])
def test_class_counts_sum_to_the_labelled_pixels(cocostuff_sample: Path, name: str) -> None:
    cmap = get_class_map(name)
    for path in _labels(cocostuff_sample):
        with Image.open(path) as img:
            raw = np.asarray(img, dtype=np.uint8)
        label = cmap.apply(raw)
        counts = class_pixel_counts(label, cmap.num_classes)
        assert counts.shape == (cmap.num_classes,)
        assert counts.sum() == np.count_nonzero(label != 255) > 0
        assert counts.sum() <= label.size


def test_ssim_map_mean_equals_the_metrics_module(cocostuff_sample: Path) -> None:
    hr, _ = _pair(cocostuff_sample, _labels(cocostuff_sample)[0].stem)
    sr = _bicubic(hr)
    y_sr, y_hr = rgb_to_y(sr[4:-4, 4:-4]), rgb_to_y(hr[4:-4, 4:-4])
    smap = ssim_map(y_sr, y_hr)
    assert smap.shape == (y_hr.shape[0] - 10, y_hr.shape[1] - 10)
    assert float(smap.mean()) == pytest.approx(ssim(y_sr, y_hr), abs=1e-12)


def test_identical_images_give_inf_psnr_and_unit_ssim(cocostuff_sample: Path) -> None:
    hr, label = _pair(cocostuff_sample, _labels(cocostuff_sample)[1].stem)
    cmap = get_class_map("fine171")
    stats = image_class_stats(hr, hr, label, cmap.num_classes, SCALE)
    present = stats.count > 0
    assert present.any()
    psnr = pooled_psnr(stats.sse_y, stats.count)
    assert np.all(np.isinf(psnr[present])) and np.all(np.isnan(psnr[~present]))
    ssim_present = stats.ssim_count > 0
    assert np.allclose(stats.ssim_sum[ssim_present] / stats.ssim_count[ssim_present], 1.0)
    acc = PerClassAccumulator(cmap.names, ["a", "b"])
    acc.add(0, {"a": stats, "b": stats})
    rows = acc.table(compare=("a", "b"), n_boot=50)
    assert rows and all(r["a.psnr_y"] == math.inf for r in rows)
    assert all(math.isnan(r["psnr_y_gain"]) for r in rows)  # inf - inf: reported, not a crash


def test_class_restricted_blur_lowers_only_that_class(cocostuff_sample: Path) -> None:
    hr, label = _pair(cocostuff_sample, _labels(cocostuff_sample)[0].stem)
    cmap = get_class_map("fine171")
    base = _bicubic(hr)
    counts = class_pixel_counts(label[SCALE:-SCALE, SCALE:-SCALE], cmap.num_classes)
    target = int(np.argmax(counts))
    blurred = np.stack([gaussian_filter(base[:, :, c].astype(np.float64), sigma=2.5) for c in range(3)], axis=2)
    degraded = base.copy()
    mask = label == target
    degraded[mask] = np.clip(np.round(blurred), 0, 255).astype(np.uint8)[mask]

    before = image_class_stats(base, hr, label, cmap.num_classes, SCALE)
    after = image_class_stats(degraded, hr, label, cmap.num_classes, SCALE)
    psnr_before = pooled_psnr(before.sse_y, before.count)
    psnr_after = pooled_psnr(after.sse_y, after.count)
    assert psnr_after[target] < psnr_before[target] - 0.5
    others = (before.count > 0) & (np.arange(cmap.num_classes) != target)
    assert others.any()
    np.testing.assert_array_equal(psnr_after[others], psnr_before[others])
    np.testing.assert_array_equal(after.count, before.count)
    # The whole-image metric drops too, by less than the class's own drop.
    drop = image_metrics(base, hr, SCALE)["psnr_y"] - image_metrics(degraded, hr, SCALE)["psnr_y"]
    assert 0.0 < drop < psnr_before[target] - psnr_after[target]

    acc = PerClassAccumulator(cmap.names, ["degraded", "base"])
    acc.add(0, {"degraded": after, "base": before})
    rows = {r["class_id"]: r for r in acc.table(compare=("degraded", "base"), n_boot=50)}
    assert rows[target]["psnr_y_gain"] < -0.5
    assert rows[target]["class"] == cmap.names[target]
    assert all(rows[c]["psnr_y_gain"] == 0.0 for c in np.flatnonzero(others))


def test_pooling_weights_classes_by_pixels_and_aligns_lpips_maps() -> None:
    names = ("sky", "grass")
    label = np.zeros((40, 40), dtype=np.uint8)
    label[:, 30:] = 1
    label[:2] = 255  # ignored rows
    ref = np.full((40, 40, 3), 120, dtype=np.uint8)
    pred = ref.copy()
    pred[label == 1] += 10  # error only on grass
    lpips_map = np.ones((36, 36))  # cropped by border 2
    stats = image_class_stats(pred, ref, label, 2, 2, lpips_map)
    np.testing.assert_array_equal(stats.count, class_pixel_counts(label[2:-2, 2:-2], 2))
    np.testing.assert_allclose(stats.lpips_sum, stats.count)
    acc = PerClassAccumulator(names, ["m"])
    acc.add(0, {"m": stats})
    acc.add(1, {"m": image_class_stats(ref, ref, label, 2, 2, lpips_map)})
    rows = {r["class"]: r for r in acc.table()}
    assert rows["sky"]["m.psnr_y"] == math.inf
    grass_pixels = 2 * stats.count[1]
    assert rows["grass"]["pixels"] == grass_pixels and rows["grass"]["images"] == 2
    y_err = float(rgb_to_y(pred[label == 1][:1])[0] - rgb_to_y(ref[label == 1][:1])[0])
    expected = 10 * math.log10(255.0**2 / (y_err**2 * stats.count[1] / grass_pixels))
    assert rows["grass"]["m.psnr_y"] == pytest.approx(expected)
    assert rows["grass"]["m.lpips"] == pytest.approx(1.0)


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(ValueError, match="ids"):
        class_pixel_counts(np.array([[0, 7]], dtype=np.uint8), 3)
    with pytest.raises(ValueError, match="share H, W"):
        image_class_stats(
            np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20, 3), np.uint8), np.zeros((10, 10), np.uint8), 2, 0
        )
    acc = PerClassAccumulator(("a",), ["x", "y"])
    with pytest.raises(ValueError, match="compare"):
        acc.table(compare=("x", "nope"))


def test_a_class_seen_in_fewer_than_three_images_gets_no_interval() -> None:
    """Gain CIs come from resampling images: with 2 images there is no honest interval ("n/a"),
    not a zero-width one; from 3 images on there is one."""
    rng = np.random.default_rng(0)
    names = ("sky", "grass")
    acc = PerClassAccumulator(names, ["a", "b"])
    for index in range(4):
        label = np.zeros((40, 40), dtype=np.uint8)
        if index < 2:
            label[:, 20:] = 1  # grass only in the first two images; sky in all four
        ref = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
        noisy = np.clip(ref.astype(int) + rng.integers(-9, 10, size=ref.shape), 0, 255).astype(np.uint8)
        noisier = np.clip(ref.astype(int) + rng.integers(-20, 21, size=ref.shape), 0, 255).astype(np.uint8)
        acc.add(
            index, {"a": image_class_stats(noisy, ref, label, 2, 2), "b": image_class_stats(noisier, ref, label, 2, 2)}
        )
    rows = {r["class"]: r for r in acc.table(compare=("a", "b"), n_boot=200)}
    assert rows["grass"]["images"] == 2 and rows["grass"]["psnr_y_gain"] > 0
    assert math.isnan(rows["grass"]["psnr_y_gain_ci_lo"]) and math.isnan(rows["grass"]["psnr_y_gain_ci_hi"])
    sky = rows["sky"]
    assert sky["images"] == 4 and sky["psnr_y_gain_ci_lo"] < sky["psnr_y_gain"] < sky["psnr_y_gain_ci_hi"]
