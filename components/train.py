"""Train one branch in this pod with torchrun (one rank per GPU), and publish the trained model."""

from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output


def train(
    params: Input[Artifact],
    dataset: Input[Dataset],
    lr_dataset: Input[Dataset],
    work_dir: str,
    branch: str,
    lambda_seg: float,
    gpus: int,
) -> NamedTuple("TrainOutputs", [("train_dir", str), ("mlflow_run_id", str)]):
    """PSNR stage, then GAN stage, each ``torchrun --nproc_per_node=<gpus> -m srseg train``.

    ``branch`` is multitask or sr_only; ``lambda_seg`` < 0 keeps the params' weight, 0 is the
    SR-only ablation. Checkpoints go to a run folder on the volume keyed by params and data, so a
    retried step resumes. Returns the run folder and the GAN stage's MLflow run id.
    """
    from srseg.pipeline import steps

    train_dir, params_file = steps.prepare_branch(
        params.path, work_dir, branch, lambda_seg, dataset.metadata.get("manifest_sha256", "")
    )
    steps.run_training(params_file, gpus)
    record = steps.training_record(train_dir)
    return (str(train_dir), record["mlflow_run_id"])


def collect_model(train_dir: str, branch: str, model: Output[Model], metrics: Output[Metrics]):
    """Copy the GAN stage's weights from the volume into a Model artifact.

    Runs after either training path (one pod or a TrainJob), so evaluation and export always
    get the same kind of input; the metadata links the artifact to its MLflow runs.
    """
    from srseg.pipeline import steps

    files = steps.copy_model_files(train_dir, model.path)
    record = steps.training_record(train_dir)
    model.metadata.update({
        "branch": branch,
        "files": files,
        **steps.plain_metadata({k: v for k, v in record.items() if k != "metrics"}),
    })
    for name, value in steps.scalar_metrics(record["metrics"]).items():
        metrics.log_metric(name, value)
