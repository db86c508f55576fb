"""The srseg training pipeline for Kubeflow Pipelines v2.

    params -> preflight -> download -> degrade -> for each seed: train multitask \\
                                                                 train sr_only   /
        -> evaluate -> export -> register -> gate -> [promote]
              |  \\-> study_build -> study_analyze ----/
              |                          \\
               \\-> benchmark -----------> report (before export: the model card links it)

Training fans out over ``train.seeds`` (``dsl.ParallelFor``, one iteration per seed with both
arms), and the steps after it get every seed's model of each arm (``dsl.Collected``): evaluation
and the benchmark score them all, the study and the export use the first seed's. Each training
branch runs in one pod (``torchrun --nproc_per_node=<gpus_per_node>``) when
``nodes == 1``, or as a Kubeflow Trainer TrainJob on ``nodes`` nodes otherwise; either way the
model is collected from the volume into a Model artifact. Promotion runs only if the gate passes.

Compile-time (:func:`build_pipeline` arguments; ``srseg pipeline compile`` and, recompiling for
the run, ``srseg pipeline submit`` take them as options):
  ``image`` (every step's image and the TrainJob's), ``image_pull_secrets`` (for a private
  registry), ``run_as_user``/``run_as_group`` (every step's pod security context, non-root unless
  0; the image's own user is 1000), ``mount_path`` (where the dataset PVC is mounted), and the
  CPU/memory of the small steps (:data:`STEP_RESOURCES`).

Run-time (pipeline parameters): everything in the signature of ``srseg_training`` below, including
the GPU count of the training step (accelerator limit), the PVC and secret names, extra GPU
tolerations and the GPU node selector, and the training step's CPU/memory. The toleration of the
standard ``nvidia.com/gpu:NoSchedule`` taint is compiled in (a dict-valued parameter default
would make the compiled file differ from run to run). Run-time resources and kfp-kubernetes
settings are parameter placeholders in the IR: they need a KFP 2.x backend recent enough to
resolve them; for an older backend, turn them into constants here and recompile.

Data: the dataset stays on the PVC (``work_dir``); artifacts carry manifests, models and reports.
Secrets (optional, as env on every step but ``resolve-params``): ``s3_secret`` with keys
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ``mlflow_secret`` with key MLFLOW_TRACKING_TOKEN.

Preflight: the first step after resolving the params checks, in the image on the cluster, what
would otherwise fail days later (tracking server, pretrained weights, a writable volume, the
image's code version); nothing downloads before it passes.

Caching: download, degrade and training take step requests (the code version plus the params
sections they read), so equal requests reuse their results across submissions and a change of
data, parameters or code (``code_version``, filled by ``srseg pipeline submit``) re-runs them;
``collect-model`` is keyed on the trained weights' digest. Steps that must see the cluster or the
registry as they are now (preflight, study, register, gate, promote) are never cached by KFP; the
gate's per-model scores are stored in MLflow instead (keyed on the weights and the evaluation set),
so each version is scored once, and the promote step applies the gate's verdict without scoring.

Lineage: every step gets the KFP run id (pod label ``pipeline/runid``) and its pod name as
environment (:mod:`srseg.lineage`), which MLflow runs carry as tags.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

from kfp import dsl, kubernetes

from components import Components, make_components
from srseg.lineage import KFP_POD_ENV, KFP_RUN_ID_ENV
from srseg.pipeline import DEFAULT_IMAGE, MOUNT_PATH
from srseg.pipeline.overrides import OVERRIDE_NAMES
from srseg.pipeline.steps import GPU_RESOURCE, GPU_TOLERATION, MLFLOW_SECRET_ENV, S3_SECRET_ENV

PIPELINE_NAME = "srseg-training"
# CPU and memory (request = limit) of the steps that do not train; compile-time.
STEP_RESOURCES: dict[str, tuple[str, str]] = {
    "resolve_params": ("1", "1Gi"),
    "preflight": ("1", "2Gi"),
    "download": ("2", "4Gi"),
    "degrade": ("8", "16Gi"),
    "launch_trainjob": ("1", "2Gi"),
    "collect_model": ("1", "4Gi"),
    "evaluate": ("8", "32Gi"),
    "study_build": ("4", "16Gi"),
    "study_analyze": ("2", "4Gi"),
    "seeds": ("1", "1Gi"),
    "benchmark": ("8", "32Gi"),
    "report": ("2", "8Gi"),
    "export": ("4", "16Gi"),
    "register": ("2", "4Gi"),
    "gate": ("4", "16Gi"),
    "promote": ("4", "16Gi"),
}


def _sized(task: dsl.PipelineTask, step: str) -> dsl.PipelineTask:
    cpu, memory = STEP_RESOURCES[step]
    return task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)


def _on_volume(
    task: dsl.PipelineTask, pvc_name: Any, mount_path: str, s3_secret: Any, mlflow_secret: Any
) -> dsl.PipelineTask:
    """Dataset PVC plus the S3 and MLflow secrets as environment (both optional)."""
    kubernetes.mount_pvc(task, pvc_name=pvc_name, mount_path=mount_path)
    kubernetes.use_secret_as_env(task, secret_name=s3_secret, secret_key_to_env=S3_SECRET_ENV, optional=True)
    kubernetes.use_secret_as_env(task, secret_name=mlflow_secret, secret_key_to_env=MLFLOW_SECRET_ENV, optional=True)
    return task


def _with_pod_settings(
    c: Components, image_pull_secrets: Sequence[str], run_as_user: int | None, run_as_group: int | None
) -> Components:
    """The same components, each task they create set up with the pull secrets and security context."""

    def settle(task: dsl.PipelineTask) -> dsl.PipelineTask:
        # lineage from the pod itself: no step input, so cache keys stay as they are
        kubernetes.use_field_path_as_env(task, env_name=KFP_RUN_ID_ENV, field_path="metadata.labels['pipeline/runid']")
        kubernetes.use_field_path_as_env(task, env_name=KFP_POD_ENV, field_path="metadata.name")
        if image_pull_secrets:
            kubernetes.set_image_pull_secrets(task, list(image_pull_secrets))
        if run_as_user is not None:
            kubernetes.set_security_context(
                task, run_as_user=run_as_user, run_as_group=run_as_group, run_as_non_root=run_as_user != 0
            )
        return task

    def wrap(component: Any) -> Any:
        return lambda *args, **kwargs: settle(component(*args, **kwargs))

    return c.map(wrap)


def build_pipeline(
    image: str = DEFAULT_IMAGE,
    mount_path: str = MOUNT_PATH,
    image_pull_secrets: Sequence[str] = (),
    run_as_user: int | None = 1000,
    run_as_group: int | None = 1000,
):
    """The pipeline function for ``image`` with the dataset PVC mounted at ``mount_path``; every
    pod pulls with ``image_pull_secrets`` and runs as ``run_as_user``:``run_as_group`` (None: the
    image's user, no security context)."""
    c: Components = _with_pod_settings(make_components(image), image_pull_secrets, run_as_user, run_as_group)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=f"srseg multitask SR (Rad et al. 1907.12488): data, training + ablation, evaluation, "
        f"study, export, registry. Image {image}; dataset PVC at {mount_path}.",
    )
    def srseg_training(
        params_yaml: str = "",
        profile: str = "",
        data_mode: str = "",
        subset_size: int = 0,
        mirror: str = "",
        scale: int = 0,
        lambda_seg: float = -1.0,
        gpus_per_node: int = 1,
        nodes: int = 1,
        mlflow_uri: str = "",
        s3_bucket: str = "",
        s3_prefix: str = "",
        s3_endpoint_url: str = "",
        work_dir: str = mount_path,
        pvc_name: str = "srseg-data",
        s3_secret: str = "srseg-s3",
        mlflow_secret: str = "srseg-mlflow",
        gpu_tolerations: list = [],
        gpu_node_selector: dict = {},
        train_cpu: str = "16",
        train_memory: str = "64Gi",
        trainer_runtime: str = "torch-distributed",
        trainer_namespace: str = "",
        train_timeout_s: int = 604800,
        code_version: str = "",
    ) -> str:
        """Returns the registered model version's URI (models:/NAME/VERSION).

        params_yaml: params file content ("" = the image's params.yaml); profile: profile applied
        on top ("" = none); data_mode / subset_size / mirror / scale / mlflow_uri / s3_*: overrides,
        "" or 0 = as in the params ("none" mirror = official hosts); lambda_seg < 0 = as in the
        params (the ablation branch always uses 0); code_version: digest of the srseg code the run
        was submitted from (``srseg pipeline submit`` fills it): part of the cache keys, and the
        preflight step refuses an image holding other code ("" = not checked).
        """
        args = dict(locals())  # the run's parameters (pipeline channels) by name, for the step builders below
        volume = dict(pvc_name=pvc_name, mount_path=mount_path, s3_secret=s3_secret, mlflow_secret=mlflow_secret)
        overrides = {name: args[name] for name in OVERRIDE_NAMES}  # srseg/pipeline/overrides.py
        resolved = c.resolve_params(
            params_yaml=params_yaml, profile=profile, work_dir=work_dir, code_version=code_version, **overrides
        ).set_display_name("resolve-params")
        _sized(resolved, "resolve_params")
        download, degrade = _data_steps(c, resolved, args, volume)
        models = _training_steps(c, resolved, download, degrade, args, volume, Pod(image, mount_path, run_as_user))
        return _shipping_steps(c, resolved.outputs["params"], models, volume)

    return srseg_training


