"""Peak memory of ``srseg upscale`` on very large images: bounded by the tile, not the image.

Run: ``python bench/upscale_memory.py [--sizes 6000 12000] [--model bicubic] [--tile 256]
[--batch-size 4] [--limit-gb 10]``.

For each size S an S x S RGB PNG (synthetic but valid: smooth gradients with texture, written
band by band so the bench itself stays small) is upscaled x4 by the real CLI in a fresh child
process. Printed per run: wall time, peak RSS of the whole child (``VmHWM``: imports, model,
decoded input, bands; also ``/usr/bin/time -v``'s maximum RSS when that tool exists), the output
size, or the one-line error the CLI gave. ``--limit-gb`` runs the child under an address-space
limit (``ulimit -v``), e.g. 10 to replay "a 12000x12000 PNG under a 10 GB memory limit".
``--model demo`` uses a randomly initialised demo-size SR head (32 features, 4 blocks) instead of
bicubic: far slower on CPU (~1 output MP/s), meant for a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def write_test_image(path: Path, side: int, band: int = 512) -> None:
    """An S x S RGB PNG of smooth gradients plus a fine texture, written band by band."""
    from srseg.inference.png_stream import PNGStreamWriter

    x = np.arange(side, dtype=np.float32)[None, :]
    with open(path, "wb") as handle:
        writer = PNGStreamWriter(handle, side, side, 3, compress_level=1)
        for top in range(0, side, band):
            y = np.arange(top, min(top + band, side), dtype=np.float32)[:, None]
            red = 127 + 100 * np.sin(x / 300.0) * np.cos(y / 410.0)
            green = 127 + 100 * np.cos((x + y) / 530.0)
            blue = 127 + 60 * np.sin(x / 7.0) * np.sin(y / 5.0)  # detail at the pixel scale
            writer.write_rows(np.clip(np.stack([red, green, blue], axis=2), 0, 255).astype(np.uint8))
        writer.close()


def child(spec: dict) -> None:
    """In a fresh process: run the CLI, then report this process's peak RSS."""
    if spec.get("limit_bytes"):
        resource.setrlimit(resource.RLIMIT_AS, (spec["limit_bytes"], spec["limit_bytes"]))
    from srseg.cli import main

    start = time.perf_counter()
    code = main(spec["argv"])
    seconds = time.perf_counter() - start
    peak = next(
        int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:")
    )
    print(json.dumps({"code": code, "seconds": seconds, "vmhwm_mb": peak / 1024.0}))


def run(argv: list[str], limit_gb: float | None) -> dict:
    spec = {"argv": argv, "limit_bytes": int(limit_gb * 2**30) if limit_gb else None}
    command = [sys.executable, __file__, "--child", json.dumps(spec)]
    timer = shutil.which("time") and Path("/usr/bin/time").is_file()
    if timer:
        command = ["/usr/bin/time", "-v", *command]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    result: dict = {"wall_s": time.perf_counter() - started, "returncode": proc.returncode}
    lines = proc.stdout.strip().splitlines()
    if lines and lines[-1].startswith("{"):
        result.update(json.loads(lines[-1]))
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if match:
        result["time_maxrss_mb"] = int(match.group(1)) / 1024.0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("srseg upscale: error:")]
    result["error"] = errors[-1] if errors else None
    result["traceback"] = "Traceback" in proc.stderr
    return result


def demo_model(folder: Path) -> str:
    import torch

    from srseg.models.generator import MultiTaskSRNet, build_sr_only
    from srseg.models.io import save_generator

    torch.manual_seed(0)
    net = build_sr_only(MultiTaskSRNet(num_features=32, num_blocks=4, num_classes=171).eval())
    return str(save_generator(net, folder / "demo.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[6000, 12000], help="LR side lengths")
    parser.add_argument("--model", default="bicubic", help="bicubic | demo | any srseg upscale --model value")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit-gb", type=float, default=None, help="run the child under ulimit -v of this size")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where inputs and outputs go (default: a temp folder)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="srseg-upscale-memory-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model = demo_model(workdir) if args.model == "demo" else args.model
    limit = f", ulimit -v {args.limit_gb:g} GB" if args.limit_gb else ""
    print(
        f"srseg upscale x4, model {args.model}, tile {args.tile}, batch {args.batch_size}, device {args.device}{limit}"
    )
    try:
        for side in args.sizes:
            source = workdir / f"in-{side}.png"
            if not source.exists():
                write_test_image(source, side)
            out = workdir / f"out-{side}"
            argv = [
                "upscale",
                str(source),
                "--model",
                model,
                "--tile",
                str(args.tile),
                "--batch-size",
                str(args.batch_size),
                "--device",
                args.device,
                "--output",
                str(out),
            ]
            result = run(argv, args.limit_gb)
            output = out / source.name
            hr = side * 4
            if result["returncode"] == 0 and output.exists():
                outcome = (
                    f"done: {hr}x{hr} PNG, {output.stat().st_size / 2**20:.0f} MiB on disk "
                    f"({hr * hr * 3 / 2**30:.2f} GiB as 8-bit)"
                )
            else:
                outcome = f"exit {result['returncode']}: {result['error'] or 'no one-line error'}"
            rss = f"peak RSS {result.get('vmhwm_mb', float('nan')):.0f} MB (VmHWM)"
            if "time_maxrss_mb" in result:
                rss += f", {result['time_maxrss_mb']:.0f} MB (/usr/bin/time)"
            print(
                f"  {side}x{side}: {rss}; {result['wall_s']:.0f} s wall; {outcome}"
                + ("; TRACEBACK printed" if result["traceback"] else "")
            )
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
