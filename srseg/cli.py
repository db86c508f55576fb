"""The ``srseg`` command line: one subcommand per pipeline stage, each a thin caller of the
library. Heavy modules are imported inside the handlers so ``srseg --help`` stays fast."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

log = logging.getLogger("srseg")


def _load(args: argparse.Namespace):
    from srseg.config import load_params

    return load_params(args.params, profile=args.profile)


def _cmd_download(args: argparse.Namespace) -> int:
    from srseg.stages import run_download

    params = _load(args)
    manifest = run_download(params, mirror=args.mirror, output=args.output)
    counts = {split: len(samples) for split, samples in manifest.splits.items()}
    print(json.dumps({"output": str(args.output or params.paths.data_root), "images": counts}))
    return 0


def _cmd_degrade(args: argparse.Namespace) -> int:
    from srseg.stages import run_degrade, run_degrade_folder

    params = _load(args)
    if args.input is not None:
        if args.output is None:
            raise SystemExit("srseg degrade: --input needs --output")
        report = run_degrade_folder(params, args.input, args.output, scale=args.scale, skip_corrupt=args.skip_corrupt)
    else:
        report = run_degrade(params, scale=args.scale, skip_corrupt=args.skip_corrupt)
    print(json.dumps(report))
    return 0


def _cmd_metrics(args: argparse.Namespace) -> int:
    from srseg.fileio import write_json_atomic
    from srseg.metrics import evaluate_folders

    result = evaluate_folders(args.pred, args.ref, scale=args.scale, crop_border=args.crop_border)
    for name, values in sorted(result["images"].items()):
        print(f"{name:<24} psnr_y {values['psnr_y']:8.4f}  ssim_y {values['ssim_y']:.4f}  psnr_rgb {values['psnr_rgb']:8.4f}")
    mean = result["mean"]
    print(f"{'mean':<24} psnr_y {mean['psnr_y']:8.4f}  ssim_y {mean['ssim_y']:.4f}  psnr_rgb {mean['psnr_rgb']:8.4f}")
    if args.json is not None:
        write_json_atomic(args.json, result)
        print(f"wrote {args.json}")
    return 0


def _cmd_mirror_build(args: argparse.Namespace) -> int:
    from srseg.data.mirror import build_sample_mirror

    out = build_sample_mirror(args.sample, args.output)
    print(f"sample mirror ready at {out}")
    return 0


def _cmd_profile_use(args: argparse.Namespace) -> int:
    from srseg.profiles import use_profile

    use_profile(args.params, args.name)
    print(f"{args.params}: profile {args.name!r} applied")
    return 0


def _cmd_params_show(args: argparse.Namespace) -> int:
    import yaml

    print(yaml.safe_dump(_load(args).model_dump(mode="json"), sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srseg", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (default: params.yaml)")
    parser.add_argument("--profile", default=None, help="apply profiles/<name>.yaml on top, in memory")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("download", help="fetch COCO-Stuff images + label maps (params: download)")
    p.add_argument("--mirror", default=None, help="override download.mirror")
    p.add_argument("--output", type=Path, default=None, help="override paths.data_root")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("degrade", help="synthesise LR images (params: degrade)")
    p.add_argument("--input", type=Path, default=None, help="degrade any folder of images instead of the dataset")
    p.add_argument("--output", type=Path, default=None, help="output folder for --input")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), default=None, help="override degrade.scale")
    p.add_argument("--skip-corrupt", action="store_true", default=None, help="skip and count unreadable images")
    p.set_defaults(func=_cmd_degrade)

    p = sub.add_parser("metrics", help="psnr_y / ssim_y / psnr_rgb of a folder against references")
    p.add_argument("--pred", type=Path, required=True)
    p.add_argument("--ref", type=Path, required=True)
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--crop-border", type=int, default=None, help="pixels cropped per border (default: scale)")
    p.add_argument("--json", type=Path, default=None, help="write per-image and mean values here")
    p.set_defaults(func=_cmd_metrics)

    p = sub.add_parser("mirror", help="local COCO-layout mirrors")
    msub = p.add_subparsers(dest="mirror_command", required=True)
    m = msub.add_parser("build", help="pack the real sample data into the official archive layout")
    m.add_argument("--sample", type=Path, required=True, help="cocostuff-sample folder")
    m.add_argument("--output", type=Path, required=True)
    m.set_defaults(func=_cmd_mirror_build)

    p = sub.add_parser("profile", help="switch params.yaml between profiles")
    psub = p.add_subparsers(dest="profile_command", required=True)
    u = psub.add_parser("use", help="write profiles/<name>.yaml into params.yaml")
    u.add_argument("name")
    u.set_defaults(func=_cmd_profile_use)

    p = sub.add_parser("params", help="show the resolved, validated parameters")
    p.set_defaults(func=_cmd_params_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from srseg.errors import USER_ERRORS

    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except USER_ERRORS as exc:
        if args.verbose:
            raise
        print(f"srseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
