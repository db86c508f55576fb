"""Gate and promote the registered challenger (``srseg.stages.run_promote``)."""

from kfp.dsl import Artifact, Input, Markdown, Output


def gate(params: Input[Artifact], registered: Input[Artifact], decision: Output[Markdown]) -> bool:
    """Decide, changing nothing, whether the challenger may replace the champion.

    The pipeline promotes only when this returns true, so a rejected model leaves the registry
    untouched and the decision table explains why. (A single bool output: kfp.local resolves
    conditions on a task's ``Output`` but not on named outputs.)
    """
    import tempfile
    from pathlib import Path

    from srseg.pipeline import steps
    from srseg.stages import run_promote

    with tempfile.TemporaryDirectory() as scratch:  # the gate's own evaluations of both versions
        resolved = steps.stage_params(params.path, overrides={"evaluate": {"output_dir": scratch}})
        result = run_promote(resolved, dry_run=True)
    Path(decision.path).write_text(steps.decision_markdown(result), encoding="utf-8")
    decision.metadata.update(steps.plain_metadata(result))
    decision.metadata["model_uri"] = registered.metadata.get("model_uri", "")
    return bool(result["passed"])


def promote(params: Input[Artifact], registered: Input[Artifact], decision: Output[Markdown]) -> str:
    """Move the champion alias to the challenger (runs only after the gate passed).

    The gate is evaluated again when applying, so a registry that changed in between is never
    promoted into blindly; a decision that does not pass fails this step. Returns the model URI.
    """
    import tempfile
    from pathlib import Path

    from srseg.pipeline import steps
    from srseg.stages import run_promote

    with tempfile.TemporaryDirectory() as scratch:
        resolved = steps.stage_params(params.path, overrides={"evaluate": {"output_dir": scratch}})
        result = run_promote(resolved, dry_run=False)
    Path(decision.path).write_text(steps.decision_markdown(result), encoding="utf-8")
    decision.metadata.update(steps.plain_metadata(result))
    if not result["passed"]:
        raise RuntimeError(f"promotion of {registered.metadata.get('model_uri', '?')} not applied: {result.get('reason')}")
    return str(registered.metadata.get("model_uri", ""))
