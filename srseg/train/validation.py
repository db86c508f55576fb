"""Validation of the EMA generator: SR fidelity on the SR path and segmentation quality.

Conventions, so numbers compare with published tables (see ``srseg/metrics.py``):

- SR: the EMA output is clamped to [0, 1], rounded to uint8, and compared with the modcropped HR
  image (``FullImageDataset``) by ``psnr_y`` / ``ssim_y`` with ``scale`` pixels cropped from each
  border. Values are means over images.
- Segmentation: arg-max of the segmentation head's logits against the label map on the HR grid,
  ignore index excluded. ``miou`` is the mean over classes with a non-empty union
  (prediction or ground truth) of the dataset-wide confusion matrix; ``pixel_acc`` is correct
  labelled pixels / labelled pixels.
- LR input is the precomputed LR image when the dataset has one, otherwise the same MATLAB bicubic
  synthesis as in training, done on the device.
- ``lpips`` (only with an LPIPS model, for the GAN stage's checkpoint choice): mean over images of
  LPIPS between the uint8-rounded SR and HR images, ``scale`` border pixels cropped, as in
  ``srseg evaluate``.
- The dataset is the *selection* part of the validation split (``srseg.data.holdout``): these
  numbers choose checkpoints, so they are never the ones reported.

Under DDP each rank evaluates every ``world_size``-th image and the sums are all-reduced, so the
result is the same as a single-process validation.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from srseg.degrade.bicubic import bicubic_downscale
from srseg.metrics import image_metrics
from srseg.train.distributed import DistInfo, all_gather_objects, all_reduce_sum

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
SAMPLE_CROP = 192  # HR pixels per side shown in the sample grids


def to_uint8(image: Tensor) -> Tensor:
    """[0, 1] float -> uint8 with rounding (what a saved PNG holds)."""
    return image.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def synthesize_lr(hr: Tensor, scale: int) -> Tensor:
    """MATLAB-bicubic LR of an (N, C, H, W) [0, 1] HR batch, rounded to uint8 levels like the
    degrade stage's PNGs, returned as float in [0, 1] on the same device."""
    return bicubic_downscale(to_uint8(hr), scale).float().div_(255.0)


