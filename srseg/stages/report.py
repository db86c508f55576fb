"""The report stage: the science report from the stages' outputs (:mod:`srseg.report.build`),
logged into the evaluation's MLflow run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from srseg.config import Params

log = logging.getLogger(__name__)

ARMS = ("multitask", "sr_only")  # the training arms: train.output_dir and the lambda_seg = 0 ablation


def report_inputs(
    params: Params,
    evaluate_dir: Path | None = None,
    benchmark_dir: Path | None = None,
    runs: dict[str, dict[int, Path]] | None = None,
    study_dir: Path | None = None,
) -> Any:
    """:class:`~srseg.report.build.ReportInputs` for ``params``: the stages' output folders (or the
    given ones: the Kubeflow step passes its input artifacts), each arm's run per seed, data
    checksums and the code version."""
    from srseg.data.manifest import manifest_checksum
    from srseg.pipeline.preflight import code_digest
    from srseg.report.build import ReportInputs
    from srseg.seeds import seed_run_dir
    from srseg.tracking import git_commit

    roots = dict(zip(ARMS, (params.train.output_dir, params.paths.ablation_dir)))
    checksums = {}
    for name, root in (("COCO-Stuff manifest", params.paths.data_root), ("LR manifest", params.paths.lr_root)):
        if (Path(root) / "manifest.json").is_file():
            checksums[f"{name} ({root}/manifest.json)"] = manifest_checksum(root)
    return ReportInputs(
        config=params.model_dump(mode="json"),
        evaluate_dir=Path(evaluate_dir or params.evaluate.output_dir),
        benchmark_dir=Path(benchmark_dir or params.benchmark.output_dir),
        benchmark_sets=list(params.benchmark.sets),
        runs=runs
        or {arm: {seed: seed_run_dir(root, seed) for seed in params.train.seeds} for arm, root in roots.items()},
        compare=tuple(params.evaluate.compare),
        study_dir=Path(study_dir or Path(params.study.output_dir) / "analysis"),
        data_checksums=checksums,
        code={
            "git commit": git_commit() or "unknown (no git checkout, SRSEG_GIT_COMMIT unset)",
            "srseg code sha256": code_digest(),
        },
        top_classes=params.report.top_classes,
        min_class_images=params.report.min_class_images,
    )


def log_to_evaluation_run(tracking_uri: str | None, evaluate_dir: Path, report_dir: Path) -> str | None:
    """Log the report folder as artifact ``report/`` of the MLflow run the evaluation logged to
    (``<evaluate_dir>/mlflow_run.json``); returns that run id, or None when there is none."""
    from srseg.evaluate import RUN_RECORD
    from srseg.fileio import read_json

    record = evaluate_dir / RUN_RECORD
    if tracking_uri is None or not record.is_file():
        log.info(
            "report not logged to MLflow: %s", "MLflow is disabled" if tracking_uri is None else f"{record} not found"
        )
        return None
    from srseg import tracking

    run_id = str(read_json(record)["run_id"])
    client = tracking.make_client(tracking_uri)
    tracking.log_files(client, run_id, [report_dir], artifact_path="report")
    tracking.set_tags(client, run_id, {"report": "report/report.html"})
    log.info("report logged to MLflow run %s (artifact report/report.html)", run_id)
    return run_id


def run_report(
    params: Params, output_dir: Path | None = None, dvc_dir: Path | None = None, inputs: Any = None
) -> dict[str, Any]:
    """Build the report into ``output_dir`` (default ``report.output_dir``; merged curves for DVC
    plots into ``dvc_dir``) and log it into the evaluation's MLflow run."""
    from srseg.report.build import build_report
    from srseg.stages.evaluate import tracking_uri

    inputs = inputs or report_inputs(params)
    out = Path(output_dir or params.report.output_dir)
    summary = build_report(inputs, out, dvc_dir)
    summary["mlflow_run_id"] = log_to_evaluation_run(tracking_uri(params), inputs.evaluate_dir, out)
    return summary
