"""MATLAB bicubic on the GPU gives the CPU's bytes on the real Set5 images: the LR the training
step synthesises on the device is the LR the degrade stage writes to disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from srseg.degrade.bicubic import bicubic_downscale, imresize, modcrop
from srseg.imageio import load_rgb
from srseg.train.validation import synthesize_lr

pytestmark = pytest.mark.cuda


def _set5_hr(set5: Path) -> list[tuple[str, np.ndarray]]:
    images = [(path.stem, load_rgb(path)) for path in sorted((set5 / "HR").glob("*.png"))]
    assert len(images) == 5, f"expected the five Set5 HR images under {set5 / 'HR'}"
    return images


def _nchw(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1).unsqueeze(0).contiguous()


def _differences(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    """(number of differing values, largest difference) of two uint8 tensors."""
    diff = (a.to(torch.int16) - b.to(torch.int16)).abs()
    return int((diff > 0).sum()), int(diff.max())


@pytest.fixture
def tf32_matmul_on():
    """Turn on TF32 matmuls (a setting training scripts often flip): exactness must not depend on it."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_gpu_downscale_bit_identical_on_set5(set5: Path, scale: int, tf32_matmul_on: None, record_property) -> None:
    worst: dict[str, tuple[int, int]] = {}
    for name, hr in _set5_hr(set5):
        x = _nchw(modcrop(hr, scale))
        cpu = bicubic_downscale(x, scale)
        gpu = bicubic_downscale(x.cuda(), scale)
        assert gpu.is_cuda and gpu.dtype == torch.uint8
        worst[name] = _differences(gpu.cpu(), cpu)
    record_property("differing_values_per_image", worst)
    assert all(count == 0 for count, _ in worst.values()), f"GPU LR differs from CPU LR at x{scale}: {worst}"


def test_gpu_training_lr_synthesis_matches_cpu(set5: Path) -> None:
    """``synthesize_lr`` on a batch of float HR crops (what the training step does) is exact too."""
    crops = [torch.from_numpy(modcrop(hr, 4)[:96, :96]).permute(2, 0, 1).float() / 255 for _, hr in _set5_hr(set5)]
    batch = torch.stack(crops)
    cpu = synthesize_lr(batch, 4)
    gpu = synthesize_lr(batch.cuda(), 4)
    assert gpu.is_cuda and gpu.shape == (5, 3, 24, 24)
    assert torch.equal(gpu.cpu(), cpu)


def test_gpu_float_upscale_close_to_cpu(set5: Path, record_property) -> None:
    """The float path (the bicubic baseline of evaluate/upscale) agrees to float32 rounding."""
    worst = 0.0
    for name, _hr in _set5_hr(set5):
        lr = load_rgb(set5 / "LR_bicubic" / "X4" / f"{name}x4.png")
        x = _nchw(lr).float() / 255
        cpu = imresize(x, 4.0)
        gpu = imresize(x.cuda(), 4.0)
        assert gpu.shape == cpu.shape == (1, 3, 4 * lr.shape[0], 4 * lr.shape[1])
        worst = max(worst, float((gpu.cpu() - cpu).abs().max()))
    record_property("max_abs_diff", worst)
    assert worst <= 1e-5, worst
