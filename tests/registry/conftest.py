"""Fixtures for the registry tests: real SR-head weights files, a local SQLite tracking store, a
Set5 PSNR evaluator, and the real servers (context managers in ``servers.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from srseg.degrade.bicubic import bicubic_downscale, modcrop
from srseg.imageio import load_rgb
from srseg.inference.upscale import LoadedImage, SRModel, upscale_image
from srseg.metrics import image_metrics
from srseg.models.generator import MultiTaskSRNet
from srseg.models.io import save_generator
from srseg.registry import load_sr_head

SCALE = 4
TINY = {"scale": SCALE, "num_features": 8, "num_blocks": 1, "num_classes": 0, "first_kernel_size": 3}


def nearest_neighbour_net() -> MultiTaskSRNet:
    """A tiny SR head set up by hand to copy each LR pixel to its 4x4 HR block (nearest neighbour).

    Deterministic and far better than random weights, without spending test time on training:
    the first conv and every PReLU pass RGB through, the residual body adds zero, each pixel
    shuffle stage replicates a feature to its 2x2 sub-pixels, and the head reads RGB back out.
    """
    torch.manual_seed(0)
    net = MultiTaskSRNet(**TINY).eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.PReLU):
                module.weight.fill_(1.0)
        for conv in (net.head[0], net.sr_head):
            conv.weight.zero_()
            conv.bias.zero_()
        k = net.head[0].kernel_size[0] // 2
        for c in range(3):
            net.head[0].weight[c, c, k, k] = 1.0
            net.sr_head.weight[c, c, 1, 1] = 1.0
        body_out = net.body[-2]
        body_out.weight.zero_()
        body_out.bias.zero_()
        for stage in net.decoder:
            if hasattr(stage, "shuffle"):
                r = stage.shuffle.upscale_factor
                stage.conv.weight.zero_()
                stage.conv.bias.zero_()
                for c in range(net.config["num_features"]):
                    for k2 in range(r * r):
                        stage.conv.weight[c * r * r + k2, c, 1, 1] = 1.0
            elif isinstance(stage, torch.nn.Conv2d):
                stage.weight.zero_()
                stage.bias.zero_()
                for c in range(stage.in_channels):
                    stage.weight[c, c, 1, 1] = 1.0
    return net


def dimmed(net: MultiTaskSRNet, factor: float) -> MultiTaskSRNet:
    """The same net with its output scaled by ``factor``: clearly worse images, same architecture."""
    out = MultiTaskSRNet(**net.config).eval()
    out.load_state_dict(net.state_dict())
    with torch.no_grad():
        out.sr_head.weight.mul_(factor)
        out.sr_head.bias.mul_(factor)
    return out


@pytest.fixture(scope="session")
def sr_heads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Weights files (safetensors + sidecar): ``nearest`` (good), ``dimmed`` (worse), ``random`` (bad)."""
    root = tmp_path_factory.mktemp("sr_heads")
    good = nearest_neighbour_net()
    torch.manual_seed(1)
    nets = {"nearest": good, "dimmed": dimmed(good, 0.8), "random": MultiTaskSRNet(**TINY).eval()}
    return {name: save_generator(net, root / name / "sr_head.safetensors") for name, net in nets.items()}


@pytest.fixture(scope="module")
def local_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite tracking/registry URI with the ``srseg`` experiment's artifacts in a temp folder."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow_local")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("srseg", artifact_location=(root / "artifacts").as_uri())
    return uri


def lr_hr_pairs(set5: Path, names: tuple[str, ...], crop: int) -> list[tuple[torch.Tensor, np.ndarray]]:
    """(LR float (3, h, w) in [0, 1], HR uint8 (H, W, 3)) centre crops, LR by MATLAB bicubic."""
    pairs = []
    for name in names:
        hr = np.asarray(modcrop(load_rgb(set5 / "HR" / f"{name}.png"), SCALE))
        top, left = ((hr.shape[0] - crop) // 2) // SCALE * SCALE, ((hr.shape[1] - crop) // 2) // SCALE * SCALE
        hr = np.ascontiguousarray(hr[top : top + crop, left : left + crop])
        lr = bicubic_downscale(torch.from_numpy(hr).permute(2, 0, 1).contiguous(), SCALE)
        pairs.append((lr.float() / 255.0, hr))
    return pairs


def super_resolve_uint8(net: torch.nn.Module, lr: torch.Tensor, name: str) -> np.ndarray:
    """Upscale through ``srseg.inference.upscale.upscale_image`` (tiling, clamping, uint8 rounding)."""
    model = SRModel(fn=net, scale=SCALE, name=name, device=torch.device("cpu"))
    with torch.inference_mode():
        image = upscale_image(model, LoadedImage(lr, None, False), tile=None)
    return np.asarray(image)


class Set5Evaluator:
    """``model_uri -> {"psnr_y", "lpips"}`` on fixed Set5 crops; records the URIs it was asked for.

    LPIPS is reported as unavailable (its backbone weights are not shipped with the tests), so a
    gate with ``perceptual="lpips"`` fails closed on it.
    """

    def __init__(self, set5: Path, tracking_uri: str, names: tuple[str, ...] = ("baby", "bird", "butterfly"), crop: int = 96):
        self.tracking_uri = tracking_uri
        self.pairs = lr_hr_pairs(set5, names, crop)
        self.calls: list[str] = []

    def __call__(self, model_uri: str) -> dict[str, float | None]:
        self.calls.append(model_uri)
        net = load_sr_head(model_uri, self.tracking_uri)
        scores = [image_metrics(super_resolve_uint8(net, lr, model_uri), hr, crop_border=SCALE)["psnr_y"] for lr, hr in self.pairs]
        return {"psnr_y": float(np.mean(scores)), "lpips": None}


@pytest.fixture(scope="module")
def server_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """(mlflow server, SeaweedFS S3 server, artifacts destination), started once per module."""
    from servers import mlflow_on_seaweed

    with mlflow_on_seaweed(tmp_path_factory.mktemp("servers")) as stack:
        yield stack
