"""``srseg export``: ship the SR path of a trained multitask generator, verified, with a model card.

What ships is the network without its segmentation head (Rad et al. use that head only to shape
the shared decoder during training). The export is only written if the SR-only network reproduces
the full network's SR output (fp32, max abs diff <= 1e-6) and every format reproduces the
PyTorch SR head on several input sizes, odd ones included:

    <output_dir>/sr_head.safetensors        weights (srseg.generator/1, num_classes=0) ...
    <output_dir>/sr_head.safetensors.json   ... and their constructor config
    <output_dir>/sr_head.torchscript.pt     torch.jit.trace of the SR head
    <output_dir>/sr_head.onnx               ONNX (input "lr", output "sr"; dynamic N, H, W)
    <output_dir>/MODEL_CARD.md              data version, parameters, metrics, use, limits, loading
    <output_dir>/export.json                the ExportReport below

Everything is written to a hidden staging folder inside ``output_dir`` and moved into place only
after every check passed, so a failed export leaves no artifacts (and an old export stays intact).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import shutil
import statistics
import string
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from srseg.errors import SrsegError
from srseg.fileio import atomic_open, sha256_file, write_json_atomic, write_text_atomic
from srseg.inference.tiling import receptive_field_radius
from srseg.models.generator import MultiTaskSRNet, build_sr_only
from srseg.models.io import load_generator, read_sidecar, save_generator
from srseg.models.registry import architecture_of

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
SR_HEAD_TOLERANCE = 1e-6  # SR-only net vs the full net: same weights, same ops
TORCHSCRIPT_TOLERANCE = 1e-5
ONNX_TOLERANCE = 1e-4  # ONNX Runtime picks its own conv kernels
PARITY_SHAPES: tuple[tuple[int, int, int], ...] = ((1, 17, 23), (3, 31, 8), (2, 32, 32), (1, 1, 1))
WEIGHTS_FILE = "sr_head.safetensors"
TORCHSCRIPT_FILE = "sr_head.torchscript.pt"
ONNX_FILE = "sr_head.onnx"
MODEL_CARD_TEMPLATE = "model_card.md"  # in srseg/templates/, shipped as package data
CARD_FILE = "MODEL_CARD.md"
REPORT_FILE = "export.json"
_METRIC_KEYS = frozenset({"value", "mean", "ci_low", "ci_high", "ci", "ci_level", "n"})


class ExportError(SrsegError, RuntimeError):
    """An export check failed (SR head differs from the full net, or a format differs from PyTorch)."""


@dataclass
class ParityCheck:
    """Max abs difference of one backend against the eager PyTorch SR head on one input shape."""

    backend: str
    shape: list[int]
    max_abs_diff: float
    tolerance: float


@dataclass
class ExportReport:
    """What was exported and how it was checked; written as ``export.json``."""

    output_dir: str
    source: str
    files: dict[str, str]
    sha256: dict[str, str]
    config: dict[str, Any]
    sr_config: dict[str, Any]
    scale: int
    receptive_field_radius: int
    opset: int
    parameters_full: int
    parameters_sr: int
    sr_vs_full_max_abs_diff: float
    parity: list[ParityCheck]
    latency_size: list[int]
    latency_runs: int
    latency_threads: int
    latency_ms_sr: float
    latency_ms_full: float | None
    data_version: str | None
    metrics: dict[str, dict[str, Any]] | None
    versions: dict[str, str]
    created_at: str
    model_name: str = "srseg-sr"
    architecture: str = "multitask_srresnet"
    training: dict[str, str] = dataclasses.field(default_factory=dict)
    lineage: dict[str, str] = dataclasses.field(default_factory=dict)  # MLflow runs that trained the weights
    science_report: str | None = None  # where the report of the comparison behind this model is

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportReport:
        values = dict(data)
        values["parity"] = [ParityCheck(**p) for p in values.get("parity", [])]
        return cls(**values)


# ------------------------------------------------------------------------------------- metrics


def normalize_metrics(metrics: Mapping[str, Any] | None) -> dict[str, dict[str, Any]] | None:
    """Metrics as ``{name: {"value", "ci_low", "ci_high", "ci_level", "n"}}``.

    Each entry may be a number or a mapping with ``value`` (or ``mean``), an optional interval as
    ``ci_low``/``ci_high`` or ``ci: [low, high]``, ``ci_level`` (default 0.95) and ``n``.
    """
    if metrics is None:
        return None
    out: dict[str, dict[str, Any]] = {}
    for name, entry in metrics.items():
        if isinstance(entry, (int, float)) and not isinstance(entry, bool):
            entry = {"value": entry}
        if not isinstance(entry, Mapping):
            raise ValueError(f"metric {name!r}: expected a number or a mapping, got {type(entry).__name__}")
        unknown = sorted(set(entry) - _METRIC_KEYS)
        if unknown:
            raise ValueError(f"metric {name!r}: unknown keys {unknown} (allowed: {sorted(_METRIC_KEYS)})")
        value = entry.get("value", entry.get("mean"))
        if value is None:
            raise ValueError(f"metric {name!r}: needs 'value' (or 'mean')")
        low, high = entry.get("ci_low"), entry.get("ci_high")
        if "ci" in entry:
            low, high = entry["ci"]
        if (low is None) != (high is None):
            raise ValueError(f"metric {name!r}: give both ends of the confidence interval")
        out[str(name)] = {
            "value": float(value),
            "ci_low": None if low is None else float(low),
            "ci_high": None if high is None else float(high),
            "ci_level": float(entry.get("ci_level", 0.95)),
            "n": None if entry.get("n") is None else int(entry["n"]),
        }
    return out


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.4e}"


def _metrics_table(metrics: dict[str, dict[str, Any]] | None) -> str:
    if not metrics:
        return "Not evaluated: no metrics were passed to the export.\n"
    lines = ["| metric | value | confidence interval | n |", "| --- | --- | --- | --- |"]
    for name, m in sorted(metrics.items()):
        ci = "-"
        if m["ci_low"] is not None:
            ci = f"[{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}] ({m['ci_level']:.0%})"
        lines.append(f"| `{name}` | {_fmt(m['value'])} | {ci} | {m['n'] if m['n'] is not None else '-'} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ helpers


TRAINING_KEYS = ("stage", "iteration", "selection_rule", "perceptual_loss")


def _resolve_model(weights: Path | str | MultiTaskSRNet) -> tuple[MultiTaskSRNet, str, dict[str, str]]:
    """A CPU fp32 eval-mode copy (the caller's possibly training, GPU model is untouched), its
    source, and how it was trained (from the weights' sidecar metadata, when it is a file)."""
    if isinstance(weights, MultiTaskSRNet):
        return copy.deepcopy(weights).to("cpu", torch.float32).eval(), "<in-memory MultiTaskSRNet>", {}
    if isinstance(weights, (str, os.PathLike)):
        model = load_generator(Path(weights)).float().eval()
        meta = read_sidecar(weights).get("metadata") or {}
        return model, str(weights), {k: str(meta[k]) for k in TRAINING_KEYS if k in meta}
    raise TypeError(f"weights must be a MultiTaskSRNet or a path to generator weights, got {type(weights).__name__}")


def _random_input(shape: tuple[int, ...], seed: int = 0) -> Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _max_diff(a: Tensor, b: Tensor) -> float:
    if a.shape != b.shape:
        return math.inf
    return float((a.float() - b.float()).abs().max())


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up: allocator, oneDNN primitive cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """TorchScript is deprecated upstream but still the format without a Python dependency; the
    brief asks for it, so its FutureWarnings are silenced here, locally."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*")
        yield


def trace_torchscript(sr_net: nn.Module, example: Tensor) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` the SR head; the net has no data-dependent control flow, so a trace is exact."""
    with _quiet_jit():
        return torch.jit.trace(sr_net, example, check_trace=False)


def save_torchscript(module: torch.jit.ScriptModule, path: Path) -> None:
    with _quiet_jit(), atomic_open(path, "wb") as handle:
        torch.jit.save(module, handle)


def load_torchscript(path: Path, map_location: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    with _quiet_jit():
        return torch.jit.load(str(path), map_location=map_location).eval()


def export_onnx(sr_net: nn.Module, example: Tensor, path: Path, opset: int, metadata: Mapping[str, str]) -> None:
    """ONNX via the torch.export-based exporter, dynamic batch/height/width, metadata attached."""
    import onnx

    dims = {
        0: torch.export.Dim("batch", min=1),
        2: torch.export.Dim("height", min=1),
        3: torch.export.Dim("width", min=1),
    }
    with tempfile.TemporaryDirectory(prefix=".onnx-", dir=path.parent) as tmp:
        raw = Path(tmp) / "model.onnx"
        torch.onnx.export(
            sr_net,
            (example,),
            str(raw),
            input_names=["lr"],
            output_names=["sr"],
            dynamic_shapes={"lr": dims},
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        proto = onnx.load(str(raw))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    with atomic_open(path, "wb") as handle:
        handle.write(proto.SerializeToString())


def _onnx_runner(path: Path) -> Callable[[Tensor], Tensor]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(x: Tensor) -> Tensor:
        return torch.from_numpy(session.run(["sr"], {"lr": x.numpy()})[0])

    return run


def _check_parity(
    backend: str, run: Callable[[Tensor], Tensor], reference: nn.Module, channels: int, tolerance: float
) -> list[ParityCheck]:
    checks = []
    for index, (n, h, w) in enumerate(PARITY_SHAPES):
        x = _random_input((n, channels, h, w), seed=100 + index)
        with torch.inference_mode():
            diff = _max_diff(run(x), reference(x))
        checks.append(ParityCheck(backend, [n, channels, h, w], diff, tolerance))
        if not diff <= tolerance:
            raise ExportError(
                f"{backend} output differs from PyTorch on shape {(n, channels, h, w)}: "
                f"max abs diff {diff:.3g} > {tolerance:g}"
            )
    worst = max(c.max_abs_diff for c in checks)
    logger.info("%s parity ok: max abs diff %.3g over %d shapes", backend, worst, len(checks))
    return checks


# ----------------------------------------------------------------------------------- the card


def render_model_card(report: ExportReport) -> str:
    """Markdown model card from an export report (what, data, numbers, use, limits, loading),
    filled into the template ``srseg/templates/model_card.md`` (``string.Template``: ``${name}``)."""
    template = string.Template(
        (resources.files("srseg") / "templates" / MODEL_CARD_TEMPLATE).read_text(encoding="utf-8")
    )
    return template.substitute(_model_card_values(report))


def _model_card_values(report: ExportReport) -> dict[str, Any]:
    """The template's values: numbers formatted, sections rendered."""
    lat_full = "n/a (no segmentation head)"
    if report.latency_ms_full is not None:
        lat_full = f"{report.latency_ms_full:.1f} ms"
    h, w = report.latency_size
    return {
        "model_name": report.model_name,
        "scale": report.scale,
        "created_at": report.created_at,
        "source": report.source,
        "sr_max_abs_diff": f"{report.sr_vs_full_max_abs_diff:.3g}",
        "architecture": _architecture_text(report),
        "training": _training_text(report.training),
        "data_version": report.data_version or "not recorded",
        "parameters_sr": f"{report.parameters_sr:,}",
        "parameters_full": f"{report.parameters_full:,}",
        "config_rows": "\n".join(f"| `{k}` | `{json.dumps(v)}` |" for k, v in sorted(report.config.items())),
        "receptive_field_radius": report.receptive_field_radius,
        "metrics": _metrics_table(report.metrics),
        "science_report": _science_report_text(report.science_report),
        "latency_threads": report.latency_threads,
        "lr_height": h,
        "lr_width": w,
        "latency_runs": report.latency_runs,
        "latency_sr": f"{report.latency_ms_sr:.1f}",
        "latency_full": lat_full,
        "in_channels": report.sr_config.get("in_channels", 3),
        "files": ", ".join(f"`{name}`" for name in report.files.values()),
        "weights_file": WEIGHTS_FILE,
        "torchscript_file": TORCHSCRIPT_FILE,
        "onnx_file": ONNX_FILE,
        "opset": report.opset,
    }


def _science_report_text(link: str | None) -> str:
    if not link:
        return "Not linked (exported outside the pipeline).\n"
    return (
        "The standard benchmarks (Set5, Set14, ...), multitask against SR-only over training seeds with CIs, "
        f"per-class gains, the user study and the training curves behind this model: {link}\n"
    )


def _architecture_text(report: ExportReport) -> str:
    skip = report.sr_config.get("global_residual", "none")
    text = f"Architecture `{report.architecture}`, global residual `{skip}`: "
    if skip == "bicubic":
        return text + (
            "the output is MATLAB-bicubic(LR) plus a learned residual, and the SR head started at zero, "
            "so training started at bicubic quality. This image-level skip is our choice beyond the paper, "
            "which publishes no such skip; the exported formats include the bicubic path."
        )
    return text + "the network outputs the image directly (the SRGAN-family layout closest to the paper)."


def _training_text(training: Mapping[str, str]) -> str:
    if not training:
        return "Not recorded (the weights were exported from memory or predate this record).\n"
    rows = {
        "stage": "training stage of these weights",
        "iteration": "iteration",
        "selection_rule": "how the stage chose these weights (on the selection images, never the reported ones)",
        "perceptual_loss": "perceptual loss of the GAN stage",
    }
    lines = ["| | |", "| --- | --- |"] + [f"| {rows[k]} | {v} |" for k, v in training.items() if k in rows]
    if "random" in training.get("perceptual_loss", ""):
        lines += [
            "",
            "**Warning: trained with a random-weight VGG19 perceptual loss** (asked for with "
            "`train.loss.vgg_weights: random`); that term measured nothing meaningful.",
        ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- export


def export_sr_head(
    weights: Path | str | MultiTaskSRNet,
    output_dir: Path,
    opset: int = DEFAULT_OPSET,
    example_size: tuple[int, int] = (32, 32),
    *,
    data_version: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    model_name: str = "srseg-sr",
    latency_size: tuple[int, int] = (128, 128),
    latency_runs: int = 5,
    lineage: Mapping[str, str] | None = None,
    science_report: str | None = None,
) -> ExportReport:
    """Export the SR head of ``weights`` (a generator or a weights file) to ``output_dir``.

    ``data_version`` is the training data manifest checksum; ``metrics`` maps metric names to a
    value or ``{"value", "ci_low", "ci_high", "n"}`` (see :func:`normalize_metrics`); ``lineage``
    (the training run ids, see :func:`srseg.lineage.training_runs`) is recorded in ``export.json``
    for the registry's lineage tags; ``science_report`` says where the report of the comparison is
    (the card links it). Raises
    :class:`ExportError` if the SR head or any exported format disagrees with PyTorch.
    """
    if len(example_size) != 2 or min(example_size) < 1:
        raise ValueError(f"example_size must be (h, w) with h, w >= 1, got {example_size!r}")
    if latency_runs < 1 or len(latency_size) != 2 or min(latency_size) < 1:
        raise ValueError(f"latency_size/latency_runs must be positive, got {latency_size!r}/{latency_runs!r}")
    norm_metrics = normalize_metrics(metrics)
    output_dir = Path(output_dir)
    model, source, training = _resolve_model(weights)
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=output_dir))
    try:
        report = _export_into(
            model,
            source,
            staging,
            opset,
            example_size,
            data_version,
            norm_metrics,
            model_name,
            latency_size,
            latency_runs,
            training,
            science_report,
        )
        for name in report.files.values():
            os.replace(staging / name, output_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.output_dir = str(output_dir)
    report.lineage = {str(k): str(v) for k, v in (lineage or {}).items()}
    write_json_atomic(output_dir / REPORT_FILE, report.to_dict())
    logger.info("exported SR head (%d params, x%d) to %s", report.parameters_sr, report.scale, output_dir)
    return report


def _export_into(
    model: MultiTaskSRNet,
    source: str,
    output_dir: Path,
    opset: int,
    example_size: tuple[int, int],
    data_version: str | None,
    norm_metrics: dict[str, dict[str, Any]] | None,
    model_name: str,
    latency_size: tuple[int, int],
    latency_runs: int,
    training: dict[str, str],
    science_report: str | None = None,
) -> ExportReport:
    """All checks and files of :func:`export_sr_head`, written into ``output_dir`` (the staging folder)."""
    sr_net = build_sr_only(model).eval()
    channels = model.config["in_channels"]
    diff = _check_sr_head(model, sr_net, channels, example_size)
    parity = _write_formats(sr_net, output_dir, source, opset, example_size, data_version, training)
    ms_sr, ms_full = _latency(model, sr_net, channels, latency_size, latency_runs)
    files = {
        "weights": WEIGHTS_FILE,
        "weights_config": WEIGHTS_FILE + ".json",
        "torchscript": TORCHSCRIPT_FILE,
        "onnx": ONNX_FILE,
        "model_card": CARD_FILE,
    }
    report = ExportReport(
        output_dir=str(output_dir),
        source=source,
        files=files,
        sha256={},
        config=model.config,
        sr_config=sr_net.config,
        scale=sr_net.scale,
        receptive_field_radius=receptive_field_radius(sr_net.config, architecture_of(sr_net)),
        opset=opset,
        parameters_full=model.num_parameters(),
        parameters_sr=sr_net.num_parameters(),
        sr_vs_full_max_abs_diff=diff,
        parity=parity,
        latency_size=list(latency_size),
        latency_runs=latency_runs,
        latency_threads=torch.get_num_threads(),
        latency_ms_sr=ms_sr,
        latency_ms_full=ms_full,
        data_version=data_version,
        metrics=norm_metrics,
        versions=_versions(),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        model_name=model_name,
        architecture=architecture_of(sr_net),
        training=training,
        science_report=science_report,
    )
    write_text_atomic(output_dir / CARD_FILE, render_model_card(report))
    report.sha256 = {role: sha256_file(output_dir / name) for role, name in files.items()}
    return report


def _check_sr_head(
    model: MultiTaskSRNet, sr_net: MultiTaskSRNet, channels: int, example_size: tuple[int, int]
) -> float:
    """The SR-only network must equal the full network's SR output; returns the max abs difference."""
    with torch.inference_mode():
        x = _random_input((2, channels, *example_size), seed=1)
        reference = sr_net(x)
        diff = _max_diff(reference, model(x))
        if model.has_seg_head:
            diff = max(diff, _max_diff(reference, model.forward_multitask(x)[0]))
    if not diff <= SR_HEAD_TOLERANCE:
        raise ExportError(
            "SR-only network differs from the full network's SR output: "
            f"max abs diff {diff:.3g} > {SR_HEAD_TOLERANCE:g}"
        )
    logger.info("SR head equals the full network's SR output (max abs diff %.3g)", diff)
    return diff


def _write_formats(
    sr_net: MultiTaskSRNet,
    output_dir: Path,
    source: str,
    opset: int,
    example_size: tuple[int, int],
    data_version: str | None,
    training: dict[str, str],
) -> list[ParityCheck]:
    """Weights, TorchScript, ONNX, each checked against the eager SR head; returns the parity checks."""
    channels = sr_net.config["in_channels"]
    example = _random_input((1, channels, *example_size))
    weights_path = output_dir / WEIGHTS_FILE
    save_generator(sr_net, weights_path, metadata={"source": source, "data_version": data_version or "", **training})
    traced = trace_torchscript(sr_net, example)
    ts_path = output_dir / TORCHSCRIPT_FILE
    save_torchscript(traced, ts_path)
    loaded_ts = load_torchscript(ts_path)
    parity = _check_parity("torchscript", loaded_ts, sr_net, channels, TORCHSCRIPT_TOLERANCE)
    onnx_path = output_dir / ONNX_FILE
    export_onnx(
        sr_net,
        example,
        onnx_path,
        opset,
        {
            "srseg.config": json.dumps(sr_net.config),
            "srseg.scale": str(sr_net.scale),
            "srseg.data_version": data_version or "",
        },
    )
    parity += _check_parity("onnxruntime", _onnx_runner(onnx_path), sr_net, channels, ONNX_TOLERANCE)
    return parity


def _latency(
    model: MultiTaskSRNet, sr_net: MultiTaskSRNet, channels: int, latency_size: tuple[int, int], latency_runs: int
) -> tuple[float, float | None]:
    """Median CPU latency (ms) of the shipped head and of the training network (None: no segmentation head)."""
    lat_x = _random_input((1, channels, *latency_size), seed=2)
    with torch.inference_mode():
        ms_sr = _median_ms(lambda: sr_net(lat_x), latency_runs)
        ms_full = _median_ms(lambda: model.forward_multitask(lat_x), latency_runs) if model.has_seg_head else None
    full_text = "n/a" if ms_full is None else f"{ms_full:.1f} ms"
    logger.info("CPU latency at %s LR px: SR head %.1f ms, training network %s", latency_size, ms_sr, full_text)
    return ms_sr, ms_full
