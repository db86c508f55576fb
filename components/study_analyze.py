"""Analyse the user-study votes collected so far (``srseg.stages.run_study_analyze``)."""

from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Output


def study_analyze(
    params: Input[Artifact],
    bundle: Input[Artifact],
    results: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
    page: Output[HTML],
):
    """Win rates with intervals, Bradley-Terry scores and agreement, as files, Metrics and reports.

    A bundle nobody has served yet has no votes: the step then says so instead of failing, so the
    rest of the pipeline goes on. Never cached: the votes change while the study runs.
    """
    from pathlib import Path

    from srseg.pipeline import steps
    from srseg.stages import run_study_analyze

    out = Path(results.path)
    bundle_dir = Path(bundle.path) / bundle.metadata.get("bundle", "bundle")
    if steps.votes_store(bundle_dir) is None:
        result = steps.no_votes_report(bundle_dir, out)
    else:
        result = run_study_analyze(steps.read_params(params.path), bundle=bundle_dir, output_dir=out)
    steps.publish(out / "report.md", report.path, "run_study_analyze wrote no report.md")
    steps.publish(out / "report.html", page.path, "run_study_analyze wrote no report.html", html=True)
    for name, value in steps.scalar_metrics(result or {}).items():
        metrics.log_metric(name, value)
    results.metadata.update(steps.plain_metadata(result or {}))
