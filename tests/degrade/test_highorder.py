"""Real-ESRGAN-style degradation: reproducible, right shapes and ranges, validated parameters, and
each step measured: kernels sum to 1 with the configured widths, noise at the configured level,
JPEG blockier at lower quality."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srseg.degrade.highorder import (
    KERNEL_TYPES,
    HighOrderParams,
    _add_noise,
    _Draw,
    _jpeg,
    _random_kernel,
    degrade_high_order,
    sinc_kernel,
)


def _hr(n: int = 2, h: int = 64, w: int = 48) -> torch.Tensor:
    # A smooth image plus texture, so blur/noise/JPEG all change something.
    g = torch.Generator().manual_seed(123)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([xx, yy, (xx + yy) / 2]).unsqueeze(0).repeat(n, 1, 1, 1)
    return (0.8 * base + 0.2 * torch.rand(n, 3, h, w, generator=g)).clamp(0, 1)


def _run(
    seed: int, hr: torch.Tensor | None = None, params: HighOrderParams | None = None, scale: int = 4
) -> torch.Tensor:
    return degrade_high_order(
        _hr() if hr is None else hr, scale, params or HighOrderParams(), torch.Generator().manual_seed(seed)
    )


def test_same_seed_same_output_other_seed_differs() -> None:
    a, b, c = _run(7), _run(7), _run(8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("seed", range(6))
def test_shape_range_and_8bit_levels(seed: int) -> None:
    out = _run(seed)
    assert out.shape == (2, 3, 16, 12)
    assert out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    levels = out * 255
    assert torch.equal(levels, levels.round())


def test_scale_two_odd_sizes_and_float64() -> None:
    hr = _hr(1, 37, 50).double()
    out = degrade_high_order(hr, 2, HighOrderParams(), torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 18, 25) and out.dtype == torch.float64


def test_tiny_images_do_not_break_padding() -> None:
    out = degrade_high_order(
        _hr(1, 8, 8), 4, HighOrderParams(resize_prob=(0.0, 1.0, 0.0)), torch.Generator().manual_seed(3)
    )
    assert out.shape == (1, 3, 2, 2)


@pytest.mark.parametrize("kind", KERNEL_TYPES)
def test_every_kernel_type_runs(kind: str) -> None:
    params = HighOrderParams(kernel_list=(kind,), kernel_prob=(1.0,), sinc_prob=0.0, sinc_prob2=0.0)
    out = _run(1, _hr(1), params)
    assert out.shape == (1, 3, 16, 12) and torch.isfinite(out).all()


def test_clean_settings_stay_close_to_input() -> None:
    """With blur, noise, resize and JPEG all minimal, the result is near a plain area downscale."""
    params = HighOrderParams(
        blur_prob=0.0,
        second_blur_prob=0.0,
        resize_prob=(0.0, 0.0, 1.0),
        resize_prob2=(0.0, 0.0, 1.0),
        resize_modes=("area",),
        noise_range=(0.0, 0.0),
        noise_range2=(0.0, 0.0),
        gaussian_noise_prob=1.0,
        gaussian_noise_prob2=1.0,
        jpeg_range=(100, 100),
        jpeg_range2=(100, 100),
        final_sinc_prob=0.0,
    )
    hr = _hr(1)
    out = _run(0, hr, params)
    expected = torch.nn.functional.interpolate(hr, size=(16, 12), mode="area")
    assert (out - expected).abs().mean() < 0.02


def test_sinc_kernel_normalised_and_symmetric() -> None:
    k = sinc_kernel(21, math.pi / 2)
    assert k.shape == (21, 21)
    assert float(k.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(k, k.flip(0))
    torch.testing.assert_close(k, k.T)
    assert int(k.argmax()) == 10 * 21 + 10


def test_params_validation_names_the_field() -> None:
    bad = {
        "kernel_range": (8, 21),
        "kernel_prob": (0.5, 0.5),
        "kernel_list": ("box",),
        "sinc_prob": 1.5,
        "blur_sigma": (3.0, 0.2),
        "resize_prob": (0.5, 0.5, 0.5),
        "resize_range": (1.2, 1.5),
        "resize_modes": ("lanczos",),
        "noise_range": (-1.0, 3.0),
        "jpeg_range": (30.5, 95),
        "jpeg_range2": (0, 95),
        "final_sinc_prob": -0.1,
    }
    for name, value in bad.items():
        with pytest.raises(ValueError, match=f"HighOrderParams.{name}"):
            HighOrderParams(**{name: value})


def test_params_lists_to_tuples_json_and_config_mapping() -> None:
    params = HighOrderParams(jpeg_range=[40, 90], blur_sigma=[0.5, 2.0])  # type: ignore[arg-type]
    assert params.jpeg_range == (40, 90) and hash(params)
    assert json.loads(json.dumps(params.to_dict()))["jpeg_range"] == [40, 90]
    mapped = HighOrderParams.from_config({"jpeg_quality": [50, 60], "noise_sigma": (1.0, 5.0), "blur_prob": 0.5})
    assert mapped.jpeg_range == mapped.jpeg_range2 == (50, 60)
    assert mapped.noise_range == (1.0, 5.0) and mapped.blur_prob == 0.5
    assert mapped.noise_range2 == HighOrderParams().noise_range2


def test_input_checks() -> None:
    with pytest.raises(ValueError, match="N, 3, H, W"):
        degrade_high_order(torch.rand(3, 16, 16), 4)
    with pytest.raises(TypeError, match="float"):
        degrade_high_order(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), 4)
    with pytest.raises(ValueError, match="scale"):
        degrade_high_order(torch.rand(1, 3, 16, 16), 0)


def test_default_generator_is_deterministic_and_global_rng_untouched() -> None:
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    a = degrade_high_order(_hr(1), 4)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(a, degrade_high_order(_hr(1), 4))


# --- behaviour of each step, measured -----------------------------------------------------------
# The steps are checked one at a time (private helpers, same code path as degrade_high_order):
# through the whole chain a blur or a noise level cannot be measured back.


def _draw(seed: int) -> _Draw:
    return _Draw(torch.Generator().manual_seed(seed))


def _kernel_moments(kernel: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(sum, 2x2 covariance about the centre) of a kernel."""
    size = kernel.shape[-1]
    axis = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    k = kernel.double()
    cov = torch.tensor(
        [
            [float((k * xx * xx).sum()), float((k * xx * yy).sum())],
            [float((k * xx * yy).sum()), float((k * yy * yy).sum())],
        ]
    )
    return float(k.sum()), cov


