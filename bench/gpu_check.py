"""GPU check: the CUDA-only tests, training throughput against a plain fp32 loop (with MFU), the
data-loading share of a step, and upscale throughput of the exported SR head; printed as tables
and written to one JSON file.

    bash bench/gpu_check.sh                                  # a GPU machine, < 8 min on one H100/H200
    python bench/gpu_check.py --out gpu_check.json           # the same, without the wrapper
    python bench/gpu_check.py --tiny --out /tmp/tiny.json    # CPU, toy sizes, ~1 min: the same code paths
    python bench/gpu_check.py --tiny --device cuda           # a 1-minute smoke run on the GPU first

Sections (each is recorded even when another one fails; the exit status is 1 if any failed):

cuda_tests
    ``pytest -m cuda`` over CUDA_TEST_FILES in a subprocess (GPU bicubic == CPU bicubic on Set5,
    bf16 + channels-last steps against the fp32 engine, GPU resume against an uninterrupted run),
    parsed from JUnit XML with the figures the tests record. Without CUDA they all skip.
training
    Paper size (64 features, 16 blocks, batch 16, 96 px HR patches), PSNR-stage step, on the same
    real COCO-Stuff batches held on the device (rotated), so data loading is excluded here:
    ``baseline_fp32_eager``: a plain fp32 eager loop written the way BasicSR-style trainers step
    (``PlainFp32Loop`` below); ``engine_bf16_channels_last``: ``srseg.train.engine.Trainer``;
    ``engine_bf16_channels_last_compiled``: the same with ``train.compile`` (torch.compile).
    samples/s and step time (median of ``repeats`` timed blocks, min and max beside it), peak
    memory, achieved TFLOP/s and MFU. FLOPs are the model's: one baseline step (G forward +
    backward) counted with ``torch.utils.flop_counter``, the same numerator for every row, over
    the device's dense bf16 peak (table in bench/train_step.py; ``null`` when the device is not
    in it, and on CPU). Each row carries a short profile (top operators by device time).
data_loading
    The engine fed by its own DataLoader over the real COCO-Stuff sample (JPEG decode, crop,
    flips in worker processes): the share of wall time spent waiting for batches, the loader's
    samples/s alone, and ``gpu_starved`` = the loader is slower than the compute-only step.
upscale
    The SR head exported as srseg does it (safetensors, traced TorchScript, ONNX via the
    torch.export-based exporter), loaded through ``srseg.inference.upscale.load_sr_model`` and
    run at 512x512 -> 2048x2048: eager fp32, eager bf16 autocast (what ``srseg upscale`` uses on
    CUDA), TorchScript, ONNX Runtime with the CUDA provider when installed. Output MP/s and the
    largest difference from eager fp32.

``--tiny`` runs every section at toy sizes (8 features, 2 blocks, batch 2, 32 px; upscale
16 -> 64) and compiles with the ``aot_eager`` backend (dynamo + AOTAutograd without code
generation: inductor's C++ build takes minutes on a small CPU). The JSON has the same keys in
both modes (``check_schema``); figures that do not apply are ``null``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

# Shared helpers of the sibling bench scripts (bench/ is on sys.path when this file runs as a script).
from train_step import SIZES, bf16_peak, build_sample_root
from upscale import _proc_status_mb, _reset_peak_rss, _seconds

REPO = Path(__file__).resolve().parents[1]

SCHEMA = "srseg.gpu_check/1"
DEFAULT_DATA = Path(os.environ.get("SRSEG_TEST_DATA") or REPO.parent / "shared" / "data")
CUDA_TEST_FILES = (
    "tests/degrade/test_bicubic.py",
    "tests/degrade/test_bicubic_cuda.py",
    "tests/train/test_train_cuda.py",
)
SECTIONS = ("cuda_tests", "training", "data_loading", "upscale")
# Imported by the sections (srseg's own dependencies among them); checked before any GPU time is spent.
REQUIRED_MODULES = (
    "numpy",
    "PIL",
    "pydantic",
    "yaml",
    "safetensors",
    "tqdm",
    "pytest",
    "onnx",
    "onnxruntime",
    "onnxscript",
)
NUM_CLASSES = 171  # fine171: the paper's COCO-Stuff classes
SPEEDUP_GOAL = 3.0
MFU_GOAL = 0.30

# Every key of the report, per section; check_schema enforces them in both modes.
SECTION_KEYS: dict[str, set[str]] = {
    "environment": {
        "python",
        "torch",
        "cuda",
        "cudnn",
        "device",
        "device_name",
        "capability",
        "bf16_peak_tflops",
        "cpu_count",
        "torch_threads",
        "cudnn_allow_tf32",
        "matmul_allow_tf32",
        "onnxruntime",
        "onnxruntime_providers",
        "git_commit",
    },
    "cuda_tests": {
        "status",
        "error",
        "seconds",
        "command",
        "exit_code",
        "passed",
        "failed",
        "errors",
        "skipped",
        "tests",
    },
    "training": {"status", "error", "seconds", "size", "model_gflop_per_step", "flops_counted_on", "rows"},
    "data_loading": {
        "status",
        "error",
        "seconds",
        "num_workers",
        "batches",
        "data_wait_share",
        "with_loader_samples_per_s",
        "loader_samples_per_s",
        "compute_samples_per_s",
        "gpu_starved",
    },
    "upscale": {"status", "error", "seconds", "lr_size", "hr_size", "network", "gflop_per_image", "rows"},
    "goals": {"speedup_goal", "mfu_goal", "best_engine_row", "speedup", "mfu", "met", "note"},
}
TEST_KEYS = {"name", "outcome", "seconds", "message", "properties"}
TRAINING_ROW_KEYS = {
    "name",
    "error",
    "amp",
    "channels_last",
    "compiled",
    "compile_backend",
    "warmup_s",
    "step_ms",
    "step_ms_min",
    "step_ms_max",
    "samples_per_s",
    "peak_memory_mb",
    "peak_memory_kind",
    "tflops",
    "mfu",
    "speedup_vs_baseline",
    "first_loss",
    "finite",
    "profile",
}
PROFILE_KEYS = {"clock", "busy_ms_per_step", "busy_share", "top", "error"}
UPSCALE_ROW_KEYS = {
    "name",
    "provider",
    "status",
    "reason",
    "ms",
    "ms_best",
    "mp_per_s",
    "tflops",
    "max_abs_diff_vs_eager_fp32",
}


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions of one mode."""

    mode: str
    dims: Mapping[str, int]
    warmup: int
    steps: int
    repeats: int
    profile_steps: int
    compile_backend: str
    num_workers: int
    loader_batches: int
    upscale_lr: int
    upscale_runs: int
    test_timeout_s: int


