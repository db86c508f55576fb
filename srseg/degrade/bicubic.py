"""MATLAB-compatible ``imresize(..., 'bicubic')`` in torch, batched, on the input's device.

Why not ``F.interpolate(mode="bicubic")``: it uses a = -0.75, no antialiasing when shrinking and
clamped borders, which aliases and costs ~0.7 dB against published SR tables. This module follows
MATLAB's ``imresize``:

- Keys cubic kernel with a = -0.5; when shrinking, the kernel is stretched by 1/scale
  (antialiasing), so x4 reduction uses 16 taps.
- Output sample ``x`` (1-based) maps to input ``u = x / scale + 0.5 * (1 - 1 / scale)``;
  out-of-range taps are mirrored with the edge sample repeated (MATLAB's symmetric padding).
- Output size is ``ceil(scale * in)``; the dimension with the smaller scale is resized first
  (rows first on ties), as MATLAB does.
- uint8 input: each 1-D pass is rounded half away from zero and saturated to 0..255, because
  MATLAB's resize kernel returns the input class after every pass. This reproduces the benchmark
  LR images (Set5/Set14 ``LR_bicubic``) bit for bit. ``quantize_passes=False`` keeps the
  intermediate in floating point and rounds once at the end, which is what most Python ports
  (e.g. BasicSR) do; the project's golden "Bicubic" PSNR/SSIM values were evidently produced that
  way (see tests/test_metrics.py).
- Float input: no rounding and no clamping (overshoot is kept, as in MATLAB).

Speed: each axis is a banded linear map. Its taps are precomputed once per
(in, out, scale, device, dtype) and stored as blocks of ``R`` consecutive outputs that share one
contiguous input window, so a pass is one gather of windows plus one batched matmul (BLAS) whose
size grows linearly with the image, instead of 16 strided elementwise passes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

_KERNEL_WIDTH = 4.0
_CPU_CHUNK_ELEMENTS = 3 * 512 * 512  # input values per chunk (~3 MB as float32)


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel, a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1.0)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1.0) & (ax <= 2.0))
    return near + far


def _contributions(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB's ``contributions``: (out, P) float64 weights and unmirrored 0-based input indices."""
    kernel_width = _KERNEL_WIDTH
    if scale < 1.0:  # antialiasing: stretch the kernel, shrink its height
        kernel_width = _KERNEL_WIDTH / scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    dist = u[:, None] - indices
    weights = scale * _cubic(scale * dist) if scale < 1.0 else _cubic(dist)
    weights = weights / weights.sum(axis=1, keepdims=True)
    return weights, indices.astype(np.int64) - 1


def _mirror(indices: np.ndarray, length: int) -> np.ndarray:
    """Symmetric padding with the edge repeated: ... 1 0 | 0 1 ... n-1 | n-1 n-2 ... (periodic)."""
    period = 2 * length
    wrapped = np.mod(indices, period)
    return np.where(wrapped < length, wrapped, period - 1 - wrapped)


@dataclass(frozen=True)
class _AxisPlan:
    """One axis' resampling as ``out[b*R + r] = sum_k blocks[b, r, k] * in[gather[b, k]]``."""

    out_len: int
    gather: torch.Tensor  # (num_blocks * window,) int64, mirrored input indices
    blocks: torch.Tensor  # (num_blocks, R, window) weights
    num_blocks: int
    window: int


def _block_rows(scale: float) -> int:
    """Outputs per block: aim for ~64-sample windows (good BLAS shapes, little wasted work)."""
    inputs_per_output = 1.0 / scale
    return int(min(64, max(8, round(64 / max(inputs_per_output, 1.0)))))