@dataclasses.dataclass(frozen=True)
class Pod:
    """Compile-time pod settings a multi-node TrainJob repeats: the image, the PVC mount path, the user."""

    image: str
    mount_path: str
    run_as_user: int | None


def _data_steps(c: Components, resolved: Any, args: dict[str, Any], volume: dict[str, Any]) -> tuple[Any, Any]:
    """preflight -> download -> degrade; returns the download and degrade tasks."""
    params = resolved.outputs["params"]
    preflight = c.preflight(params=params, code_version=args["code_version"], work_dir=args["work_dir"])
    preflight.set_display_name("preflight").set_caching_options(False)  # checks the cluster as it is now
    _on_volume(_sized(preflight, "preflight"), **volume)

    # cached on the data request (+ code): equal requests reuse the dataset and keep later keys stable
    download = c.download(request=resolved.outputs["download_request"]).set_display_name("download").after(preflight)
    download.set_retry(num_retries=3, backoff_duration="60s", backoff_factor=2.0, backoff_max_duration="3600s")
    _on_volume(_sized(download, "download"), **volume)

    degrade = c.degrade(request=resolved.outputs["degrade_request"], dataset=download.outputs["dataset"])
    _on_volume(_sized(degrade.set_display_name("degrade"), "degrade"), **volume)
    return download, degrade


