"""Training-step throughput: samples/s of the PSNR and GAN steps, the share of wall time spent
waiting for the data loader, and (CUDA) achieved TFLOP/s against the device's dense bf16 peak.

Runs the real ``Trainer.train_step`` (LR synthesised on the device, bf16 autocast and channels-last
on CUDA) fed by the real ``PairedPatchDataset`` over real COCO-Stuff images. Without
``--data-root`` it builds a small prepared root from ``../shared/data/cocostuff-sample`` in a
temp folder. FLOPs are counted once per configuration with ``FlopCounterMode`` (forward +
backward of every matmul/conv, D and VGG included).

    .venv/bin/python bench/train_step.py                      # CPU, and CUDA when present
    .venv/bin/python bench/train_step.py --device cuda --sizes paper --num-workers 8
    .venv/bin/python bench/train_step.py --tiny     # seconds-long smoke run (the test suite's)
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLE = REPO.parent / "shared" / "data" / "cocostuff-sample"

SIZES: dict[str, dict[str, int]] = {
    "tiny": {"num_features": 8, "num_blocks": 1, "batch_size": 2, "patch_size": 32, "d_features": 8},
    "demo": {"num_features": 32, "num_blocks": 4, "batch_size": 8, "patch_size": 64},
    "paper": {"num_features": 64, "num_blocks": 16, "batch_size": 16, "patch_size": 96},
}
# Dense bf16 tensor-core peaks in TFLOP/s (vendor datasheets, no sparsity); matched by substring,
# most specific first.
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("GH200", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 4090", 165.2),
)


def bf16_peak(device_name: str) -> float | None:
    for key, peak in BF16_PEAK_TFLOPS:
        if key in device_name:
            return peak
    return None


def build_sample_root(sample: Path, dest: Path, per_split: int = 8) -> Path:
    """Copy real images + labels into the manifest layout (see ``srseg/data/manifest.py``)."""
    from PIL import Image

    from srseg.data.manifest import HR_FORMAT, Manifest, Sample
    from srseg.fileio import sha256_file

    splits: dict[str, list[Sample]] = {}
    for split in ("train2017", "val2017"):
        images = sorted((sample / "images" / split).glob("*.jpg"))[:per_split]
        if not images:
            raise FileNotFoundError(f"no images under {sample / 'images' / split}; pass --data-root")
        (dest / "images" / split).mkdir(parents=True, exist_ok=True)
        (dest / "labels" / split).mkdir(parents=True, exist_ok=True)
        entries = []
        for src in images:
            image_rel, label_rel = f"images/{split}/{src.name}", f"labels/{split}/{src.stem}.png"
            shutil.copyfile(src, dest / image_rel)
            shutil.copyfile(sample / "stuffthingmaps" / split / f"{src.stem}.png", dest / label_rel)
            with Image.open(dest / image_rel) as img:
                width, height = img.size
            entries.append(
                Sample(
                    id=int(src.stem),
                    image=image_rel,
                    width=width,
                    height=height,
                    image_sha256=sha256_file(dest / image_rel),
                    label=label_rel,
                    label_sha256=sha256_file(dest / label_rel),
                )
            )
        splits[split] = entries
    Manifest(kind="hr", format=HR_FORMAT, splits=splits).save(dest)
    return dest


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_one(
    data_root: Path,
    out_dir: Path,
    device: torch.device,
    size: str,
    stage: str,
    steps: int,
    warmup: int,
    num_workers: int,
    compile_model: bool,
    vgg_weights: str,
) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    from srseg.config import TrainConfig
    from srseg.data.classmap import get_class_map
    from srseg.data.dataset import PairedPatchDataset
    from srseg.train.distributed import DistInfo
    from srseg.train.engine import Trainer

    dims = SIZES[size]
    cfg = TrainConfig.model_validate(
        {
            "generator": {"num_features": dims["num_features"], "num_blocks": dims["num_blocks"]},
            "discriminator": {"num_features": dims.get("d_features", 64)},
            "loss": {"vgg_weights": vgg_weights},
            "batch_size": dims["batch_size"],
            "patch_size": dims["patch_size"],
            "num_workers": num_workers,
            "device": device.type,
            "compile": compile_model,
            "psnr_stage": {"iterations": 10**6, "lr": 2e-4, "val_every": 10**6, "checkpoint_every": 10**6},
            "gan_stage": {"iterations": 10**6, "lr": 1e-4, "val_every": 10**6, "checkpoint_every": 10**6},
        }
    )
    cmap = get_class_map(cfg.class_map)
    train_set = PairedPatchDataset(data_root, "train2017", cfg.scale, cfg.patch_size, cmap, augment=True, seed=0)
    trainer = Trainer(
        cfg,
        stage,
        out_dir / f"{device.type}_{size}_{stage}",
        train_set,
        None,
        num_classes=cmap.num_classes,
        dist_info=DistInfo(device=device),
    )
    loader = iter(trainer.make_loader())
    for _ in range(warmup):
        trainer.train_step(next(loader))
    _sync(device)
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(next(loader))
    flops = counter.get_total_flops()
    _sync(device)
    wait = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(loader)
        wait += time.perf_counter() - t0
        trainer.train_step(batch)
    _sync(device)
    elapsed = time.perf_counter() - start
    del loader
    result = {
        "device": device.type,
        "size": size,
        "stage": stage,
        "batch": cfg.batch_size,
        "patch": cfg.patch_size,
        "steps": steps,
        "step_ms": 1000 * elapsed / steps,
        "samples_per_s": cfg.batch_size * steps / elapsed,
        "data_wait_share": wait / elapsed,
        "gflop_per_step": flops / 1e9,
        "tflops": flops * steps / elapsed / 1e12,
        "peak_share": None,
    }
    if device.type == "cuda":
        peak = bf16_peak(torch.cuda.get_device_name(device))
        if peak is not None:
            result["peak_share"] = result["tflops"] / peak
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CPU, plus CUDA when present"
    )
    parser.add_argument("--sizes", default="demo,paper")
    parser.add_argument("--stages", default="psnr,gan")
    parser.add_argument(
        "--data-root", type=Path, default=None, help="prepared HR root (default: temp copy of the sample)"
    )
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: CPU 3, CUDA 50)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: CPU 1, CUDA 10)")
    parser.add_argument("--compile", action="store_true", help="torch.compile G and D")
    parser.add_argument(
        "--vgg-weights",
        default="random",
        help="perceptual VGG19 weights: random (timing only) | none (no perceptual loss) | auto | path",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: torch's)")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="smoke run: CPU, tiny net, one step per stage, no workers (figures meaningless)",
    )
    args = parser.parse_args(argv)
    if args.tiny:
        args.device, args.sizes, args.steps, args.warmup, args.num_workers = "cpu", "tiny", 1, 0, 0
    logging.basicConfig(level=logging.ERROR)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            parser.error("--device cuda but no CUDA device is available")
        devices.append(torch.device("cuda", 0))
    sizes = [s for s in args.sizes.split(",") if s]
    stages = [s for s in args.stages.split(",") if s]
    for name in sizes:
        if name not in SIZES:
            parser.error(f"unknown size {name!r}; choose from {sorted(SIZES)}")
    for name in stages:
        if name not in ("psnr", "gan"):
            parser.error(f"unknown stage {name!r}; choose psnr and/or gan")

    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, DataLoader workers {args.num_workers}")
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        print(f"CUDA device: {name}, dense bf16 peak {bf16_peak(name) or 'unknown'} TFLOP/s")
    with tempfile.TemporaryDirectory(prefix="srseg_bench_") as tmp:
        data_root = args.data_root or build_sample_root(args.sample, Path(tmp) / "data")
        header = (
            f"{'device':<6} {'size':<6} {'stage':<5} {'batch':>5} {'patch':>5} {'step ms':>9} "
            f"{'samples/s':>10} {'data wait':>9} {'GFLOP/step':>11} {'TFLOP/s':>8} {'% peak':>7}"
        )
        print(header)
        for device in devices:
            steps = args.steps or (50 if device.type == "cuda" else 3)
            warmup = args.warmup if args.warmup is not None else (10 if device.type == "cuda" else 1)
            for size in sizes:
                for stage in stages:
                    r = bench_one(
                        data_root,
                        Path(tmp) / "out",
                        device,
                        size,
                        stage,
                        steps,
                        warmup,
                        args.num_workers,
                        args.compile,
                        args.vgg_weights,
                    )
                    peak = f"{100 * r['peak_share']:6.1f}%" if r["peak_share"] is not None else f"{'-':>7}"
                    print(
                        f"{r['device']:<6} {r['size']:<6} {r['stage']:<5} {r['batch']:>5} {r['patch']:>5} "
                        f"{r['step_ms']:>9.1f} {r['samples_per_s']:>10.2f} {100 * r['data_wait_share']:>8.1f}% "
                        f"{r['gflop_per_step']:>11.1f} {r['tflops']:>8.3f} {peak}",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
