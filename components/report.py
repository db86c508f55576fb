"""The science report of the run (``srseg.stages.run_report``)."""

from kfp.dsl import HTML, Artifact, Input, Markdown, Model, Output


def report(
    params: Input[Artifact],
    evaluation: Input[Artifact],
    benchmarks: Input[Artifact],
    study: Input[Artifact],
    multitask: Input[list[Model]],
    sr_only: Input[list[Model]],
    folder: Output[Artifact],
    page: Output[HTML],
    summary: Output[Markdown],
):
    """Benchmark table, COCO-Stuff validation, per-class gains, study (``study``: the study-analyze
    step's results, with Bradley-Terry scores once votes exist), training
    curves of both arms per seed and the provenance, from this run's artifacts; logged into the
    evaluation's MLflow run. The HTML page (figures inlined) shows in the KFP UI.
    """
    from pathlib import Path

    from srseg.pipeline import steps
    from srseg.stages.report import report_inputs, run_report

    resolved = steps.read_params(params.path)
    runs = {
        branch: {int(m.metadata["seed"]): Path(m.metadata["train_dir"]) for m in models}
        for branch, models in (("multitask", multitask), ("sr_only", sr_only))
    }
    inputs = report_inputs(
        resolved,
        evaluate_dir=Path(evaluation.path),
        benchmark_dir=Path(benchmarks.path),
        runs=runs,
        study_dir=Path(study.path),
    )
    out = Path(folder.path)
    result = run_report(resolved, output_dir=out, inputs=inputs)
    steps.publish(out / "report.html", page.path, "run_report wrote no report.html", html=True)
    steps.publish(out / "report.md", summary.path, "run_report wrote no report.md")
    folder.metadata.update(
        {"mlflow_run_id": str(result.get("mlflow_run_id") or ""), "headline": str(result.get("headline") or "")}
    )
