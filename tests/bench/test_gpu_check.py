"""bench/gpu_check.py --tiny: every section runs on CPU at toy sizes through the code paths of the
GPU run and writes a report with the same keys. No timing is asserted (figures are the bench's)."""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
ROWS = ["baseline_fp32_eager", "engine_bf16_channels_last", "engine_bf16_channels_last_compiled"]


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("gpu_check")
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def tiny(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("gpu_check") / "report.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "gpu_check.py"),
            "--tiny",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--data-dir",
            str(shared_data),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return json.loads(out.read_text()), proc.stdout


def test_tiny_run_covers_every_section(gpu_check: ModuleType, tiny: tuple[dict[str, Any], str]) -> None:
    report, stdout = tiny
    gpu_check.check_schema(report)
    assert (report["schema"], report["mode"], report["environment"]["device"]) == (gpu_check.SCHEMA, "tiny", "cpu")
    assert {name: report[name]["status"] for name in gpu_check.SECTIONS} == dict.fromkeys(gpu_check.SECTIONS, "ok")
    assert "== gpu_check (tiny)" in stdout and "samples/s" in stdout

    tests = report["cuda_tests"]["tests"]
    modules = {t["name"].split("::")[0] for t in tests}
    assert modules == {"tests.degrade.test_bicubic", "tests.degrade.test_bicubic_cuda", "tests.train.test_train_cuda"}
    expected = "passed" if torch.cuda.is_available() else "skipped"
    assert len(tests) >= 9 and all(t["outcome"] == expected for t in tests), tests
    assert report["cuda_tests"]["skipped" if expected == "skipped" else "passed"] == len(tests)


def test_tiny_training_rows(gpu_check: ModuleType, tiny: tuple[dict[str, Any], str]) -> None:
    training = tiny[0]["training"]
    rows = {r["name"]: r for r in training["rows"]}
    assert list(rows) == ROWS
    for row in rows.values():
        assert row["finite"] and row["samples_per_s"] > 0 and row["step_ms_min"] <= row["step_ms"] <= row["step_ms_max"]
        assert row["tflops"] > 0 and row["mfu"] is None  # no bf16 peak on a CPU
        assert row["profile"]["error"] is None and row["profile"]["top"][0]["op"].startswith("aten::")
    assert rows["engine_bf16_channels_last_compiled"]["compiled"]
    assert rows["engine_bf16_channels_last_compiled"]["compile_backend"] == "aot_eager"
    assert not rows["engine_bf16_channels_last"]["amp"]  # the engine's bf16 autocast is CUDA-only
    # Same initial weights, same first batch: the engine and the baseline start at the same loss.
    first = [row["first_loss"] for row in rows.values()]
    assert max(first) - min(first) <= 1e-4 * max(first), first


def test_model_flops_cover_forward_and_backward(gpu_check: ModuleType, tiny: tuple[dict[str, Any], str]) -> None:
    """The counted step is forward + backward: about 3x the forward alone (the first conv has no
    input gradient, so a little under)."""
    from torch.utils.flop_counter import FlopCounterMode

    from srseg.train.engine import build_generator

    plan = gpu_check.make_plan(tiny=True, num_workers=0)
    cfg = gpu_check.train_config(plan, torch.device("cpu"))
    net = build_generator(cfg, gpu_check.NUM_CLASSES)
    lr_side = cfg.patch_size // cfg.scale
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net.forward_multitask(torch.rand(cfg.batch_size, 3, lr_side, lr_side))
    ratio = tiny[0]["training"]["model_gflop_per_step"] * 1e9 / counter.get_total_flops()
    assert 2.5 < ratio <= 3.0, ratio


def test_tiny_data_loading_and_upscale(tiny: tuple[dict[str, Any], str]) -> None:
    report = tiny[0]
    data = report["data_loading"]
    assert data["num_workers"] == 1 and 0.0 <= data["data_wait_share"] <= 1.0
    assert data["loader_samples_per_s"] > 0 and isinstance(data["gpu_starved"], bool)
    up = report["upscale"]
    assert up["hr_size"] == [4 * side for side in up["lr_size"]] and up["gflop_per_image"] > 0
    rows = {r["name"]: r for r in up["rows"]}
    assert set(rows) == {"eager_fp32", "eager_bf16_autocast", "torchscript_fp32", "onnxruntime"}
    assert rows["eager_bf16_autocast"]["status"] == "skipped" and "CUDA" in rows["eager_bf16_autocast"]["reason"]
    for name in ("eager_fp32", "torchscript_fp32", "onnxruntime"):
        assert rows[name]["status"] == "ok" and rows[name]["mp_per_s"] > 0
        assert rows[name]["max_abs_diff_vs_eager_fp32"] < 1e-4, rows[name]
    assert rows["onnxruntime"]["provider"] == "CPUExecutionProvider"


def test_schema_check_names_what_differs(gpu_check: ModuleType, tiny: tuple[dict[str, Any], str]) -> None:
    report = tiny[0]
    broken = copy.deepcopy(report)
    del broken["training"]["rows"][1]["mfu"]
    with pytest.raises(ValueError, match=r"training\.rows\[1\].*mfu"):
        gpu_check.check_schema(broken)
    broken = copy.deepcopy(report)
    broken["upscale"]["extra"] = 1
    with pytest.raises(ValueError, match=r"upscale: keys \['extra'\]"):
        gpu_check.check_schema(broken)


def test_full_run_needs_cuda_and_the_packages(
    gpu_check: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        gpu_check.main(["--out", str(tmp_path / "r.json")])
    assert "no CUDA device" in capsys.readouterr().err
    monkeypatch.setattr(gpu_check, "REQUIRED_MODULES", ("numpy", "no_such_module_srseg"))
    with pytest.raises(SystemExit):
        gpu_check.main(["--tiny", "--out", str(tmp_path / "r.json")])
    assert "missing Python packages ['no_such_module_srseg']" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_every_cuda_test_file_is_run_by_the_script(gpu_check: ModuleType) -> None:
    marked = sorted(
        str(path.relative_to(REPO))
        for path in (REPO / "tests").rglob("test_*.py")
        if re.search(r"pytest\.mark\.cuda\b", path.read_text(encoding="utf-8"))
    )
    assert marked and set(marked) <= set(gpu_check.CUDA_TEST_FILES), marked
    assert all((REPO / name).is_file() for name in gpu_check.CUDA_TEST_FILES)


def test_a_failing_variant_is_recorded_and_the_others_still_run(
    gpu_check: ModuleType, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-shot GPU run must not lose the baseline because torch.compile broke."""
    real_variants = gpu_check.variants

    def baseline_and_broken(*args: Any, **kwargs: Any) -> list[Any]:
        def broken() -> Any:
            raise RuntimeError("inductor exploded")

        return [real_variants(*args, **kwargs)[0], ("engine_bf16_channels_last_compiled", broken)]

    monkeypatch.setattr(gpu_check, "variants", baseline_and_broken)
    root = gpu_check.build_sample_root(shared_data / "cocostuff-sample", tmp_path / "data", per_split=4)
    out = gpu_check.training(gpu_check.make_plan(tiny=True, num_workers=0), torch.device("cpu"), root, tmp_path)
    baseline, broken = out["rows"]
    assert baseline["error"] is None and baseline["samples_per_s"] > 0
    assert broken["error"] == "RuntimeError: inductor exploded" and broken["samples_per_s"] is None
    assert out["status"] == "failed" and "inductor exploded" in out["error"]
