"""A 2-process DDP run (gloo, CPU, launched with torchrun's environment) matches a 1-process run on
the same global batch: same sample sets per step, gradients averaged over ranks, the segmentation CE
normalised over the global batch, and sharded validation reduced to the single-process numbers.

What is compared, and why so:

- PSNR stage: the weights after every step, tightly (they agree to ~1e-8).
- Both stages: the all-reduced first-step gradients (per tensor, ``||g_ddp - g_1|| <= 1e-4 ||g_1||``:
  a bias gradient sums ~4000 terms that largely cancel, so its relative rounding error reaches
  ~1.4e-5 while every other tensor stays below ~1e-6) and every logged loss of every step.
- GAN stage: the weights with a tolerance tied to how far training moved them
  (``||w_ddp - w_1|| <= 1e-3 ||w_1 - w_start||`` per tensor). A fixed atol on the GAN weights is
  not stable across machines: for a gradient element near zero, Adam's normalisation turns a
  one-rounding difference of summation order (2 ranks x 2 samples all-reduced vs one kernel over 4
  samples) into a visible share of a step.
- A planted bug (per-rank normalisation of the segmentation CE) must be rejected by the same check.

Measured on a loaded 2-vCPU machine: correct DDP stays at <= 1.4e-5 (gradients, per tensor),
<= 3e-5 of the movement (GAN weights), 1.5e-8 (PSNR weights); the planted bug reaches 2.3e-3,
0.25 of the movement and 1.4e-4 respectively, and moves the logged seg_ce by ~2e-3 relative.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from trainkit import FirstStepProbe, tiny_params

from srseg.stages.train import run_train
from srseg.train import checkpoint as ckpt

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PSNR_ITERS, GAN_ITERS = 4, 3
STAGES = (("psnr", PSNR_ITERS), ("gan", GAN_ITERS))
GRAD_RTOL = 1e-4  # all-reduced gradients: float32 roundings of summation order, see above
MOVE_RTOL = 1e-3  # GAN weights: share of how far training moved the tensor
LOSS_RTOL = 1e-5
VAL_RTOL = 1e-4


def _params(root: Path, out: Path):
    return tiny_params(
        root,
        out,
        {
            "train": {
                "deterministic": False,
                "log_every": 1,  # every step's losses land in plots/train_loss.csv
                "selection_images": 2,  # one image per rank: the sharded validation is reduced across ranks
                "discriminator": {"spectral_norm": True, "gan_type": "standard"},  # no per-rank BN / logit means
                "psnr_stage": {"iterations": PSNR_ITERS, "val_every": PSNR_ITERS, "checkpoint_every": PSNR_ITERS},
                "gan_stage": {"iterations": GAN_ITERS, "val_every": GAN_ITERS, "checkpoint_every": GAN_ITERS},
            }
        },
    )


@dataclass(frozen=True)
class Run:
    """Where one run (DDP or single-process) left its outputs and first-step probes."""

    out: Path
    probes: Path

    def probe(self, stage: str, rank: int = 0) -> dict:
        return torch.load(self.probes / f"{stage}_rank{rank}.pt", weights_only=True)


def _start_store() -> dist.TCPStore:
    """A rendezvous store on 127.0.0.1, port chosen by the kernel (bound once, read back)."""
    return dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, use_libuv=True)


def run_ddp(root: Path, dest: Path, plant: str = "none") -> Run:
    """Both stages on 2 ranks; like torchrun's agent, this process hosts one store per stage."""
    params = _params(root, dest / "out")
    params_file = dest / "params.json"
    params_file.parent.mkdir(parents=True, exist_ok=True)
    params_file.write_text(json.dumps(params.model_dump(mode="json")))
    probes = dest / "probes"
    probes.mkdir()
    stores = [_start_store() for _ in STAGES]  # alive together, so the two stages get two ports
    try:
        ports = [store.port for store in stores]
        assert len(set(ports)) == len(ports)
        procs = []
        for rank in range(2):  # the environment torchrun exports to each worker
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]),
                "OMP_NUM_THREADS": "1",
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": "2",
                "LOCAL_WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "TORCHELASTIC_USE_AGENT_STORE": "True",
            }
            with open(dest / f"rank{rank}.log", "wb") as log:  # a file, not a pipe: no rank blocks on output
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(HERE / "ddp_worker.py"),
                            "--params",
                            str(params_file),
                            "--ports",
                            ",".join(map(str, ports)),
                            "--probe-dir",
                            str(probes),
                            "--plant",
                            plant,
                        ],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                    )
                )
        try:
            for proc in procs:
                proc.wait(timeout=300)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=30)
    finally:
        del stores  # closes the listening sockets
    for rank, proc in enumerate(procs):
        assert proc.returncode == 0, (dest / f"rank{rank}.log").read_text(errors="replace")[-4000:]
    return Run(dest / "out", probes)


