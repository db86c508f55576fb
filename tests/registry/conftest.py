"""Fixtures for the registry tests: real SR-head weights files (hand-set ones that are worse than
bicubic, and small nets trained until they beat it), a local SQLite tracking store, a Set5
evaluator returning per-image scores, real COCO-Stuff report images with a head fitted to them
(:class:`ReportImages`), and the real servers (context managers in ``servers.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from srseg.degrade.bicubic import bicubic_downscale, imresize, modcrop
from srseg.imageio import load_rgb
from srseg.inference.upscale import LoadedImage, SRModel, upscale_image
from srseg.metrics import image_metrics
from srseg.models.generator import MultiTaskSRNet
from srseg.models.io import save_generator
from srseg.registry import load_sr_head

SCALE = 4
TINY = {"scale": SCALE, "num_features": 8, "num_blocks": 1, "num_classes": 0, "first_kernel_size": 3}
SET5 = ("baby", "bird", "butterfly", "head", "woman")
CROPS = ((0.3, 0.3), (0.65, 0.6))  # two 64 px crops per image, at these fractions of the free range


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


def set5_pairs(set5: Path, size: int = 64) -> list[tuple[torch.Tensor, np.ndarray]]:
    """(LR float (3, h, w) in [0, 1], HR uint8) for two crops of each Set5 image: the evaluation set."""
    pairs = []
    for name in SET5:
        full = np.asarray(modcrop(load_rgb(set5 / "HR" / f"{name}.png"), SCALE))
        for fy, fx in CROPS:
            top = int((full.shape[0] - size) * fy) // SCALE * SCALE
            left = int((full.shape[1] - size) * fx) // SCALE * SCALE
            hr = np.ascontiguousarray(full[top : top + size, left : left + size])
            lr = bicubic_downscale(torch.from_numpy(hr).permute(2, 0, 1).contiguous(), SCALE)
            pairs.append((lr.float() / 255.0, hr))
    return pairs


def trained_net(pairs: list[tuple[torch.Tensor, np.ndarray]], steps: int, seed: int) -> MultiTaskSRNet:
    """A tiny bicubic-residual SR head fitted to ``pairs`` (the evaluation crops themselves: these
    tests check the gate, not generalisation, so a net that beats bicubic there is all they need)."""
    torch.manual_seed(seed)
    net = MultiTaskSRNet(**{**TINY, "global_residual": "bicubic"})
    lr = torch.stack([p[0] for p in pairs])
    hr = torch.stack([torch.from_numpy(p[1]).permute(2, 0, 1).float() / 255.0 for p in pairs])
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.l1_loss(net(lr), hr).backward()
        optimizer.step()
    return net.eval()


@pytest.fixture(scope="session")
def sr_heads(tmp_path_factory: pytest.TempPathFactory, set5: Path) -> dict[str, Path]:
    """Weights files (safetensors + sidecar), from worst to best on the Set5 crops: ``random``,
    ``dimmed`` and ``nearest`` (all worse than bicubic), ``barely`` (30 steps of fitting: within a
    few thousandths of a dB of bicubic, either way), ``fitted`` (~+0.5 dB) and ``fitted_more``
    (longer, so it also beats ``fitted``)."""
    root = tmp_path_factory.mktemp("sr_heads")
    good = nearest_neighbour_net()
    torch.manual_seed(1)
    pairs = set5_pairs(set5)
    nets = {
        "nearest": good,
        "dimmed": dimmed(good, 0.8),
        "random": MultiTaskSRNet(**TINY).eval(),
        "barely": trained_net(pairs, 30, seed=2),
        "fitted": trained_net(pairs, 90, seed=2),
        "fitted_more": trained_net(pairs, 160, seed=2),
    }
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
    """``{role: model spec} -> {role: {"psnr_y": [per crop], "lpips": None}}`` on fixed Set5 crops,
    the interface of ``srseg.registry.promote``; ``bicubic`` is MATLAB bicubic. Records the specs.

    LPIPS is reported as unavailable (its backbone weights are not shipped with the tests), so a
    gate with ``perceptual="lpips"`` fails closed on it.
    """

    def __init__(self, set5: Path, tracking_uri: str):
        self.tracking_uri = tracking_uri
        self.pairs = set5_pairs(set5)
        self.calls: list[dict[str, str]] = []

    def psnr(self, spec: str) -> list[float]:
        if spec == "bicubic":
            model: torch.nn.Module = _Bicubic()
        else:
            model = load_sr_head(spec, self.tracking_uri)
        return [
            image_metrics(super_resolve_uint8(model, lr, spec), hr, crop_border=SCALE)["psnr_y"]
            for lr, hr in self.pairs
        ]

    def __call__(self, specs: dict[str, str]) -> dict[str, dict[str, list[float] | None]]:
        self.calls.append(dict(specs))
        return {role: {"psnr_y": self.psnr(spec), "lpips": None} for role, spec in specs.items()}


class _Bicubic(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return imresize(x, scale=float(SCALE))


@pytest.fixture(scope="module")
def server_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """(mlflow server, SeaweedFS S3 server, artifacts destination), started once per module."""
    from servers import mlflow_on_seaweed

    with mlflow_on_seaweed(tmp_path_factory.mktemp("servers")) as stack:
        yield stack


# ------------------------------------------------------------------------- real report images

VAL_IDS = (139, 785, 1268, 1490, 1503, 1584, 1818, 1993)  # the sample's val split: 1 selection, 7 report images


@dataclass(frozen=True)
class ReportImages:
    """A prepared COCO-Stuff root (8 val images: 1 selection + 7 report images) with its degraded LR
    root, and SR heads: ``fitted`` beats bicubic on the report images, ``nearest`` does not."""

    root: Path
    lr_root: Path
    fitted: Path
    nearest: Path

    def params(self, path: Path, model_name: str, tracking_uri: str, **sections: dict[str, Any]) -> Path:
        """Write a params file for the gate on these images (CPU, perceptual none, floor 0.1 dB)."""
        from srseg.config import deep_merge

        raw = {
            "paths": {"data_root": str(self.root), "lr_root": str(self.lr_root)},
            "train": {"class_map": "coarse8", "selection_images": 1, "device": "cpu", "lr_source": "precomputed"},
            "evaluate": {"output_dir": str(path.parent / "evaluate"), "bootstrap": 200},
            "registry": {"model_name": model_name},
            "promote": {"perceptual": "none", "min_gain_over_bicubic_db": 0.1},
            "mlflow": {"tracking_uri": tracking_uri},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(deep_merge(raw, sections)))
        return path


@pytest.fixture(scope="session")
def report_images(
    tmp_path_factory: pytest.TempPathFactory, cocostuff_sample: Path, sr_heads: dict[str, Path]
) -> ReportImages:
    from fitting import fit_on_report_images
    from train.trainkit import build_prepared_root

    from srseg.config import load_params
    from srseg.stages import run_degrade

    tmp = tmp_path_factory.mktemp("report_images")
    root = build_prepared_root(cocostuff_sample, tmp / "data" / "cocostuff", train_ids=(17914,), val_ids=VAL_IDS)
    images = ReportImages(root, tmp / "data" / "lr", tmp / "fitted" / "sr_head.safetensors", sr_heads["nearest"])
    params_file = images.params(tmp / "params.yaml", "unused", f"sqlite:///{tmp / 'unused.db'}")
    run_degrade(load_params(params_file))
    save_generator(fit_on_report_images(params_file), images.fitted)
    return images
