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


def run_bench(script: str, *args: str) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--tiny", *args],
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


def test_cpu_profile_bench(cocostuff_sample: Path, shared_data: Path, tmp_path: Path) -> None:
    """Both arms train in parallel in a temp folder, every kept checkpoint is benchmarked, and the
    bicubic row is the published Set5 figure; the repository gets no outputs."""
    import json

    before = sorted(p.name for p in (REPO / "outputs").glob("*")) if (REPO / "outputs").is_dir() else []
    out = run_bench("cpu_profile.py", "--output", str(tmp_path))
    report = json.loads((tmp_path / "cpu_profile.json").read_text(encoding="utf-8"))
    assert set(report["timing"]) == {"multitask", "sr_only"}, report["timing"]
    assert all(t["wall_s"] > 0 and t["cpu_min"] > 0 for t in report["timing"].values())
    for set_name in ("set5", "set14"):
        rows = report["table"][set_name]
        assert set(rows) == {
            "bicubic",
            *(f"{arm}{it}" for arm in ("multitask", "sr_only") for it in ("", "_it2", "_it4")),
        }
    assert round(report["table"]["set5"]["bicubic"]["psnr_y"], 2) == 28.42, report["table"]["set5"]["bicubic"]
    assert report["selected"]["multitask"]["metadata"]["stage"] == "psnr"
    assert "sr_only_it4" in out and "removed at the end" in out
    assert (tmp_path / "cpu_profile_curves.png").stat().st_size > 0 and (tmp_path / "cpu_profile_val.png").is_file()
    after = sorted(p.name for p in (REPO / "outputs").glob("*")) if (REPO / "outputs").is_dir() else []
    assert after == before
