"""Checkpoint files (atomic write, checksum, weights_only, pruning), RNG capture and the
resumable sharded sampler."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from srseg.train import checkpoint as ckpt
from srseg.train.distributed import ShardedBatchSampler, per_rank_batch


def _state(iteration: int) -> dict:
    return {
        "format": ckpt.CHECKPOINT_FORMAT,
        "iteration": iteration,
        "w": torch.full((3,), float(iteration)),
        "rng": [ckpt.capture_rng_state()],
    }


def test_roundtrip_is_weights_only_loadable(tmp_path: Path) -> None:
    path = ckpt.save_file(tmp_path / ckpt.checkpoint_name(7), _state(7))
    assert path.name == "iter_00000007.pt" and ckpt.sidecar_path(path).is_file()
    loaded = ckpt.load_file(path, expect_format=ckpt.CHECKPOINT_FORMAT)
    assert loaded["iteration"] == 7 and torch.equal(loaded["w"], torch.full((3,), 7.0))
    torch.load(path, weights_only=True)  # plain values and tensors only
    with pytest.raises(ckpt.CheckpointError, match="format"):
        ckpt.load_file(path, expect_format="something/else")


def test_rng_state_roundtrip_reproduces_draws(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.randn(), torch.randn(2)  # advance, incl. numpy's cached gaussian
    path = ckpt.save_file(tmp_path / "rng.pt", {"rng": ckpt.capture_rng_state()})
    expected = (random.random(), np.random.randn(3).tolist(), torch.rand(4).tolist())
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    ckpt.restore_rng_state(ckpt.load_file(path)["rng"])
    assert (random.random(), np.random.randn(3).tolist(), torch.rand(4).tolist()) == expected


def test_truncated_or_unsealed_checkpoints_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for it in (2, 4, 6):
        ckpt.save_file(tmp_path / ckpt.checkpoint_name(it), _state(it))
    newest = tmp_path / ckpt.checkpoint_name(6)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # cut short
    ckpt.sidecar_path(tmp_path / ckpt.checkpoint_name(4)).unlink()  # killed before the sidecar
    with caplog.at_level(logging.WARNING, logger="srseg.train.checkpoint"):
        found = ckpt.load_latest(tmp_path)
    assert found is not None and found[1]["iteration"] == 2
    text = caplog.text
    assert "iter_00000006.pt: SHA-256" in text and "iter_00000004.pt: no checksum sidecar" in text


def test_a_truncated_file_with_a_matching_sidecar_still_fails_cleanly(tmp_path: Path) -> None:
    """Even if someone rewrote the sidecar, a cut-short zip is a CheckpointError, not a crash."""
    path = ckpt.save_file(tmp_path / "x.pt", _state(1))
    path.write_bytes(path.read_bytes()[:100])
    ckpt.sidecar_path(path).write_text(f"{ckpt.sha256_file(path)}  x.pt\n")
    with pytest.raises(ckpt.CheckpointError, match="cannot be loaded"):
        ckpt.load_file(path)


def test_prune_keeps_newest(tmp_path: Path) -> None:
    for it in (1, 2, 3, 10):
        ckpt.save_file(tmp_path / ckpt.checkpoint_name(it), _state(it))
    (tmp_path / "best.safetensors").write_bytes(b"kept")
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.safetensors",
        "iter_00000003.pt",
        "iter_00000003.pt.sha256",
        "iter_00000010.pt",
        "iter_00000010.pt.sha256",
    ]


def _take(sampler: ShardedBatchSampler, n: int) -> list[list[tuple[int, int]]]:
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_sampler_resumes_mid_epoch() -> None:
    full = _take(ShardedBatchSampler(10, 4, seed=5), 7)
    s = ShardedBatchSampler(10, 4, seed=5, start_batch=3)
    assert s.batches_per_epoch == 2 and s.position(3) == (1, 1)
    assert _take(s, 4) == full[3:]
    assert full[0] != full[2]  # epochs are reshuffled


def test_sampler_shards_union_matches_single_process() -> None:
    single = _take(ShardedBatchSampler(9, 4, seed=1), 6)
    ranks = [_take(ShardedBatchSampler(9, 4, world_size=2, rank=r, seed=1), 6) for r in (0, 1)]
    for k in range(6):
        assert sorted(ranks[0][k] + ranks[1][k]) == sorted(single[k])
        assert len(ranks[0][k]) == len(ranks[1][k]) == 2


def test_sampler_repeats_tiny_datasets_with_fresh_crops() -> None:
    batch = _take(ShardedBatchSampler(3, 8, seed=0), 1)[0]
    assert len(batch) == 8 and {i for _, i in batch} == {0, 1, 2}
    assert len(set(batch)) == 8  # repeats of an image get different crop epochs


def test_global_batch_must_split_evenly() -> None:
    assert per_rank_batch(16, 4) == 4
    with pytest.raises(ValueError, match="batch_size=6 .* not divisible by world size 4"):
        per_rank_batch(6, 4)


def test_prune_counts_only_usable_checkpoints(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # stale, unusable checkpoints with higher numbers (a crashed older run) must not push out the
    # good ones a fresh run writes: otherwise each new checkpoint is pruned at once
    for it in (800, 900):
        path = ckpt.save_file(tmp_path / ckpt.checkpoint_name(it), _state(it))
        path.write_bytes(path.read_bytes()[:-100])
    fresh = [ckpt.save_file(tmp_path / ckpt.checkpoint_name(it), _state(it)) for it in (1, 2, 3)]
    for path in fresh:
        ckpt.prune_checkpoints(tmp_path, keep=2, fresh=path)
    assert [p.name for _, p in ckpt.list_checkpoints(tmp_path)] == ["iter_00000002.pt", "iter_00000003.pt"]
    assert "removing unusable checkpoint" in caplog.text and "iter_00000900.pt" in caplog.text
    found = ckpt.load_latest(tmp_path)
    assert found is not None and found[0].name == "iter_00000003.pt"


def test_prune_never_removes_the_only_usable_checkpoint(tmp_path: Path) -> None:
    good = ckpt.save_file(tmp_path / ckpt.checkpoint_name(5), _state(5))
    for it in (6, 7):
        ckpt.save_file(tmp_path / ckpt.checkpoint_name(it), _state(it))
        ckpt.sidecar_path(tmp_path / ckpt.checkpoint_name(it)).unlink()  # killed between the two renames
    ckpt.prune_checkpoints(tmp_path, keep=1)
    assert [p for _, p in ckpt.list_checkpoints(tmp_path)] == [good]
