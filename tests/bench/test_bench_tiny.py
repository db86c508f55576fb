"""Every bench/ script runs in its ``--tiny`` mode (seconds), so a benchmark cannot rot unnoticed.
Only what the scripts compute is checked (exactness, rows printed), never a speed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_bench(script: str) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--tiny"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{script} --tiny failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_degrade_bench(shared_data: Path) -> None:
    out = run_bench("degrade.py")
    assert "pillow BICUBIC" in out and "srseg batched  (threads=1)" in out
    assert "per-image == batched: True" in out
    assert re.search(r"exactness: 0 of \d+ values differ from the MATLAB-made Set5 LR x4 files", out), out


def test_train_step_bench(cocostuff_sample: Path) -> None:
    out = run_bench("train_step.py")
    rows = [line.split() for line in out.splitlines() if line.startswith("cpu ")]
    assert [(r[1], r[2]) for r in rows] == [("tiny", "psnr"), ("tiny", "gan")], out
    assert all(float(r[6]) > 0 and float(r[9]) > 0 for r in rows), out  # samples/s and GFLOP/step measured


@pytest.mark.timeout(300)
def test_upscale_bench() -> None:
    out = run_bench("upscale.py")
    for backend in ("sr head, eager", "sr head, torchscript", "sr head, onnxruntime", "training net"):
        assert backend in out, out
    assert "128x96 LR -> 512x384 output" in out and "tiled (tile 32, overlap 4, batch  1)" in out, out
    assert "untiled, estimated" in out
