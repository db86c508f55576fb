"""Evaluate the multitask models against the SR-only ablation (``srseg.stages.run_evaluate``)."""

from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Model, Output


def evaluate(
    params: Input[Artifact],
    multitask: Input[list[Model]],
    sr_only: Input[list[Model]],
    results: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
    gallery: Output[HTML],
) -> str:
    """Score evaluate.methods (both arms' models of every seed, bicubic) on the report images of the
    val split; returns the MLflow run id.

    The params' weight paths of both branches are pointed at the Model artifacts, laid out per seed.
    Every file of the evaluation goes into ``results``; the summary and the crop gallery are also
    published as Markdown/HTML so the KFP UI shows them, and the scalar metrics as Metrics.
    """
    import tempfile
    from pathlib import Path

    from srseg.pipeline import steps
    from srseg.stages import run_evaluate

    seeds = steps.sweep_seeds(params.path)
    first = next(m for m in multitask if int(m.metadata["seed"]) == seeds[0])
    out = Path(results.path)
    with tempfile.TemporaryDirectory() as links:
        folders = steps.link_seed_models(
            {"multitask": steps.seed_models(multitask), "sr_only": steps.seed_models(sr_only)}, links, seeds
        )
        resolved = steps.stage_params(params.path, models=folders)
        train_run = first.metadata.get("train_dir")  # on the volume: the first seed's training curves
        result = run_evaluate(resolved, output_dir=out, train_run=Path(train_run) if train_run else None)
    steps.publish(out / "summary.md", report.path, "run_evaluate wrote no summary.md")
    steps.publish(out / "gallery.html", gallery.path, "no gallery (evaluate.gallery_crops is 0)", html=True)
    for name, value in steps.scalar_metrics({k: v for k, v in result.items() if k != "meta"}).items():
        metrics.log_metric(name, value)
    run_id = str((result.get("meta") or {}).get("mlflow_run_id") or "")
    results.metadata.update(
        {
            "mlflow_run_id": run_id,
            "seeds": seeds,
            "multitask_mlflow_run_id": first.metadata.get("mlflow_run_id", ""),
            "sr_only_mlflow_run_id": next(m for m in sr_only if int(m.metadata["seed"]) == seeds[0]).metadata.get(
                "mlflow_run_id", ""
            ),
        }
    )
    return run_id
