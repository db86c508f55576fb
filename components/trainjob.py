"""Train one branch on several nodes: create a Kubeflow Trainer TrainJob and wait for it."""

from typing import NamedTuple

from kfp.dsl import Dataset, Input


def launch_trainjob(
    request: str,
    dataset: Input[Dataset],
    lr_dataset: Input[Dataset],
    work_dir: str,
    branch: str,
    lambda_seg: float,
    seed: int,
    image: str,
    run_as_user: int,
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
) -> NamedTuple("TrainOutputs", [("train_dir", str), ("mlflow_run_id", str), ("weights_sha256", str)]):
    """Run the same two torchrun stages as the one-pod step, on ``nodes`` nodes of the
    torch-distributed runtime, with this step's image, user (``run_as_user`` < 0: the image's),
    per-node resources, dataset volume, GPU tolerations/node selector and secrets. This pod only
    waits (no GPU requested); stopping it (SIGTERM) deletes the TrainJob.

    The pipeline's service account needs the Role of deploy/rbac.yaml (trainjobs.trainer.kubeflow.org);
    the volume must be ReadWriteMany so every node sees the checkpoints.
    """
    import os

    from srseg.lineage import KFP_POD_ENV, KFP_RUN_ID_ENV
    from srseg.pipeline import steps, trainjob

    train_dir, params_file = steps.prepare_branch(
        steps.request_params(request, "train"),
        work_dir,
        branch,
        lambda_seg,
        dataset.metadata.get("manifest_sha256", ""),
        seed,
    )
    user = run_as_user if run_as_user >= 0 else None
    config = steps.trainjob_config(
        train_dir=train_dir,
        params_file=params_file,
        image=image,
        namespace=namespace or trainjob.current_namespace(),
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        cpu=cpu,
        memory=memory,
        pvc_name=pvc_name,
        mount_path=mount_path,
        tolerations=tolerations,
        node_selector=node_selector,
        s3_secret=s3_secret,
        mlflow_secret=mlflow_secret,
        runtime=runtime,
        timeout_s=timeout_s,
        run_as_user=user,
        run_as_group=user,
        env={KFP_RUN_ID_ENV: os.environ.get(KFP_RUN_ID_ENV, "")},
        launcher_pod=os.environ.get(KFP_POD_ENV, ""),
    )
    api = trainjob.kubernetes_api()
    trainjob.run_trainjob(api, trainjob.build_trainjob(config), timeout_s=timeout_s + 3600)  # plus an hour in the queue
    record = steps.training_record(train_dir)
    return (str(train_dir), record["mlflow_run_id"], steps.weights_digest(train_dir))
