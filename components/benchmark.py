"""Score the trained models on the standard SR benchmarks (``srseg.stages.run_benchmark``)."""

from kfp.dsl import Artifact, Input, Markdown, Metrics, Model, Output


def benchmark(
    params: Input[Artifact],
    multitask: Input[list[Model]],
    sr_only: Input[list[Model]],
    results: Output[Artifact],
    metrics: Output[Metrics],
    table: Output[Markdown],
):
    """benchmark.methods (both arms' models of every seed, bicubic) on every set of benchmark.sets.

    The sets must be readable in the pod: relative folders are taken from the working directory of
    the step, so on a cluster put them on the dataset volume and give their paths in
    benchmark.sets (the preflight step checks they are there). ``results`` holds one folder per set;
    the table is also published as Markdown and the per-set means as Metrics.
    """
    import tempfile
    from pathlib import Path

    from srseg.evaluate.benchmark import benchmark_markdown
    from srseg.pipeline import steps
    from srseg.stages import run_benchmark

    with tempfile.TemporaryDirectory() as links:
        folders = steps.link_seed_models(
            {"multitask": steps.seed_models(multitask), "sr_only": steps.seed_models(sr_only)},
            links,
            steps.sweep_seeds(params.path),
        )
        resolved = steps.stage_params(params.path, models=folders)
        result = run_benchmark(resolved, output_dir=Path(results.path))
    Path(table.path).write_text(benchmark_markdown(result), encoding="utf-8")
    for name, value in steps.scalar_metrics({s: r["methods"] for s, r in result["sets"].items()}).items():
        if name.endswith("/mean"):
            metrics.log_metric(name, value)
    results.metadata["sets"] = sorted(result["sets"])
