"""Export the SR head of the multitask model (``srseg.stages.run_export``)."""

from kfp.dsl import Artifact, Input, Markdown, Model, Output


def export(
    params: Input[Artifact],
    model: Input[Model],
    evaluation: Input[Artifact],
    exported: Output[Model],
    card: Output[Markdown],
):
    """Write the verified SR-only network (safetensors, TorchScript, ONNX) and its model card.

    export.weights is pointed at the multitask Model artifact and the evaluation results feed the
    card's metrics; the segmentation head is dropped, as only the SR path is used at run time.
    """
    from pathlib import Path

    from srseg.pipeline import steps
    from srseg.stages import run_export

    resolved = steps.stage_params(params.path, models={"multitask": model.path},
                                  overrides={"evaluate": {"output_dir": evaluation.path}})
    result = run_export(resolved, output_dir=Path(exported.path))
    steps.publish(Path(exported.path) / "MODEL_CARD.md", card.path, "run_export wrote no MODEL_CARD.md")
    exported.metadata.update(steps.plain_metadata(result or {}))
    exported.metadata.update({
        "training_mlflow_run_id": model.metadata.get("mlflow_run_id", ""),
        "evaluation_mlflow_run_id": evaluation.metadata.get("mlflow_run_id", ""),
    })
