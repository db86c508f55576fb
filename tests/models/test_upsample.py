"""The generator's bicubic path: equal to the project's MATLAB imresize, exportable, fp32 under AMP."""

from __future__ import annotations

import pytest
import torch

from srseg.degrade.bicubic import ENLARGE_RADIUS, enlarge_taps, imresize
from srseg.models.upsample import RADIUS, BicubicUpsample, symmetric_pad2


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize(
    "shape", [(1, 1, 1, 1), (2, 3, 1, 5), (1, 3, 2, 3), (1, 3, 3, 2), (2, 3, 17, 23), (1, 3, 48, 64)]
)
def test_equals_matlab_imresize_on_float_input(scale: int, shape: tuple[int, ...]) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(scale))
    out = BicubicUpsample(scale)(x)
    assert out.shape == (*shape[:2], shape[2] * scale, shape[3] * scale)
    assert (out - imresize(x, scale=float(scale))).abs().max() <= 1e-5


def test_taps_sum_to_one_and_radius_matches_padding() -> None:
    assert RADIUS == ENLARGE_RADIUS == 2
    for scale in (2, 3, 4, 8):
        taps = enlarge_taps(scale)
        assert taps.shape == (scale, 2 * RADIUS + 1)
        assert abs(taps.sum(1) - 1.0).max() < 1e-12
    with pytest.raises(ValueError, match="scale"):
        enlarge_taps(1)


def test_symmetric_padding_repeats_the_edge() -> None:
    row = torch.tensor([[[[1.0], [2.0], [3.0]]]])  # (1, 1, 3, 1)
    assert symmetric_pad2(row).flatten().tolist() == [2.0, 1.0, 1.0, 2.0, 3.0, 3.0, 2.0]
    single = torch.tensor([[[[5.0]]]])
    assert symmetric_pad2(single).flatten().tolist() == [5.0] * 5


def test_taps_are_not_state_and_follow_the_dtype() -> None:
    module = BicubicUpsample(4)
    assert module.state_dict() == {}
    x = torch.rand(1, 3, 5, 4, dtype=torch.float64)
    assert module(x).dtype == torch.float64
    assert (module(x) - imresize(x, scale=4.0)).abs().max() <= 1e-12
