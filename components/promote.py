"""Gate and promote the registered challenger: the gate judges (``srseg.stages.run_promote`` as a dry
run), the promote step applies that judgement (``srseg.stages.run_apply_decision``)."""

from kfp.dsl import Artifact, Input, Markdown, Output


def gate(
    params: Input[Artifact], registered: Input[Artifact], decision: Output[Markdown], verdict: Output[Artifact]
) -> bool:
    """Decide, changing no alias, whether the challenger may replace the champion.

    Each model is scored once per evaluation set and the scores are stored in MLflow, so the
    champion and bicubic are usually read back, not scored again. The pipeline promotes only when
    this returns true; ``verdict`` (the decision as JSON) is what the promote step applies. The
    metadata links to MLflow: the versions judged and the runs holding their scores. (A single
    bool output: kfp.local resolves conditions on a task's ``Output`` but not on named outputs.)
    """
    import json
    import tempfile
    from pathlib import Path

    from srseg.pipeline import steps
    from srseg.stages import run_promote

    with tempfile.TemporaryDirectory() as scratch:  # per-image files of the models scored here
        resolved = steps.stage_params(params.path)
        result = run_promote(resolved, dry_run=True, output_dir=Path(scratch))
    Path(verdict.path).write_text(json.dumps(result, indent=2, sort_keys=True, default=str), encoding="utf-8")
    metadata = steps.record_decision(result, decision.path)
    for artifact in (decision, verdict):
        artifact.metadata.update(metadata)
        artifact.metadata["registered_model_uri"] = registered.metadata.get("model_uri", "")
    return bool(result["passed"])


def promote(
    params: Input[Artifact], registered: Input[Artifact], verdict: Input[Artifact], decision: Output[Markdown]
) -> str:
    """Apply the gate's verdict: move the champion alias to the challenger (runs only after the gate passed).

    Nothing is evaluated again. The move is a compare-and-set under the model's registry lock: if
    the aliases are no longer those the gate judged (another promotion or registration came
    first), nothing changes and the step fails. Returns the promoted model version's URI.
    """
    import json
    from pathlib import Path

    from srseg.pipeline import steps
    from srseg.stages import run_apply_decision

    judged = json.loads(Path(verdict.path).read_text(encoding="utf-8"))
    result = run_apply_decision(steps.stage_params(params.path), judged)
    decision.metadata.update(steps.record_decision(result, decision.path))
    if result["action"] != "promote" or not result["applied"]:
        raise RuntimeError(
            f"promotion of {registered.metadata.get('model_uri', '?')} not applied: {result.get('reason')}"
        )
    return steps.decision_links(result)["challenger_uri"]