# --- the equivalence check: a list of what differs, empty when DDP == single process ---------


def _norm(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t.double()))


def _tight(a: dict, b: dict, what: str) -> list[str]:
    out = []
    for key in b:
        if a[key].is_floating_point():
            if not torch.allclose(a[key], b[key], rtol=1e-5, atol=1e-6):
                out.append(
                    f"{what}.{key}: max |diff| {float((a[key] - b[key]).abs().max()):.3g} (tight: rtol 1e-5, atol 1e-6)"
                )
        elif not torch.equal(a[key], b[key]):
            out.append(f"{what}.{key}: integer tensors differ")
    return out


def _moved(a: dict, b: dict, start: dict, what: str) -> list[str]:
    """``||a - b|| <= MOVE_RTOL * ||b - start||`` per floating tensor; others equal."""
    out = []
    for key in b:
        if not a[key].is_floating_point():
            if not torch.equal(a[key], b[key]):
                out.append(f"{what}.{key}: integer tensors differ")
            continue
        diff, moved = _norm(a[key] - b[key]), _norm(b[key] - start[key])
        if diff > MOVE_RTOL * moved:
            out.append(
                f"{what}.{key}: ||ddp - single|| {diff:.3g} > {MOVE_RTOL:g} x movement {moved:.3g} "
                f"({diff / moved if moved else math.inf:.3g}x the movement)"
            )
    return out


def _grads(a: dict, b: dict, stage: str) -> list[str]:
    out = []
    if a.keys() != b.keys():
        return [f"{stage} first-step gradients: parameter sets differ: {sorted(a.keys() ^ b.keys())}"]
    for key in b:
        diff, scale = _norm(a[key] - b[key]), _norm(b[key])
        if diff > GRAD_RTOL * scale:
            out.append(
                f"{stage} first-step grad {key}: ||ddp - single|| {diff:.3g} > {GRAD_RTOL:g} x ||single|| {scale:.3g}"
            )
    return out


def _loss_rows(run: Run, stage: str) -> list[dict[str, float]]:
    with open(run.out / stage / "plots" / "train_loss.csv", newline="") as handle:
        return [
            {k: float(v) for k, v in row.items() if v != "" and not k.startswith(("perf/", "train/lr"))}
            for row in csv.DictReader(handle)
        ]


def _losses(a: Run, b: Run, stage: str, iters: int) -> list[str]:
    rows_a, rows_b = _loss_rows(a, stage), _loss_rows(b, stage)
    if [r["iteration"] for r in rows_a] != list(range(1, iters + 1)) or len(rows_b) != iters:
        return [f"{stage}: logged iterations {[r['iteration'] for r in rows_a]} vs {[r['iteration'] for r in rows_b]}"]
    out = []
    for row_a, row_b in zip(rows_a, rows_b):
        if row_a.keys() != row_b.keys():
            out.append(f"{stage} iteration {row_b['iteration']:.0f}: logged columns differ")
            continue
        for name in sorted(row_b):
            if row_a[name] != pytest.approx(row_b[name], rel=LOSS_RTOL, abs=1e-7):
                out.append(
                    f"{stage} iteration {row_b['iteration']:.0f} {name}: ddp {row_a[name]:.8g} vs single "
                    f"{row_b[name]:.8g}"
                )
    return out