def autocast_context(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA when ``amp``; a no-op elsewhere (CPU trains in fp32)."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def confusion_matrix(pred: Tensor, label: Tensor, num_classes: int) -> Tensor:
    """(num_classes, num_classes) int64 counts, rows = ground truth; ignore-index pixels dropped."""
    valid = (label != IGNORE_INDEX) & (label >= 0) & (label < num_classes)
    flat = label[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def segmentation_scores(confusion: Tensor) -> dict[str, float]:
    """mIoU over classes with a non-empty union and pixel accuracy, from a confusion matrix."""
    conf = confusion.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    present = union > 0
    total = conf.sum()
    miou = float((tp[present] / union[present]).mean()) if bool(present.any()) else float("nan")
    acc = float(tp.sum() / total) if float(total) > 0 else float("nan")
    return {"miou": miou, "pixel_acc": acc}


def _palette(num_classes: int) -> np.ndarray:
    """Fixed, seeded colour per class id; the ignore index is black."""
    colors = np.random.default_rng(20190729).integers(32, 256, size=(256, 3), dtype=np.uint8)
    colors[IGNORE_INDEX] = 0
    return colors


def colorize(label: np.ndarray, num_classes: int) -> np.ndarray:
    """HW class ids -> HWC uint8 colours."""
    return _palette(num_classes)[label.astype(np.int64) % 256]


def _hwc(image_u8: Tensor) -> np.ndarray:
    return image_u8[0].permute(1, 2, 0).cpu().numpy()


def _grid_row(
    lr: Tensor, sr_u8: Tensor, hr_u8: Tensor, pred: Tensor, label: Tensor, scale: int, num_classes: int
) -> np.ndarray:
    """One sample row: LR (nearest x scale) | SR | HR | predicted seg | ground-truth seg."""
    side_h = min(SAMPLE_CROP, hr_u8.shape[-2])
    side_w = min(SAMPLE_CROP, hr_u8.shape[-1])
    lr_crop = to_uint8(lr[..., : side_h // scale, : side_w // scale])
    lr_up = lr_crop.repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    tiles = [
        _hwc(lr_up),
        _hwc(sr_u8[..., :side_h, :side_w]),
        _hwc(hr_u8[..., :side_h, :side_w]),
        colorize(pred[0, :side_h, :side_w].cpu().numpy(), num_classes),
        colorize(label[0, :side_h, :side_w].cpu().numpy(), num_classes),
    ]
    height = max(t.shape[0] for t in tiles)
    gap = np.full((height, 4, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for tile in tiles:
        pad = np.full((height, tile.shape[1], 3), 255, dtype=np.uint8)
        pad[: tile.shape[0]] = tile
        parts += [pad, gap]
    return np.concatenate(parts[:-1], axis=1)


def stack_rows(rows: list[np.ndarray]) -> np.ndarray | None:
    """Rows of possibly different widths -> one white-padded HWC uint8 image (None if no rows)."""
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    padded = []
    for row in rows:
        canvas = np.full((row.shape[0] + 4, width, 3), 255, dtype=np.uint8)
        canvas[: row.shape[0], : row.shape[1]] = row
        padded.append(canvas)
    return np.concatenate(padded, axis=0)


@dataclass
class ValidationResult:
    """Mean image metrics, segmentation scores, and a sample grid (rank 0 only)."""

    metrics: dict[str, float]
    num_images: int
    grid: np.ndarray | None = field(default=None, repr=False)


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    *,
    scale: int,
    num_classes: int,
    dist_info: DistInfo,
    amp: bool = True,
    channels_last: bool = False,
    num_samples: int = 2,
    num_workers: int = 0,
    lpips_model: torch.nn.Module | None = None,
) -> ValidationResult:
    """Evaluate ``model`` (the EMA ``MultiTaskSRNet``) on ``dataset`` (``FullImageDataset`` or a
    ``Subset`` of one); ``num_samples`` first images are drawn into the sample grid (rank 0)."""
    device = dist_info.device
    total = len(dataset)  # type: ignore[arg-type]
    indices = list(range(dist_info.rank, total, dist_info.world_size))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices),
        batch_size=1,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    rows: list[tuple[int, np.ndarray]] = []
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for position, batch in zip(indices, loader):
        hr = batch["hr"].to(device, non_blocking=True)
        label = batch["label"].to(device, non_blocking=True)
        lr = batch["lr"].to(device, non_blocking=True) if "lr" in batch else synthesize_lr(hr, scale)
        with autocast_context(device, amp):
            sr, logits = model.forward_multitask(lr.contiguous(memory_format=memory_format))
        sr_u8 = to_uint8(sr)
        hr_u8 = to_uint8(hr)
        values = image_metrics(_hwc(sr_u8), _hwc(hr_u8), crop_border=scale)
        if lpips_model is not None:
            crop = (..., slice(scale, -scale), slice(scale, -scale))
            distance, _ = lpips_model(sr_u8[crop].float().div(255.0), hr_u8[crop].float().div(255.0))
            values["lpips"] = float(distance[0])
        for name in ("psnr_y", "ssim_y", "lpips"):
            if name in values:
                sums[name] = sums.get(name, 0.0) + float(values[name])
        count += 1
        pred = logits.float().argmax(1)
        confusion += confusion_matrix(pred, label, num_classes)
        if position < num_samples:
            rows.append((position, _grid_row(lr, sr_u8, hr_u8, pred, label, scale, num_classes)))
    if was_training:
        model.train()

    names = ["psnr_y", "ssim_y"] + (["lpips"] if lpips_model is not None else [])
    packed = torch.tensor([sums.get(n, 0.0) for n in names] + [float(count)], dtype=torch.float64, device=device)
    all_reduce_sum(packed, dist_info)
    all_reduce_sum(confusion, dist_info)
    seen = int(packed[-1].item())
    metrics = {n: (float(packed[i]) / seen if seen else float("nan")) for i, n in enumerate(names)}
    metrics.update(segmentation_scores(confusion))
    gathered = all_gather_objects(rows, dist_info)
    grid = None
    if dist_info.is_main:
        ordered = sorted((item for part in gathered for item in part), key=lambda item: item[0])
        grid = stack_rows([row for _, row in ordered])
    return ValidationResult(metrics=metrics, num_images=seen, grid=grid)