@functools.lru_cache(maxsize=64)
def _axis_plan(in_len: int, out_len: int, scale: float, device: torch.device, dtype: torch.dtype) -> _AxisPlan:
    weights, indices = _contributions(in_len, out_len, scale)
    taps = weights.shape[1]
    rows = min(_block_rows(scale), out_len)
    num_blocks = -(-out_len // rows)
    padded = num_blocks * rows
    left = indices[:, 0]
    if padded > out_len:  # dummy outputs with zero weight keep every block full
        left = np.concatenate([left, np.full(padded - out_len, left[-1])])
        weights = np.concatenate([weights, np.zeros((padded - out_len, taps))])
    left = left.reshape(num_blocks, rows)
    start = left[:, :1]
    window = int((left - start).max()) + taps
    blocks = np.zeros((num_blocks, rows, window), dtype=np.float64)
    cols = (left - start)[:, :, None] + np.arange(taps)[None, None, :]
    np.put_along_axis(blocks, cols, weights.reshape(num_blocks, rows, taps), axis=2)
    gather = _mirror(start + np.arange(window)[None, :], in_len).reshape(-1)
    return _AxisPlan(
        out_len=out_len,
        gather=torch.from_numpy(gather).to(device),
        blocks=torch.from_numpy(blocks).to(device=device, dtype=dtype),
        num_blocks=num_blocks,
        window=window,
    )


def _resize_rows(x: torch.Tensor, plan: _AxisPlan) -> torch.Tensor:
    """Resample dim -2 of a (B, H, W) tensor: gather the block windows, one batched matmul."""
    batch, _, width = x.shape
    windows = x.index_select(1, plan.gather).view(batch, plan.num_blocks, plan.window, width)
    out = torch.matmul(plan.blocks, windows)  # (B, nb, R, W)
    return out.reshape(batch, -1, width)[:, : plan.out_len]


def _resize_cols(x: torch.Tensor, plan: _AxisPlan) -> torch.Tensor:
    """Resample dim -1 via the rows kernel on a transposed view (measured faster than einsum)."""
    return _resize_rows(x.transpose(1, 2), plan).transpose(1, 2)


def _quantize(x: torch.Tensor) -> torch.Tensor:
    """Round half away from zero and saturate, as MATLAB's double -> uint8 conversion."""
    return torch.floor(x + 0.5).clamp_(0.0, 255.0)


def output_length(in_len: int, scale: float) -> int:
    """Length MATLAB's imresize gives an axis of ``in_len`` pixels resized by ``scale``."""
    # ceil(scale * in) as MATLAB, tolerant of 1-ulp noise such as 300 * (1/3) = 100.00000000000001.
    return max(1, int(math.ceil(scale * in_len - 1e-9)))


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    if x.dtype == torch.float64:
        return torch.float64
    if x.dtype == torch.uint8 and x.device.type != "cpu":
        # Exactness must not depend on a global TF32 / reduced-precision matmul setting on GPUs.
        return torch.float64
    return torch.float32


def imresize(
    x: torch.Tensor,
    scale: float | tuple[float, float] | None = None,
    size: tuple[int, int] | None = None,
    *,
    quantize_passes: bool = True,
) -> torch.Tensor:
    """Resize the last two dims of ``x`` (e.g. (N, C, H, W)) like MATLAB ``imresize(x, s, 'bicubic')``.

    Give ``scale`` (a factor, >1 enlarges; one number or (scale_h, scale_w)) or ``size``
    ((out_h, out_w); the kernel scale is then out/in per axis, as in MATLAB), or both (the kernel
    uses ``scale``, the length ``size``). uint8 in -> uint8 out; floating point in -> same dtype out.
    """
    if x.dim() < 2:
        raise ValueError(f"imresize: need at least 2 dims (H, W), got shape {tuple(x.shape)}")
    if not (x.dtype == torch.uint8 or x.is_floating_point()):
        raise TypeError(f"imresize: expected uint8 or floating point tensor, got {x.dtype}")
    in_h, in_w = int(x.shape[-2]), int(x.shape[-1])
    if in_h == 0 or in_w == 0:
        raise ValueError(f"imresize: empty input of shape {tuple(x.shape)}")
    if scale is None and size is None:
        raise ValueError("imresize: give scale or size")
    if scale is not None:
        scales = (float(scale), float(scale)) if isinstance(scale, (int, float)) else tuple(map(float, scale))
        if len(scales) != 2 or not all(math.isfinite(s) and s > 0 for s in scales):
            raise ValueError(f"imresize: scale must be positive and finite, got {scale!r}")
    if size is not None:
        out_h, out_w = (int(v) for v in size)
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"imresize: size must be positive, got {size!r}")
        if scale is None:
            scales = (out_h / in_h, out_w / in_w)
    else:
        out_h, out_w = output_length(in_h, scales[0]), output_length(in_w, scales[1])

    dtype = _compute_dtype(x)
    plan_h = _axis_plan(in_h, out_h, scales[0], x.device, dtype)
    plan_w = _axis_plan(in_w, out_w, scales[1], x.device, dtype)
    steps = [(_resize_rows, plan_h), (_resize_cols, plan_w)]
    if scales[1] < scales[0]:  # MATLAB resizes the most-reduced dimension first
        steps.reverse()
    quantize = x.dtype == torch.uint8 and quantize_passes

    planes = x.reshape(-1, in_h, in_w)
    out = torch.empty((planes.shape[0], out_h, out_w), dtype=x.dtype, device=x.device)
    # On CPU, chunks of a few planes keep the float intermediates in cache; this is ~3x faster
    # than one pass over a large batch. GPUs prefer one large launch.
    chunk = planes.shape[0] if x.device.type != "cpu" else max(1, _CPU_CHUNK_ELEMENTS // (in_h * in_w))
    for begin in range(0, planes.shape[0], chunk):
        work = planes[begin : begin + chunk].to(dtype)
        for index, (step, plan) in enumerate(steps):
            work = step(work, plan)
            if quantize and index == 0:
                work = _quantize(work)
        out[begin : begin + chunk] = _quantize(work) if x.dtype == torch.uint8 else work
    return out.reshape(*x.shape[:-2], out_h, out_w)


ENLARGE_RADIUS = 2  # input px on each side that one output of an integer enlargement reads


def enlarge_taps(scale: int) -> np.ndarray:
    """(scale, 5) float64 weights of MATLAB ``imresize(x, scale, 'bicubic')`` for an integer scale.

    Enlarging by an integer factor is a polyphase filter: output ``k * scale + p`` (0-based) is
    ``sum_j taps[p, j] * x[k - 2 + j]``, with out-of-range ``x`` indices mirrored as in
    :func:`imresize` (symmetric padding). The weights are read off :func:`_contributions`, so the
    network's bicubic path (:mod:`srseg.models.upsample`) uses exactly this module's kernel.
    """
    if int(scale) != scale or scale < 2:
        raise ValueError(f"enlarge_taps: scale must be an integer >= 2, got {scale!r}")
    scale = int(scale)
    width = 2 * ENLARGE_RADIUS + 1
    centre = 2 * width  # an input pixel far enough from both borders that nothing is mirrored
    weights, indices = _contributions(2 * centre, 2 * centre * scale, float(scale))
    taps = np.zeros((scale, width), dtype=np.float64)
    for phase in range(scale):
        row = centre * scale + phase
        for weight, index in zip(weights[row], indices[row]):
            if weight == 0.0:
                continue
            offset = int(index) - centre + ENLARGE_RADIUS
            if not 0 <= offset < width:  # pragma: no cover - a property of the Keys kernel
                raise AssertionError(f"bicubic x{scale} tap at offset {offset - ENLARGE_RADIUS} exceeds the radius")
            taps[phase, offset] += weight
    return taps


def modcrop(image: np.ndarray | torch.Tensor, scale: int) -> np.ndarray | torch.Tensor:
    """Crop bottom/right so height and width are multiples of ``scale``.

    numpy arrays are (H, W) or (H, W, C); tensors are (..., H, W). HR images are cropped this way
    before degradation so that HR size == scale * LR size exactly.
    """
    if int(scale) != scale or scale < 1:
        raise ValueError(f"modcrop: scale must be a positive integer, got {scale!r}")
    scale = int(scale)
    if isinstance(image, torch.Tensor):
        h, w = image.shape[-2], image.shape[-1]
        return image[..., : h - h % scale, : w - w % scale]
    if image.ndim not in (2, 3):
        raise ValueError(f"modcrop: expected (H, W) or (H, W, C) array, got shape {image.shape}")
    h, w = image.shape[0], image.shape[1]
    return image[: h - h % scale, : w - w % scale]


def bicubic_downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB ``imresize(hr, 1/scale, 'bicubic')`` of a uint8 (..., H, W) tensor, H and W multiples of scale."""
    if int(scale) != scale or scale < 1:
        raise ValueError(f"bicubic_downscale: scale must be a positive integer, got {scale!r}")
    scale = int(scale)
    if hr.dtype != torch.uint8:
        raise TypeError(f"bicubic_downscale: expected a uint8 tensor, got {hr.dtype}")
    h, w = int(hr.shape[-2]), int(hr.shape[-1])
    if h % scale or w % scale:
        raise ValueError(f"bicubic_downscale: size {h}x{w} is not a multiple of {scale}; modcrop first")
    return imresize(hr, scale=1.0 / scale, size=(h // scale, w // scale))
