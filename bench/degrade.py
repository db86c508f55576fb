"""Throughput of MATLAB-exact bicubic x4 reduction (srseg) vs Pillow's BICUBIC reduce.

Run: ``python bench/degrade.py [--images 32] [--size 512] [--threads 1,2] [--repeats 7]``;
``--tiny`` (2 images of 64x64, one repeat, one thread) only checks that the script still works.

Both sides get the same seeded RGB uint8 images. Timings are the best of ``repeats`` runs, so a
busy shared machine inflates them less. Pillow is single-threaded C; srseg is timed for each
torch thread count given. Pillow is not MATLAB-exact (fixed-point weights, clamped borders), so
the difference between the two is printed for information only; exactness is shown against the
MATLAB-made Set5 LR images when ../shared/data/set5 is present.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from srseg.degrade.bicubic import bicubic_downscale, modcrop
from srseg.imageio import load_rgb

SET5 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "set5"


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: plan cache, allocator, BLAS threads
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _images(count: int, size: int, seed: int) -> np.ndarray:
    """Box-blurred noise plus fine detail: image-like, and the same for every run with a seed."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (count, size + 8, size + 8, 3)).astype(np.float32)
    cumsum = noise.cumsum(1).cumsum(2)
    box = cumsum[:, 8:, 8:] - cumsum[:, :-8, 8:] - cumsum[:, 8:, :-8] + cumsum[:, :-8, :-8]
    smooth = box[:, :size, :size] / 64.0
    detail = rng.integers(-20, 21, smooth.shape)
    return np.clip(smooth + detail, 0, 255).astype(np.uint8)


def _set5_exactness(scale: int) -> str:
    lr_dir = SET5 / "LR_bicubic" / f"X{scale}"
    if not lr_dir.is_dir():
        return f"(no {lr_dir}; exactness check skipped)"
    differing = total = 0
    for hr_path in sorted((SET5 / "HR").glob("*.png")):
        hr = np.ascontiguousarray(modcrop(load_rgb(hr_path), scale))
        ours = bicubic_downscale(torch.from_numpy(hr).permute(2, 0, 1).unsqueeze(0), scale)[0].permute(1, 2, 0).numpy()
        shipped = load_rgb(lr_dir / f"{hr_path.stem}x{scale}.png")
        differing += int((ours != shipped).sum())
        total += shipped.size
    return f"{differing} of {total} values differ from the MATLAB-made Set5 LR x{scale} files"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts to time")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tiny", action="store_true", help="seconds-long smoke run (the test suite's); figures meaningless"
    )
    args = parser.parse_args()
    if args.tiny:
        args.images, args.size, args.threads, args.repeats = 2, 64, "1", 1
    thread_counts = [int(t) for t in args.threads.split(",")]

    arrays = _images(args.images, args.size, args.seed)
    pil_images = [Image.fromarray(a) for a in arrays]
    lr_size = (args.size // args.scale, args.size // args.scale)
    batch = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W) uint8
    singles = [t.unsqueeze(0) for t in batch]
    n = args.images

    def run_pillow() -> list[Image.Image]:
        return [im.resize(lr_size, Image.Resampling.BICUBIC) for im in pil_images]

    def run_batched() -> torch.Tensor:
        return bicubic_downscale(batch, args.scale)

    def run_single() -> list[torch.Tensor]:
        return [bicubic_downscale(t, args.scale) for t in singles]

    print(f"{n} images {args.size}x{args.size} RGB uint8, x{args.scale} reduce, best of {args.repeats}")
    t_pil = _best_seconds(run_pillow, args.repeats)
    print(f"  pillow BICUBIC (1 thread)      {n / t_pil:8.1f} img/s  ({t_pil / n * 1e3:.2f} ms/img)")
    previous = torch.get_num_threads()
    try:
        for threads in thread_counts:
            torch.set_num_threads(threads)
            t_batch = _best_seconds(run_batched, args.repeats)
            t_single = _best_seconds(run_single, args.repeats)
            print(
                f"  srseg batched  (threads={threads})   {n / t_batch:8.1f} img/s  "
                f"({t_batch / n * 1e3:.2f} ms/img, {t_batch / t_pil:.2f}x pillow's time)"
            )
            print(
                f"  srseg per-image (threads={threads})  {n / t_single:8.1f} img/s  "
                f"({t_single / n * 1e3:.2f} ms/img, {t_single / t_pil:.2f}x pillow's time)"
            )
    finally:
        torch.set_num_threads(previous)

    ours = run_batched().permute(0, 2, 3, 1).numpy().astype(np.int16)
    pil = np.stack([np.asarray(im) for im in run_pillow()]).astype(np.int16)
    diff = np.abs(ours - pil)
    same = all(torch.equal(a, b) for a, b in zip(run_single(), run_batched().split(1)))
    print(
        f"  srseg vs pillow: max |diff| {int(diff.max())}, mean |diff| {diff.mean():.4f}, "
        f"{(diff > 0).mean() * 100:.1f}% of values differ (information only)"
    )
    print(f"  per-image == batched: {same}")
    print(f"  exactness: {_set5_exactness(args.scale)}")


if __name__ == "__main__":
    main()
