"""Register the exported SR head in the MLflow model registry (``srseg.stages.run_register``)."""

from typing import NamedTuple

from kfp.dsl import Artifact, Input, Model, Output


def register(
    params: Input[Artifact],
    exported: Input[Model],
    evaluation: Input[Artifact],
    registered: Output[Artifact],
) -> NamedTuple("RegisterOutputs", [("model_name", str), ("model_version", str), ("model_uri", str)]):
    """Log the export to MLflow and register it as a new version (alias challenger); the same
    weights registered before (a re-run) return that version instead (``registered: false``).

    The version carries lineage tags (training runs, the evaluate run, commit, data, KFP run); the
    ``registered`` artifact's metadata links KFP's lineage to the MLflow version, its run and the
    training and evaluate runs; the evaluation results become the version's metric tags.
    """
    import json
    from pathlib import Path

    from srseg.pipeline import steps
    from srseg.stages import run_register

    resolved = steps.stage_params(params.path, overrides={"evaluate": {"output_dir": evaluation.path}})
    info = run_register(
        resolved, export_dir=Path(exported.path), evaluation_run_id=str(evaluation.metadata.get("mlflow_run_id", ""))
    )
    name, version, uri = str(info["name"]), str(info["version"]), str(info["model_uri"])
    Path(registered.path).write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
    registered.metadata.update(steps.plain_metadata(info))
    registered.metadata.update(
        {
            "model_name": name,
            "model_version": version,
            "model_uri": uri,
            "mlflow_run_id": str(info.get("run_id", "")),
            "training_mlflow_run_id": exported.metadata.get("training_mlflow_run_id", ""),
            "evaluation_mlflow_run_id": evaluation.metadata.get("mlflow_run_id", ""),
            "lineage": dict(info.get("lineage") or {}),  # the version's lineage tags (empty when it existed already)
        }
    )
    return (name, version, uri)