def make_plan(tiny: bool, num_workers: int | None) -> Plan:
    if tiny:
        return Plan(
            "tiny",
            {"num_features": 8, "num_blocks": 2, "batch_size": 2, "patch_size": 32},
            warmup=1,
            steps=1,
            repeats=2,
            profile_steps=1,
            compile_backend="aot_eager",
            num_workers=1 if num_workers is None else num_workers,
            loader_batches=4,
            upscale_lr=16,
            upscale_runs=2,
            test_timeout_s=300,
        )
    return Plan(
        "full",
        SIZES["paper"],
        warmup=10,
        steps=50,
        repeats=3,
        profile_steps=5,
        compile_backend="inductor",
        num_workers=min(8, os.cpu_count() or 1) if num_workers is None else num_workers,
        loader_batches=64,
        upscale_lr=512,
        upscale_runs=10,
        test_timeout_s=240,
    )


# --------------------------------------------------------------------------------------- helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _reset_peak(device: torch.device) -> str | None:
    """Start a peak-memory window; returns what the peak will measure (None: not measurable)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "cuda_max_allocated"
    try:
        return "process_peak_rss" if _reset_peak_rss() else None
    except OSError:
        return None


def _peak_mb(device: torch.device, kind: str | None) -> float | None:
    if kind == "cuda_max_allocated":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if kind == "process_peak_rss":
        return _proc_status_mb("VmHWM")
    return None


def _section(name: str) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(SECTION_KEYS[name])
    out["status"] = "not_run"
    return out


def _git_commit() -> str | None:
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def environment(device: torch.device) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    try:
        import onnxruntime as ort

        ort_version, providers = ort.__version__, list(ort.get_available_providers())
    except ImportError:
        ort_version, providers = None, []
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": device.type,
        "device_name": name,
        "capability": ".".join(map(str, torch.cuda.get_device_capability(device))) if device.type == "cuda" else None,
        "bf16_peak_tflops": bf16_peak(name) if device.type == "cuda" else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "onnxruntime": ort_version,
        "onnxruntime_providers": providers,
        "git_commit": _git_commit(),
    }


# ------------------------------------------------------------------------------------ cuda tests


def _junit_tests(xml_path: Path) -> list[dict[str, Any]]:
    tests = []
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (node.get("message") or node.text or "")[:1000]
                break
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        tests.append(
            {
                "name": f"{case.get('classname')}::{case.get('name')}",
                "outcome": outcome,
                "seconds": float(case.get("time") or 0.0),
                "message": message,
                "properties": props,
            }
        )
    return tests


def cuda_tests(plan: Plan, data_dir: Path, workdir: Path) -> dict[str, Any]:
    out = _section("cuda_tests")
    xml_path = workdir / "cuda_tests.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "cuda",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "junit_family=xunit1",
        f"--junitxml={xml_path}",
        *CUDA_TEST_FILES,
    ]
    env = {
        **os.environ,
        "SRSEG_TEST_DATA": str(data_dir),
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    out["command"] = "pytest -m cuda " + " ".join(CUDA_TEST_FILES)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=plan.test_timeout_s)
    out["exit_code"] = proc.returncode
    if not xml_path.is_file():
        raise RuntimeError(
            f"pytest wrote no JUnit XML (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"
        )
    tests = _junit_tests(xml_path)
    out["tests"] = tests
    for key, outcome in (("passed", "passed"), ("failed", "failed"), ("errors", "error"), ("skipped", "skipped")):
        out[key] = sum(t["outcome"] == outcome for t in tests)
    if proc.returncode != 0 or out["failed"] or out["errors"]:
        out["status"] = "failed"
        out["error"] = (proc.stdout + proc.stderr)[-3000:]
    else:
        out["status"] = "ok"
    return out


# -------------------------------------------------------------------------------------- training


class PlainFp32Loop:
    """The baseline: one step the way BasicSR-style trainers take it (``SRModel.optimize_parameters``).

    fp32, NCHW, eager; ``zero_grad``, forward, L1 (or MSE) + lambda_seg * cross-entropy,
    backward, ``torch.optim.Adam`` with PyTorch's default implementation; the losses are read
    back with ``.item()`` every iteration for the log, and the EMA copy is updated parameter by
    parameter. LR comes precomputed with the batch (BasicSR reads LR files), so the baseline does
    less work per step than the engine, which synthesises LR on the device.
    """

    def __init__(self, cfg: Any, num_classes: int, device: torch.device) -> None:
        from srseg.train.engine import build_generator, seed_everything

        seed_everything(cfg.seed)  # the engine's initial weights
        self.net_g = build_generator(cfg, num_classes).to(device)
        self.net_g_ema = copy.deepcopy(self.net_g).eval()
        self.optimizer_g = torch.optim.Adam(self.net_g.parameters(), lr=cfg.psnr_stage.lr, betas=tuple(cfg.adam_betas))
        self.cri_pix = nn.L1Loss() if cfg.loss.pixel == "l1" else nn.MSELoss()
        self.cri_seg = nn.CrossEntropyLoss(ignore_index=255)
        self.pixel_weight = cfg.loss.pixel_weight
        self.lambda_seg = cfg.loss.lambda_seg
        self.ema_decay = cfg.ema_decay

    def optimize_parameters(self, batch: Mapping[str, Tensor]) -> dict[str, float]:
        self.net_g.train()
        self.optimizer_g.zero_grad()
        output, logits = self.net_g.forward_multitask(batch["lr"])
        l_pix = self.cri_pix(output, batch["hr"])
        l_seg = self.cri_seg(logits, batch["label"])
        l_total = self.pixel_weight * l_pix + self.lambda_seg * l_seg
        l_total.backward()
        self.optimizer_g.step()
        log = {"pixel": l_pix.item(), "seg_ce": l_seg.item(), "total_g": l_total.item()}
        self.model_ema()
        return log

    @torch.no_grad()
    def model_ema(self) -> None:
        ema_params = dict(self.net_g_ema.named_parameters())
        for name, param in self.net_g.named_parameters():
            ema_params[name].mul_(self.ema_decay).add_(param, alpha=1 - self.ema_decay)


def train_config(plan: Plan, device: torch.device, compile_model: bool = False) -> Any:
    from srseg.config import TrainConfig

    dims = plan.dims
    huge = 10**9
    return TrainConfig.model_validate(
        {
            "generator": {"num_features": dims["num_features"], "num_blocks": dims["num_blocks"]},
            "batch_size": dims["batch_size"],
            "patch_size": dims["patch_size"],
            "class_map": "fine171",
            "num_workers": plan.num_workers,
            "device": device.type,
            "compile": compile_model,
            "psnr_stage": {"iterations": huge, "lr": 2e-4, "val_every": huge, "checkpoint_every": huge},
        }
    )


def _dataset(cfg: Any, data_root: Path) -> Any:
    from srseg.data.classmap import get_class_map
    from srseg.data.dataset import PairedPatchDataset

    cmap = get_class_map(cfg.class_map)
    assert cmap.num_classes == NUM_CLASSES
    return PairedPatchDataset(data_root, cfg.train_split, cfg.scale, cfg.patch_size, cmap, augment=True, seed=cfg.seed)


def _trainer(cfg: Any, dataset: Any, device: torch.device, workdir: Path, compile_backend: str) -> Any:
    from srseg.train.distributed import DistInfo
    from srseg.train.engine import Trainer

    return Trainer(
        cfg,
        "psnr",
        workdir / "engine",
        dataset,
        None,
        num_classes=NUM_CLASSES,
        dist_info=DistInfo(device=device),
        compile_backend=compile_backend,
    )


def device_batches(cfg: Any, dataset: Any, device: torch.device, count: int = 4) -> list[dict[str, Tensor]]:
    """``count`` real batches (HR, label and their MATLAB-bicubic LR) resident on the device."""
    from srseg.train.distributed import EpochKeyedDataset, ShardedBatchSampler
    from srseg.train.validation import synthesize_lr

    sampler = ShardedBatchSampler(len(dataset), cfg.batch_size, seed=cfg.seed)
    loader = iter(torch.utils.data.DataLoader(EpochKeyedDataset(dataset), batch_sampler=sampler, num_workers=0))
    batches = []
    for _ in range(count):
        batch = next(loader)
        hr = batch["hr"].to(device)
        batches.append({"hr": hr, "label": batch["label"].to(device), "lr": synthesize_lr(hr, cfg.scale)})
    return batches


def count_flops(step: Callable[[Mapping[str, Tensor]], Any], batch: Mapping[str, Tensor]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(batch)
    return int(counter.get_total_flops())


def _event_time_us(event: Any, attr: str) -> float:
    value = getattr(event, attr, None)
    if value is None and attr == "self_device_time_total":
        value = getattr(event, "self_cuda_time_total", 0.0)  # name before torch 2.4
    return float(value or 0.0)


def profile_steps(
    step: Callable[[Mapping[str, Tensor]], Any],
    batches: list[dict[str, Tensor]],
    device: torch.device,
    steps: int,
    step_ms: float,
) -> dict[str, Any]:
    """Top operators by self time over ``steps`` profiled steps.

    CUDA: operators ranked by the kernel time they launched; ``busy_share`` = kernel time per
    step / the unprofiled ``step_ms`` (well under 1: the GPU waits for the host, launch-bound).
    CPU: operators ranked by self CPU time; ``busy_share`` over the profiled wall time.
    """
    from torch.profiler import ProfilerActivity, profile

    out: dict[str, Any] = dict.fromkeys(PROFILE_KEYS)
    try:
        cuda = device.type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            for i in range(steps):
                step(batches[i % len(batches)])
            _sync(device)
            wall_ms = 1e3 * (time.perf_counter() - start) / steps
        events = prof.key_averages()
        attr = "self_device_time_total" if cuda else "self_cpu_time_total"
        operators = [e for e in events if str(getattr(e, "device_type", "")).endswith("CPU")] or list(events)
        if cuda:  # kernels: events that ran on the device; their self time is the busy time
            kernels = [e for e in events if str(getattr(e, "device_type", "")).endswith("CUDA")]
            busy_us = sum(_event_time_us(e, attr) for e in kernels) or sum(_event_time_us(e, attr) for e in operators)
        else:
            busy_us = sum(_event_time_us(e, attr) for e in operators)
        busy_ms = busy_us / 1e3 / steps
        top = sorted(operators, key=lambda e: _event_time_us(e, attr), reverse=True)[:12]
        out.update(
            {
                "clock": "cuda kernels" if cuda else "cpu self time",
                "busy_ms_per_step": busy_ms,
                "busy_share": busy_ms / (step_ms if cuda else wall_ms),
                "top": [
                    {
                        "op": e.key,
                        "calls_per_step": e.count / steps,
                        "ms_per_step": _event_time_us(e, attr) / 1e3 / steps,
                        "share": _event_time_us(e, attr) / busy_us if busy_us else None,
                    }
                    for e in top
                ],
            }
        )
    except Exception as exc:  # a profiler failure must not lose the timings
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def time_steps(
    step: Callable[[Mapping[str, Tensor]], Any],
    batches: list[dict[str, Tensor]],
    plan: Plan,
    device: torch.device,
    batch_size: int,
) -> dict[str, Any]:
    """Warm up, then ``repeats`` timed blocks of ``steps`` steps (device synced around each block)."""
    start = time.perf_counter()
    losses = []
    for i in range(plan.warmup):
        losses.append(step(batches[i % len(batches)]))
    _sync(device)
    warmup_s = time.perf_counter() - start
    kind = _reset_peak(device)
    block_ms = []
    for _ in range(plan.repeats):
        _sync(device)
        t0 = time.perf_counter()
        for i in range(plan.steps):
            last = step(batches[i % len(batches)])
        _sync(device)
        block_ms.append(1e3 * (time.perf_counter() - t0) / plan.steps)
    losses.append(last)
    values = [float(v) for loss in losses for v in loss.values()]
    step_ms = statistics.median(block_ms)
    return {
        "warmup_s": warmup_s,
        "step_ms": step_ms,
        "step_ms_min": min(block_ms),
        "step_ms_max": max(block_ms),
        "samples_per_s": 1e3 * batch_size / step_ms,
        "peak_memory_mb": _peak_mb(device, kind),
        "peak_memory_kind": kind,
        "first_loss": float(losses[0]["total_g"]),
        "finite": all(v == v and abs(v) != float("inf") for v in values),
    }


StepFn = Callable[[Mapping[str, Tensor]], Any]


def variants(
    plan: Plan, device: torch.device, dataset: Any, workdir: Path
) -> list[tuple[str, Callable[[], tuple[StepFn, dict[str, Any]]]]]:
    """The measured rows as (name, build); ``build()`` returns the step function and its flags."""
    cfg = train_config(plan, device)

    def baseline() -> tuple[StepFn, dict[str, Any]]:
        loop = PlainFp32Loop(cfg, NUM_CLASSES, device)
        return loop.optimize_parameters, {
            "amp": False,
            "channels_last": False,
            "compiled": False,
            "compile_backend": None,
        }

    def engine(compiled: bool) -> tuple[StepFn, dict[str, Any]]:
        trainer = _trainer(train_config(plan, device, compiled), dataset, device, workdir, plan.compile_backend)
        return trainer.train_step, {
            "amp": trainer.amp,
            "channels_last": trainer.channels_last,
            "compiled": compiled,
            "compile_backend": plan.compile_backend if compiled else None,
        }

    return [
        ("baseline_fp32_eager", baseline),
        ("engine_bf16_channels_last", lambda: engine(False)),
        ("engine_bf16_channels_last_compiled", lambda: engine(True)),
    ]


def training(plan: Plan, device: torch.device, data_root: Path, workdir: Path) -> dict[str, Any]:
    """One row per variant; a variant that fails (say, torch.compile) is recorded and the others still run."""
    out = _section("training")
    cfg = train_config(plan, device)
    dataset = _dataset(cfg, data_root)
    batches = device_batches(cfg, dataset, device)
    out["size"] = dict(plan.dims)
    out["flops_counted_on"] = "one baseline_fp32_eager step: G forward + backward (convolutions and matmuls)"
    peak = bf16_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    torch.backends.cudnn.benchmark = device.type == "cuda"  # BasicSR's train.py sets it; so does the engine
    flops = count_flops(PlainFp32Loop(cfg, NUM_CLASSES, device).optimize_parameters, batches[0])
    out["model_gflop_per_step"] = flops / 1e9

    rows: list[dict[str, Any]] = []
    for name, build in variants(plan, device, dataset, workdir):
        _release(device)
        row: dict[str, Any] = dict.fromkeys(TRAINING_ROW_KEYS)
        row.update(name=name, profile=dict.fromkeys(PROFILE_KEYS))
        rows.append(row)
        try:
            step, flags = build()
            row.update(flags)
            row.update(time_steps(step, batches, plan, device, cfg.batch_size))
            row["tflops"] = flops / (row["step_ms"] / 1e3) / 1e12
            row["mfu"] = row["tflops"] / peak if peak else None
            base = rows[0]["samples_per_s"]
            row["speedup_vs_baseline"] = row["samples_per_s"] / base if base else None
            row["profile"] = profile_steps(step, batches, device, plan.profile_steps, row["step_ms"])
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
            print(f"{name} failed:\n{traceback.format_exc()[-3000:]}", file=sys.stderr, flush=True)
        step = None  # frees the model before the next variant
    out["rows"] = rows
    problems = [f"{r['name']}: {r['error']}" for r in rows if r["error"]]
    problems += [f"{r['name']}: non-finite loss" for r in rows if r["finite"] is False]
    out["status"] = "failed" if problems else "ok"
    out["error"] = "; ".join(problems) or None
    return out


# ---------------------------------------------------------------------------------- data loading


def data_loading(
    plan: Plan, device: torch.device, data_root: Path, workdir: Path, compute_samples_per_s: float | None
) -> dict[str, Any]:
    out = _section("data_loading")
    cfg = train_config(plan, device)
    trainer = _trainer(cfg, _dataset(cfg, data_root), device, workdir, plan.compile_backend)
    # Enough batches to drain what the workers prefetch (prefetch_factor 4 per worker).
    batches = max(plan.loader_batches, 8 * max(plan.num_workers, 1))
    out.update(num_workers=plan.num_workers, batches=batches)
    loader = iter(trainer.make_loader())
    try:
        for _ in range(plan.warmup):
            trainer.train_step(next(loader))
        _sync(device)
        wait = 0.0
        start = time.perf_counter()
        for _ in range(batches):
            t0 = time.perf_counter()
            batch = next(loader)
            wait += time.perf_counter() - t0
            trainer.train_step(batch)
        _sync(device)
        elapsed = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(batches):
            next(loader)
        alone = time.perf_counter() - start
    finally:
        del loader  # stops the workers
    out["data_wait_share"] = wait / elapsed
    out["with_loader_samples_per_s"] = cfg.batch_size * batches / elapsed
    out["loader_samples_per_s"] = cfg.batch_size * batches / alone
    out["compute_samples_per_s"] = compute_samples_per_s
    if compute_samples_per_s is not None:
        out["gpu_starved"] = out["loader_samples_per_s"] < compute_samples_per_s
    out["status"] = "ok"
    return out


# --------------------------------------------------------------------------------------- upscale


def upscale(plan: Plan, device: torch.device, workdir: Path) -> dict[str, Any]:
    """SR-head throughput per backend, exported and loaded the way ``srseg export`` / ``srseg
    upscale`` do it; a backend that fails to export or run is recorded and the others still run."""
    from srseg.export import export_onnx, save_torchscript, trace_torchscript
    from srseg.inference.upscale import load_sr_model
    from srseg.models.generator import MultiTaskSRNet, build_sr_only
    from srseg.models.io import save_generator

    out = _section("upscale")
    dims = {k: plan.dims[k] for k in ("num_features", "num_blocks")}
    torch.manual_seed(0)
    head = build_sr_only(MultiTaskSRNet(num_classes=NUM_CLASSES, **dims)).eval()
    scale, size = head.scale, plan.upscale_lr
    out.update(lr_size=[size, size], hr_size=[scale * size, scale * size], network=dims)
    try:
        out["gflop_per_image"] = upscale_flops(plan)
    except Exception as exc:  # FLOPs are a nicety; the timings still count
        print(f"upscale FLOP count failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    example = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))

    def export(fmt: str) -> Path:
        if fmt == "safetensors":
            return save_generator(head, workdir / "sr_head.safetensors")
        if fmt == "torchscript":
            path = workdir / "sr_head.torchscript.pt"
            save_torchscript(trace_torchscript(head, example), path)
            return path
        path = workdir / "sr_head.onnx"
        export_onnx(head, example, path, opset=18, metadata={})
        return path

    import onnxruntime as ort

    providers = ort.get_available_providers()
    cuda = device.type == "cuda"
    backends = [  # name, file format, autocast dtype, provider, reason to skip
        ("eager_fp32", "safetensors", None, "pytorch", None),
        (
            "eager_bf16_autocast",
            "safetensors",
            torch.bfloat16,
            "pytorch",
            None if cuda else "bf16 autocast is CUDA-only in srseg upscale",
        ),
        ("torchscript_fp32", "torchscript", None, "torchscript", None),
        (
            "onnxruntime",
            "onnx",
            None,
            "CUDAExecutionProvider" if cuda else "CPUExecutionProvider",
            None
            if not cuda or "CUDAExecutionProvider" in providers
            else f"onnxruntime's CUDAExecutionProvider is not installed (providers: {providers})",
        ),
    ]
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(2)).to(device)
    out_mp = (scale * size) ** 2 / 1e6
    files: dict[str, Path] = {}
    rows, reference = [], None
    for name, fmt, autocast, provider, skip in backends:
        row: dict[str, Any] = dict.fromkeys(UPSCALE_ROW_KEYS)
        row.update(name=name, provider=provider)
        rows.append(row)
        if skip is not None:
            row.update(status="skipped", reason=skip)
            continue
        try:
            if fmt not in files:
                files[fmt] = export(fmt)
            model = load_sr_model(str(files[fmt]), scale=scale, device=device.type)
            precision = (lambda: torch.autocast(device.type, dtype=autocast)) if autocast else contextlib.nullcontext

            def run(model: Any = model, precision: Any = precision) -> Tensor:
                with torch.inference_mode(), precision():
                    y = model.fn(x)
                _sync(device)
                return y

            y = run().float()
            reference = y if name == "eager_fp32" else reference
            median, best = _seconds(run, plan.upscale_runs)
            row.update(
                status="ok",
                ms=1e3 * median,
                ms_best=1e3 * best,
                mp_per_s=out_mp / median,
                max_abs_diff_vs_eager_fp32=float((y - reference).abs().max()) if reference is not None else None,
            )
            if out["gflop_per_image"] is not None:
                row["tflops"] = out["gflop_per_image"] / 1e3 / median
        except Exception as exc:
            row.update(status="error", reason=f"{type(exc).__name__}: {exc}")
            print(f"upscale {name} failed:\n{traceback.format_exc()[-3000:]}", file=sys.stderr, flush=True)
        model = run = y = None  # frees the model and its output before the next backend
        _release(device)
    out["rows"] = rows
    errors = [f"{r['name']}: {r['reason']}" for r in rows if r["status"] == "error"]
    out["status"] = "failed" if errors else "ok"
    out["error"] = "; ".join(errors) or None
    return out


def upscale_flops(plan: Plan) -> float:
    """GFLOP of one SR-head forward at the plan's size, counted on the meta device (no memory)."""
    from srseg.models.generator import MultiTaskSRNet, build_sr_only

    dims = {k: plan.dims[k] for k in ("num_features", "num_blocks")}
    with torch.device("meta"):
        head = build_sr_only(MultiTaskSRNet(num_classes=NUM_CLASSES, **dims))
        x = torch.empty(1, 3, plan.upscale_lr, plan.upscale_lr)
    return count_flops(lambda batch: head(batch["lr"]), {"lr": x}) / 1e9


