"""Tiny SR heads that beat bicubic on the report images, for tests of the promotion gate.

The gate is under test, not generalisation: the net is fitted to crops of the report images
themselves, with the LR the evaluation uses (the degrade stage's files). The SR head starts
slightly off zero so that the fit needs no warm-up plateau."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from srseg.config import load_params
from srseg.data.dataset import FullImageDataset
from srseg.models.generator import MultiTaskSRNet
from srseg.stages.evaluate import selection_ids


def fit_on_report_images(
    params_file: Path,
    steps: int = 100,
    num_classes: int = 0,
    seed: int = 0,
    crops: int | None = 2,
    lr_crop: int = 24,
    lr: float = 2e-3,
) -> MultiTaskSRNet:
    """A 8-feature, 1-block bicubic-residual net fitted for ``steps`` Adam steps on ``crops`` random
    ``lr_crop``-pixel LR crops per report image, or on the whole images (``crops=None``: slower,
    but a gain on every image, so that even a 5-image confidence interval clears zero)."""
    params = load_params(params_file)
    split = params.evaluate.split
    excluded = selection_ids(params, split)
    data = FullImageDataset(
        params.paths.data_root, split, params.train.scale, params.train.class_map, lr_root=params.paths.lr_root
    )
    rng = np.random.default_rng(seed)
    scale = params.train.scale
    lrs, hrs = [], []
    for index, sample in enumerate(data.source.samples):
        if sample.id in excluded:
            continue
        item = data[index]
        if crops is None:
            lrs.append(item["lr"][None])
            hrs.append(item["hr"][None])
        for _ in range(crops or 0):
            y, x = (int(rng.integers(0, n - lr_crop)) for n in item["lr"].shape[1:])
            lrs.append(item["lr"][None, :, y : y + lr_crop, x : x + lr_crop])
            hrs.append(item["hr"][None, :, scale * y : scale * (y + lr_crop), scale * x : scale * (x + lr_crop)])
    batches = (
        list(zip(lrs, hrs)) if crops is None else [(torch.cat(lrs), torch.cat(hrs))]
    )  # whole images differ in size
    torch.manual_seed(seed)
    net = MultiTaskSRNet(
        scale=scale,
        num_features=8,
        num_blocks=1,
        num_classes=num_classes,
        first_kernel_size=3,
        global_residual="bicubic",
    )
    torch.nn.init.normal_(net.sr_head.weight, std=0.01)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        sum(torch.nn.functional.l1_loss(net(low), high) for low, high in batches).backward()
        optimizer.step()
    return net.eval()