@pytest.mark.parametrize("kind", KERNEL_TYPES)
def test_kernels_sum_to_one(kind: str) -> None:
    params = HighOrderParams(kernel_list=(kind,), kernel_prob=(1.0,), sinc_prob=0.0)
    draw = _draw(0)
    for _ in range(50):
        kernel = _random_kernel(draw, params, second=False)
        assert kernel.shape[0] % 2 == 1 and params.kernel_range[0] <= kernel.shape[0] <= params.kernel_range[1]
        assert float(kernel.sum()) == pytest.approx(1.0, abs=1e-9)
        assert float(kernel.min()) >= 0.0


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.0])  # below ~1 px the sampled Gaussian is narrower
def test_gaussian_kernel_width_is_the_configured_sigma(sigma: float) -> None:
    params = HighOrderParams(
        kernel_list=("iso",), kernel_prob=(1.0,), sinc_prob=0.0, kernel_range=(21, 21), blur_sigma=(sigma, sigma)
    )
    total, cov = _kernel_moments(_random_kernel(_draw(1), params, second=False))
    assert total == pytest.approx(1.0, abs=1e-9)
    assert math.sqrt(cov[0, 0]) == pytest.approx(sigma, rel=0.03) and math.sqrt(cov[1, 1]) == pytest.approx(
        sigma, rel=0.03
    )
    assert abs(float(cov[0, 1])) < 1e-9


def test_kernel_widths_follow_the_sigma_range_in_both_passes() -> None:
    """Anisotropic kernels: both principal widths inside the configured range, and the draws
    spread over it; the second pass uses its own (narrower) range."""
    for second, (low, high) in ((False, (0.6, 2.5)), (True, (0.8, 1.4))):
        params = HighOrderParams(
            kernel_list=("aniso",),
            kernel_prob=(1.0,),
            sinc_prob=0.0,
            sinc_prob2=0.0,
            kernel_range=(21, 21),
            blur_sigma=(0.6, 2.5),
            blur_sigma2=(0.8, 1.4),
        )
        draw = _draw(2)
        widths = []
        for _ in range(60):
            total, cov = _kernel_moments(_random_kernel(draw, params, second=second))
            assert total == pytest.approx(1.0, abs=1e-9)
            widths += torch.linalg.eigvalsh(cov).sqrt().tolist()
        assert low * 0.97 <= min(widths) and max(widths) <= high * 1.03, (second, min(widths), max(widths))
        assert min(widths) < low + 0.25 * (high - low) and max(widths) > high - 0.25 * (high - low)


