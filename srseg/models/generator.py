"""The multitask generator: one SRResNet-style trunk and shared decoder, two output layers.

Rad et al. (arXiv 1907.12488) attach a segmentation output layer to the shared decoder of a
SRGAN-family generator so that the semantic task shapes the decoder's features during training.
At inference only the SR output layer runs, so the deployed network is an ordinary SR net.

Layout (all sizes are constructor parameters)::

    lr -> first conv (k x k) -> act ----------------------------.          (LR resolution)
              -> num_blocks residual blocks -> conv (+BN) -> (+) trunk skip
         -> shared decoder: upsample stages [conv -> pixel shuffle -> act] (HR resolution)
                            then decoder_convs x [conv 3x3 -> act]
         -> shared HR features --+--> sr_head  : conv -> RGB  (+ bicubic(lr))  (used at inference)
                                 '--> seg_head : conv(s) -> class logits (training only)

``global_residual="bicubic"`` (our choice beyond the paper, which publishes no image-level skip)
adds MATLAB-bicubic(lr) to the SR output and zero-initialises the SR head, so the network starts
exactly at bicubic quality and learns only the missing detail; ``"none"`` is the SRGAN-family
layout closest to the paper. Either way the segmentation head sees the same shared features.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from srseg.models.upsample import RADIUS as BICUBIC_RADIUS
from srseg.models.upsample import BicubicUpsample

_SEG_PREFIX = "seg_head."
GLOBAL_RESIDUALS = ("none", "bicubic")


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _check_odd_kernel(name: str, value: int) -> None:
    if value < 1 or value % 2 == 0:
        raise ValueError(f"{name} must be a positive odd integer (same padding), got {value!r}")


def upsample_factors(scale: int) -> list[int]:
    """Pixel-shuffle stages for a scale: x2 stages for powers of two, one x3 stage for 3."""
    if scale == 3:
        return [3]
    if isinstance(scale, int) and scale >= 2 and scale & (scale - 1) == 0:
        return [2] * (scale.bit_length() - 1)
    raise ValueError(f"scale must be 3 or a power of two >= 2 (2, 4, 8, ...), got {scale!r}")


class ResidualBlock(nn.Module):
    """conv-(BN)-PReLU-conv-(BN) + identity; ``res_scale`` < 1 stabilises deep BN-free bodies."""

    def __init__(self, num_features: int, use_batchnorm: bool = False, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_features, num_features, 3, padding=1, bias=not use_batchnorm)
        self.bn1: nn.Module = nn.BatchNorm2d(num_features) if use_batchnorm else nn.Identity()
        self.act = nn.PReLU(num_features)
        self.conv2 = nn.Conv2d(num_features, num_features, 3, padding=1, bias=not use_batchnorm)
        self.bn2: nn.Module = nn.BatchNorm2d(num_features) if use_batchnorm else nn.Identity()
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        if self.res_scale != 1.0:
            out = out * self.res_scale
        return x + out


class UpsampleStage(nn.Module):
    """conv to F*r^2 channels, pixel shuffle by r, PReLU (sub-pixel convolution, Shi et al.)."""

    def __init__(self, num_features: int, factor: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(num_features, num_features * factor * factor, 3, padding=1)
        self.shuffle = nn.PixelShuffle(factor)
        self.act = nn.PReLU(num_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.shuffle(self.conv(x)))


def _check_settings(
    in_channels: int,
    num_features: int,
    num_blocks: int,
    num_classes: int,
    decoder_convs: int,
    seg_head_features: int | None,
    first_kernel_size: int,
    head_kernel_size: int,
    res_scale: float,
    global_residual: str,
) -> None:
    """A ValueError naming the first bad constructor argument of :class:`MultiTaskSRNet`."""
    if global_residual not in GLOBAL_RESIDUALS:
        raise ValueError(f"global_residual must be one of {GLOBAL_RESIDUALS}, got {global_residual!r}")
    for name, value in (("in_channels", in_channels), ("num_features", num_features)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value!r}")
    counts = (("num_blocks", num_blocks), ("num_classes", num_classes), ("decoder_convs", decoder_convs))
    for name, value in counts:
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    if seg_head_features is not None and seg_head_features < 1:
        raise ValueError(f"seg_head_features must be None or >= 1, got {seg_head_features!r}")
    if not res_scale > 0:
        raise ValueError(f"res_scale must be > 0, got {res_scale!r}")
    _check_odd_kernel("first_kernel_size", first_kernel_size)
    _check_odd_kernel("head_kernel_size", head_kernel_size)


def _seg_head(num_features: int, num_classes: int, hidden: int | None, kernel_size: int) -> nn.Module | None:
    """The segmentation output layer: none, one conv, or a hidden conv + ReLU + 1x1 classifier."""
    if num_classes == 0:
        return None
    if hidden is None:
        return nn.Conv2d(num_features, num_classes, kernel_size, padding=kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(num_features, hidden, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, num_classes, 1),
    )


class MultiTaskSRNet(nn.Module):
    """SRResNet-style generator with a shared decoder and SR + segmentation output layers.

    Inputs are float images in [0, 1], shape (N, in_channels, h, w); any h, w >= 1 works.
    ``forward`` returns only the SR image (N, in_channels, scale*h, scale*w), unclamped, and never
    runs the segmentation head; ``forward_multitask`` returns ``(sr, seg_logits)`` with logits of
    shape (N, num_classes, scale*h, scale*w). ``num_classes=0`` builds a pure SR net
    (``seg_head is None``).

    ``seg_head_features=None`` makes the segmentation head one conv (``head_kernel_size``) from the
    shared features to the logits; an integer adds a hidden conv 3x3 + ReLU of that width followed
    by a 1x1 classifier, giving the semantic task its own capacity.

    ``global_residual="bicubic"`` makes the SR output ``bicubic(lr) + sr_head(features)`` with the
    SR head initialised to zero (see the module docstring); ``"none"`` outputs ``sr_head(features)``.
    """

    def __init__(
        self,
        scale: int = 4,
        in_channels: int = 3,
        num_features: int = 64,
        num_blocks: int = 16,
        num_classes: int = 171,
        decoder_convs: int = 1,
        seg_head_features: int | None = None,
        use_batchnorm: bool = False,
        first_kernel_size: int = 9,
        head_kernel_size: int = 3,
        res_scale: float = 1.0,
        global_residual: str = "none",
    ) -> None:
        super().__init__()
        factors = upsample_factors(scale)
        _check_settings(
            in_channels,
            num_features,
            num_blocks,
            num_classes,
            decoder_convs,
            seg_head_features,
            first_kernel_size,
            head_kernel_size,
            res_scale,
            global_residual,
        )
        self._config: dict[str, Any] = {
            "scale": scale,
            "in_channels": in_channels,
            "num_features": num_features,
            "num_blocks": num_blocks,
            "num_classes": num_classes,
            "decoder_convs": decoder_convs,
            "seg_head_features": seg_head_features,
            "use_batchnorm": use_batchnorm,
            "first_kernel_size": first_kernel_size,
            "head_kernel_size": head_kernel_size,
            "res_scale": res_scale,
            "global_residual": global_residual,
        }
        self.scale = scale
        self.num_classes = num_classes

        # Feature extractor and residual trunk at LR resolution.
        self.head = nn.Sequential(
            nn.Conv2d(in_channels, num_features, first_kernel_size, padding=first_kernel_size // 2),
            nn.PReLU(num_features),
        )
        self.body = nn.Sequential(
            *(ResidualBlock(num_features, use_batchnorm, res_scale) for _ in range(num_blocks)),
            nn.Conv2d(num_features, num_features, 3, padding=1, bias=not use_batchnorm),
            nn.BatchNorm2d(num_features) if use_batchnorm else nn.Identity(),
        )
        # Shared decoder: upsampling then HR-resolution convolutions.
        decoder: list[nn.Module] = [UpsampleStage(num_features, f) for f in factors]
        for _ in range(decoder_convs):
            decoder += [nn.Conv2d(num_features, num_features, 3, padding=1), nn.PReLU(num_features)]
        self.decoder = nn.Sequential(*decoder)

        # Task-specific output layers.
        pad = head_kernel_size // 2
        self.sr_head = nn.Conv2d(num_features, in_channels, head_kernel_size, padding=pad)
        self.skip: BicubicUpsample | None = None
        if global_residual == "bicubic":
            self.skip = BicubicUpsample(scale)
            nn.init.zeros_(self.sr_head.weight)  # step 0 outputs exactly bicubic(lr)
            if self.sr_head.bias is not None:  # always, typed Optional by torch
                nn.init.zeros_(self.sr_head.bias)
        self.seg_head: nn.Module | None = _seg_head(num_features, num_classes, seg_head_features, head_kernel_size)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments, so the same network can be rebuilt (export, checkpoints)."""
        return dict(self._config)

    @property
    def has_seg_head(self) -> bool:
        return self.seg_head is not None

    def shared_features(self, lr: Tensor) -> Tensor:
        """Last shared HR features, the input of both output layers."""
        if lr.dim() != 4:
            raise ValueError(f"expected an (N, C, H, W) batch, got shape {tuple(lr.shape)}")
        feat = self.head(lr)
        feat = feat + self.body(feat)
        return self.decoder(feat)

    def _sr_output(self, lr: Tensor, feat: Tensor) -> Tensor:
        sr = self.sr_head(feat)
        return sr if self.skip is None else sr + self.skip(lr)

    def forward(self, lr: Tensor) -> Tensor:
        """Inference path: the SR image only (unclamped); the segmentation head is not run."""
        return self._sr_output(lr, self.shared_features(lr))

    def forward_multitask(self, lr: Tensor) -> tuple[Tensor, Tensor]:
        """Training path: ``(sr, seg_logits)`` from the same shared features."""
        if self.seg_head is None:
            raise RuntimeError("forward_multitask needs a segmentation head, but this net has num_classes=0")
        feat = self.shared_features(lr)
        return self._sr_output(lr, feat), self.seg_head(feat)

    @torch.no_grad()
    def super_resolve(self, lr: Tensor) -> Tensor:
        """Inference helper: SR output clamped to the valid [0, 1] range, without autograd."""
        return self.forward(lr).clamp_(0.0, 1.0)

    def sr_state_dict(self) -> dict[str, Tensor]:
        """State dict without the segmentation head: everything the SR path needs."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(_SEG_PREFIX)}

    def num_parameters(self, include_seg_head: bool = True) -> int:
        """Parameter count, optionally without the training-only segmentation head."""
        total = count_parameters(self)
        if not include_seg_head and self.seg_head is not None:
            total -= count_parameters(self.seg_head)
        return total

    @staticmethod
    def receptive_field_radius(config: dict[str, Any]) -> int:
        """Receptive-field radius in LR pixels of the SR output of a network with ``config``.

        LR-resolution convs add their radius directly: first conv ``k // 2``, two 3x3 per residual
        block, the trunk's closing 3x3, and the first upsample conv. Convs after a pixel shuffle
        run at ``r`` times LR resolution and add ``1 / r`` LR px each (later upsample convs,
        decoder convs, the SR head's ``head_kernel_size // 2``). The fractional part is rounded
        up, which is exact because an HR pixel's LR parent is ``floor(y / scale)``. The bicubic
        global residual reads 2 LR px around the parent, less than any trunk, but is counted.
        For the paper setting (9x9 first conv, 16 blocks, x4, 1 decoder conv, 3x3 head) it is 39.
        """
        scale = int(config["scale"])
        factors = upsample_factors(scale)
        lr_px = int(config["first_kernel_size"]) // 2 + 2 * int(config["num_blocks"]) + 1
        hr_px = 0  # radius contributed at finer resolutions, in HR pixels
        resolution = 1
        for factor in factors:
            hr_px += scale // resolution  # one 3x3 conv at the current resolution
            resolution *= factor
        hr_px += int(config.get("decoder_convs", 1)) + int(config["head_kernel_size"]) // 2
        radius = lr_px + math.ceil(hr_px / scale)
        if config.get("global_residual", "none") == "bicubic":
            radius = max(radius, BICUBIC_RADIUS)
        return radius


def build_sr_only(model: MultiTaskSRNet) -> MultiTaskSRNet:
    """A ``num_classes=0`` copy of ``model`` with identical shared and SR weights (for export).

    The copy lives on the same device/dtype as ``model`` and is in the same train/eval mode.
    """
    sr_net = type(model)(**{**model.config, "num_classes": 0, "seg_head_features": None})
    ref = next(model.parameters())
    sr_net.to(device=ref.device, dtype=ref.dtype)
    sr_net.load_state_dict(model.sr_state_dict(), strict=True)
    sr_net.train(model.training)
    return sr_net