def _training_steps(
    c: Components, resolved: Any, download: Any, degrade: Any, args: dict[str, Any], volume: dict[str, Any], pod: Pod
) -> dict[str, Any]:
    """Both arms (multitask, sr_only) for every seed of ``train.seeds``; returns each arm's model output."""
    # the train request enters the loop inside the items: kfp.local replaces any other task
    # output parameter of a ParallelFor with the loop item (components/seeds.py)
    seeds = c.seeds(params=resolved.outputs["params"], request=resolved.outputs["train_request"])
    _sized(seeds.set_display_name("seeds"), "seeds")
    models = {}
    with dsl.ParallelFor(seeds.output) as sweep:
        for branch, branch_lambda in (("multitask", args["lambda_seg"]), ("sr_only", 0.0)):
            data = dict(
                request=sweep.request,
                dataset=download.outputs["dataset"],
                lr_dataset=degrade.outputs["lr_dataset"],
                work_dir=args["work_dir"],
                branch=branch,
                lambda_seg=branch_lambda,
                seed=sweep.seed,
            )
            models[branch] = _train_arm(c, data, args, volume, pod)
    return models


def _train_arm(c: Components, data: dict[str, Any], args: dict[str, Any], volume: dict[str, Any], pod: Pod) -> Any:
    """One arm of one seed: a multi-node TrainJob or a one-pod training, then the model they made."""
    branch = data["branch"]
    with dsl.If(args["nodes"] > 1, name=f"multi-node-{branch}"):
        launch = c.launch_trainjob(
            **data,
            image=pod.image,
            run_as_user=-1 if pod.run_as_user is None else pod.run_as_user,
            nodes=args["nodes"],
            gpus_per_node=args["gpus_per_node"],
            cpu=args["train_cpu"],
            memory=args["train_memory"],
            pvc_name=args["pvc_name"],
            mount_path=pod.mount_path,
            tolerations=args["gpu_tolerations"],
            node_selector=args["gpu_node_selector"],
            s3_secret=args["s3_secret"],
            mlflow_secret=args["mlflow_secret"],
            runtime=args["trainer_runtime"],
            namespace=args["trainer_namespace"],
            timeout_s=args["train_timeout_s"],
        ).set_display_name(f"trainjob-{branch}")
        launch.set_retry(num_retries=2, backoff_duration="300s", backoff_factor=2.0)
        _on_volume(_sized(launch, "launch_trainjob"), **volume)
    with dsl.Else(name=f"one-node-{branch}"):
        train = c.train(**data, gpus=args["gpus_per_node"]).set_display_name(f"train-{branch}")
        train.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(args["gpus_per_node"])
        train.set_cpu_request(args["train_cpu"]).set_cpu_limit(args["train_cpu"])
        train.set_memory_request(args["train_memory"]).set_memory_limit(args["train_memory"])
        train.set_retry(num_retries=2, backoff_duration="300s", backoff_factor=2.0)  # resumes from checkpoints
        kubernetes.add_toleration(train, **GPU_TOLERATION)  # the usual taint of GPU nodes
        kubernetes.add_toleration_json(train, args["gpu_tolerations"])  # plus the cluster's own
        kubernetes.add_node_selector_json(train, args["gpu_node_selector"])
        kubernetes.empty_dir_mount(train, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
        _on_volume(train, **volume)
    collect = c.collect_model(
        train_dir=dsl.OneOf(launch.outputs["train_dir"], train.outputs["train_dir"]),
        weights_sha256=dsl.OneOf(launch.outputs["weights_sha256"], train.outputs["weights_sha256"]),  # content key
        branch=branch,
        seed=data["seed"],
    ).set_display_name(f"model-{branch}")
    _on_volume(_sized(collect, "collect_model"), **volume)
    return collect.outputs["model"]


def _shipping_steps(c: Components, params: Any, models: dict[str, Any], volume: dict[str, Any]) -> Any:
    """evaluate, study, benchmark, report -> export -> register -> gate -> promote; returns the registered model URI."""

    def trained() -> dict[str, dsl.Collected]:
        """Every seed's model of each arm; a fresh fan-in per consumer (kfp's compiler rewrites a
        Collected channel when it wires it into its first consumer)."""
        return dict(multitask=dsl.Collected(models["multitask"]), sr_only=dsl.Collected(models["sr_only"]))

    evaluate = c.evaluate(params=params, **trained())
    _on_volume(_sized(evaluate.set_display_name("evaluate"), "evaluate"), **volume)

    study_build = c.study_build(params=params, **trained())
    study_build.set_display_name("study-build").set_caching_options(False)
    _on_volume(_sized(study_build, "study_build"), **volume)
    study_analyze = c.study_analyze(params=params, bundle=study_build.outputs["bundle"])
    study_analyze.set_display_name("study-analyze").set_caching_options(False)  # votes keep coming in
    _on_volume(_sized(study_analyze, "study_analyze"), **volume)

    benchmark = c.benchmark(params=params, **trained()).set_display_name("benchmark")
    _on_volume(_sized(benchmark, "benchmark"), **volume)
    report = c.report(
        params=params,
        evaluation=evaluate.outputs["results"],
        benchmarks=benchmark.outputs["results"],
        study=study_analyze.outputs["results"],  # the votes analysed so far (none in a fresh run)
        **trained(),
    ).set_display_name("report")
    report.set_caching_options(False)  # its study section changes as votes come in
    _on_volume(_sized(report, "report"), **volume)

    export = c.export(params=params, models=trained()["multitask"], evaluation=evaluate.outputs["results"])
    export.after(report)  # the model card links to the report, which must then be in MLflow
    _on_volume(_sized(export.set_display_name("export"), "export"), **volume)
    register = c.register(params=params, exported=export.outputs["exported"], evaluation=evaluate.outputs["results"])
    register.set_display_name("register")
    register.set_caching_options(False)  # a cached step would skip the registration
    _on_volume(_sized(register, "register"), **volume)

    gate = c.gate(params=params, registered=register.outputs["registered"]).set_display_name("gate")
    gate.after(study_analyze).set_caching_options(False)  # the registry changes between runs
    _on_volume(_sized(gate, "gate"), **volume)
    with dsl.If(gate.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 - a KFP condition, not a bool
        # applies the gate's verdict (no second evaluation), if the aliases are still those it judged
        promote = c.promote(
            params=params, registered=register.outputs["registered"], verdict=gate.outputs["verdict"]
        ).set_display_name("promote")
        promote.set_caching_options(False)
        _on_volume(_sized(promote, "promote"), **volume)
    return register.outputs["model_uri"]