def ddp_mismatches(ddp: Run, single: Run) -> list[str]:
    """Everything in which the DDP run differs from the single-process run (empty: equivalent)."""
    out: list[str] = []
    for stage, iters in STAGES:
        a = ckpt.load_file(ddp.out / stage / "checkpoints" / ckpt.checkpoint_name(iters))
        b = ckpt.load_file(single.out / stage / "checkpoints" / ckpt.checkpoint_name(iters))
        assert len(a["rng"]) == 2 and len(b["rng"]) == 1  # every rank's RNG state is saved
        assert a["data"]["world_size"] == 2 and a["data"]["batches_consumed"] == b["data"]["batches_consumed"]

        probe_a, probe_b = ddp.probe(stage), single.probe(stage)
        rank1 = ddp.probe(stage, rank=1)["grads"]
        assert all(torch.equal(rank1[k], v) for k, v in probe_a["grads"].items()), (
            "ranks hold different all-reduced gradients"
        )
        out += _grads(probe_a["grads"], probe_b["grads"], stage)
        out += _losses(ddp, single, stage, iters)

        if stage == "psnr":
            out += _tight(a["generator"], b["generator"], "psnr.generator")
            out += _tight(a["ema"]["module"], b["ema"]["module"], "psnr.ema")
        else:
            start = probe_b["start"]
            g_start = {k.split(".", 1)[1]: v for k, v in start.items() if k.startswith("generator.")}
            d_start = {k.split(".", 1)[1]: v for k, v in start.items() if k.startswith("discriminator.")}
            out += _moved(a["generator"], b["generator"], g_start, "gan.generator")
            out += _moved(a["ema"]["module"], b["ema"]["module"], g_start, "gan.ema")
            out += _moved(a["discriminator"], b["discriminator"], d_start, "gan.discriminator")

        va = json.loads((ddp.out / stage / "metrics.json").read_text())["val"]
        vb = json.loads((single.out / stage / "metrics.json").read_text())["val"]
        for name in ("psnr_y", "ssim_y", "miou", "pixel_acc"):
            if va[name] != pytest.approx(vb[name], rel=VAL_RTOL, abs=1e-5):
                out.append(f"{stage} validation {name}: ddp {va[name]} vs single {vb[name]}")
    return out


# --- tests -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single_run(prepared_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    dest = tmp_path_factory.mktemp("ddp_single")
    params = _params(prepared_root, dest / "out")
    (dest / "probes").mkdir()
    torch.set_num_threads(1)
    for stage, _ in STAGES:
        probe = FirstStepProbe()
        run_train(params, stage, hooks=probe.hooks())
        probe.save(dest / "probes" / f"{stage}_rank0.pt")
    return Run(dest / "out", dest / "probes")


def test_two_process_ddp_matches_single_process(prepared_root: Path, single_run: Run, tmp_path: Path) -> None:
    ddp = run_ddp(prepared_root, tmp_path)
    mismatches = ddp_mismatches(ddp, single_run)
    assert mismatches == [], "\n".join(mismatches)


def test_check_rejects_per_rank_segmentation_normalisation(
    prepared_root: Path, single_run: Run, tmp_path: Path
) -> None:
    """The planted bug changes the objective whenever the ranks see different numbers of labelled
    pixels (they do here); the check must say where, in gradients, losses and weights."""
    broken = run_ddp(prepared_root, tmp_path, plant="per_rank_seg")
    mismatches = ddp_mismatches(broken, single_run)
    print("\nplanted per-rank seg normalisation, first mismatches:\n  " + "\n  ".join(mismatches[:8]))
    assert any(m.startswith("gan first-step grad generator.") for m in mismatches), mismatches
    assert any("train/seg_ce" in m for m in mismatches), mismatches
    assert any(m.startswith("psnr.generator.") for m in mismatches), mismatches
    assert any(m.startswith("gan.generator.") for m in mismatches), mismatches