def test_wider_sigma_blurs_more() -> None:
    hr = _hr(1)
    energies = []
    for sigma in (0.5, 1.5, 3.0):
        params = HighOrderParams(kernel_list=("iso",), kernel_prob=(1.0,), sinc_prob=0.0, blur_sigma=(sigma, sigma))
        kernel = _random_kernel(_draw(0), params, second=False)
        blurred = torch.nn.functional.conv2d(
            hr[:, :1].double(), kernel.view(1, 1, *kernel.shape), padding=kernel.shape[-1] // 2
        )
        energies.append(float(blurred[..., 12:-12, 12:-12].diff(dim=-1).abs().mean()))
    assert energies[0] > energies[1] > energies[2]


@pytest.mark.parametrize("sigma", [5.0, 15.0, 30.0])
def test_gaussian_noise_level_on_a_flat_image(sigma: float) -> None:
    flat = torch.full((1, 3, 128, 128), 0.5)
    params = HighOrderParams(gaussian_noise_prob=1.0, gray_noise_prob=0.0, noise_range=(sigma, sigma))
    noisy = _add_noise(flat, _draw(3), params, second=False)
    measured = float((noisy - flat).std()) * 255
    assert measured == pytest.approx(sigma, rel=0.05)
    assert float((noisy - flat).mean()) * 255 == pytest.approx(0.0, abs=0.5)


def test_noise_levels_follow_the_configured_range_and_gray_noise_is_gray() -> None:
    flat = torch.full((1, 3, 96, 96), 0.5)
    low, high = 4.0, 20.0
    params = HighOrderParams(gaussian_noise_prob=1.0, gray_noise_prob=0.5, noise_range=(low, high))
    draw = _draw(4)
    levels, gray_seen, colour_seen = [], False, False
    for _ in range(40):
        noise = _add_noise(flat, draw, params, second=False) - flat
        levels.append(float(noise.std()) * 255)
        same = bool(torch.equal(noise[:, 0], noise[:, 1]) and torch.equal(noise[:, 1], noise[:, 2]))
        gray_seen |= same
        colour_seen |= not same
    assert low * 0.9 <= min(levels) and max(levels) <= high * 1.1
    assert min(levels) < low + 0.3 * (high - low) and max(levels) > high - 0.3 * (high - low)
    assert gray_seen and colour_seen


def test_poisson_noise_scales_with_brightness() -> None:
    """Shot noise: std = scale * sqrt(256 v) / 256 for a grey level v."""
    params = HighOrderParams(gaussian_noise_prob=0.0, gray_noise_prob=0.0, poisson_scale_range=(2.0, 2.0))
    for value in (0.1, 0.6):
        flat = torch.full((1, 3, 128, 128), round(value * 255) / 255)
        noise = _add_noise(flat, _draw(5), params, second=False) - flat
        expected = 2.0 * math.sqrt(256 * float(flat[0, 0, 0, 0])) / 256
        assert float(noise.std()) == pytest.approx(expected, rel=0.08)


def _blockiness(image: torch.Tensor) -> float:
    """Mean |step| across 8x8 block borders minus mean |step| elsewhere (luma-free, all channels)."""
    steps = image.diff(dim=-1).abs()  # step between column j and j+1
    border = steps[..., 7::8]
    inside = torch.cat([steps[..., k::8] for k in range(7)], dim=-1)
    return float(border.mean() - inside.mean()) * 255


def test_lower_jpeg_quality_is_blockier(cocostuff_sample: Path) -> None:
    with Image.open(sorted((cocostuff_sample / "images" / "val2017").glob("*.jpg"))[0]) as img:
        rgb = np.asarray(img.convert("RGB").resize((img.width // 2, img.height // 2), Image.Resampling.LANCZOS))
    image = torch.from_numpy(np.ascontiguousarray(rgb[:192, :256])).permute(2, 0, 1).unsqueeze(0).float() / 255
    blockiness = {q: _blockiness(_jpeg(image, _draw(0), (q, q))) for q in (30, 60, 95)}
    assert blockiness[30] > blockiness[60] > blockiness[95], blockiness
    assert blockiness[30] > 3 * max(blockiness[95], 0.05), blockiness
    ranged = [_blockiness(_jpeg(image, draw, (30, 95))) for draw in [_draw(6)] for _ in range(12)]
    assert min(ranged) < blockiness[60] < max(ranged)  # the range is sampled, not one end of it
