"""A 2-process DDP run (gloo, CPU, launched with torchrun's environment variables) matches a 1-process run on the same global batch:
same sample sets per step, gradients averaged over ranks, the segmentation CE normalised over the
global batch, and sharded validation reduced to the single-process numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trainkit import free_port, tiny_params

from srseg.stages.train import run_train
from srseg.train import checkpoint as ckpt

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PSNR_ITERS, GAN_ITERS = 4, 3


def _params(root: Path, out: Path):
    return tiny_params(root, out, {"train": {
        "deterministic": False,
        "selection_images": 2,  # one image per rank: the sharded validation is reduced across ranks
        "discriminator": {"spectral_norm": True, "gan_type": "standard"},  # no per-rank BN / logit means
        "psnr_stage": {"iterations": PSNR_ITERS, "val_every": PSNR_ITERS, "checkpoint_every": PSNR_ITERS},
        "gan_stage": {"iterations": GAN_ITERS, "val_every": GAN_ITERS, "checkpoint_every": GAN_ITERS},
    }})


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=lambda m: f"{what}.{key}: {m}")
        else:
            assert torch.equal(a[key], b[key]), f"{what}.{key}"


def test_two_process_ddp_matches_single_process(prepared_root: Path, tmp_path: Path) -> None:
    ddp_params = _params(prepared_root, tmp_path / "ddp")
    params_file = tmp_path / "params.json"
    params_file.write_text(json.dumps(ddp_params.model_dump(mode="json")))
    ports = f"{free_port()},{free_port()}"
    procs = []
    for rank in range(2):  # the environment torchrun exports to each worker
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]), "OMP_NUM_THREADS": "1",
               "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1"}
        procs.append(subprocess.Popen(
            [sys.executable, str(HERE / "ddp_worker.py"), "--params", str(params_file), "--ports", ports],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    try:
        errors = [proc.communicate(timeout=300)[1] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, err in zip(procs, errors):
        assert proc.returncode == 0, err[-4000:]

    single = _params(prepared_root, tmp_path / "single")
    run_train(single, "psnr")
    run_train(single, "gan")

    for stage, iters in (("psnr", PSNR_ITERS), ("gan", GAN_ITERS)):
        a = ckpt.load_file(tmp_path / "ddp" / stage / "checkpoints" / ckpt.checkpoint_name(iters))
        b = ckpt.load_file(tmp_path / "single" / stage / "checkpoints" / ckpt.checkpoint_name(iters))
        assert len(a["rng"]) == 2 and len(b["rng"]) == 1  # every rank's RNG state is saved
        assert a["data"]["world_size"] == 2 and a["data"]["batches_consumed"] == b["data"]["batches_consumed"]
        _close(a["generator"], b["generator"], f"{stage}.generator")
        _close(a["ema"]["module"], b["ema"]["module"], f"{stage}.ema")
        if stage == "gan":
            _close(a["discriminator"], b["discriminator"], "gan.discriminator")
        va = json.loads((tmp_path / "ddp" / stage / "metrics.json").read_text())["val"]
        vb = json.loads((tmp_path / "single" / stage / "metrics.json").read_text())["val"]
        for name in ("psnr_y", "ssim_y", "miou", "pixel_acc"):
            assert va[name] == pytest.approx(vb[name], rel=1e-4, abs=1e-5), name