# ---------------------------------------------------------------------------------------- report


def goals(report: dict[str, Any]) -> dict[str, Any]:
    out = dict.fromkeys(SECTION_KEYS["goals"])
    out.update(speedup_goal=SPEEDUP_GOAL, mfu_goal=MFU_GOAL)
    rows = report["training"].get("rows") or []
    engine = [r for r in rows if r["name"].startswith("engine") and r["samples_per_s"] is not None]
    if not engine:
        out["note"] = "no training figures"
        return out
    best = max(engine, key=lambda r: r["samples_per_s"])
    out.update(best_engine_row=best["name"], speedup=best["speedup_vs_baseline"], mfu=best["mfu"])
    if report["mode"] != "full" or report["environment"]["device"] != "cuda":
        out["note"] = "goals are judged only in full mode on a CUDA device"
    elif best["mfu"] is None:
        out["note"] = f"unknown bf16 peak for {report['environment']['device_name']!r}: MFU not judged"
    else:
        out["met"] = best["speedup_vs_baseline"] >= SPEEDUP_GOAL and best["mfu"] >= MFU_GOAL
        out["note"] = "see training.rows[].profile for where the step time goes"
    return out


def check_schema(report: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first key that differs from the declared report layout."""
    top = {"schema", "mode", "seconds", *SECTION_KEYS}
    if set(report) != top:
        raise ValueError(f"report keys {sorted(set(report) ^ top)} differ from the schema")
    for name, keys in SECTION_KEYS.items():
        if set(report[name]) != keys:
            raise ValueError(f"{name}: keys {sorted(set(report[name]) ^ keys)} differ from the schema")
    nested = [
        ("cuda_tests", "tests", TEST_KEYS),
        ("training", "rows", TRAINING_ROW_KEYS),
        ("upscale", "rows", UPSCALE_ROW_KEYS),
    ]
    for section, field, keys in nested:
        for i, row in enumerate(report[section][field] or []):
            if set(row) != keys:
                raise ValueError(f"{section}.{field}[{i}]: keys {sorted(set(row) ^ keys)} differ from the schema")
            if field == "rows" and section == "training" and set(row["profile"]) != PROFILE_KEYS:
                raise ValueError(f"training.rows[{i}].profile: keys differ from the schema")


def _fmt(value: Any, spec: str, width: int) -> str:
    return (
        f"{value:{width}{spec}}"
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else f"{'-':>{width}}"
    )


def print_tables(report: Mapping[str, Any]) -> None:
    env = report["environment"]
    print(
        f"\n== gpu_check ({report['mode']}) on {env['device_name']} | torch {env['torch']} CUDA {env['cuda']} "
        f"| bf16 peak {env['bf16_peak_tflops'] or 'unknown'} TFLOP/s | {report['seconds']:.0f} s"
    )
    tests = report["cuda_tests"]
    print(
        f"cuda tests: {tests['status']}, passed {tests['passed']}, failed {tests['failed']}, "
        f"errors {tests['errors']}, skipped {tests['skipped']}"
    )
    for test in tests["tests"] or []:
        if test["outcome"] in ("failed", "error"):
            print(f"  {test['outcome']}: {test['name']}: {(test['message'] or '')[:200]}")
    train = report["training"]
    print(
        f"training ({train['status']}), size {train['size']}, {_fmt(train['model_gflop_per_step'], '.1f', 0)} "
        "GFLOP/step (model):"
    )
    print(
        f"  {'row':<36} {'step ms':>8} {'samples/s':>10} {'peak MB':>8} {'TFLOP/s':>8} {'MFU':>6} {'x base':>7} "
        f"{'busy':>6}"
    )
    for r in train["rows"] or []:
        busy = r["profile"]["busy_share"]
        print(
            f"  {r['name']:<36} {_fmt(r['step_ms'], '.2f', 8)} {_fmt(r['samples_per_s'], '.1f', 10)} "
            f"{_fmt(r['peak_memory_mb'], '.0f', 8)} {_fmt(r['tflops'], '.2f', 8)} {_fmt(r['mfu'], '.3f', 6)} "
            f"{_fmt(r['speedup_vs_baseline'], '.2f', 7)} {_fmt(busy, '.2f', 6)}"
            + (f"  error: {r['error'][:160]}" if r["error"] else "")
        )
    data = report["data_loading"]
    print(
        f"data loading ({data['status']}): {data['num_workers']} workers, wait share "
        f"{_fmt(data['data_wait_share'], '.3f', 0)}, loader {_fmt(data['loader_samples_per_s'], '.1f', 0)} samples/s, "
        f"with loader {_fmt(data['with_loader_samples_per_s'], '.1f', 0)}, compute-only "
        f"{_fmt(data['compute_samples_per_s'], '.1f', 0)}, GPU starved: {data['gpu_starved']}"
    )
    up = report["upscale"]
    print(f"upscale ({up['status']}) {up['lr_size']} -> {up['hr_size']}:")
    for r in up["rows"] or []:
        detail = (
            (
                f"{_fmt(r['ms'], '.2f', 9)} ms {_fmt(r['mp_per_s'], '.2f', 9)} MP/s  max|diff| "
                f"{_fmt(r['max_abs_diff_vs_eager_fp32'], '.2e', 9)}"
            )
            if r["status"] == "ok"
            else r["reason"]
        )
        print(f"  {r['name']:<22} {r['provider']:<22} {detail}")
    g = report["goals"]
    print(
        f"goals: speedup {_fmt(g['speedup'], '.2f', 0)} (>= {g['speedup_goal']}), MFU {_fmt(g['mfu'], '.3f', 0)} "
        f"(>= {g['mfu_goal']}), met: {g['met']} ({g['note']})"
    )


def _run_section(report: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> None:
    start = time.perf_counter()
    print(f"-- {name} ...", flush=True)
    try:
        report[name] = fn()
    except Exception as exc:
        report[name] = _section(name)
        report[name]["status"] = "error"
        report[name]["error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"
        print(report[name]["error"], file=sys.stderr, flush=True)
    report[name]["seconds"] = time.perf_counter() - start
    print(f"-- {name}: {report[name]['status']} in {report[name]['seconds']:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes, seconds per section; CPU unless --device cuda")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: CUDA for the full run (required), CPU for --tiny",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("gpu_check.json"), help="JSON report (written after each section)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA,
        help="folder with cocostuff-sample/ and set5/ (default ../shared/data or $SRSEG_TEST_DATA)",
    )
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    parser.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: full 8, tiny 1)")
    args = parser.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    want_cuda = args.device == "cuda" or (args.device == "auto" and not args.tiny)
    if want_cuda and not torch.cuda.is_available():
        parser.error("no CUDA device: the full run needs one (use --tiny for the CPU smoke run)")
    device = torch.device("cuda", 0) if want_cuda else torch.device("cpu")
    for sub in ("cocostuff-sample", "set5"):
        if not (args.data_dir / sub).is_dir():
            parser.error(f"--data-dir {args.data_dir}: no {sub}/ folder (copy ../shared/data or set SRSEG_TEST_DATA)")

    missing = missing_modules()
    if missing:
        parser.error(
            f"missing Python packages {missing}: install the project (pip install -e '.[test]'), or on an "
            "offline machine give wheels: GPU_CHECK_WHEELS=<folder of .whl> bash bench/gpu_check.sh"
        )

    from srseg.fileio import write_json_atomic

    plan = make_plan(args.tiny, args.num_workers)
    started = time.perf_counter()
    report: dict[str, Any] = {"schema": SCHEMA, "mode": plan.mode, "seconds": 0.0, "environment": environment(device)}
    for name in SECTIONS:
        report[name] = _section(name)
    report["goals"] = goals(report)
    with tempfile.TemporaryDirectory(prefix="srseg-gpu-check-") as tmp:
        workdir = Path(tmp)
        data_root = build_sample_root(args.data_dir / "cocostuff-sample", workdir / "data", per_split=64)
        runners: dict[str, Callable[[], dict[str, Any]]] = {
            "cuda_tests": lambda: cuda_tests(plan, args.data_dir, workdir),
            "training": lambda: training(plan, device, data_root, workdir),
            "data_loading": lambda: data_loading(plan, device, data_root, workdir, _compute_rate(report)),
            "upscale": lambda: upscale(plan, device, workdir),
        }
        for name in SECTIONS:
            if name in sections:
                _run_section(report, name, runners[name])
                _release(device)
            report["seconds"] = time.perf_counter() - started
            report["goals"] = goals(report)
            check_schema(report)
            write_json_atomic(args.out, report)
    print_tables(report)
    print(f"\nreport: {args.out}")
    failed = [n for n in sections if report[n]["status"] != "ok"]
    if failed:
        print(f"sections not ok: {failed}", file=sys.stderr)
    return 1 if failed else 0


def missing_modules() -> list[str]:
    import importlib.util

    return [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]


def _compute_rate(report: Mapping[str, Any]) -> float | None:
    """Compute-only samples/s of the engine row the data-loading section runs (bf16, not compiled)."""
    for row in report["training"].get("rows") or []:
        if row["name"] == "engine_bf16_channels_last":
            return row["samples_per_s"]
    return None


if __name__ == "__main__":
    raise SystemExit(main())
