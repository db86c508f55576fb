"""MATLAB-bicubic enlargement as an exportable ``nn.Module``: the generator's global-residual path.

Why not :func:`srseg.degrade.bicubic.imresize`: it plans its taps per input size in NumPy, so a
TorchScript trace or an ONNX export would freeze them for the example's size. An integer
enlargement needs no plan: it is a fixed 5-tap polyphase filter per axis (taps from
:func:`srseg.degrade.bicubic.enlarge_taps`, so the kernel is the project's one MATLAB kernel),
applied as ``symmetric-index gather -> conv (one output channel per phase) -> interleave``. Only
shape arithmetic depends on the input size, which traces and exports with dynamic sizes.

The result equals ``imresize(x, scale)`` on float input up to float rounding (tested on sizes
down to 1x1). Each output depends on LR pixels within :data:`RADIUS` of its parent pixel, which
:func:`srseg.inference.tiling.receptive_field_radius` accounts for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srseg.degrade.bicubic import ENLARGE_RADIUS, enlarge_taps

RADIUS = ENLARGE_RADIUS  # 2 for the Keys kernel: what symmetric_pad2 pads (a test keeps them equal)


def symmetric_pad2(x: Tensor) -> Tensor:
    """Pad dim 2 of ``x`` by 2 on each side, mirrored with the edge repeated (MATLAB 'symmetric').

    ``[x1, x0 | x0 .. x(n-1) | x(n-1), x(n-2)]``, and all ``x0`` when n = 1. Built from slices and
    concatenations only (no index arithmetic on the size), so it exports with dynamic shapes.
    """
    edged = torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2)  # replicate by 1: length n + 2 >= 3
    # one more mirrored sample each side: x1 (x0 when n = 1) and x(n-2) (x0 when n = 1)
    return torch.cat([edged[:, :, 2:3], edged, edged[:, :, -3:-2]], dim=2)


class BicubicUpsample(nn.Module):
    """``imresize(x, scale, 'bicubic')`` of a float (N, C, h, w) batch, for an integer ``scale``.

    The taps are non-persistent buffers: they follow ``.to(device)`` but are not part of the
    state dict (they are a function of ``scale``, which the generator config records). Under CUDA
    autocast the filter runs in fp32, because bf16 would quantise the image it adds to the
    network's residual more coarsely than the 8-bit output.
    """

    row_taps: Tensor  # non-persistent buffers (see the class docstring)
    col_taps: Tensor

    def __init__(self, scale: int) -> None:
        super().__init__()
        taps = torch.from_numpy(enlarge_taps(scale)).float()
        self.scale = int(scale)
        self.register_buffer("row_taps", taps.view(self.scale, 1, -1, 1), persistent=False)
        self.register_buffer("col_taps", taps.view(self.scale, 1, 1, -1), persistent=False)

    def _enlarge_rows(self, planes: Tensor) -> Tensor:
        """(P, 1, h, w) -> (P, 1, scale*h, w)."""
        height, width = planes.shape[-2], planes.shape[-1]
        padded = symmetric_pad2(planes)
        phases = F.conv2d(padded, self.row_taps.to(planes.dtype))  # (P, scale, h, w)
        return phases.permute(0, 2, 1, 3).reshape(-1, 1, height * self.scale, width)

    def _enlarge(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        planes = self._enlarge_rows(x.reshape(-1, 1, height, width))
        columns = self._enlarge_rows(planes.transpose(2, 3)).transpose(2, 3)
        return columns.reshape(batch, channels, height * self.scale, width * self.scale)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected an (N, C, H, W) batch, got shape {tuple(x.shape)}")
        if x.is_cuda and torch.is_autocast_enabled("cuda"):
            with torch.autocast("cuda", enabled=False):
                return self._enlarge(x.float())
        return self._enlarge(x)
