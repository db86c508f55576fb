"""Real-ESRGAN-style degradation: reproducible, right shapes and ranges, validated parameters."""

from __future__ import annotations

import json
import math

import pytest
import torch

from srseg.degrade.highorder import KERNEL_TYPES, HighOrderParams, degrade_high_order, sinc_kernel


def _hr(n: int = 2, h: int = 64, w: int = 48) -> torch.Tensor:
    # A smooth image plus texture, so blur/noise/JPEG all change something.
    g = torch.Generator().manual_seed(123)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([xx, yy, (xx + yy) / 2]).unsqueeze(0).repeat(n, 1, 1, 1)
    return (0.8 * base + 0.2 * torch.rand(n, 3, h, w, generator=g)).clamp(0, 1)


def _run(seed: int, hr: torch.Tensor | None = None, params: HighOrderParams | None = None, scale: int = 4) -> torch.Tensor:
    return degrade_high_order(_hr() if hr is None else hr, scale, params or HighOrderParams(), torch.Generator().manual_seed(seed))


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
    out = degrade_high_order(_hr(1, 8, 8), 4, HighOrderParams(resize_prob=(0.0, 1.0, 0.0)), torch.Generator().manual_seed(3))
    assert out.shape == (1, 3, 2, 2)


@pytest.mark.parametrize("kind", KERNEL_TYPES)
def test_every_kernel_type_runs(kind: str) -> None:
    params = HighOrderParams(kernel_list=(kind,), kernel_prob=(1.0,), sinc_prob=0.0, sinc_prob2=0.0)
    out = _run(1, _hr(1), params)
    assert out.shape == (1, 3, 16, 12) and torch.isfinite(out).all()


def test_clean_settings_stay_close_to_input() -> None:
    """With blur, noise, resize and JPEG all minimal, the result is near a plain area downscale."""
    params = HighOrderParams(
        blur_prob=0.0, second_blur_prob=0.0, resize_prob=(0.0, 0.0, 1.0), resize_prob2=(0.0, 0.0, 1.0),
        resize_modes=("area",), noise_range=(0.0, 0.0), noise_range2=(0.0, 0.0),
        gaussian_noise_prob=1.0, gaussian_noise_prob2=1.0, jpeg_range=(100, 100), jpeg_range2=(100, 100),
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
