"""Process-group setup for single- and multi-GPU training under ``torchrun``.

``torchrun`` (single node or multi-node) exports ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; a plain ``python`` launch has none of them and runs as a
world of one without a process group. The backend is NCCL on CUDA and Gloo on CPU.

Batch and learning-rate scaling rule: ``train.batch_size`` is the *global* batch. Each of the
``world_size`` ranks processes ``batch_size / world_size`` samples (it must divide evenly) and DDP
averages gradients, so every optimiser step sees the same global batch whatever the number of
GPUs, and the learning rate in ``params.yaml`` stays valid unchanged. If you instead raise the
global batch (e.g. to keep the per-GPU batch fixed on more GPUs), scale the learning rate
linearly with it (Goyal et al., 2017): ``lr_new = lr * batch_new / batch_old``, ideally with a
short warm-up; nothing does this automatically.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job; ``owns_group`` says whether we must destroy the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, tracks and writes files."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"environment variable {name}={value} must be >= 0")
    return value


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error, not a silent CPU run."""
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {preference!r}")
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but torch.cuda.is_available() is False on this machine")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ValueError(f"LOCAL_RANK={local_rank} but only {count} CUDA device(s) are visible")
    return torch.device("cuda", local_rank)


def init_distributed(device_preference: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Read torchrun's environment, pick this rank's device and join (or reuse) the process group."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or rank >= world_size:
        raise ValueError(f"RANK={rank} must be below WORLD_SIZE={world_size}")
    device = resolve_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size == 1:
        return DistInfo(device=device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    owns = False
    if not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
        if missing:
            raise ValueError(f"WORLD_SIZE={world_size} but {missing} unset; launch with torchrun")
        kwargs: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(seconds=timeout_s)}
        if device.type == "cuda":
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
        owns = True
    elif dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise ValueError(
            f"an existing process group (rank {dist.get_rank()}/{dist.get_world_size()}) disagrees with "
            f"RANK={rank} WORLD_SIZE={world_size}"
        )
    else:
        backend = dist.get_backend()
    logger.info("rank %d/%d (local %d) on %s, backend %s", rank, world_size, local_rank, device, backend)
    return DistInfo(rank, world_size, local_rank, device, backend, owns)


def cleanup_distributed(info: DistInfo) -> None:
    """Destroy the process group, but only if ``init_distributed`` created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """Samples per rank per step; the global batch must split evenly (see module docstring)."""
    if global_batch < 1 or world_size < 1:
        raise ValueError(f"batch_size ({global_batch}) and world size ({world_size}) must be >= 1")
    if global_batch % world_size:
        raise ValueError(
            f"train.batch_size={global_batch} (global) is not divisible by world size {world_size}; "
            f"use a multiple of {world_size}"
        )
    return global_batch // world_size


def barrier(info: DistInfo) -> None:
    if info.is_distributed:
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """In-place sum over ranks (identity in a world of one); returns the tensor."""
    if info.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` in rank order (a one-element list in a world of one)."""
    if not info.is_distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not info.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


# --- data sharding with a resumable position ----------------------------------------------------


class EpochKeyedDataset(torch.utils.data.Dataset):
    """Adapter whose keys are ``(crop_epoch, index)``: the epoch travels with every key.

    ``PairedPatchDataset`` draws each crop from (seed, epoch, index). Passing the epoch inside the
    key instead of calling ``set_epoch`` between epochs keeps that exact behaviour with persistent
    DataLoader workers (which hold their own dataset copy) and lets one DataLoader iterator run
    across epoch boundaries without a worker restart.
    """

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
        return self.dataset[index]


class ShardedBatchSampler:
    """Endless per-rank batches of ``(crop_epoch, index)`` keys, resumable at any batch.

    Each epoch is one ``torch.utils.data.DistributedSampler`` pass (shuffled with ``seed + epoch``,
    ``drop_last=True``) over a virtual dataset of ``num_samples * repeats`` entries, where
    ``repeats`` is just large enough to fill one global batch (tiny datasets); repeat ``r`` of an
    image in epoch ``e`` uses crop epoch ``e * repeats + r``, so repeats get different crops. For a
    given ``seed`` the union of the ranks' k-th batches is the same set of keys for every world
    size, which is what makes a DDP run match a single-process run on the same global batch.

    The position is a pure function of the number of batches consumed, so a resumed run passes
    ``start_batch`` = batches consumed so far and continues mid-epoch exactly.
    """

    def __init__(
        self,
        num_samples: int,
        global_batch: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        start_batch: int = 0,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"the training split is empty (num_samples={num_samples})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.batch = per_rank_batch(global_batch, world_size)
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.start_batch = start_batch
        self.repeats = -(-global_batch // num_samples)
        virtual = num_samples * self.repeats
        self.batches_per_epoch = (virtual // world_size) // self.batch

    def position(self, batches_consumed: int) -> tuple[int, int]:
        """``(epoch, batch within epoch)`` after ``batches_consumed`` batches."""
        return divmod(batches_consumed, self.batches_per_epoch)

    def epoch_keys(self, epoch: int) -> list[tuple[int, int]]:
        """This rank's keys for ``epoch``, in order, before batching."""
        virtual = list(range(self.num_samples * self.repeats))
        sampler = torch.utils.data.DistributedSampler(
            virtual, num_replicas=self.world_size, rank=self.rank, shuffle=self.shuffle, seed=self.seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        n = self.num_samples
        return [(epoch * self.repeats + v // n, v % n) for v in sampler]

    def __iter__(self):  # noqa: ANN204 - an endless generator of key lists
        epoch, offset = self.position(self.start_batch)
        while True:
            keys = self.epoch_keys(epoch)
            for b in range(offset, self.batches_per_epoch):
                yield keys[b * self.batch : (b + 1) * self.batch]
            epoch, offset = epoch + 1, 0
