"""CPU throughput of the exported SR head per backend, and peak memory of tiled ``upscale``.

Run: ``python bench/upscale.py [--size 128] [--runs 3] [--threads N] [--configs demo paper]``;
``--tiny`` (an 8-feature net, 16 px LR, a 128x96 LR image for the memory runs) only checks that the
script still works.

1. Throughput, in output megapixels per second, of the SR head in PyTorch eager, TorchScript
   (traced) and ONNX Runtime (CPU provider, same thread count), against the full training network
   (``forward_multitask``: shared decoder + segmentation head, 171 classes), for the demo
   (32 features, 4 blocks) and paper (64 features, 16 blocks) sizes. Median and best of ``runs``
   are both printed (after two warm-up calls). Weights are random (seeded): speed does not depend
   on their values.
2. Peak memory of ``srseg.inference.upscale.upscale`` on a 1000x750 LR image (4000x3000 output),
   tiled, measured as the peak RSS of a fresh child process (``VmHWM``, reset after imports and
   model loading, because ``getrusage().ru_maxrss`` carries the parent's peak across ``exec``),
   minus the child's RSS at that point. Peak memory grows with ``batch_size * (tile + 2 *
   overlap)**2``, so the tiled run is repeated per ``--batch-sizes``. The untiled figure is an
   estimate: the same child runs untiled on a 250x188 LR image and the increment is scaled by the
   pixel ratio (``--measure-untiled`` runs the full-size untiled image as well). An analytic lower
   bound (two live float32 HR feature maps of ``num_features`` channels) is printed next to it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from srseg.export import export_onnx, trace_torchscript
from srseg.models.generator import MultiTaskSRNet, build_sr_only
from srseg.models.io import save_generator

CONFIGS = {
    "tiny": {"num_features": 8, "num_blocks": 1},
    "demo": {"num_features": 32, "num_blocks": 4},
    "paper": {"num_features": 64, "num_blocks": 16},
}
NUM_CLASSES = 171
LARGE_LR = (750, 1000)  # (h, w): x4 gives a 3000x4000 (12 MP) output
SMALL_LR = (188, 250)
TINY_LR = ((96, 128), (24, 32))  # --tiny: (large, small)


def _seconds(fn: Callable[[], object], runs: int, warmup: int = 2) -> tuple[float, float]:
    """(median, best) wall time of ``fn``; two warm-up calls let TorchScript's profiling executor
    specialise the graph. The best is printed too because shared machines inflate the median."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def _model(name: str) -> MultiTaskSRNet:
    torch.manual_seed(0)
    return MultiTaskSRNet(num_classes=NUM_CLASSES, **CONFIGS[name]).eval()


def throughput(name: str, size: int, runs: int, threads: int, workdir: Path) -> dict[str, tuple[float, float]]:
    """Output MP/s (from the median time, from the best time) per backend for one generator size."""
    import onnxruntime as ort

    model = _model(name)
    sr = build_sr_only(model).eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    out_mp = (size * model.scale) ** 2 / 1e6
    traced = trace_torchscript(sr, x)
    onnx_path = workdir / f"{name}.onnx"
    export_onnx(sr, x, onnx_path, opset=18, metadata={})
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    x_np = x.numpy()
    backends: dict[str, Callable[[], object]] = {
        "sr head, eager": lambda: sr(x),
        "sr head, torchscript": lambda: traced(x),
        "sr head, onnxruntime": lambda: session.run(["sr"], {"lr": x_np}),
        "training net (forward_multitask)": lambda: model.forward_multitask(x),
    }
    result = {}
    with torch.inference_mode():
        for backend, fn in backends.items():
            median, best = _seconds(fn, runs)
            result[backend] = (out_mp / median, out_mp / best)
    return result


def _smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Blurred noise plus detail, so the PNG is a plausible photo-like input."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height + 8, width + 8, 3)).astype(np.float32)
    csum = noise.cumsum(0).cumsum(1)
    box = (csum[8:, 8:] - csum[:-8, 8:] - csum[8:, :-8] + csum[:-8, :-8])[:height, :width] / 64.0
    return np.clip(box + rng.integers(-20, 21, box.shape), 0, 255).astype(np.uint8)


