"""Tiled inference: receptive field, grid coverage, exactness against whole-image inference.

Tolerances: with ``overlap >= receptive_field_radius`` tiles equal the whole image up to float
rounding (max abs diff <= 1e-5 in fp32); with 3 px less overlap the seam error of the tiny random
net stays <= 1e-3 and shrinks as the overlap grows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srseg.inference.tiling import receptive_field_radius, tile_grid, tiled_super_resolve
from srseg.models.generator import MultiTaskSRNet

PAPER = dict(scale=4, num_features=64, num_blocks=16, decoder_convs=1, first_kernel_size=9, head_kernel_size=3)


def _tiny(seed: int = 0, **overrides: object) -> MultiTaskSRNet:
    torch.manual_seed(seed)
    config = dict(num_features=8, num_blocks=2, num_classes=0)
    config.update(overrides)
    return MultiTaskSRNet(**config).eval()


@pytest.fixture(scope="module")
def baby_crop(set5: Path) -> torch.Tensor:
    """A 69x89 crop of a real image (odd sizes, not multiples of the tile)."""
    rgb = np.array(Image.open(set5 / "HR" / "baby.png").convert("RGB"))[200:269, 150:239]
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div(255.0)


def test_paper_receptive_field_radius() -> None:
    assert receptive_field_radius({**PAPER, "num_classes": 171}) == 39


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"scale": 2, "decoder_convs": 0},
        {"scale": 3, "decoder_convs": 2, "first_kernel_size": 3},
        {"scale": 8, "num_blocks": 1, "head_kernel_size": 5},
    ],
)
def test_receptive_field_radius_matches_an_impulse_response(overrides: dict) -> None:
    """Positive weights make every dependency visible: the footprint of one LR impulse."""
    model = _tiny(**overrides)
    with torch.no_grad():
        for param in model.parameters():
            param.abs_()
        size, centre = 61, 30
        impulse = torch.zeros(1, 3, size, size)
        impulse[..., centre, centre] = 1.0
        diff = (model(impulse) - model(torch.zeros_like(impulse))).abs().sum(1)[0]
    rows = torch.nonzero(diff.sum(1) > 0).flatten()
    scale = model.scale
    measured = max(centre - int(rows.min()) // scale, int(rows.max()) // scale - centre)
    assert measured == receptive_field_radius(model.config)


@pytest.mark.parametrize("height,width", [(1, 1), (33, 65), (100, 37), (64, 64)])
def test_grid_covers_every_pixel_once_with_equal_windows(height: int, width: int) -> None:
    tile, overlap = 32, 5
    tiles = tile_grid(height, width, tile, overlap)
    count = np.zeros((height, width), dtype=int)
    shapes = set()
    for t in tiles:
        count[t.y0 : t.y1, t.x0 : t.x1] += 1
        shapes.add((t.wy1 - t.wy0, t.wx1 - t.wx0))
        assert t.wy0 <= t.y0 < t.y1 <= t.wy1 and t.wx0 <= t.x0 < t.x1 <= t.wx1
        # context on each side: the full overlap, or up to the image edge
        assert t.y0 - t.wy0 >= min(overlap, t.y0) and t.wy1 - t.y1 >= min(overlap, height - t.y1)
        assert t.x0 - t.wx0 >= min(overlap, t.x0) and t.wx1 - t.x1 >= min(overlap, width - t.x1)
    assert (count == 1).all()
    assert shapes == {(min(tile + 2 * overlap, height), min(tile + 2 * overlap, width))}


def test_grid_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="tile must be >= 1"):
        tile_grid(10, 10, 0, 2)
    with pytest.raises(ValueError, match="tile_overlap must be >= 0"):
        tile_grid(10, 10, 4, -1)
    with pytest.raises(ValueError, match="positive"):
        tile_grid(0, 10, 4, 1)


def test_tiled_equals_untiled_when_overlap_covers_the_receptive_field(baby_crop: torch.Tensor) -> None:
    model = _tiny()
    radius = receptive_field_radius(model.config)
    with torch.inference_mode():
        whole = model(baby_crop[None])[0]
    tiled = tiled_super_resolve(model, baby_crop, 4, tile=32, overlap=radius, batch_size=3)
    assert tiled.shape == whole.shape == (3, 69 * 4, 89 * 4)
    assert float((tiled - whole).abs().max()) <= 1e-5


def test_smaller_overlap_gives_a_small_bounded_error(baby_crop: torch.Tensor) -> None:
    model = _tiny()
    radius = receptive_field_radius(model.config)
    with torch.inference_mode():
        whole = model(baby_crop[None])[0]
    errors = [
        float((tiled_super_resolve(model, baby_crop, 4, tile=32, overlap=o) - whole).abs().max())
        for o in (0, radius // 2, radius - 3)
    ]
    assert errors[0] > errors[1] > errors[2] > 0
    assert errors[2] <= 1e-3


def test_batched_tiles_equal_one_by_one(baby_crop: torch.Tensor) -> None:
    model = _tiny(seed=3)
    one = tiled_super_resolve(model, baby_crop, 4, tile=24, overlap=6, batch_size=1)
    many = tiled_super_resolve(model, baby_crop, 4, tile=24, overlap=6, batch_size=5)
    assert float((one - many).abs().max()) <= 1e-6


def test_uint8_output_is_the_clamped_rounded_float_output(baby_crop: torch.Tensor) -> None:
    model = _tiny()
    as_float = tiled_super_resolve(model, baby_crop, 4, tile=None)
    as_uint8 = tiled_super_resolve(model, baby_crop, 4, tile=None, out_dtype=torch.uint8)
    assert as_uint8.dtype == torch.uint8
    assert torch.equal(as_uint8, as_float.clamp(0, 1).mul(255).round().to(torch.uint8))


def test_wrong_model_output_shape_is_reported() -> None:
    with pytest.raises(ValueError, match="model returned shape"):
        tiled_super_resolve(lambda x: x, torch.rand(3, 8, 8), 4, tile=4, overlap=1)


def test_tiles_are_exact_with_the_bicubic_global_residual(baby_crop: torch.Tensor) -> None:
    """The bicubic path mirrors pixels at the image border and reads 2 LR px: within the radius,
    so tiled output still equals whole-image output (and an impulse shows the same footprint)."""
    model = _tiny(seed=4, global_residual="bicubic", num_blocks=1)
    with torch.no_grad():
        model.sr_head.weight.normal_(std=0.05)
    radius = receptive_field_radius(model.config)
    whole = tiled_super_resolve(model, baby_crop, 4, tile=None)
    tiled = tiled_super_resolve(model, baby_crop, 4, tile=16, overlap=radius)
    assert float((whole - tiled).abs().max()) <= 1e-5
