"""LPIPS: definition checks in random-weight mode, weight resolution, and agreement with the
reference ``lpips`` package when it is installed (its bundled linear weights, a random backbone)."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from realparts import require_module

from srseg.evaluate.lpips import (
    bundled_linear_weights,
    load_lpips,
    resolve_weight_files,
    torchvision_weights_file,
)
from srseg.models.vgg import MissingWeightsError


def _images(seed: int = 0, size: tuple[int, int] = (64, 80)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, *size, generator=g)
    y = (x + 0.15 * torch.randn(x.shape, generator=g)).clamp(0.0, 1.0)
    return x, y


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_identical_images_give_zero_and_random_mode_is_flagged(net: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="srseg.evaluate.lpips"):
        model = load_lpips("none", net)
    assert model.random_weights is True and model.weights_source == "none"
    assert any("random" in r.getMessage() for r in caplog.records)
    x, y = _images()
    with torch.inference_mode():
        same, same_map = model(x, x)
        dist, spatial = model(x, y)
    assert torch.all(same == 0) and torch.all(same_map == 0)
    assert torch.all(dist > 0)
    assert spatial.shape == (2, 1, 64, 80)
    # The upsampled map averages back to (about) the distance: it can be pooled over class masks.
    torch.testing.assert_close(spatial.mean(dim=(1, 2, 3)), dist, rtol=0.05, atol=0.0)


def test_random_mode_is_repeatable_and_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, b = load_lpips("none"), load_lpips("none")
    assert torch.equal(torch.random.get_rng_state(), state)
    x, y = _images(1)
    with torch.inference_mode():
        assert torch.equal(a(x, y)[0], b(x, y)[0])


def test_auto_without_cached_backbone_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    name, url = torchvision_weights_file("alex")
    with pytest.raises(MissingWeightsError) as info:
        resolve_weight_files("auto", "alex")
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints" / name) in str(info.value)
    assert url in str(info.value)


def test_weights_directory_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="not found"):
        resolve_weight_files(tmp_path / "absent", "alex")
    (tmp_path / "w").mkdir()
    with pytest.raises(MissingWeightsError, match=r"alexnet-owt-7be5be79\.pth.*alex\.pth"):
        resolve_weight_files(tmp_path / "w", "alex")
    with pytest.raises(ValueError, match="net must be one of"):
        resolve_weight_files("none", "squeeze")


def test_wrong_linear_file_is_rejected(tmp_path: Path) -> None:
    model = load_lpips("none")
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, tmp_path / "backbone.pth")
    with pytest.raises(ValueError, match="features"):
        model.load_backbone(tmp_path / "backbone.pth")
    torch.save({"lin0.model.1.weight": torch.zeros(1, 3, 1, 1)}, tmp_path / "alex.pth")
    with pytest.raises(ValueError, match=r"lin0\.model\.1\.weight must be \(1, 64, 1, 1\)"):
        model.load_linear(tmp_path / "alex.pth")


def test_matches_the_reference_package(tmp_path: Path) -> None:
    """Same backbone tensors and linear weights in both: same distance and same spatial map.

    AlexNet only: the package builds VGG16 with its 100M-parameter classifier, too slow for CI;
    the VGG layout shares every code path except the layer table.
    """
    net = "alex"
    lpips_pkg = require_module("lpips", "a dependency in pyproject.toml: pip install -e .")
    linear = bundled_linear_weights(net)
    assert linear is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's 'pretrained' deprecation inside the package
        reference = lpips_pkg.LPIPS(net=net, pnet_rand=True, verbose=False, spatial=True)
    state = {}
    for slice_module in reference.net.children():  # slices keep torchvision's feature indices as names
        state.update({f"features.{k}": v for k, v in slice_module.state_dict().items()})
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(state, folder / torchvision_weights_file(net)[0])
    shutil.copy(linear, folder / f"{net}.pth")

    ours = load_lpips(folder, net)
    assert ours.random_weights is False and str(folder) in ours.weights_source
    x, y = _images(2, (48, 72))
    with torch.inference_mode():
        dist, spatial = ours(x, y)
        ref_map = reference(x, y, normalize=True)
    torch.testing.assert_close(spatial, ref_map, rtol=1e-4, atol=1e-6)
    reference.spatial = False
    with torch.inference_mode():
        ref_dist = reference(x, y, normalize=True).flatten()
    torch.testing.assert_close(dist, ref_dist, rtol=1e-4, atol=1e-7)
