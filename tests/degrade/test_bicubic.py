"""MATLAB-compatible bicubic: bit-exact against the shipped Set5/Set14 LR images, and against a plain-loop reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from srseg.degrade.bicubic import bicubic_downscale, imresize, modcrop
from srseg.imageio import load_rgb

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.cuda),
]


# --- an independent, deliberately naive float64 reference of MATLAB's imresize ---------------


def _ref_cubic(x: float) -> float:
    ax = abs(x)
    if ax <= 1:
        return 1.5 * ax**3 - 2.5 * ax**2 + 1
    if ax <= 2:
        return -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
    return 0.0


def _ref_axis(a: np.ndarray, out_len: int, scale: float, quantize: bool) -> np.ndarray:
    """Resize axis 0 of a float64 array with explicit loops, MATLAB semantics."""
    n = a.shape[0]
    width = 4.0 / scale if scale < 1 else 4.0
    out = np.zeros((out_len,) + a.shape[1:])
    for i in range(out_len):
        u = (i + 1) / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = []
        for k in range(left, left + int(math.ceil(width)) + 2):
            d = u - k
            w = scale * _ref_cubic(scale * d) if scale < 1 else _ref_cubic(d)
            j = k - 1  # 0-based
            while j < 0 or j >= n:  # symmetric padding, edge repeated
                j = -j - 1 if j < 0 else 2 * n - 1 - j
            taps.append((w, j))
        total = sum(w for w, _ in taps)
        out[i] = sum(w / total * a[j] for w, j in taps)
    if quantize:
        out = np.clip(np.floor(out + 0.5), 0, 255)
    return out


def _ref_imresize(img: np.ndarray, scale_h: float, scale_w: float, quantize_passes: bool = False) -> np.ndarray:
    """(H, W, ...) float64; both passes, MATLAB order (smaller scale first, rows on ties)."""
    out_h, out_w = math.ceil(img.shape[0] * scale_h - 1e-9), math.ceil(img.shape[1] * scale_w - 1e-9)
    a = img.astype(np.float64)
    if scale_w < scale_h:
        a = np.swapaxes(_ref_axis(np.swapaxes(a, 0, 1), out_w, scale_w, quantize_passes), 0, 1)
        return _ref_axis(a, out_h, scale_h, quantize_passes)
    a = _ref_axis(a, out_h, scale_h, quantize_passes)
    return np.swapaxes(_ref_axis(np.swapaxes(a, 0, 1), out_w, scale_w, quantize_passes), 0, 1)


def _nchw(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1).unsqueeze(0).contiguous()


def _hwc(nchw: torch.Tensor) -> np.ndarray:
    return nchw[0].permute(1, 2, 0).cpu().numpy()


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["set5", "set14"])
def test_matches_shipped_lr_images_bit_for_bit(shared_data: Path, dataset: str) -> None:
    """The benchmark LR files were made by MATLAB's imresize; we reproduce every value exactly."""
    hr_files = sorted((shared_data / dataset / "HR").glob("*.png"))
    assert len(hr_files) == {"set5": 5, "set14": 14}[dataset]
    for path in hr_files:
        hr = modcrop(load_rgb(path), 4)  # Set14's grayscale 'bridge' is expanded to RGB on both sides
        expected = load_rgb(shared_data / dataset / "LR_bicubic" / "X4" / f"{path.stem}x4.png")
        ours = _hwc(bicubic_downscale(_nchw(hr), 4))
        np.testing.assert_array_equal(ours, expected, err_msg=f"{dataset}/{path.stem}")


def test_float_reference_odd_sizes_and_scales() -> None:
    rng = np.random.default_rng(0)
    cases = [
        ((17, 23), 4.0),
        ((31, 7), 0.37),
        ((5, 9), 2.5),
        ((64, 48), 1 / 3),
        ((3, 3), 0.25),
        ((1, 5), 3.0),
        ((12, 12), 1.0),
        ((9, 40), 0.5),
    ]
    for (h, w), s in cases:
        img = rng.random((h, w, 2)) * 255
        expected = _ref_imresize(img, s, s)
        ours = imresize(torch.from_numpy(img).permute(2, 0, 1), s).permute(1, 2, 0).numpy()
        assert ours.shape == expected.shape == (math.ceil(h * s - 1e-9), math.ceil(w * s - 1e-9), 2), (h, w, s)
        np.testing.assert_allclose(ours, expected, atol=1e-9, err_msg=f"{h}x{w} scale {s}")


def test_anisotropic_scale_and_explicit_size_follow_matlab_order() -> None:
    rng = np.random.default_rng(1)
    img = rng.random((20, 30)) * 255
    for scales in [(0.5, 0.25), (0.25, 0.5), (2.0, 0.75)]:
        expected = _ref_imresize(img[:, :, None], *scales)[:, :, 0]
        ours = imresize(torch.from_numpy(img), scale=scales).numpy()
        np.testing.assert_allclose(ours, expected, atol=1e-9, err_msg=str(scales))
    by_size = imresize(torch.from_numpy(img), size=(7, 11)).numpy()
    np.testing.assert_allclose(by_size, _ref_imresize(img[:, :, None], 7 / 20, 11 / 30)[:, :, 0], atol=1e-9)


