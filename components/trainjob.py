"""Train one branch on several nodes: create a Kubeflow Trainer TrainJob and wait for it."""

from typing import NamedTuple

from kfp.dsl import Artifact, Dataset, Input


def launch_trainjob(
    params: Input[Artifact],
    dataset: Input[Dataset],
    lr_dataset: Input[Dataset],
    work_dir: str,
    branch: str,
    lambda_seg: float,
    image: str,
    nodes: int,
    gpus_per_node: int,
    cpu: str,
    memory: str,
    pvc_name: str,
    mount_path: str,
    tolerations: list,
    node_selector: dict,
    s3_secret: str,
    mlflow_secret: str,
    runtime: str,
    namespace: str,
    timeout_s: int,
) -> NamedTuple("TrainOutputs", [("train_dir", str), ("mlflow_run_id", str)]):
    """Run the same two torchrun stages as the one-pod step, on ``nodes`` nodes of the
    torch-distributed runtime, with this step's image, per-node resources, dataset volume,
    GPU tolerations/node selector and secrets. This pod only waits (no GPU requested).

    The pipeline's service account needs create/get/delete on trainjobs.trainer.kubeflow.org;
    the volume must be ReadWriteMany so every node sees the checkpoints.
    """
    from srseg.pipeline import steps, trainjob

    train_dir, params_file = steps.prepare_branch(
        params.path, work_dir, branch, lambda_seg, dataset.metadata.get("manifest_sha256", "")
    )
    config = steps.trainjob_config(
        train_dir=train_dir, params_file=params_file, image=image, namespace=namespace or trainjob.current_namespace(),
        nodes=nodes, gpus_per_node=gpus_per_node, cpu=cpu, memory=memory, pvc_name=pvc_name, mount_path=mount_path,
        tolerations=tolerations, node_selector=node_selector, s3_secret=s3_secret, mlflow_secret=mlflow_secret,
        runtime=runtime, timeout_s=timeout_s,
    )
    api = trainjob.kubernetes_api()
    trainjob.create_trainjob(api, trainjob.build_trainjob(config))
    trainjob.wait_for_trainjob(api, config.name, config.namespace, timeout_s=timeout_s + 3600)  # plus an hour in the queue
    record = steps.training_record(train_dir)
    return (str(train_dir), record["mlflow_run_id"])