def _proc_status_mb(key: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process from /proc/self/status, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    raise KeyError(key)


def _reset_peak_rss() -> bool:
    """Reset the peak-RSS mark to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(spec: dict) -> None:
    """Runs in a fresh process: load the model, reset the peak-RSS mark, upscale, read the peak.

    ``getrusage().ru_maxrss`` survives ``exec`` on Linux (the child would start with the parent's
    peak), so the per-process ``VmHWM`` is used, reset after loading; ``ru_maxrss`` is reported too.
    """
    from srseg.inference.upscale import load_sr_model, upscale

    torch.set_num_threads(spec["threads"])
    load_sr_model(spec["weights"], device="cpu")  # imports, weights, oneDNN init: the baseline
    warm = Path(spec["out"]) / "warm"
    upscale([Path(spec["warmup"])], warm, spec["weights"], tile=spec["tile"], device="cpu", progress=False)
    base = _proc_status_mb("VmRSS") if _reset_peak_rss() else _proc_status_mb("VmHWM")
    start = time.perf_counter()
    upscale(
        [Path(spec["input"])],
        Path(spec["out"]),
        spec["weights"],
        tile=spec["tile"],
        tile_overlap=spec["overlap"],
        batch_size=spec["batch_size"],
        device="cpu",
        progress=False,
    )
    seconds = time.perf_counter() - start
    peak = _proc_status_mb("VmHWM")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    print(json.dumps({"baseline_mb": base, "peak_mb": peak, "ru_maxrss_mb": maxrss, "seconds": seconds}))


def _run_child(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mb(run: dict) -> str:
    return f"peak RSS {run['peak_mb']:6.0f} MB, +{run['peak_mb'] - run['baseline_mb']:5.0f} MB over the loaded model"


def memory(
    name: str,
    tile: int,
    overlap: int,
    batch_sizes: list[int],
    threads: int,
    workdir: Path,
    measure_untiled: bool,
    large_lr: tuple[int, int] = LARGE_LR,
    small_lr: tuple[int, int] = SMALL_LR,
) -> None:
    """Peak RSS of tiled upscale (per batch size) vs the untiled estimate, on a 12 MP output."""
    from PIL import Image

    model = build_sr_only(_model(name))
    weights = str(save_generator(model, workdir / f"{name}.safetensors"))
    paths = {}
    for label, (h, w) in {"large": large_lr, "small": small_lr, "warmup": (40, 40)}.items():
        paths[label] = workdir / f"{label}.png"
        Image.fromarray(_smooth_image(h, w)).save(paths[label])

    def run(label: str, use_tile: int | None, batch_size: int = 1) -> dict:
        out = workdir / f"out-{label}-{use_tile}-{batch_size}"
        spec = {
            "weights": weights,
            "warmup": str(paths["warmup"]),
            "threads": threads,
            "overlap": overlap,
            "batch_size": batch_size,
            "input": str(paths[label]),
            "tile": use_tile,
            "out": str(out),
        }
        return _run_child(spec)

    out_mp = large_lr[0] * large_lr[1] * 16 / 1e6
    features = model.config["num_features"]
    print(
        f"\npeak memory of upscale, {name} SR head ({features} features), "
        f"{large_lr[1]}x{large_lr[0]} LR -> {4 * large_lr[1]}x{4 * large_lr[0]} output, {threads} threads"
    )
    first = None
    for batch_size in batch_sizes:
        tiled = run("large", tile, batch_size)
        first = first or tiled
        window_mp = batch_size * ((tile + 2 * overlap) * 4) ** 2 / 1e6
        print(
            f"  tiled (tile {tile}, overlap {overlap}, batch {batch_size:2d}): {_mb(tiled)} "
            f"({window_mp:.1f} MP of HR windows per batch; {tiled['seconds']:.1f} s, "
            f"{out_mp / tiled['seconds']:.2f} MP/s)"
        )
    small = run("small", None)
    ratio = (large_lr[0] * large_lr[1]) / (small_lr[0] * small_lr[1])
    estimate = (small["peak_mb"] - small["baseline_mb"]) * ratio
    analytic = 2 * features * out_mp * 1e6 * 4 / 2**20
    print(
        f"  untiled, estimated: +{estimate:5.0f} MB (+{small['peak_mb'] - small['baseline_mb']:.0f} MB measured "
        f"at {small_lr[1]}x{small_lr[0]} LR, x{ratio:.1f} pixels; lower bound, two fp32 HR feature maps: "
        f"+{analytic:.0f} MB)"
    )
    if measure_untiled:
        full = run("large", None)
        print(f"  untiled, measured:  {_mb(full)} ({full['seconds']:.1f} s)")
    if first is not None:
        print(f"  (getrusage ru_maxrss of the first tiled child: {first['ru_maxrss_mb']:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="LR side for the throughput runs")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--memory-config", default="demo", choices=list(CONFIGS))
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 1], help="tiles per forward, one run each")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--measure-untiled", action="store_true", help="also run the 12 MP output untiled (GBs of RAM)")
    parser.add_argument(
        "--tiny", action="store_true", help="seconds-long smoke run (the test suite's); figures meaningless"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    lrs = (LARGE_LR, SMALL_LR)
    if args.tiny:
        args.size, args.runs, args.configs, args.memory_config = 16, 1, ["tiny"], "tiny"
        args.tile, args.overlap, args.batch_sizes, args.measure_untiled = 32, 4, [1], False
        lrs = TINY_LR
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="srseg-bench-") as tmp:
        workdir = Path(tmp)
        if not args.skip_throughput:
            print(
                f"CPU throughput, output MP/s (LR {args.size}x{args.size} -> {4 * args.size}x{4 * args.size}, "
                f"batch 1, median of {args.runs}, {args.threads} threads, torch {torch.__version__})"
            )
        for name in [] if args.skip_throughput else args.configs:
            cfg = CONFIGS[name]
            blocks = f"{cfg['num_features']} features, {cfg['num_blocks']} blocks"
            print(f"\n{name}: {blocks}, seg head {NUM_CLASSES} classes")
            for backend, (median, best) in throughput(name, args.size, args.runs, args.threads, workdir).items():
                print(f"  {backend:<34} {median:8.3f} MP/s median  {best:8.3f} MP/s best")
        if not args.skip_memory:
            memory(
                args.memory_config,
                args.tile,
                args.overlap,
                args.batch_sizes,
                args.threads,
                workdir,
                args.measure_untiled,
                *lrs,
            )


if __name__ == "__main__":
    main()
