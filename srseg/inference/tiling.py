"""Tiled super-resolution: bounded memory for large images, equal to whole-image inference.

Why tiles: the generator's activations live at HR resolution with ``num_features`` channels, so a
4000x3000 output costs gigabytes in one pass. We cut the LR image into ``tile`` x ``tile`` cores,
run each with ``overlap`` LR pixels of real image context on every side, and paste only the SR of
the core. Every window has the same shape (``tile + 2*overlap`` per axis, shifted inwards at the
image border), so windows batch without padding. Tiles are pasted into 8-bit bands (one row of
tiles each) that are handed out as soon as they are complete, so not even the output has to be
whole in memory (:func:`super_resolve_bands`).

Exactness: an output pixel depends only on LR pixels within the network's receptive-field radius
(:func:`receptive_field_radius`). Where a window edge is the image edge the network sees the same
padding as on the whole image (zeros for the convolutions, mirrored pixels for the bicubic global
residual, whose 2 px support is inside the radius). So with ``overlap >= radius`` tiled and untiled outputs agree
up to float rounding (tested: max abs diff <= 1e-5 in fp32). With a smaller overlap the seam
error is small (the far end of the receptive field carries little weight) but not zero.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

SRFunction = Callable[[Tensor], Tensor]


def receptive_field_radius(config: Mapping[str, Any], architecture: str | None = None) -> int:
    """Receptive-field radius in LR pixels of a generator's SR output (see
    :meth:`srseg.models.generator.MultiTaskSRNet.receptive_field_radius` for the rule).

    ``architecture`` is the registered generator name (:mod:`srseg.models.registry`), default
    the project's multitask SRResNet. For the paper setting (9x9 first conv, 16 blocks, x4,
    1 decoder conv, 3x3 head) it is 39 px.
    """
    from srseg.models import registry

    return registry.receptive_field_radius(architecture or registry.DEFAULT_ARCHITECTURE, config)


@dataclass(frozen=True)
class Tile:
    """One tile: the LR core ``[y0:y1, x0:x1]`` whose SR is kept, inside the LR window it runs on."""

    y0: int
    y1: int
    x0: int
    x1: int
    wy0: int
    wy1: int
    wx0: int
    wx1: int


def _axis_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(core start, core end, window start, window end) along one axis; all windows equal size."""
    window = min(tile + 2 * overlap, length)
    spans = []
    for start in range(0, length, tile):
        end = min(start + tile, length)
        w0 = min(max(start - overlap, 0), length - window)
        spans.append((start, end, w0, w0 + window))
    return spans


