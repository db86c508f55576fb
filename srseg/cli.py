"""The ``srseg`` command line: one subcommand per pipeline stage, each a thin caller of the
library. Heavy modules are imported inside the handlers so ``srseg --help`` stays fast."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("srseg")


def _load(args: argparse.Namespace):
    from srseg.config import load_params, with_overrides

    return with_overrides(load_params(args.params, profile=args.profile), args.set or [])


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _cmd_train(args: argparse.Namespace) -> int:
    from srseg.stages.train import run_train

    params, output_dir = _load(args), args.output_dir
    if args.seed is not None:  # one run of the seed sweep (srseg.seeds)
        from srseg.config import with_overrides
        from srseg.seeds import seed_run_dir

        params = with_overrides(params, [f"train.seed={args.seed}"], "--seed")
        output_dir = output_dir or seed_run_dir(params.train.output_dir, args.seed)
    summary = run_train(
        params,
        args.stage,
        output_dir=output_dir,
        init_from=args.init_from,
        resume=not args.no_resume,
        max_iterations=args.max_iterations,
        report_dir=args.report_dir,
    )
    _print_json(summary)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from srseg.stages import run_evaluate

    methods = dict(m.split("=", 1) for m in args.method) if args.method else None
    params = _load(args)
    result = run_evaluate(params, output_dir=args.output_dir, methods=methods)
    if args.report_dir is not None:
        from srseg.stages.reports import EVALUATE_REPORT, publish_report

        publish_report(args.output_dir or params.evaluate.output_dir, args.report_dir, EVALUATE_REPORT)
    for name, values in result.items():
        if name in {"diff", "meta", "per_class"} or not isinstance(values, dict):
            continue
        print(f"{name:<12} psnr_y {values.get('psnr_y')}  ssim_y {values.get('ssim_y')}  lpips {values.get('lpips')}")
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from srseg.evaluate.benchmark import benchmark_markdown
    from srseg.stages import run_benchmark

    methods = dict(m.split("=", 1) for m in args.method) if args.method else None
    params = _load(args)
    result = run_benchmark(params, output_dir=args.output_dir, methods=methods, sets=args.set_name)
    out = Path(args.output_dir or params.benchmark.output_dir)
    if args.report_dir is not None:
        from srseg.stages.reports import BENCHMARK_REPORT, publish_report

        if len(result["sets"]) != 1:
            raise ValueError("--report-dir copies one set's files: name the set with --set")
        publish_report(out / next(iter(result["sets"])), args.report_dir, BENCHMARK_REPORT)
    print(benchmark_markdown(result), end="")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from srseg.stages import run_report

    params = _load(args)
    summary = run_report(params, output_dir=args.output_dir, dvc_dir=args.report_dir)
    out = Path(args.output_dir or params.report.output_dir)
    print(f"report: {out / 'report.html'} ({out / 'report.md'})")
    for line in filter(None, [summary.get("headline"), *summary.get("benchmark", []), summary.get("per_class")]):
        print(f"  {line}")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    params = _load(args)
    study_dir = Path(params.study.output_dir) / ("gate" if args.gate else "")
    bundle = Path(args.bundle or study_dir / "bundle")
    if args.study_command == "build":
        from srseg.stages import run_study_build, run_study_gate_build

        print(f"bundle: {run_study_gate_build(params) if args.gate else run_study_build(params)}")
    elif args.study_command == "invite":
        from srseg.study.app import create_admin_token, create_invitations

        for rater, url in create_invitations(bundle, args.count, args.base_url):
            print(f"{rater}\t{url}")
        if args.admin:
            print(f"admin token (shown once): {create_admin_token(bundle)}")
    elif args.study_command == "serve":
        from srseg.study.app import serve_study

        serve_study(bundle, host=args.host, port=args.port, workers=args.workers, secure_cookies=args.secure_cookies)
    elif args.study_command == "analyze":
        from srseg.stages import run_study_analyze

        _print_json(run_study_analyze(params, bundle=bundle))
    elif args.study_command == "export":
        from srseg.study.crowd import export_crowd_csv

        print(export_crowd_csv(bundle, args.output, base_url=args.base_url))
    elif args.study_command == "import":
        from srseg.study.crowd import import_crowd_votes

        report = import_crowd_votes(bundle, args.csv)
        print(f"{args.csv}: {report.rows} rows, {report.inserted} new votes, {report.duplicates} duplicates")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from srseg.stages import run_export

    _print_json(run_export(_load(args), weights=args.weights, output_dir=args.output_dir))
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    from srseg.stages import run_register

    params = _load(args)
    info = run_register(params, export_dir=args.export_dir)
    _print_json(info)
    from srseg.fileio import write_json_atomic

    write_json_atomic(args.record or params.registry.record, info)
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from srseg.stages import run_promote

    decision = run_promote(_load(args), dry_run=args.dry_run)
    return 0 if decision["action"] != "reject" or args.allow_reject else 3


def _cmd_rollback(args: argparse.Namespace) -> int:
    from srseg.stages import run_rollback

    run_rollback(_load(args), dry_run=args.dry_run)
    return 0


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from srseg.pipeline import DEFAULT_IMAGE, commands

    pod = None
    if args.pipeline_command == "compile" or args.image or args.image_pull_secret or args.run_as_user is not None:
        user = 1000 if args.run_as_user is None else args.run_as_user
        pod = commands.PodOptions(
            image=args.image or DEFAULT_IMAGE,
            image_pull_secrets=tuple(args.image_pull_secret or ()),
            run_as_user=None if user < 0 else user,
            run_as_group=None if user < 0 else user,
        )
    if args.pipeline_command == "compile":
        print(f"compiled {commands.compile_pipeline(output=args.output, pod=pod)}")
        return 0
    arguments = commands.pipeline_arguments(args.arg or [])
    if args.pipeline_command == "run":
        run = commands.run_local(_load(args), profile=None, arguments=arguments, pod=pod)
        print(f"local run finished: model {run.model_uri}; artifacts under {run.pipeline_root}")
        return 0
    result = commands.submit(
        args.host,
        params=_load(args),
        profile=None,
        arguments=arguments,
        experiment=args.experiment,
        run_name=args.run_name,
        namespace=args.namespace,
        wait=args.wait,
        pod=pod,
        service_account=args.service_account,
        enable_caching=False if args.no_cache else None,
    )
    print(f"run {result.run_id}: {result.url} ({result.state})")
    return 0 if not args.wait or result.succeeded else 1


def _cmd_weights(args: argparse.Namespace) -> int:
    from srseg.weights import check_weights, stage_weights

    if args.weights_command == "check":
        files = check_weights(_load(args), scope=args.scope)
        for file in files:
            print(f"ok  {file.path}  ({file.purpose})")
        if not files:
            print("these params need no pretrained weights")
        return 0
    staged = stage_weights(args.output, args.source)
    for path in staged:
        print(f"staged {path}")
    print(
        f"image: make image WEIGHTS={args.output}  |  dataset volume: copy the folder there, then run with "
        f"--set train.loss.vgg_weights=<folder in the pods>/{staged[0].name} --set evaluate.lpips_weights=<folder in "
        "the pods>"
    )
    return 0


def _cmd_upscale(args: argparse.Namespace) -> int:
    from srseg.inference.upscale import upscale

    written = upscale(
        args.inputs,
        args.output,
        model=args.model,
        scale=args.scale,
        tile=args.tile or None,
        tile_overlap=args.tile_overlap,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
    )
    print(f"wrote {len(written)} images to {args.output}")
    return 0


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
            raise ValueError("--input needs --output (the folder for the LR images)")
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
        print(
            f"{name:<24} psnr_y {values['psnr_y']:8.4f}  ssim_y {values['ssim_y']:.4f}  psnr_rgb "
            f"{values['psnr_rgb']:8.4f}"
        )
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
    """The ``srseg`` command line: global options, then one subcommand per stage."""
    parser = argparse.ArgumentParser(
        prog="srseg", description="srseg: multitask super-resolution pipeline (one subcommand per stage)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="parameter file (default: params.yaml)"
    )
    parser.add_argument("--profile", default=None, help="apply profiles/<name>.yaml on top, in memory")
    parser.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override one parameter (repeatable)")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_data_commands(sub)
    _add_training_command(sub)
    _add_evaluation_commands(sub)
    _add_study_command(sub)
    _add_shipping_commands(sub)
    _add_pipeline_command(sub)
    _add_tool_commands(sub)
    return parser


def _add_data_commands(sub: Any) -> None:
    """Subcommands: download, degrade and the metrics of a folder."""
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


def _add_training_command(sub: Any) -> None:
    """Subcommands: one training stage, torchrun-ready."""
    p = sub.add_parser("train", help="train one stage (params: train, mlflow); torchrun-ready")
    p.add_argument("--stage", choices=("psnr", "gan"), required=True)
    p.add_argument("--output-dir", type=Path, default=None, help="override train.output_dir")
    p.add_argument("--init-from", type=Path, default=None, help="GAN stage start weights (default <output>/psnr/best)")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="one run of the seed sweep: train.seed = SEED, outputs in <train.output_dir>/seed<SEED>",
    )
    p.add_argument("--no-resume", action="store_true", help="delete this stage's previous outputs and start over")
    p.add_argument("--max-iterations", type=int, default=None, help="stop early after this iteration")
    p.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="also copy metrics.json and the plot CSVs here (git-tracked by DVC)",
    )
    p.set_defaults(func=_cmd_train)


def _add_evaluation_commands(sub: Any) -> None:
    """Subcommands: evaluation, benchmarks and the science report."""
    p = sub.add_parser("evaluate", help="compare methods on the val split (params: evaluate)")
    p.add_argument("--output-dir", type=Path, default=None)
    p.add_argument("--method", action="append", metavar="NAME=MODEL", help="replace evaluate.methods (repeatable)")
    p.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="also copy metrics.json and per_class_gain.csv here (git-tracked by DVC)",
    )
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("benchmark", help="standard SR benchmarks: methods on Set5/Set14/... (params: benchmark)")
    p.add_argument("--output-dir", type=Path, default=None)
    p.add_argument(
        "--set", dest="set_name", action="append", metavar="NAME", help="only this set of benchmark.sets (repeatable)"
    )
    p.add_argument("--method", action="append", metavar="NAME=MODEL", help="replace benchmark.methods (repeatable)")
    p.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="with one --set: also copy its metrics.json and benchmark.md here (git-tracked by DVC)",
    )
    p.set_defaults(func=_cmd_benchmark)

    p = sub.add_parser(
        "report", help="the science report: benchmarks, validation, per-class gains, study, curves (params: report)"
    )
    p.add_argument("--output-dir", type=Path, default=None)
    p.add_argument(
        "--report-dir", type=Path, default=None, help="write the training curves merged over seeds here (DVC plots)"
    )
    p.set_defaults(func=_cmd_report)


def _add_study_command(sub: Any) -> None:
    """Subcommands: the pairwise user study and its subcommands."""
    p = sub.add_parser("study", help="pairwise user study (params: study)")
    p.add_argument("--bundle", type=Path, default=None, help="default <study.output_dir>/bundle")
    p.add_argument(
        "--gate",
        action="store_true",
        help="the promotion gate's study: @challenger vs @champion (bicubic on the first promotion); "
        "bundle in <study.output_dir>/gate/, read by `srseg promote` with promote.perceptual=study",
    )
    ssub = p.add_subparsers(dest="study_command", required=True)
    ssub.add_parser("build", help="super-resolve val images per method and write the bundle")
    s_inv = ssub.add_parser("invite", help="print N invitation links (tokens are stored hashed)")
    s_inv.add_argument("--count", type=int, required=True)
    s_inv.add_argument("--base-url", default="http://127.0.0.1:8000")
    s_inv.add_argument("--admin", action="store_true", help="also create an admin token")
    s_srv = ssub.add_parser("serve", help="serve the study (gunicorn)")
    s_srv.add_argument("--host", default="127.0.0.1")
    s_srv.add_argument("--port", type=int, default=8000)
    s_srv.add_argument("--workers", type=int, default=1)
    s_srv.add_argument("--secure-cookies", action="store_true", help="behind HTTPS")
    ssub.add_parser("analyze", help="win rates, Bradley-Terry scores, agreement")
    s_exp = ssub.add_parser("export", help="CSV of pairs for external crowdsourcing")
    s_exp.add_argument("--output", type=Path, required=True)
    s_exp.add_argument("--base-url", default=None)
    s_imp = ssub.add_parser("import", help="CSV of crowd votes back into the store")
    s_imp.add_argument("--csv", type=Path, required=True)
    p.set_defaults(func=_cmd_study)


def _add_shipping_commands(sub: Any) -> None:
    """Subcommands: export, registry (register, promote, rollback) and inference."""
    p = sub.add_parser("export", help="SR head: TorchScript, ONNX, safetensors, model card (params: export)")
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--output-dir", type=Path, default=None)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("register", help="log the exported SR head to MLflow as @challenger (once per distinct head)")
    p.add_argument("--export-dir", type=Path, default=None)
    p.add_argument(
        "--record", type=Path, default=None, help="write the registered version as JSON here (default: registry.record)"
    )
    p.set_defaults(func=_cmd_register)

    p = sub.add_parser("promote", help="move @champion to @challenger if the gate passes (params: promote)")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--allow-reject", action="store_true", help="exit 0 when the gate rejects (default: exit 3)")
    p.set_defaults(func=_cmd_promote)

    p = sub.add_parser("rollback", help="re-point @champion to the previous champion")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=_cmd_rollback)

    p = sub.add_parser("upscale", help="super-resolve files or folders (tiled)")
    p.add_argument("inputs", nargs="+", type=Path)
    p.add_argument("--model", required=True, help="weights path | export dir | bicubic | models:/NAME@ALIAS")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--tile", type=int, default=256, help="LR tile size; 0 = whole image")
    p.add_argument("--tile-overlap", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    p.set_defaults(func=_cmd_upscale)


def _add_pipeline_command(sub: Any) -> None:
    """Subcommands: the Kubeflow pipeline: compile, run, submit."""
    p = sub.add_parser("pipeline", help="Kubeflow pipeline: compile, run locally, submit to a cluster")
    psub_k = p.add_subparsers(dest="pipeline_command", required=True)
    for name, helptext in (
        ("compile", "write the IR YAML (pipelines/training_pipeline.yaml)"),
        ("run", "run the whole pipeline here with kfp.local (SubprocessRunner)"),
        ("submit", "submit the compiled pipeline to a KFP endpoint (token: KFP_TOKEN)"),
    ):
        k = psub_k.add_parser(name, help=helptext)
        recompile = "" if name == "compile" else "; recompiles the pipeline for this run"
        k.add_argument("--image", default=None, help=f"container image of every step (default srseg:0.1.0){recompile}")
        k.add_argument(
            "--image-pull-secret",
            action="append",
            metavar="SECRET",
            help=f"Kubernetes secret for pulling the image (repeatable){recompile}",
        )
        k.add_argument(
            "--run-as-user",
            type=int,
            default=None,
            metavar="UID",
            help=f"user and group of every pod (default 1000, the image's; -1: no security context){recompile}",
        )
        if name == "compile":
            k.add_argument("--output", type=Path, default=None)
            continue
        k.add_argument("--arg", action="append", metavar="NAME=VALUE", help="pipeline parameter (repeatable)")
        if name == "run":
            k.add_argument(
                "--local",
                action="store_true",
                default=True,
                help="kfp.local SubprocessRunner on this machine (the only runner here)",
            )
        if name == "submit":
            k.add_argument("--host", required=True)
            k.add_argument("--experiment", default="srseg")
            k.add_argument("--run-name", default=None)
            k.add_argument("--namespace", default=None)
            k.add_argument("--wait", action="store_true", help="follow the run until it ends")
            k.add_argument(
                "--service-account",
                default=None,
                metavar="NAME",
                help="Kubernetes service account of the run's pods (e.g. srseg-pipeline from deploy/)",
            )
            k.add_argument("--no-cache", action="store_true", help="run every step, ignoring KFP's cache")
    p.set_defaults(func=_cmd_pipeline)


def _add_tool_commands(sub: Any) -> None:
    """Subcommands: weights, mirrors, profiles and the resolved params."""
    p = sub.add_parser("weights", help="pretrained weights the params need (VGG19, LPIPS): check or stage")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    w = wsub.add_parser("check", help="are the files the params need present and intact? (exit 2 if not)")
    w.add_argument(
        "--scope",
        choices=("train", "pipeline"),
        default="pipeline",
        help="train: what `srseg train` needs; pipeline (default): also evaluation and the promotion gate",
    )
    w = wsub.add_parser(
        "stage", help="copy VGG19 + LPIPS files (hash-checked) into one folder for the image or the volume"
    )
    w.add_argument(
        "--source", type=Path, default=None, help="folder with the torchvision files (default: the torch hub cache)"
    )
    w.add_argument("--output", type=Path, required=True)
    p.set_defaults(func=_cmd_weights)

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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from srseg.errors import is_user_error

    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except Exception as exc:
        if args.verbose or not is_user_error(exc):
            raise
        print(f"srseg {command_name(args)}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2


def command_name(args: argparse.Namespace) -> str:
    """``study build``, ``pipeline compile``, ``export``: the subcommand the user typed."""
    sub = getattr(args, f"{args.command}_command", None)
    return f"{args.command} {sub}" if sub else args.command


def one_line(message: str) -> str:
    """A multi-line error (e.g. every invalid key of params.yaml) as one line: parts joined by '; '."""
    parts = [part.strip() for part in message.splitlines() if part.strip()]
    return "; ".join(parts) if parts else "(no message)"
