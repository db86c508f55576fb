"""SRGAN-style discriminator: a VGG-like stride-2 conv stack, then dense layers to one logit.

Each stage is ``conv 3x3 stride 1`` then ``conv 3x3 stride 2`` (LeakyReLU 0.2, BatchNorm except on
the first conv); channels double per stage from ``num_features``. With ``input_size=None``
(default) the final feature map is globally average-pooled, so any patch size >= 2**num_stages
works (64 and 96 px patches share one network). An integer ``input_size`` reproduces SRGAN's
flatten + dense head, which fixes the patch size to exactly that value.

Spectral normalisation (Miyato et al.) wraps every conv and linear layer and replaces BatchNorm,
since both constrain the discriminator and BN would break the per-layer Lipschitz bound.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm


class VGGStyleDiscriminator(nn.Module):
    """Real/fake critic for HR patches; returns logits of shape (N, 1)."""

    def __init__(
        self,
        in_channels: int = 3,
        num_features: int = 64,
        input_size: int | None = None,
        spectral_norm: bool = False,
        num_stages: int = 4,
        dense_features: int = 1024,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("num_features", num_features),
            ("num_stages", num_stages),
            ("dense_features", dense_features),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value!r}")
        self.min_size = 2**num_stages
        if input_size is not None and (input_size < self.min_size or input_size % self.min_size):
            raise ValueError(
                f"input_size must be None or a multiple of 2**num_stages = {self.min_size}, got {input_size!r}"
            )
        self.input_size = input_size
        use_bn = not spectral_norm

        def wrap(layer: nn.Module) -> nn.Module:
            return _spectral_norm(layer) if spectral_norm else layer

        layers: list[nn.Module] = [
            wrap(nn.Conv2d(in_channels, num_features, 3, 1, 1)),
            nn.LeakyReLU(negative_slope, inplace=True),
        ]
        channels = num_features
        for stage in range(num_stages):
            out_ch = num_features * 2**stage
            if stage > 0:  # stage 0's stride-1 conv is the un-normalised first conv above
                layers += self._block(channels, out_ch, 1, use_bn, negative_slope, wrap)
            layers += self._block(out_ch, out_ch, 2, use_bn, negative_slope, wrap)
            channels = out_ch
        self.features = nn.Sequential(*layers)

        if input_size is None:
            self.pool: nn.Module = nn.AdaptiveAvgPool2d(1)
            flat = channels
        else:
            self.pool = nn.Identity()
            side = input_size // self.min_size
            flat = channels * side * side
        self.classifier = nn.Sequential(
            nn.Flatten(),
            wrap(nn.Linear(flat, dense_features)),
            nn.LeakyReLU(negative_slope, inplace=True),
            wrap(nn.Linear(dense_features, 1)),
        )

    @staticmethod
    def _block(
        in_ch: int, out_ch: int, stride: int, use_bn: bool, slope: float, wrap: Callable[[nn.Module], nn.Module]
    ) -> list[nn.Module]:
        conv = wrap(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=not use_bn))
        norm: nn.Module = nn.BatchNorm2d(out_ch) if use_bn else nn.Identity()
        return [conv, norm, nn.LeakyReLU(slope, inplace=True)]

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected an (N, C, H, W) batch, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if self.input_size is not None and (h, w) != (self.input_size, self.input_size):
            raise ValueError(f"this discriminator was built for {self.input_size}px patches, got {h}x{w}")
        if h < self.min_size or w < self.min_size:
            raise ValueError(f"patches must be at least {self.min_size}px on each side, got {h}x{w}")
        return self.classifier(self.pool(self.features(x)))
