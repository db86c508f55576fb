"""Export the SR head of the multitask model (``srseg.stages.run_export``)."""

from kfp.dsl import Artifact, Input, Markdown, Model, Output


def export(
    params: Input[Artifact],
    models: Input[list[Model]],
    evaluation: Input[Artifact],
    exported: Output[Model],
    card: Output[Markdown],
):
    """Write the verified SR-only network (safetensors, TorchScript, ONNX) and its model card.

    ``models`` are the multitask models of every seed; export.weights names the first seed's (the
    model that stands for the arm), here pointed at its Model artifact. The evaluation results feed
    the card's metrics; the segmentation head is dropped, as only the SR path is used at run time.
    """
    import tempfile
    from pathlib import Path

    from srseg.pipeline import steps
    from srseg.stages import run_export

    seeds = steps.sweep_seeds(params.path)
    shipped = next(m for m in models if int(m.metadata["seed"]) == seeds[0])
    with tempfile.TemporaryDirectory() as links:
        folders = steps.link_seed_models({"multitask": steps.seed_models(models)}, links, seeds)
        resolved = steps.stage_params(
            params.path, models=folders, overrides={"evaluate": {"output_dir": evaluation.path}}
        )
        result = run_export(resolved, output_dir=Path(exported.path))
    steps.publish(Path(exported.path) / "MODEL_CARD.md", card.path, "run_export wrote no MODEL_CARD.md")
    exported.metadata.update(steps.plain_metadata(result or {}))
    exported.metadata.update(
        {
            "seed": seeds[0],
            "training_mlflow_run_id": shipped.metadata.get("mlflow_run_id", ""),
            "evaluation_mlflow_run_id": evaluation.metadata.get("mlflow_run_id", ""),
        }
    )
