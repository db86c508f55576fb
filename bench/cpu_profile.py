"""The README's CPU-profile figures, measured again: both arms trained side by side, then every kept
checkpoint's EMA weights through ``srseg benchmark`` (Set5/Set14, MATLAB protocol).

    .venv/bin/python bench/cpu_profile.py               # train both arms (~35 min on 2 cores), then score
    .venv/bin/python bench/cpu_profile.py --skip-train  # score the checkpoints of an earlier run
    .venv/bin/python bench/cpu_profile.py --tiny        # seconds-long smoke run in a temp folder (the test suite's)

Run it in a checkout whose ``data/cocostuff`` holds the sample (``make mirror`` then
``srseg --profile cpu download``). Each arm runs in its own process with one thread, started at
the same time, so the wall time is what a 2-core machine needs for both. Prints the benchmark
table of the selected weights and the per-checkpoint gains over bicubic, and writes
``cpu_profile.json``, ``cpu_profile_curves.png`` (gains per checkpoint) and ``cpu_profile_val.png``
(validation psnr_y, what selects the weights) to ``--output``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

ARMS = {
    "multitask": ("outputs/train", []),
    "sr_only": ("outputs/ablation", ["--set", "train.loss.lambda_seg=0", "--set", "train.output_dir=outputs/ablation"]),
}

FSRCNN_MARGIN_DB = {"set5": 2.3, "set14": 1.6}  # published x4 psnr_y gains over bicubic (issue 11's target)
SRSEG = [sys.executable, "-m", "srseg"]
# --tiny: a 1-block 8-feature net, 4 iterations with a checkpoint every 2
TINY_OVERRIDES = [
    "train.generator.num_features=8",
    "train.generator.num_blocks=1",
    "train.psnr_stage.iterations=4",
    "train.psnr_stage.checkpoint_every=2",
    "train.psnr_stage.val_every=2",
    "train.batch_size=2",
    "train.patch_size=32",
    "train.hr_scales=[1.0]",
    *(f"benchmark.sets.{name}={SHARED_DATA / name}" for name in FSRCNN_MARGIN_DB),  # absolute: run elsewhere
]


def train_arms(profile: str, seed: int, overrides: list[str]) -> dict[str, dict[str, float]]:
    """Start both arms at once (one thread each); wall and user+sys CPU minutes per arm."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.monotonic()
    procs = {}
    for arm, (_, extra) in ARMS.items():
        sets = [arg for item in overrides for arg in ("--set", item)]
        cmd = [
            *SRSEG,
            "--profile",
            profile,
            *sets,
            *extra,
            "train",
            "--stage",
            "psnr",
            "--seed",
            str(seed),
            "--no-resume",
        ]
        log = open(f"cpu_profile_{arm}.log", "w", encoding="utf-8")  # noqa: SIM115 - closed below
        procs[arm] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log)
        print(f"{arm}: {' '.join(cmd)} (log: cpu_profile_{arm}.log)", flush=True)
    timing: dict[str, dict[str, float]] = {}
    pids = {proc.pid: arm for arm, (proc, _) in procs.items()}
    while pids:
        pid, status, usage = os.wait4(-1, 0)
        arm = pids.pop(pid, None)
        if arm is None:
            continue
        procs[arm][1].close()
        code = os.waitstatus_to_exitcode(status)
        if code:
            for other in pids:
                os.kill(other, signal.SIGTERM)
            sys.exit(f"{arm} arm failed (exit {code}); see cpu_profile_{arm}.log")
        timing[arm] = {"wall_s": time.monotonic() - start, "cpu_min": (usage.ru_utime + usage.ru_stime) / 60}
        print(f"{arm}: done after {timing[arm]['wall_s'] / 60:.1f} min wall, {timing[arm]['cpu_min']:.1f} CPU-min")
    return timing


def prepare_tiny_workdir(profile: str) -> Path:
    """A temp checkout-like folder (params.yaml, profiles/) with the sample downloaded from a local
    mirror of ``../shared/data``; the run's outputs stay out of the repository."""
    workdir = Path(tempfile.mkdtemp(prefix="srseg-cpu-profile-"))
    shutil.copy(REPO / "params.yaml", workdir / "params.yaml")
    shutil.copytree(REPO / "profiles", workdir / "profiles")
    sample = SHARED_DATA / "cocostuff-sample"
    for cmd in (
        [*SRSEG, "mirror", "build", "--sample", str(sample), "--output", "data/mirror"],
        [*SRSEG, "--profile", profile, "download"],
    ):
        subprocess.run(cmd, cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    return workdir


def create_tracking_store(params) -> None:
    """Open the MLflow store once before the arms start: two processes creating a fresh sqlite
    store at the same moment race in its schema migration ("duplicate column name")."""
    import mlflow

    from srseg.stages.evaluate import tracking_uri

    uri = tracking_uri(params)
    if uri is not None:
        mlflow.MlflowClient(uri).search_experiments()


def checkpoint_weights(params, arm_dir: Path, seed: int, out_dir: Path) -> dict[int, Path]:
    """The EMA generator of each kept checkpoint as safetensors (what the benchmark reads)."""
    from srseg.models.registry import build_generator
    from srseg.train.checkpoint import list_checkpoints, load_file
    from srseg.train.engine import save_ema_weights

    weights = {}
    for iteration, path in list_checkpoints(arm_dir / f"seed{seed}" / "psnr" / "checkpoints"):
        state = load_file(path)
        net = build_generator(params.train.generator.architecture, state["generator_config"])
        net.load_state_dict(state["ema"]["module"])
        weights[iteration] = save_ema_weights(
            net, out_dir / f"{arm_dir.name}_{iteration}.safetensors", "psnr", iteration, {}
        )
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="params override")
    parser.add_argument("--skip-train", action="store_true", help="score the checkpoints already on disk")
    parser.add_argument(
        "--output", type=Path, help="default: outputs/bench_cpu_profile (with --tiny: inside the temp folder, removed)"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="seconds-long smoke run in a temp folder; figures meaningless"
    )
    args = parser.parse_args()
    args.output = args.output.resolve() if args.output else Path("outputs/bench_cpu_profile")
    if not args.tiny:
        measure(args)
        return
    args.set = [*TINY_OVERRIDES, *args.set]
    workdir = prepare_tiny_workdir(args.profile)
    print(f"--tiny: working in {workdir} (removed at the end)", flush=True)
    os.chdir(workdir)
    try:
        measure(args)
    finally:
        os.chdir(REPO)
        shutil.rmtree(workdir, ignore_errors=True)


