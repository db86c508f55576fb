"""The iteration-based training engine: one ``Trainer`` owns G (and D), EMA, optimisers,
schedulers, the data stream, validation, checkpoints and logging for one stage.

Stages
    ``psnr``: loss = pixel_weight * pixel + lambda_seg * CE (warm start, fidelity-oriented); for
    the first ``loss.seg_warmup`` iterations lambda_seg is 0 (see below).
    ``gan``: loss_G = pixel_weight * pixel + perceptual_weight * VGG + adversarial_weight * adv
    + lambda_seg * CE, then one discriminator step with its own Adam. G (and its EMA) start from
    the PSNR stage's best EMA weights (``init_weights``); D starts fresh.

Why ``seg_warmup``: with the bicubic global residual the SR head starts at zero, so at first the
pixel loss sends no gradient into the shared layers while the CE does; Adam normalises each
parameter's step, so even a small CE term then decides every shared weight and the SR path never
gets going (measured on the demo: lambda_seg 0.001 from step 0 stays at bicubic quality after
1000 iterations). Training the SR losses alone first lets the SR path form; the semantic term
then shapes the same shared decoder. The SR-only ablation is bit-identical during the warm-up.

Shipped weights (``selected.safetensors``) follow the stage's ``select`` rule, decided on the
selection images only (``srseg.data.holdout``): the PSNR stage keeps its best-psnr_y EMA
weights; the GAN stage never does (a perceptual stage shipping its least perceptual weights):
it keeps the lowest-LPIPS EMA weights when LPIPS weights are configured, otherwise its final EMA
weights. The rule is written into the weights' sidecar metadata and ``metrics.json``.

lambda_seg = 0 (the SR-only ablation): the segmentation head still runs and its CE is still
computed, then multiplied by 0. Its gradient is exactly zero, so Adam leaves the head untouched
and every shared weight receives bit-for-bit the gradient an SR-only net would get; the compute
graph, the timings and the random draws are those of the multitask run, so the ablation differs
in nothing but the loss weight. (The step draws no random numbers at all: crops/flips are keyed by
(seed, epoch, index) in the dataset, and LR synthesis is deterministic.)

Devices: CUDA uses bf16 autocast (``amp``; no gradient scaler is needed for bf16), channels-last
tensors and optionally ``torch.compile``; CPU runs the same code in fp32 (amp and channels_last
are CUDA-only). LR images are either synthesised on the device from the HR crops with the MATLAB
bicubic (``lr_source = "gpu"``) or read by the dataset (``"precomputed"``).

DDP (see ``srseg.train.distributed`` for the batch/LR rule): G and D are wrapped in
DistributedDataParallel. The G step evaluates D through the unwrapped module with D's
parameters frozen, so D takes no part in G's gradient reduction. The CE term is normalised by
the number of labelled pixels in the *global* batch (one all-reduce of a scalar per step), so a
DDP run optimises exactly the single-process objective. BatchNorm layers in D use per-rank
statistics, and the relativistic GAN loss averages logits per rank, as in BasicSR/ESRGAN.

Host syncs: losses are accumulated on the device and read back only every ``log_every`` steps.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from srseg.config import StageConfig, TrainConfig
from srseg.fileio import write_bytes_atomic, write_json_atomic, write_text_atomic
from srseg.models.discriminator import VGGStyleDiscriminator
from srseg.models.ema import ModelEMA
from srseg.models.generator import MultiTaskSRNet
from srseg.models.io import save_generator
from srseg.models.losses import AdversarialLoss, PerceptualLoss, PixelLoss, SegmentationLoss
from srseg.models.registry import build_generator as build_registered
from srseg.train import checkpoint as ckpt
from srseg.train.distributed import (
    DistInfo,
    EpochKeyedDataset,
    ShardedBatchSampler,
    all_gather_objects,
    all_reduce_sum,
    broadcast_object,
    resolve_device,
)
from srseg.train.tracking import NullTracker, Tracker
from srseg.train.validation import IGNORE_INDEX, autocast_context, synthesize_lr, validate

logger = logging.getLogger(__name__)

Stage = Literal["psnr", "gan"]
STAGES: tuple[str, ...] = ("psnr", "gan")
ADAM_EPS = 1e-8
VAL_COLUMNS = ("iteration", "psnr_y", "ssim_y", "lpips", "miou", "pixel_acc")


# Settings that define the optimisation problem: a checkpoint made under other values is not
# resumed (the run would silently mix two objectives). Schedule length, logging, workers, device
# and speed options may change between a run and its resume.
_SIGNATURE_FIELDS = (
    "scale",
    "class_map",
    "generator",
    "discriminator",
    "loss",
    "batch_size",
    "patch_size",
    "lr_source",
    "ema_decay",
    "seed",
    "augment",
    "adam_betas",
    "train_split",
)
_SIGNATURE_STAGE_FIELDS = ("lr", "lr_schedule", "lr_milestones", "lr_gamma", "lr_final_ratio")


def resume_signature(cfg: TrainConfig, stage: str) -> dict[str, str]:
    """Flat ``{key: json value}`` of the settings a resumed checkpoint must share with ``cfg``."""
    import json

    dumped = cfg.model_dump(mode="json")
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}", item)
        else:
            flat[prefix] = json.dumps(value)

    for name in _SIGNATURE_FIELDS:
        walk(f"train.{name}", dumped[name])
    for name in _SIGNATURE_STAGE_FIELDS:
        walk(f"train.{stage}_stage.{name}", dumped[f"{stage}_stage"][name])
    return flat


@dataclass
class TrainHooks:
    """Optional callbacks, for tests and tools: when ``train`` starts (the trainer, after any
    resume), after each step (iteration, this rank's sample ids) and after each checkpoint is on
    disk (iteration, path; rank 0 only)."""

    before_train: Callable[[Trainer], None] | None = None
    after_step: Callable[[int, list[int]], None] | None = None
    after_checkpoint: Callable[[int, Path], None] | None = None


@dataclass
class TrainResult:
    """Where training stopped and what it achieved."""

    iteration: int
    finished: bool
    best_psnr_y: float
    best_iteration: int
    last_val: dict[str, float] = field(default_factory=dict)
    last_train: dict[str, float] = field(default_factory=dict)
    samples_per_s: float = 0.0
    data_wait_share: float = 0.0


class _MultitaskForward(nn.Module):
    """Makes ``forward_multitask`` the module's ``forward``, which DDP and torch.compile hook."""

    def __init__(self, net: MultiTaskSRNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, lr: Tensor) -> tuple[Tensor, Tensor]:
        return self.net.forward_multitask(lr)


def build_generator(cfg: TrainConfig, num_classes: int) -> MultiTaskSRNet:
    """The generator ``train.generator.architecture`` with the configured sizes."""
    g = cfg.generator
    return build_registered(
        g.architecture,
        {
            "scale": cfg.scale,
            "num_features": g.num_features,
            "num_blocks": g.num_blocks,
            "num_classes": num_classes,
            "decoder_convs": g.decoder_convs,
            "global_residual": g.global_residual,
        },
    )


def perceptual_loss_description(cfg: TrainConfig, stage: str) -> str:
    """What the perceptual term of ``stage`` is, for MLflow tags, weights metadata and the model card."""
    loss = cfg.loss
    if stage != "gan":
        return "not used (PSNR stage)"
    if loss.perceptual_weight == 0:
        return "off (train.loss.perceptual_weight=0)"
    if loss.vgg_weights == "none":
        return "off (train.loss.vgg_weights=none: no pretrained VGG19)"
    if loss.vgg_weights == "random":
        return "random-weight VGG19 (train.loss.vgg_weights=random): not a meaningful perceptual loss"
    return f"VGG19 {loss.perceptual_layer}, weights {loss.vgg_weights}"


def resolve_selection(cfg: TrainConfig, stage: str) -> tuple[str, Any]:
    """(rule, LPIPS model or None) for the stage's ``select`` setting (see :class:`StageConfig`).

    ``auto`` in the GAN stage uses LPIPS only when its weights load (never downloaded); without
    them the final EMA weights ship, and the log says so. An explicit ``min_lpips`` without
    weights is an error naming the setting.
    """
    from srseg.evaluate.lpips import load_lpips
    from srseg.models.vgg import MissingWeightsError

    rule = stage_config(cfg, stage).select
    if rule == "auto":
        if stage == "psnr":
            return "max_psnr_y", None
        try:
            return "min_lpips", load_lpips(cfg.lpips_weights)
        except MissingWeightsError as exc:
            logger.info("GAN stage ships its final EMA weights: no LPIPS weights for checkpoint choice (%s)", exc)
            return "final_ema", None
    if rule == "min_lpips":
        try:
            return rule, load_lpips(cfg.lpips_weights)
        except MissingWeightsError as exc:
            raise MissingWeightsError(f"train.{stage}_stage.select=min_lpips needs LPIPS weights: {exc}") from exc
    return rule, None


def build_discriminator(cfg: TrainConfig) -> VGGStyleDiscriminator:
    d = cfg.discriminator
    return VGGStyleDiscriminator(num_features=d.num_features, spectral_norm=d.spectral_norm)


def stage_config(cfg: TrainConfig, stage: str) -> StageConfig:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return cfg.psnr_stage if stage == "psnr" else cfg.gan_stage


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic kernels when asked (process-wide torch setting); cuDNN autotuning otherwise.

    On CUDA a missing deterministic kernel warns instead of failing (``warn_only``): bit-exact
    resume is guaranteed and tested on CPU.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        if torch.are_deterministic_algorithms_enabled():
            torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = device.type == "cuda"


class DeterminismState:
    """Snapshot of torch's process-wide determinism flags, so a stage can put them back."""

    def __init__(self) -> None:
        self.enabled = torch.are_deterministic_algorithms_enabled()
        self.warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        self.benchmark = torch.backends.cudnn.benchmark
        self.cudnn_deterministic = torch.backends.cudnn.deterministic

    def restore(self) -> None:
        now = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
        if now != (self.enabled, self.warn_only):
            torch.use_deterministic_algorithms(self.enabled, warn_only=self.warn_only)
        torch.backends.cudnn.benchmark = self.benchmark
        torch.backends.cudnn.deterministic = self.cudnn_deterministic


SELECTED_WEIGHTS = "selected.safetensors"
FINAL_WEIGHTS = "final.safetensors"
STAGE_OUTPUTS = (
    "checkpoints",
    SELECTED_WEIGHTS,
    SELECTED_WEIGHTS + ".json",
    FINAL_WEIGHTS,
    FINAL_WEIGHTS + ".json",
    "metrics.json",
    "plots",
    "samples",
)


def clear_stage_outputs(stage_dir: str | Path) -> list[Path]:
    """Remove a stage's training outputs (for a fresh, non-resumed run); returns what existed.

    Without this, a fresh run's early checkpoints would sort before an older run's later ones and
    be pruned, and a later resume would pick up the old run.
    """
    import shutil

    removed = []
    for name in STAGE_OUTPUTS:
        path = Path(stage_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path)
    return removed


def save_ema_weights(
    model: MultiTaskSRNet,
    path: Path,
    stage: str,
    iteration: int,
    metrics: Mapping[str, float],
    extra: Mapping[str, str] | None = None,
) -> Path:
    """EMA generator as ``srseg.generator/1`` safetensors + JSON sidecar (what evaluate/export read)."""
    meta = {"stage": stage, "iteration": str(iteration), **{f"val.{k}": repr(float(v)) for k, v in metrics.items()}}
    return save_generator(model, path, metadata={**meta, **(extra or {})})


class Trainer:
    """Trains one stage; see the module docstring for the objective and the DDP semantics.

    ``train_set`` yields dicts with ``hr`` (3, P, P) in [0, 1], ``label`` (P, P) int64 training ids
    (255 = ignore), ``id``, and ``lr`` when ``lr_source`` is ``precomputed``; keys ``(epoch,
    index)`` are served through ``EpochKeyedDataset``. ``val_set`` is a ``FullImageDataset`` (or
    None to skip validation). ``init_weights`` (a G state dict) seeds G and its EMA; a checkpoint
    found by ``resume()`` overrides it. ``compile_backend`` is torch.compile's backend when
    ``cfg.compile`` is on (``inductor``; tools pass ``aot_eager`` to trace without code generation).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        stage: Stage,
        stage_dir: str | Path,
        train_set: torch.utils.data.Dataset,
        val_set: torch.utils.data.Dataset | None,
        *,
        num_classes: int,
        dist_info: DistInfo | None = None,
        tracker: Tracker | None = None,
        init_weights: Mapping[str, Tensor] | None = None,
        class_weights: Tensor | None = None,
        hooks: TrainHooks | None = None,
        compile_backend: str = "inductor",
    ) -> None:
        self.cfg = cfg
        self.stage = stage
        self.stage_cfg = stage_config(cfg, stage)
        self.stage_dir = Path(stage_dir)
        self.checkpoint_dir = self.stage_dir / "checkpoints"
        self.dist = dist_info or DistInfo(device=resolve_device(cfg.device))
        self.device = self.dist.device
        self.tracker = tracker or NullTracker()
        self.hooks = hooks or TrainHooks()
        self.train_set = train_set
        self.val_set = val_set
        self.num_classes = num_classes
        self.amp = cfg.amp and self.device.type == "cuda"
        self.channels_last = cfg.channels_last and self.device.type == "cuda"
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self._check_settings()
        configure_determinism(cfg.deterministic, self.device)
        seed_everything(cfg.seed)  # same on every rank: identical initial weights
        # built in this order: the random initialisations draw from the seeded generator in turn
        self._build_generator(init_weights)
        self._build_generator_training(class_weights)
        self._build_gan_parts()
        self._wrap_for_training(compile_backend)
        self.sampler = ShardedBatchSampler(
            len(train_set),  # type: ignore[arg-type]
            cfg.batch_size,
            self.dist.world_size,
            self.dist.rank,
            seed=cfg.seed,
        )
        self._reset_progress()

    # --- construction helpers ---------------------------------------------------------------

    def _check_settings(self) -> None:
        cfg = self.cfg
        if cfg.lr_source not in ("gpu", "precomputed"):
            raise ValueError(f"lr_source must be 'gpu' or 'precomputed', got {cfg.lr_source!r}")
        for milestone in self.stage_cfg.lr_milestones:
            if not 0 < milestone <= self.stage_cfg.iterations:
                raise ValueError(
                    f"{self.stage}_stage.lr_milestones: {milestone} is outside "
                    f"1..iterations={self.stage_cfg.iterations}"
                )

    def _build_generator(self, init_weights: Mapping[str, Tensor] | None) -> None:
        """The generator (``init_weights`` when given) on the device, and its EMA."""
        cfg = self.cfg
        self.generator = build_generator(cfg, self.num_classes)
        if init_weights is not None:
            self.generator.load_state_dict(dict(init_weights), strict=True)
        self.generator.to(self.device, memory_format=self.memory_format)
        self.ema = ModelEMA(self.generator, cfg.ema_decay)

    def _build_generator_training(self, class_weights: Tensor | None) -> None:
        """The generator's losses, optimizer and schedule, and the checkpoint selection rule."""
        cfg, stage = self.cfg, self.stage
        loss_cfg = cfg.loss
        self.pixel_loss = PixelLoss(loss_cfg.pixel).to(self.device)
        self.seg_loss = SegmentationLoss(IGNORE_INDEX, class_weights).to(self.device)
        betas = tuple(cfg.adam_betas)
        fused = self.device.type == "cuda"  # one kernel per step for all parameters
        self.opt_g = torch.optim.Adam(
            self.generator.parameters(), lr=self.stage_cfg.lr, betas=betas, eps=ADAM_EPS, fused=fused
        )
        self.sched_g = self._scheduler(self.opt_g)

        self.selection_rule, self.lpips = resolve_selection(cfg, stage)
        if self.lpips is not None:
            self.lpips.to(self.device)
        self.perceptual_description = perceptual_loss_description(cfg, stage)

    def _build_gan_parts(self) -> None:
        """Discriminator, its optimizer and schedule, adversarial and perceptual losses (GAN stage only)."""
        cfg, loss_cfg = self.cfg, self.cfg.loss
        betas = tuple(cfg.adam_betas)
        fused = self.device.type == "cuda"
        self.discriminator: VGGStyleDiscriminator | None = None
        self.opt_d: torch.optim.Optimizer | None = None
        self.sched_d: torch.optim.lr_scheduler.LRScheduler | None = None
        self.perceptual: PerceptualLoss | None = None
        self.adversarial: AdversarialLoss | None = None
        if self.stage == "gan":
            self.discriminator = build_discriminator(cfg).to(self.device, memory_format=self.memory_format)
            self.opt_d = torch.optim.Adam(
                self.discriminator.parameters(), lr=self.stage_cfg.lr, betas=betas, eps=ADAM_EPS, fused=fused
            )
            self.sched_d = self._scheduler(self.opt_d)
            self.adversarial = AdversarialLoss(cfg.discriminator.gan_type)
            if loss_cfg.perceptual_weight > 0 and loss_cfg.vgg_weights != "none":
                self.perceptual = PerceptualLoss(loss_cfg.perceptual_layer, weights=loss_cfg.vgg_weights)
                self.perceptual.to(self.device, memory_format=self.memory_format)
            logger.info("GAN stage perceptual loss: %s", self.perceptual_description)

    def _wrap_for_training(self, compile_backend: str) -> None:
        """The modules the training step calls: DDP-wrapped when distributed, compiled when ``cfg.compile``."""
        self.g_train: nn.Module = _MultitaskForward(self.generator)
        self.d_train: nn.Module | None = self.discriminator
        if self.dist.is_distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_train = nn.parallel.DistributedDataParallel(
                self.g_train, device_ids=ids, gradient_as_bucket_view=True
            )
            if self.discriminator is not None:
                self.d_train = nn.parallel.DistributedDataParallel(
                    self.discriminator, device_ids=ids, gradient_as_bucket_view=True
                )
        if self.cfg.compile:
            self.g_train = torch.compile(self.g_train, backend=compile_backend)
            if self.d_train is not None:
                self.d_train = torch.compile(self.d_train, backend=compile_backend)

    def _reset_progress(self) -> None:
        """Counters and buffers of a fresh run (``resume()`` restores them from a checkpoint)."""
        self.iteration = 0
        self.batches_consumed = 0
        self.best_psnr_y = -math.inf
        self.best_iteration = 0
        self.selected_score = math.inf  # lower is better: -psnr_y or LPIPS, by the rule
        self.selected_iteration = 0
        self.last_val: dict[str, float] = {}
        self.last_train: dict[str, float] = {}
        self._train_rows: list[dict[str, float]] = []
        self._val_rows: list[dict[str, float]] = []
        self._acc: dict[str, Tensor] = {}
        self._acc_steps = 0

    def _scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        stage = self.stage_cfg
        if stage.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=stage.iterations, eta_min=stage.lr * stage.lr_final_ratio
            )
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(self.stage_cfg.lr_milestones), gamma=self.stage_cfg.lr_gamma
        )

    def make_loader(self) -> torch.utils.data.DataLoader:
        """An endless loader starting at the current data position (one iterator for the run)."""
        self.sampler.start_batch = self.batches_consumed
        workers = self.cfg.num_workers
        return torch.utils.data.DataLoader(
            EpochKeyedDataset(self.train_set),
            batch_sampler=self.sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )

    # --- one step ---------------------------------------------------------------------------

    def _prepare(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        hr = batch["hr"].to(self.device, non_blocking=True)
        label = batch["label"].to(self.device, non_blocking=True)
        if self.cfg.lr_source == "precomputed":
            if "lr" not in batch:
                raise ValueError("train.lr_source is 'precomputed' but the dataset yields no 'lr' (give it lr_root)")
            lr = batch["lr"].to(self.device, non_blocking=True)
        else:
            lr = synthesize_lr(hr, self.cfg.scale)
        return (
            lr.contiguous(memory_format=self.memory_format),
            hr.contiguous(memory_format=self.memory_format),
            label,
        )

    def _seg_term(self, logits: Tensor, label: Tensor) -> Tensor:
        """CE normalised by the labelled pixels of the global batch (see module docstring)."""
        local = self.seg_loss(logits.float(), label)
        if not self.dist.is_distributed:
            return local
        valid = label != IGNORE_INDEX
        weights = self.seg_loss.class_weights
        if weights is None:
            denom = valid.sum().to(torch.float32)
        else:
            denom = weights[label.clamp(0, weights.numel() - 1)].masked_fill(~valid, 0).sum().float()
        total = all_reduce_sum(denom.detach().clone(), self.dist)
        share = denom * self.dist.world_size / total.clamp_min(torch.finfo(torch.float32).tiny)
        return local * share

    def _zero_grad_step(self, optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """One optimisation step (G, then D in the GAN stage); returns detached loss tensors."""
        lr, hr, label = self._prepare(batch)
        loss_cfg = self.cfg.loss
        self.g_train.train()
        with autocast_context(self.device, self.amp):
            sr, logits = self.g_train(lr)
        sr = sr.float()
        l_pix = self.pixel_loss(sr, hr)
        l_seg = self._seg_term(logits, label)
        out: dict[str, Tensor] = {"pixel": l_pix.detach(), "seg_ce": l_seg.detach()}
        warming_up = self.stage == "psnr" and self.iteration < loss_cfg.seg_warmup
        lambda_seg = 0.0 if warming_up else loss_cfg.lambda_seg
        loss_g = loss_cfg.pixel_weight * l_pix + lambda_seg * l_seg

        if self.stage == "psnr":
            self._zero_grad_step(self.opt_g, loss_g)
        else:
            assert self.discriminator is not None and self.adversarial is not None and self.opt_d is not None
            assert self.d_train is not None
            self.discriminator.requires_grad_(False)
            with autocast_context(self.device, self.amp):
                if self.perceptual is not None:
                    l_percep = self.perceptual(sr, hr).float()
                    loss_g = loss_g + loss_cfg.perceptual_weight * l_percep
                    out["perceptual"] = l_percep.detach()
                fake_g = self.discriminator(sr).float()
                real_g = self.discriminator(hr).float().detach() if self.adversarial.kind == "relativistic" else None
            l_adv = self.adversarial.generator_loss(fake_g, real_g)
            loss_g = loss_g + loss_cfg.adversarial_weight * l_adv
            out["adv_g"] = l_adv.detach()
            self._zero_grad_step(self.opt_g, loss_g)

            self.discriminator.requires_grad_(True)
            with autocast_context(self.device, self.amp):
                real_d = self.d_train(hr).float()
                fake_d = self.d_train(sr.detach().contiguous(memory_format=self.memory_format)).float()
            l_d = self.adversarial.discriminator_loss(real_d, fake_d)
            self._zero_grad_step(self.opt_d, l_d)
            out["d"] = l_d.detach()
            out["d_real"] = real_d.detach().mean()
            out["d_fake"] = fake_d.detach().mean()
            assert self.sched_d is not None
            self.sched_d.step()
        out["total_g"] = loss_g.detach()
        self.sched_g.step()
        self.ema.update(self.generator)
        return out

    # --- loop ---------------------------------------------------------------------------------

    def train(self, until: int | None = None) -> TrainResult:
        """Run to ``stage.iterations`` (or stop after iteration ``until``, with a checkpoint).

        Validation runs every ``val_every`` iterations and at the end, checkpoints every
        ``checkpoint_every`` and at the end (or at ``until``).
        """
        total = self.stage_cfg.iterations
        end = total if until is None else min(int(until), total)
        main = self.dist.is_main
        if self.hooks.before_train is not None:
            self.hooks.before_train(self)
        bar = tqdm(
            total=total,
            initial=self.iteration,
            desc=f"train[{self.stage}]",
            unit="it",
            dynamic_ncols=True,
            disable=not main,
        )
        loader = iter(self.make_loader()) if self.iteration < end else None
        window_start = time.perf_counter()
        window_wait = window_paused = 0.0  # paused: validation and checkpoint time, not step time
        window_steps = 0
        run_wait = run_time = 0.0
        run_steps = 0
        try:
            while self.iteration < end:
                assert loader is not None
                t0 = time.perf_counter()
                batch = next(loader)
                window_wait += time.perf_counter() - t0
                losses = self.train_step(batch)
                self.iteration += 1
                self.batches_consumed += 1
                window_steps += 1
                self._accumulate(losses)
                if self.hooks.after_step is not None:
                    self.hooks.after_step(self.iteration, [int(i) for i in batch["id"]])
                bar.update(1)
                last = self.iteration == end
                if self.iteration % self.cfg.log_every == 0 or last:
                    elapsed = time.perf_counter() - window_start - window_paused
                    run_time += elapsed
                    run_wait += window_wait
                    run_steps += window_steps
                    values = self._flush_losses(window_steps, elapsed, window_wait)
                    if main:
                        bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if not k.startswith("perf")})
                    window_start, window_wait, window_paused, window_steps = time.perf_counter(), 0.0, 0.0, 0
                pause_start = time.perf_counter()
                if self.val_set is not None and (
                    self.iteration % self.stage_cfg.val_every == 0 or self.iteration == total
                ):
                    self.run_validation()
                if self.iteration % self.stage_cfg.checkpoint_every == 0 or last:
                    self.save_checkpoint()
                window_paused += time.perf_counter() - pause_start
        finally:
            bar.close()
            del loader  # stops persistent workers
        finished = self.iteration >= total
        result = TrainResult(
            iteration=self.iteration,
            finished=finished,
            best_psnr_y=self.best_psnr_y,
            best_iteration=self.best_iteration,
            last_val=dict(self.last_val),
            last_train=dict(self.last_train),
            samples_per_s=self.cfg.batch_size * run_steps / run_time if run_time > 0 else 0.0,
            data_wait_share=run_wait / run_time if run_time > 0 else 0.0,
        )
        if main:
            if finished:
                self._save_final()
            self.write_metrics(result)
        return result

    def _save_final(self) -> None:
        """``final.safetensors``; it is also the shipped ``selected.safetensors`` under ``final_ema``
        or when nothing was selected (no validation images, or no finite score)."""
        meta = self._weights_metadata()
        save_ema_weights(
            self.ema.module, self.stage_dir / FINAL_WEIGHTS, self.stage, self.iteration, self.last_val, meta
        )
        if self.selection_rule != "final_ema" and self.selected_iteration:
            return
        if self.selection_rule != "final_ema":
            logger.warning(
                "%s stage: no validation selected weights by %s; shipping the final EMA weights",
                self.stage,
                self.selection_rule,
            )
            self.selection_rule = meta["selection_rule"] = "final_ema"
        self.selected_iteration = self.iteration
        save_ema_weights(
            self.ema.module, self.stage_dir / SELECTED_WEIGHTS, self.stage, self.iteration, self.last_val, meta
        )

    def _accumulate(self, losses: Mapping[str, Tensor]) -> None:
        for name, value in losses.items():
            if name in self._acc:
                self._acc[name] += value.float()
            else:
                self._acc[name] = value.float().clone()
        self._acc_steps += 1

    def _flush_losses(self, steps: int, elapsed: float, wait: float) -> dict[str, float]:
        """Average the accumulated losses over steps and ranks (one host sync), log them."""
        names = sorted(self._acc)
        packed = torch.stack([self._acc[n] for n in names]) / max(self._acc_steps, 1)
        all_reduce_sum(packed, self.dist)
        means = (packed / self.dist.world_size).tolist()
        self._acc.clear()
        self._acc_steps = 0
        values = {f"train/{n}": float(v) for n, v in zip(names, means)}
        values["train/lr"] = float(self.opt_g.param_groups[0]["lr"])
        if elapsed > 0:
            values["perf/samples_per_s"] = self.cfg.batch_size * steps / elapsed
            values["perf/data_wait_share"] = wait / elapsed
        self.last_train = values
        if self.dist.is_main:
            self.tracker.log_metrics(values, step=self.iteration)
            self._train_rows.append({"iteration": float(self.iteration), **values})
        return values

    # --- validation ---------------------------------------------------------------------------

    def _weights_metadata(self) -> dict[str, str]:
        return {"selection_rule": self.selection_rule, "perceptual_loss": self.perceptual_description}

    def _selection_score(self, metrics: Mapping[str, float]) -> float | None:
        """Lower is better; None when the rule does not pick during training (``final_ema``)."""
        if self.selection_rule == "max_psnr_y":
            return -metrics["psnr_y"]
        if self.selection_rule == "min_lpips":
            return metrics["lpips"]
        return None

    def run_validation(self) -> dict[str, float]:
        """Validate the EMA generator on the selection images; write ``selected.safetensors`` when
        the stage's rule (``max_psnr_y`` or ``min_lpips``) improves. The best psnr_y is tracked in
        every stage for the logs and ``metrics.json``, but only the PSNR stage ships by it."""
        assert self.val_set is not None
        result = validate(
            self.ema.module,
            self.val_set,
            scale=self.cfg.scale,
            num_classes=self.num_classes,
            dist_info=self.dist,
            amp=self.amp,
            channels_last=self.channels_last,
            num_samples=self.cfg.val_samples,
            num_workers=min(self.cfg.num_workers, 2),
            lpips_model=self.lpips,
        )
        metrics = result.metrics
        self.last_val = dict(metrics)
        if metrics["psnr_y"] > self.best_psnr_y:
            self.best_psnr_y = metrics["psnr_y"]
            self.best_iteration = self.iteration
        score = self._selection_score(metrics)
        selected = score is not None and math.isfinite(score) and score < self.selected_score
        if selected:
            self.selected_score, self.selected_iteration = float(score), self.iteration
        if self.dist.is_main:
            extra = f" lpips {metrics['lpips']:.4f}" if "lpips" in metrics else ""
            logger.info(
                "iter %d val: psnr_y %.3f ssim_y %.4f%s miou %.4f pixel_acc %.4f (%d selection images)%s",
                self.iteration,
                metrics["psnr_y"],
                metrics["ssim_y"],
                extra,
                metrics["miou"],
                metrics["pixel_acc"],
                result.num_images,
                f" selected ({self.selection_rule})" if selected else "",
            )
            self.tracker.log_metrics({f"val/{k}": v for k, v in metrics.items()}, step=self.iteration)
            self._val_rows.append({"iteration": float(self.iteration), **metrics})
            if selected:
                save_ema_weights(
                    self.ema.module,
                    self.stage_dir / SELECTED_WEIGHTS,
                    self.stage,
                    self.iteration,
                    metrics,
                    self._weights_metadata(),
                )
            if result.grid is not None:
                self._save_grid(result.grid)
            self.write_plots()
        return metrics

    def _save_grid(self, grid: np.ndarray) -> None:
        from PIL import Image

        path = self.stage_dir / "samples" / f"iter_{self.iteration:08d}.png"
        buffer = io.BytesIO()
        Image.fromarray(grid).save(buffer, format="PNG")
        write_bytes_atomic(path, buffer.getvalue())
        self.tracker.log_artifact(path, "samples")

    # --- state ----------------------------------------------------------------------------------

    def data_position(self) -> dict[str, int]:
        epoch, offset = self.sampler.position(self.batches_consumed)
        return {
            "batches_consumed": self.batches_consumed,
            "epoch": epoch,
            "batch_in_epoch": offset,
            "batches_per_epoch": self.sampler.batches_per_epoch,
            "num_samples": self.sampler.num_samples,
            "global_batch": self.cfg.batch_size,
            "seed": self.cfg.seed,
            "world_size": self.dist.world_size,
        }

    def state_dict(self) -> dict[str, Any]:
        """Full training state (collective under DDP: every rank contributes its RNG state)."""
        rng = all_gather_objects(ckpt.capture_rng_state(), self.dist)
        d = self.discriminator
        return {
            "format": ckpt.CHECKPOINT_FORMAT,
            "stage": self.stage,
            "iteration": self.iteration,
            "generator_config": self.generator.config,
            "generator": self.generator.state_dict(),
            "discriminator": d.state_dict() if d is not None else None,
            "ema": self.ema.state_dict(),
            "optimizer_g": self.opt_g.state_dict(),
            "optimizer_d": self.opt_d.state_dict() if self.opt_d is not None else None,
            "scheduler_g": self.sched_g.state_dict(),
            "scheduler_d": self.sched_d.state_dict() if self.sched_d is not None else None,
            "scaler": None,  # bf16 autocast needs no gradient scaler
            "rng": rng,
            "data": self.data_position(),
            "best": {"psnr_y": self.best_psnr_y, "iteration": self.best_iteration},
            "selected": {
                "rule": self.selection_rule,
                "score": self.selected_score,
                "iteration": self.selected_iteration,
            },
            "last_val": dict(self.last_val),
            "last_train": dict(self.last_train),
            "signature": resume_signature(self.cfg, self.stage),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore everything ``state_dict`` saved; refuses a checkpoint of another stage or net."""
        if state.get("stage") != self.stage:
            raise ckpt.CheckpointError(
                f"checkpoint is for stage {state.get('stage')!r}, this trainer runs {self.stage!r}"
            )
        if state.get("generator_config") != self.generator.config:
            raise ckpt.CheckpointError(
                f"checkpoint generator config {state.get('generator_config')} differs from the configured "
                f"{self.generator.config}; use a new output_dir or restore the parameters"
            )
        saved = state.get("signature") or {}
        current = resume_signature(self.cfg, self.stage)
        changed = [
            f"{k}: {saved.get(k, '<absent>')} -> {current.get(k, '<absent>')}"
            for k in sorted(set(saved) | set(current))
            if saved.get(k) != current.get(k)
        ]
        if changed:
            raise ckpt.CheckpointError(
                f"checkpoints in {self.checkpoint_dir} were made with other training settings "
                f"({'; '.join(changed)}); restore them, use another output_dir, or start over with resume=False"
            )
        self.generator.load_state_dict(state["generator"], strict=True)
        self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["optimizer_g"])
        self.sched_g.load_state_dict(state["scheduler_g"])
        if self.discriminator is not None:
            assert self.opt_d is not None and self.sched_d is not None
            if state.get("discriminator") is None:
                raise ckpt.CheckpointError("GAN-stage checkpoint has no discriminator state")
            self.discriminator.load_state_dict(state["discriminator"], strict=True)
            self.opt_d.load_state_dict(state["optimizer_d"])
            self.sched_d.load_state_dict(state["scheduler_d"])
        self.iteration = int(state["iteration"])
        data = state["data"]
        self.batches_consumed = int(data["batches_consumed"])
        here = self.data_position()
        changed = [k for k in ("num_samples", "global_batch", "seed") if int(data[k]) != here[k]]
        if changed:
            logger.warning("data setting(s) %s changed since the checkpoint; the sample order will differ", changed)
        best = state.get("best") or {}
        self.best_psnr_y = float(best.get("psnr_y", -math.inf))
        self.best_iteration = int(best.get("iteration", 0))
        chosen = state.get("selected") or {}
        if chosen.get("rule", self.selection_rule) != self.selection_rule:
            raise ckpt.CheckpointError(
                f"checkpoint selected weights by {chosen.get('rule')!r}, this run selects by {self.selection_rule!r} "
                "(LPIPS weights appeared or disappeared); start over with resume=False"
            )
        self.selected_score = float(chosen.get("score", math.inf))
        self.selected_iteration = int(chosen.get("iteration", 0))
        self.last_val = {k: float(v) for k, v in (state.get("last_val") or {}).items()}
        self.last_train = {k: float(v) for k, v in (state.get("last_train") or {}).items()}
        rng_states = state["rng"]
        if len(rng_states) == self.dist.world_size:
            ckpt.restore_rng_state(rng_states[self.dist.rank])
        else:
            logger.warning(
                "checkpoint has RNG states of %d ranks, world size is %d: using rank 0's",
                len(rng_states),
                self.dist.world_size,
            )
            ckpt.restore_rng_state(rng_states[0])

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/iter_*.pt`` (rank 0), keep the newest ``keep_checkpoints`` usable ones, flush plots."""
        state = self.state_dict()
        if not self.dist.is_main:
            return None
        path = ckpt.save_file(self.checkpoint_dir / ckpt.checkpoint_name(self.iteration), state)
        ckpt.prune_checkpoints(self.checkpoint_dir, self.cfg.keep_checkpoints, fresh=path)
        self.write_plots()
        logger.info("checkpoint %s", path)
        if self.hooks.after_checkpoint is not None:
            self.hooks.after_checkpoint(self.iteration, path)
        return path

    def resume(self) -> bool:
        """Load the newest valid checkpoint of this stage (chosen by rank 0, sent to all ranks)."""
        found = None
        if self.dist.is_main:
            ckpt.remove_temp_files(self.checkpoint_dir)
            found = ckpt.load_latest(self.checkpoint_dir)
        found = broadcast_object(found, self.dist)
        if found is None:
            return False
        path, state = found
        self.load_state_dict(state)
        if self.dist.is_main:
            self._reload_plots()
        epoch, offset = self.sampler.position(self.batches_consumed)
        logger.info(
            "resumed %s at iteration %d (epoch %d, batch %d) from %s", self.stage, self.iteration, epoch, offset, path
        )
        return True

    # --- DVC files ------------------------------------------------------------------------------

    def write_plots(self) -> None:
        """``plots/train_loss.csv`` and ``plots/val.csv`` (atomic rewrite; rank 0)."""
        plots = self.stage_dir / "plots"
        if self._train_rows:
            columns = ["iteration"] + sorted({k for row in self._train_rows for k in row} - {"iteration"})
            write_text_atomic(plots / "train_loss.csv", _csv(self._train_rows, columns))
        if self._val_rows:
            columns = [c for c in VAL_COLUMNS if any(c in row for row in self._val_rows)]
            write_text_atomic(plots / "val.csv", _csv(self._val_rows, columns))

    def _reload_plots(self) -> None:
        """Keep the rows up to the resumed iteration; later ones are recomputed."""
        plots = self.stage_dir / "plots"
        self._train_rows = _read_csv(plots / "train_loss.csv", self.iteration)
        self._val_rows = _read_csv(plots / "val.csv", self.iteration)

    def write_metrics(self, result: TrainResult) -> None:
        """``metrics.json`` for DVC: best and last validation, last losses, throughput."""
        write_json_atomic(
            self.stage_dir / "metrics.json",
            {
                "stage": self.stage,
                "iteration": result.iteration,
                "finished": result.finished,
                "best": {"psnr_y": _finite(result.best_psnr_y), "iteration": result.best_iteration},
                "selected": {
                    "rule": self.selection_rule,
                    "iteration": self.selected_iteration,
                    "file": SELECTED_WEIGHTS,
                    "perceptual_loss": self.perceptual_description,
                },
                "val": {k: _finite(v) for k, v in result.last_val.items()},
                "train": {k.split("/", 1)[-1]: _finite(v) for k, v in result.last_train.items()},
            },
        )


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _csv(rows: list[dict[str, float]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (int(row[k]) if k == "iteration" else row.get(k, "")) for k in columns if k in row})
    return buffer.getvalue()


def _read_csv(path: Path, max_iteration: int) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = []
        for row in csv.DictReader(handle):
            try:
                parsed = {k: float(v) for k, v in row.items() if v not in ("", None)}
            except ValueError:
                continue
            if parsed.get("iteration", math.inf) <= max_iteration:
                rows.append(parsed)
    return rows
