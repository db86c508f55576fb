"""Resume equivalence: a GAN-stage run killed with SIGKILL right after its mid-run checkpoint and
resumed gives bit-identical G, D, EMA, optimiser and scheduler states (deterministic CPU mode),
continues the data stream at the exact sample, and falls back past a corrupt checkpoint."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from trainkit import tiny_params

from srseg.models.io import load_state_dict_file
from srseg.stages.train import run_train
from srseg.train import checkpoint as ckpt
from srseg.train.engine import TrainHooks

N = 10
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _assert_identical(a: Any, b: Any, where: str = "") -> None:
    """Exact equality of nested dicts/lists of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _final(out: Path) -> dict[str, Any]:
    return ckpt.load_file(out / "gan" / "checkpoints" / ckpt.checkpoint_name(N))


def _compare_training_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in (
        "generator",
        "discriminator",
        "ema",
        "optimizer_g",
        "optimizer_d",
        "scheduler_g",
        "scheduler_d",
        "iteration",
        "data",
        "best",
    ):
        _assert_identical(a[key], b[key], key)


@pytest.fixture(scope="module")
def gan_setup(prepared_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """PSNR weights to start from, GAN params (batch 2 over 6 images: 3 batches per epoch, so
    the kill at iteration 5 lands mid-epoch), and the uninterrupted reference run."""
    base = tmp_path_factory.mktemp("resume")
    psnr = tiny_params(prepared_root, base / "psnr_out", {"train": {"psnr_stage": {"iterations": 2, "val_every": 2}}})
    run_train(psnr, "psnr")
    params = tiny_params(
        prepared_root,
        base / "unused",
        {
            "train": {
                "batch_size": 2,
                "gan_stage": {
                    "iterations": N,
                    "val_every": 5,
                    "checkpoint_every": N // 2,
                    "lr_milestones": [3],
                    "lr_gamma": 0.5,
                },
            }
        },
    )
    init = base / "psnr_out" / "psnr" / "selected.safetensors"
    straight_ids: list[list[int]] = []
    run_train(
        params,
        "gan",
        output_dir=base / "straight",
        init_from=init,
        hooks=TrainHooks(after_step=lambda it, ids: straight_ids.append(ids)),
    )
    return {"base": base, "params": params, "init": init, "straight_ids": straight_ids}


def test_sigkill_then_resume_is_bit_identical(gan_setup: dict[str, Any]) -> None:
    base, params, init = gan_setup["base"], gan_setup["params"], gan_setup["init"]
    out = base / "killed"
    params_file = base / "params.json"
    params_file.write_text(json.dumps(params.model_dump(mode="json")))
    ids_file = base / "child_ids.jsonl"
    # One intra-op thread, like the in-process runs (see conftest.py): same kernels, same bits.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]), "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        [
            sys.executable,
            str(HERE / "resume_child.py"),
            "--params",
            str(params_file),
            "--output",
            str(out),
            "--init-from",
            str(init),
            "--kill-at",
            str(N // 2),
            "--ids",
            str(ids_file),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    names = sorted(p.name for p in (out / "gan" / "checkpoints").glob("*.pt"))
    assert names == [ckpt.checkpoint_name(N // 2)]
    assert not (out / "gan" / "final.safetensors").exists()
    mid = ckpt.load_file(out / "gan" / "checkpoints" / names[0])
    assert (mid["data"]["epoch"], mid["data"]["batch_in_epoch"], mid["data"]["batches_per_epoch"]) == (1, 2, 3)

    child_ids = [json.loads(line)[1] for line in ids_file.read_text().splitlines()]
    resumed_ids: list[list[int]] = []
    resumed_from = []
    hooks = TrainHooks(
        before_train=lambda t: resumed_from.append(t.iteration), after_step=lambda it, ids: resumed_ids.append(ids)
    )
    run_train(params, "gan", output_dir=out, init_from=init, hooks=hooks)

    assert resumed_from == [N // 2]
    straight = gan_setup["straight_ids"]
    assert child_ids == straight[: N // 2] and resumed_ids == straight[N // 2 :]
    _compare_training_state(_final(base / "straight"), _final(out))
    _assert_identical(
        load_state_dict_file(base / "straight" / "gan" / "final.safetensors")[0],
        load_state_dict_file(out / "gan" / "final.safetensors")[0],
    )


def test_corrupt_newest_checkpoint_falls_back_to_previous(
    gan_setup: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    base = gan_setup["base"]
    out = base / "corrupt"
    shutil.copytree(base / "straight", out)
    newest = out / "gan" / "checkpoints" / ckpt.checkpoint_name(N)
    newest.write_bytes(newest.read_bytes()[:-4096])  # truncated, e.g. disk full
    seen: dict[str, Any] = {}

    def capture(trainer) -> None:
        seen["iteration"] = trainer.iteration
        seen["state"] = trainer.state_dict()

    with caplog.at_level(logging.WARNING, logger="srseg.train.checkpoint"):
        run_train(
            gan_setup["params"],
            "gan",
            output_dir=out,
            init_from=gan_setup["init"],
            max_iterations=N // 2,
            hooks=TrainHooks(before_train=capture),
        )
    assert "skipping unusable checkpoint" in caplog.text and "iter_00000010.pt" in caplog.text
    assert seen["iteration"] == N // 2
    previous = ckpt.load_file(out / "gan" / "checkpoints" / ckpt.checkpoint_name(N // 2))
    _compare_training_state(previous, seen["state"])


def _run_killed_child(gan_setup: dict[str, Any], out: Path, kill_at: int) -> subprocess.CompletedProcess[str]:
    base, params, init = gan_setup["base"], gan_setup["params"], gan_setup["init"]
    params_file = base / "params.json"
    params_file.write_text(json.dumps(params.model_dump(mode="json")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            str(HERE / "resume_child.py"),
            "--params",
            str(params_file),
            "--output",
            str(out),
            "--init-from",
            str(init),
            "--kill-at",
            str(kill_at),
            "--ids",
            str(out.parent / f"{out.name}_ids.jsonl"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_fresh_start_over_unusable_checkpoints_stays_resumable(gan_setup: dict[str, Any]) -> None:
    # An older run left checkpoints with higher numbers that are all unusable (truncated, unsealed).
    # Training starts fresh; its checkpoints must survive pruning so a kill -9 can be resumed.
    base, params, init = gan_setup["base"], gan_setup["params"], gan_setup["init"]
    out = base / "stale"
    folder = out / "gan" / "checkpoints"
    folder.mkdir(parents=True)
    source = base / "straight" / "gan" / "checkpoints" / ckpt.checkpoint_name(N)
    for it in (800, 900):
        stale = folder / ckpt.checkpoint_name(it)
        stale.write_bytes(source.read_bytes()[:-4096])
        ckpt.sidecar_path(stale).write_text(ckpt.sidecar_path(source).read_text())
    child = _run_killed_child(gan_setup, out, kill_at=N // 2)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    assert [p.name for _, p in ckpt.list_checkpoints(folder)] == [ckpt.checkpoint_name(N // 2)]

    resumed_from: list[int] = []
    run_train(
        params,
        "gan",
        output_dir=out,
        init_from=init,
        hooks=TrainHooks(before_train=lambda t: resumed_from.append(t.iteration)),
    )
    assert resumed_from == [N // 2]
    _compare_training_state(_final(base / "straight"), _final(out))
