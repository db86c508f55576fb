"""Helpers for the training tests: tiny prepared datasets built from the real COCO-Stuff sample
and a tiny-model parameter set that trains in milliseconds per step on a CPU."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from srseg.config import Params, deep_merge, parse_params
from srseg.data.manifest import HR_FORMAT, Manifest, Sample, image_name, label_name
from srseg.fileio import sha256_file
from srseg.train.engine import Trainer, TrainHooks

TRAIN_IDS = (17914, 29286, 138805, 184101, 284465, 426773)
VAL_IDS = (1503, 1490)


def build_prepared_root(
    sample: Path,
    dest: Path,
    train_ids: tuple[int, ...] = TRAIN_IDS,
    val_ids: tuple[int, ...] = VAL_IDS,
    crop: int | None = None,
) -> Path:
    """Copy real images + stuffthingmaps labels into the manifest layout of ``srseg/data/manifest.py``.

    ``crop`` keeps only a centred ``crop`` x ``crop`` square of each *training* image (saved
    losslessly as PNG, label cropped identically), which makes a fixed set of real patches.
    """
    splits: dict[str, list[Sample]] = {}
    for split, ids in (("train2017", train_ids), ("val2017", val_ids)):
        (dest / "images" / split).mkdir(parents=True, exist_ok=True)
        (dest / "labels" / split).mkdir(parents=True, exist_ok=True)
        samples = []
        for image_id in ids:
            src_image = sample / "images" / split / image_name(image_id)
            src_label = sample / "stuffthingmaps" / split / label_name(image_id)
            label_rel = f"labels/{split}/{label_name(image_id)}"
            if crop is not None and split == "train2017":
                image_rel = f"images/{split}/{image_id:012d}.png"
                with Image.open(src_image) as img, Image.open(src_label) as lab:
                    left, top = (img.width - crop) // 2, (img.height - crop) // 2
                    box = (left, top, left + crop, top + crop)
                    img.convert("RGB").crop(box).save(dest / image_rel)
                    lab.crop(box).save(dest / label_rel)
            else:
                image_rel = f"images/{split}/{image_name(image_id)}"
                shutil.copyfile(src_image, dest / image_rel)
                shutil.copyfile(src_label, dest / label_rel)
            with Image.open(dest / image_rel) as img:
                width, height = img.size
            samples.append(
                Sample(
                    id=image_id,
                    image=image_rel,
                    width=width,
                    height=height,
                    image_sha256=sha256_file(dest / image_rel),
                    label=label_rel,
                    label_sha256=sha256_file(dest / label_rel),
                )
            )
        splits[split] = samples
    Manifest(kind="hr", format=HR_FORMAT, splits=splits, meta={"source": "tests/train"}).save(dest)
    return dest


def tiny_params(data_root: Path, output_dir: Path, overrides: dict[str, Any] | None = None) -> Params:
    """Tiny, deterministic CPU settings: 8 features, 2 blocks, 32 px patches, batch 4."""
    raw: dict[str, Any] = {
        "paths": {"data_root": str(data_root), "lr_root": str(data_root.parent / "lr")},
        "train": {
            "scale": 4,
            "class_map": "coarse8",
            "generator": {"num_features": 8, "num_blocks": 2, "decoder_convs": 1},
            "discriminator": {"num_features": 8},
            "loss": {"vgg_weights": "random", "perceptual_layer": "conv2_2", "lambda_seg": 0.1},
            "psnr_stage": {"iterations": 8, "lr": 1e-3, "val_every": 8, "checkpoint_every": 4},
            "gan_stage": {"iterations": 8, "lr": 1e-4, "val_every": 8, "checkpoint_every": 4},
            "batch_size": 4,
            "patch_size": 32,
            "num_workers": 0,
            "ema_decay": 0.9,
            "keep_checkpoints": 2,
            "device": "cpu",
            "seed": 0,
            "deterministic": True,
            "output_dir": str(output_dir),
            "log_every": 2,
            "selection_images": 1,
            "val_samples": 1,
        },
        "mlflow": {"enabled": False},
    }
    return parse_params(deep_merge(raw, overrides or {}), "tests/train")


class FirstStepProbe:
    """Records what a stage starts from and the gradients of its first optimisation step.

    ``hooks()`` gives ``TrainHooks`` for ``run_train``: ``before_train`` keeps the trainer and a
    copy of its starting weights; ``after_step`` at iteration 1 copies the ``.grad`` of every G and
    D parameter. Under DDP these are the all-reduced (rank-averaged) gradients, read after the
    optimiser step and before the next ``zero_grad``. ``save`` writes both with ``torch.save``.
    """

    def __init__(self) -> None:
        self.trainer: Trainer | None = None
        self.start: dict[str, torch.Tensor] = {}
        self.grads: dict[str, torch.Tensor] = {}

    @staticmethod
    def _named(trainer: Trainer) -> dict[str, torch.nn.Module]:
        nets: dict[str, torch.nn.Module] = {"generator": trainer.generator}
        if trainer.discriminator is not None:
            nets["discriminator"] = trainer.discriminator
        return nets

    def _before(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.start = {
            f"{net}.{k}": v.detach().clone()
            for net, module in self._named(trainer).items()
            for k, v in module.state_dict().items()
        }

    def _after(self, iteration: int, ids: list[int]) -> None:
        if iteration != 1 or self.trainer is None:
            return
        for net, module in self._named(self.trainer).items():
            for name, param in module.named_parameters():
                if param.grad is not None:
                    self.grads[f"{net}.{name}"] = param.grad.detach().clone()

    def hooks(self) -> TrainHooks:
        return TrainHooks(before_train=self._before, after_step=self._after)

    def save(self, path: Path) -> None:
        torch.save({"start": self.start, "grads": self.grads}, path)