def measure(args: argparse.Namespace) -> None:
    """Train (unless --skip-train), score every checkpoint, print the tables, write JSON and plots."""

    from srseg.config import load_params
    from srseg.fileio import read_json, write_json_atomic
    from srseg.stages.benchmark import run_benchmark

    params = load_params(profile=args.profile, overrides=args.set)
    if not args.skip_train:
        create_tracking_store(params)
    timing = {} if args.skip_train else train_arms(args.profile, args.seed, args.set)
    args.output.mkdir(parents=True, exist_ok=True)
    methods = {"bicubic": "bicubic"}
    for arm, (folder, _) in ARMS.items():
        methods[arm] = f"{folder}/seed{args.seed}/psnr/selected.safetensors"
        for iteration, path in checkpoint_weights(params, Path(folder), args.seed, args.output).items():
            methods[f"{arm}_it{iteration}"] = str(path)
    result = run_benchmark(params, output_dir=args.output / "benchmark", methods=methods)

    table: dict[str, dict[str, dict[str, float]]] = {}
    for set_name, metrics in result["sets"].items():
        means = {name: m["psnr_y"]["mean"] for name, m in metrics["methods"].items()}
        ssims = {name: m["ssim_y"]["mean"] for name, m in metrics["methods"].items()}
        table[set_name] = {
            n: {"psnr_y": means[n], "ssim_y": ssims[n], "gain_db": means[n] - means["bicubic"]} for n in means
        }
    selected = {
        arm: read_json(f"{folder}/seed{args.seed}/psnr/selected.safetensors.json") for arm, (folder, _) in ARMS.items()
    }
    report = {"profile": args.profile, "seed": args.seed, "timing": timing, "table": table, "selected": selected}
    write_json_atomic(args.output / "cpu_profile.json", report)

    for set_name, rows in table.items():
        print(f"\n{set_name} x4 (MATLAB protocol)     psnr_y   ssim_y   gain over bicubic")
        for name, row in rows.items():
            print(f"  {name:28s} {row['psnr_y']:7.3f}  {row['ssim_y']:.4f}  {row['gain_db']:+.3f} dB")
    plot_curves(table, args.output / "cpu_profile_curves.png")
    plot_validation(args.seed, args.output / "cpu_profile_val.png")
    print(f"\nwrote cpu_profile.json, cpu_profile_curves.png and cpu_profile_val.png to {args.output}")


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, axes, xlabel: str, ylabel: str, path: Path) -> None:
    """Label, grid and legend every panel, then write ``path`` and free the figure."""
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)


def plot_curves(table: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    """Gain over bicubic of every checkpoint, one panel per benchmark set, both arms."""
    fig, axes = pyplot().subplots(1, len(table), figsize=(5 * len(table), 3.6), squeeze=False)
    for ax, (set_name, rows) in zip(axes[0], table.items()):
        for arm in ARMS:
            points = sorted(
                (int(n.split("_it")[1]), r["gain_db"]) for n, r in rows.items() if n.startswith(arm + "_it")
            )
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=arm)
        if set_name in FSRCNN_MARGIN_DB:
            ax.axhline(FSRCNN_MARGIN_DB[set_name], color="grey", linestyle="--", label="FSRCNN margin")
        ax.set_title(f"{set_name} x4")
    save_figure(fig, axes[0], "PSNR-stage iteration", "psnr_y gain over bicubic (dB)", path)


def plot_validation(seed: int, path: Path) -> None:
    """Validation psnr_y of both arms on the selection images (``plots/val.csv``: what selects)."""
    import csv

    fig, ax = pyplot().subplots(figsize=(5.5, 3.6))
    for arm, (folder, _) in ARMS.items():
        with open(f"{folder}/seed{seed}/psnr/plots/val.csv", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        ax.plot([int(r["iteration"]) for r in rows], [float(r["psnr_y"]) for r in rows], marker=".", label=arm)
    ax.set_title("validation psnr_y (COCO-Stuff selection images)")
    save_figure(fig, [ax], "PSNR-stage iteration", "psnr_y (dB)", path)


if __name__ == "__main__":
    main()