def tile_grid(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Tiles whose cores partition the ``height`` x ``width`` LR image (row-major order).

    Cores are ``tile`` px except the last row/column, which takes the remainder, so sizes that are
    not multiples of ``tile`` are covered. Each window holds its core plus ``overlap`` px of
    context on each side, or up to the image edge.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if tile < 1:
        raise ValueError(f"tile must be >= 1 LR px, got {tile!r}")
    if overlap < 0:
        raise ValueError(f"tile_overlap must be >= 0, got {overlap!r}")
    return [
        Tile(y0, y1, x0, x1, wy0, wy1, wx0, wx1)
        for (y0, y1, wy0, wy1) in _axis_spans(height, tile, overlap)
        for (x0, x1, wx0, wx1) in _axis_spans(width, tile, overlap)
    ]


def _batches(items: list[Tile], size: int) -> Iterator[list[Tile]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _to_uint8(x: Tensor) -> Tensor:
    return x.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


@torch.inference_mode()
def super_resolve_bands(
    fn: SRFunction,
    lr: Tensor,
    scale: int,
    tile: int | None = 256,
    overlap: int = 16,
    batch_size: int = 4,
    *,
    white: float = 1.0,
    device: str | torch.device | None = None,
    out_dtype: torch.dtype = torch.uint8,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, Tensor]]:
    """Super-resolve a ``(C, H, W)`` image tile by tile; yield ``(first HR row, band)`` top to bottom.

    A band is the ``(C, rows, scale*W)`` output of one row of tiles, on the CPU, yielded as soon as
    its last tile is done: memory is bounded by the tile size, not the image size, and a caller can
    write bands out (or drop them) as they come. ``lr`` may hold integers (``white`` is the value of
    full intensity, e.g. 255) or floats in [0, 1]; windows are converted to float one batch at a
    time on ``device`` (default: ``lr``'s), where ``fn`` maps ``(N, C, h, w)`` to
    ``(N, C, scale*h, scale*w)``. ``tile=None`` runs the whole image at once (one band).
    ``out_dtype=torch.uint8`` clamps to [0, 1] and quantises each tile as it arrives; a float dtype
    keeps the raw (unclamped) values. ``on_batch(n)`` is called with the number of tiles done.
    """
    if lr.dim() != 3:
        raise ValueError(f"expected a (C, H, W) image, got shape {tuple(lr.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    channels, height, width = (int(v) for v in lr.shape)
    target = torch.device(device) if device is not None else lr.device
    tiles = tile_grid(height, width, tile or max(height, width), overlap if tile else 0)
    per_row = Counter(t.y0 for t in tiles)
    done: Counter[int] = Counter()
    bands: dict[int, Tensor] = {}
    rows = iter(sorted(per_row))
    next_row = next(rows, None)
    for group in _batches(tiles, batch_size):
        windows = torch.stack([lr[:, t.wy0 : t.wy1, t.wx0 : t.wx1] for t in group]).to(target)
        if not windows.is_floating_point() or white != 1.0:
            windows = windows.float().div_(white)
        sr = fn(windows)
        expected = (len(group), channels, windows.shape[-2] * scale, windows.shape[-1] * scale)
        if tuple(sr.shape) != expected:
            raise ValueError(
                f"model returned shape {tuple(sr.shape)} for input {tuple(windows.shape)}, expected {expected}"
            )
        sr = (_to_uint8(sr.float()) if out_dtype == torch.uint8 else sr.to(out_dtype)).cpu()  # one pass per batch
        for t, patch in zip(group, sr):
            core = patch[
                :,
                (t.y0 - t.wy0) * scale : (t.y1 - t.wy0) * scale,
                (t.x0 - t.wx0) * scale : (t.x1 - t.wx0) * scale,
            ]
            if t.y0 not in bands:
                bands[t.y0] = torch.empty((channels, (t.y1 - t.y0) * scale, width * scale), dtype=out_dtype)
            bands[t.y0][:, :, t.x0 * scale : t.x1 * scale] = core
            done[t.y0] += 1
        del windows, sr
        if on_batch is not None:
            on_batch(len(group))
        while next_row is not None and done[next_row] == per_row[next_row]:
            yield next_row * scale, bands.pop(next_row)
            next_row = next(rows, None)


def tiled_super_resolve(
    fn: SRFunction,
    lr: Tensor,
    scale: int,
    tile: int | None = 256,
    overlap: int = 16,
    batch_size: int = 4,
    out_dtype: torch.dtype = torch.float32,
    out_device: str | torch.device = "cpu",
    on_batch: Callable[[int], None] | None = None,
    white: float = 1.0,
) -> Tensor:
    """The whole ``(C, sH, sW)`` output of :func:`super_resolve_bands` in one tensor.

    For images whose output fits in memory (tests, evaluation crops); ``srseg upscale`` writes the
    bands to disk instead.
    """
    if lr.dim() != 3:
        raise ValueError(f"expected a (C, H, W) image, got shape {tuple(lr.shape)}")
    channels, height, width = (int(v) for v in lr.shape)
    out = torch.empty((channels, height * scale, width * scale), dtype=out_dtype, device=out_device)
    for row, band in super_resolve_bands(
        fn, lr, scale, tile, overlap, batch_size, white=white, out_dtype=out_dtype, on_batch=on_batch
    ):
        out[:, row : row + band.shape[1]] = band.to(out_device)
    return out
