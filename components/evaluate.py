"""Evaluate the multitask model against the SR-only ablation (``srseg.stages.run_evaluate``)."""

from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Model, Output


def evaluate(
    params: Input[Artifact],
    multitask: Input[Model],
    sr_only: Input[Model],
    results: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
    gallery: Output[HTML],
) -> str:
    """Score evaluate.methods (both trained models, bicubic) on the val split; returns the MLflow run id.

    The params' weight paths of both branches are pointed at the Model artifacts. Every file of the
    evaluation goes into ``results``; the summary and the crop gallery are also published as
    Markdown/HTML so the KFP UI shows them, and the scalar metrics as Metrics.
    """
    from pathlib import Path

    from srseg.pipeline import steps
    from srseg.stages import run_evaluate

    train_dir = multitask.metadata.get("train_dir")  # on the volume: training curves for the report
    resolved = steps.stage_params(
        params.path, models={"multitask": multitask.path, "sr_only": sr_only.path},
        overrides={"train": {"output_dir": train_dir}} if train_dir else None,
    )
    out = Path(results.path)
    result = run_evaluate(resolved, output_dir=out)
    steps.publish(out / "summary.md", report.path, "run_evaluate wrote no summary.md")
    steps.publish(out / "gallery.html", gallery.path, "no gallery (evaluate.gallery_crops is 0)", html=True)
    for name, value in steps.scalar_metrics({k: v for k, v in result.items() if k != "meta"}).items():
        metrics.log_metric(name, value)
    run_id = str((result.get("meta") or {}).get("mlflow_run_id") or "")
    results.metadata.update({
        "mlflow_run_id": run_id,
        "multitask_mlflow_run_id": multitask.metadata.get("mlflow_run_id", ""),
        "sr_only_mlflow_run_id": sr_only.metadata.get("mlflow_run_id", ""),
    })
    return run_id
