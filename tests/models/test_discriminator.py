"""Discriminator: any patch size with global pooling, fixed-size SRGAN head, spectral norm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from srseg.models.discriminator import VGGStyleDiscriminator


@pytest.mark.parametrize("size", [64, 96])
def test_pooled_head_accepts_any_patch_size(size: int) -> None:
    disc = VGGStyleDiscriminator(num_features=8, dense_features=16)
    assert disc(torch.rand(2, 3, size, size)).shape == (2, 1)


def test_fixed_input_size_head() -> None:
    disc = VGGStyleDiscriminator(num_features=8, input_size=96, dense_features=16)
    assert disc(torch.rand(2, 3, 96, 96)).shape == (2, 1)
    with pytest.raises(ValueError, match="96px.*64x64"):
        disc(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="input_size.*50"):
        VGGStyleDiscriminator(input_size=50)


def test_spectral_norm_variant_has_no_batchnorm_and_trains() -> None:
    disc = VGGStyleDiscriminator(num_features=8, dense_features=16, spectral_norm=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in disc.modules())
    assert any(k.endswith("parametrizations.weight.original") for k in disc.state_dict())
    out = disc(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 1) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in disc.parameters())


def test_batchnorm_variant_and_too_small_patch() -> None:
    disc = VGGStyleDiscriminator(num_features=8, dense_features=16)
    assert any(isinstance(m, nn.BatchNorm2d) for m in disc.modules())
    with pytest.raises(ValueError, match="at least 16px"):
        disc(torch.rand(1, 3, 8, 8))