@pytest.mark.parametrize("quantize_passes", [True, False])
def test_uint8_path_rounds_like_matlab(quantize_passes: bool) -> None:
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (26, 19, 3)).astype(np.uint8)
    img[:4, :4] = 255  # saturated corner: overshoot must clamp
    for s in (0.25, 4.0, 0.6):
        out = imresize(_nchw(img), s, quantize_passes=quantize_passes)
        assert out.dtype == torch.uint8
        expected = _ref_imresize(img, s, s, quantize_passes=quantize_passes)
        expected = np.clip(np.floor(expected + 0.5), 0, 255)
        np.testing.assert_array_equal(_hwc(out), expected.astype(np.uint8), err_msg=f"scale {s}")


def test_float_and_uint8_paths_agree() -> None:
    img = np.random.default_rng(3).integers(0, 256, (2, 3, 32, 28)).astype(np.uint8)
    u8 = imresize(torch.from_numpy(img), 0.25, quantize_passes=False)
    f32 = imresize(torch.from_numpy(img).float(), 0.25)
    f64 = imresize(torch.from_numpy(img).double(), 0.25)
    assert f32.dtype == torch.float32 and f64.dtype == torch.float64
    torch.testing.assert_close(f32.double(), f64, atol=1e-3, rtol=0)
    rounded = torch.floor(f64 + 0.5).clamp(0, 255).to(torch.uint8)
    assert (u8.int() - rounded.int()).abs().max() <= 1
    assert (u8 != rounded).float().mean() < 1e-3


def test_shapes_up_then_down_and_leading_dims() -> None:
    x = torch.rand(2, 3, 17, 23)
    up = imresize(x, 4)
    assert up.shape == (2, 3, 68, 92)
    assert imresize(up, 0.25).shape == (2, 3, 17, 23)
    assert imresize(x[0, 0], 2).shape == (34, 46)
    assert imresize(x[0], 0.5).shape == (3, 9, 12)
    assert imresize(x, size=(5, 40)).shape == (2, 3, 5, 40)
    assert imresize(torch.rand(1, 1, 10, 10), 1 / 3).shape == (1, 1, 4, 4)


def test_constant_image_stays_constant_and_scale_one_is_identity() -> None:
    flat = torch.full((1, 3, 13, 9), 77, dtype=torch.uint8)
    assert torch.equal(imresize(flat, 0.3), torch.full((1, 3, 4, 3), 77, dtype=torch.uint8))
    assert torch.equal(imresize(flat, 3.0), torch.full((1, 3, 39, 27), 77, dtype=torch.uint8))
    x = torch.rand(1, 2, 8, 6, dtype=torch.float64)
    torch.testing.assert_close(imresize(x, 1.0), x)


def test_batched_equals_per_image_across_cpu_chunks() -> None:
    # 70 x 3 planes of 64x64 exceed one CPU chunk (3 * 512 * 512 values): several chunks run.
    x = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (70, 3, 64, 64)).astype(np.uint8))
    batched = bicubic_downscale(x, 4)
    assert batched.shape == (70, 3, 16, 16)
    for i in (0, 41, 69):
        assert torch.equal(batched[i : i + 1], bicubic_downscale(x[i : i + 1], 4))


@pytest.mark.parametrize("device", DEVICES)
def test_device_agnostic(device: str) -> None:
    """Outputs live on the input's device and match the CPU result (exactly for uint8)."""
    x = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (2, 3, 48, 40)).astype(np.uint8))
    expected = bicubic_downscale(x, 4)
    got = bicubic_downscale(x.to(device), 4)
    assert got.device.type == device
    assert torch.equal(got.cpu(), expected)
    xf = x.float() / 255
    torch.testing.assert_close(imresize(xf.to(device), 2.5).cpu(), imresize(xf, 2.5), atol=1e-5, rtol=0)


def test_modcrop_numpy_and_tensor() -> None:
    a = np.zeros((13, 10, 3), np.uint8)
    assert modcrop(a, 4).shape == (12, 8, 3)
    assert modcrop(a[:, :, 0], 3).shape == (12, 9)
    t = torch.zeros(2, 3, 13, 10)
    assert modcrop(t, 4).shape == (2, 3, 12, 8)
    with pytest.raises(ValueError, match="scale"):
        modcrop(a, 0)


def test_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="not a multiple of 4"):
        bicubic_downscale(torch.zeros(1, 3, 10, 12, dtype=torch.uint8), 4)
    with pytest.raises(TypeError, match="uint8"):
        bicubic_downscale(torch.zeros(1, 3, 8, 8), 4)
    with pytest.raises(ValueError, match="scale"):
        imresize(torch.zeros(1, 3, 8, 8), -2)
    with pytest.raises(ValueError, match="give scale or size"):
        imresize(torch.zeros(8, 8))
    with pytest.raises(TypeError, match="int64"):
        imresize(torch.zeros(8, 8, dtype=torch.int64), 2)
