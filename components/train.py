"""Train one branch in this pod with torchrun (one rank per GPU), and publish the trained model."""

from typing import NamedTuple

from kfp.dsl import Dataset, Input, Metrics, Model, Output


def train(
    request: str,
    dataset: Input[Dataset],
    lr_dataset: Input[Dataset],
    work_dir: str,
    branch: str,
    lambda_seg: float,
    seed: int,
    gpus: int,
) -> NamedTuple("TrainOutputs", [("train_dir", str), ("mlflow_run_id", str), ("weights_sha256", str)]):
    """PSNR stage, then GAN stage, each ``torchrun --nproc_per_node=<gpus> -m srseg train``.

    ``request`` holds the paths, train and mlflow sections and the code version (the cache key
    with the datasets and the branch settings). ``branch`` is multitask or sr_only; ``lambda_seg``
    < 0 keeps the params' weight, 0 is the SR-only ablation; ``seed`` is this run's seed of the
    sweep (``train.seeds``). Checkpoints go to a run folder on the
    volume keyed by the training params and data, so a retried step resumes. Returns the run
    folder, the GAN stage's MLflow run id and the digest of the trained weights.
    """
    from srseg.pipeline import steps

    train_dir, params_file = steps.prepare_branch(
        steps.request_params(request, "train"),
        work_dir,
        branch,
        lambda_seg,
        dataset.metadata.get("manifest_sha256", ""),
        seed,
    )
    steps.run_training(params_file, gpus)
    record = steps.training_record(train_dir)
    return (str(train_dir), record["mlflow_run_id"], steps.weights_digest(train_dir))


def collect_model(
    train_dir: str, weights_sha256: str, branch: str, seed: int, model: Output[Model], metrics: Output[Metrics]
):
    """Copy the GAN stage's weights from the volume into a Model artifact.

    Runs after either training path (one pod or a TrainJob), so evaluation and export always
    get the same kind of input. Keyed on ``weights_sha256``, the content the training step
    reported (a cached result is never a stale model), and refuses a folder whose weights no
    longer match it. The metadata links the artifact to its MLflow runs and names its branch and
    seed, which the evaluation-side steps lay the models out by.
    """
    from srseg.pipeline import steps

    files = steps.copy_model_files(train_dir, model.path, expected_digest=weights_sha256)
    record = steps.training_record(train_dir)
    model.metadata.update(
        {
            "branch": branch,
            "seed": seed,
            "files": files,
            "weights_sha256": weights_sha256,
            **steps.plain_metadata({k: v for k, v in record.items() if k != "metrics"}),
        }
    )
    for name, value in steps.scalar_metrics(record["metrics"]).items():
        metrics.log_metric(name, value)
