"""The multi-node launcher: the TrainJob it creates is valid against the released Kubeflow Trainer
v2.2.0 TrainJob API (``trainjob_crd/``: fields from the release's API package, constraints from the
CRD, unknown fields rejected; provenance in its README) plus the admission-webhook rules a schema
cannot express, and carries what the launcher step has; create/wait against a fake Kubernetes API;
and the torchrun command of the training step really trains with two processes (gloo on CPU)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from realparts import require_module

from srseg.pipeline import steps, trainjob
from srseg.pipeline.trainjob import TrainJobConfig, TrainJobError

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCHEMA_FILE = HERE / "trainjob_crd" / "trainjob_v1alpha1.schema.json"
SCHEMA = json.loads(SCHEMA_FILE.read_text())
MOUNT = "/mnt/srseg"
RFC1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def webhook_rule_violations(manifest: dict[str, Any]) -> list[str]:
    """What the Trainer's admission webhook and the API server check beyond the JSON schema:
    the TrainJob name is an RFC 1035 label (it names Services), and list-map keys are unique."""
    problems = []
    if manifest.get("apiVersion") != "trainer.kubeflow.org/v1alpha1" or manifest.get("kind") != "TrainJob":
        problems.append(f"apiVersion/kind {manifest.get('apiVersion')}/{manifest.get('kind')}")
    name = manifest.get("metadata", {}).get("name", "")
    if not RFC1035_LABEL.match(name) or len(name) > 63:
        problems.append(f"metadata.name {name!r} is not an RFC 1035 label of at most 63 characters")
    spec = manifest.get("spec", {})

    def unique(items: list[dict[str, Any]], key: str, where: str) -> None:
        keys = [item.get(key) for item in items]
        if len(keys) != len(set(keys)):
            problems.append(f"{where}: duplicate {key} in {keys}")

    unique(spec.get("trainer", {}).get("env", []), "name", "spec.trainer.env")
    unique(spec.get("runtimePatches", []), "manager", "spec.runtimePatches")
    for patch in spec.get("runtimePatches", []):
        jobs = patch.get("trainingRuntimeSpec", {}).get("template", {}).get("spec", {}).get("replicatedJobs", [])
        unique(jobs, "name", "replicatedJobs")
        for job in jobs:
            pod = job.get("template", {}).get("spec", {}).get("template", {}).get("spec", {})
            unique(pod.get("volumes", []), "name", f"{job.get('name')}.volumes")
            unique(pod.get("containers", []), "name", f"{job.get('name')}.containers")
    return problems


def validate(manifest: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(manifest)
    problems = webhook_rule_violations(manifest)
    assert problems == [], problems


def launcher_config(tmp_path: Path, **overrides: Any) -> TrainJobConfig:
    """The config ``components/trainjob.py`` builds, for a run folder on the mounted volume."""
    train_dir = Path(MOUNT) / "runs" / "0123456789abcdef" / "sr_only"
    args: dict[str, Any] = dict(
        train_dir=train_dir,
        params_file=train_dir / "params.yaml",
        image="registry.example/srseg:1.2.3",
        namespace="kubeflow-user",
        nodes=4,
        gpus_per_node=8,
        cpu="32",
        memory="256Gi",
        pvc_name="srseg-data",
        mount_path=MOUNT,
        tolerations=[{"key": "team", "operator": "Equal", "value": "vision", "effect": "NoSchedule"}],
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        s3_secret="srseg-s3",
        mlflow_secret="srseg-mlflow",
        runtime="torch-distributed",
        timeout_s=86400,
        env={"SRSEG_KFP_RUN_ID": "run-42", "UNSET": ""},
        launcher_pod="srseg-training-abc-launcher",
    )
    args.update(overrides)
    return steps.trainjob_config(**args)


def test_launcher_manifest_is_a_valid_trainjob(tmp_path: Path) -> None:
    manifest = trainjob.build_trainjob(launcher_config(tmp_path))
    validate(manifest)
    spec = manifest["spec"]
    assert manifest["metadata"] == {
        "name": "srseg-sr-only-0123456789abcdef",
        "namespace": "kubeflow-user",
        "labels": {
            "app.kubernetes.io/part-of": "srseg",
            "app.kubernetes.io/component": "train",
            "srseg/branch": "sr-only",
        },
        "annotations": {
            "srseg/ttl-seconds-after-finished": "86400",
            "srseg/launcher-pod": "srseg-training-abc-launcher",
        },
    }
    assert spec["runtimeRef"] == {
        "name": "torch-distributed",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
    }
    assert spec["activeDeadlineSeconds"] == 86400
    trainer = spec["trainer"]
    assert trainer["image"] == "registry.example/srseg:1.2.3"
    assert trainer["numNodes"] == 4 and trainer["numProcPerNode"] == 8
    assert trainer["resourcesPerNode"] == {
        "requests": {"cpu": "32", "memory": "256Gi"},
        "limits": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": 8},
    }
    # the same torchrun command as the one-pod step, topology from Trainer's PET_* variables
    params_file = f"{MOUNT}/runs/0123456789abcdef/sr_only/params.yaml"
    assert trainer["command"] == [
        "/bin/sh",
        "-c",
        f"torchrun -m srseg --params {params_file} train --stage psnr && "
        f"torchrun -m srseg --params {params_file} train --stage gan",
    ]
    assert trainer["env"] == [
        {"name": "SRSEG_KFP_RUN_ID", "value": "run-42"},  # lineage: MLflow runs of the TrainJob carry the KFP run
        {
            "name": "AWS_ACCESS_KEY_ID",
            "valueFrom": {"secretKeyRef": {"name": "srseg-s3", "key": "AWS_ACCESS_KEY_ID", "optional": True}},
        },
        {
            "name": "AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": "srseg-s3", "key": "AWS_SECRET_ACCESS_KEY", "optional": True}},
        },
        {
            "name": "MLFLOW_TRACKING_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "srseg-mlflow", "key": "MLFLOW_TRACKING_TOKEN", "optional": True}},
        },
    ]
    (patch,) = spec["runtimePatches"]
    (job,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert job["name"] == "node"
    pod = job["template"]["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {"name": "srseg-data", "persistentVolumeClaim": {"claimName": "srseg-data"}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
    ]
    assert pod["containers"] == [
        {
            "name": "node",
            "volumeMounts": [
                {"name": "srseg-data", "mountPath": MOUNT},
                {"name": "dshm", "mountPath": "/dev/shm"},
            ],
        }
    ]
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "team", "operator": "Equal", "value": "vision", "effect": "NoSchedule"},
    ]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    # the pipeline's user, and fsGroup so a root-owned RWX volume is group-writable for it
    assert pod["securityContext"] == {"fsGroup": 1000, "runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True}
    template = job["template"]["spec"]["template"]["metadata"]  # no Istio sidecar: it would keep the Job running
    assert template["labels"]["sidecar.istio.io/inject"] == "false"
    assert template["annotations"] == {"sidecar.istio.io/inject": "false"}


def test_cpu_only_trainjob_is_valid_and_requests_no_gpu(tmp_path: Path) -> None:
    manifest = trainjob.build_trainjob(
        launcher_config(
            tmp_path,
            gpus_per_node=0,
            tolerations=[],
            node_selector={},
            s3_secret="",
            mlflow_secret="",
            pvc_name="",
            timeout_s=0,
            run_as_user=None,
            run_as_group=None,
            env={},
            launcher_pod="",
        )
    )
    validate(manifest)
    trainer = manifest["spec"]["trainer"]
    assert "nvidia.com/gpu" not in trainer["resourcesPerNode"]["limits"]
    assert trainer["numProcPerNode"] == 1 and "env" not in trainer and "activeDeadlineSeconds" not in manifest["spec"]
    pod = manifest["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
        "template"
    ]["spec"]["template"]["spec"]
    assert "tolerations" not in pod and "nodeSelector" not in pod
    assert [v["name"] for v in pod["volumes"]] == ["dshm"]
    assert pod["securityContext"] == {"fsGroup": 1000}  # user left to the image, the volume still writable


def _set(manifest: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    node: Any = manifest
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


POD = (
    "spec",
    "runtimePatches",
    0,
    "trainingRuntimeSpec",
    "template",
    "spec",
    "replicatedJobs",
    0,
    "template",
    "spec",
    "template",
)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "trainer", "numNode"), 2),  # misspelt: the API server would silently drop it
        (("spec", "trainer", "numNodes"), "2"),
        (("spec", "trainer", "resourcesPerNode", "limits", "memory"), "64 GB"),
        (("spec", "podTemplateOverrides"), []),  # removed in Trainer v2.2 (runtimePatches replaced it)
        (("spec", "activeDeadlineSeconds"), 0),
        (("spec", "runtimeRef", "name"), ""),
        (("spec", "runtimePatches", 0, "manager"), ""),
        (("spec", "managedBy"), "my-controller"),
        (POD + ("spec", "nodeSelecter"), {"a": "b"}),
        (POD + ("spec", "containers", 0, "image"), "other:1"),  # a container patch cannot change the image
        (POD + ("metadata", "ownerReferences"), []),  # patch metadata: labels/annotations/... only
        (POD + ("spec", "volumes", 0, "persistentVolumeClaim", "claimNam"), "x"),
    ],
    ids=lambda v: ".".join(map(str, v)) if isinstance(v, tuple) else None,
)
def test_schema_rejects_what_the_api_would_reject_or_drop(tmp_path: Path, path: tuple, value: Any) -> None:
    manifest = trainjob.build_trainjob(launcher_config(tmp_path))
    jsonschema.Draft202012Validator(SCHEMA).validate(manifest)
    _set(manifest, path, value)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(manifest)


def test_schema_limits_the_number_of_runtime_patches(tmp_path: Path) -> None:
    manifest = trainjob.build_trainjob(launcher_config(tmp_path))
    patch = manifest["spec"]["runtimePatches"][0]
    manifest["spec"]["runtimePatches"] = [{**patch, "manager": f"m{i}"} for i in range(16)]
    jsonschema.Draft202012Validator(SCHEMA).validate(manifest)
    manifest["spec"]["runtimePatches"].append({**patch, "manager": "one-too-many"})
    with pytest.raises(jsonschema.ValidationError, match="is too long|maxItems|non-empty"):
        jsonschema.Draft202012Validator(SCHEMA).validate(manifest)


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (("metadata", "name"), "Srseg_Job", "RFC 1035"),
        (("metadata", "name"), "s" * 64, "RFC 1035"),
        (("spec", "trainer", "env", 2, "name"), "AWS_ACCESS_KEY_ID", "duplicate name"),
        (POD + ("spec", "volumes", 1, "name"), "srseg-data", "duplicate name"),
    ],
)
def test_webhook_rules_the_schema_cannot_express(tmp_path: Path, path: tuple, value: Any, problem: str) -> None:
    manifest = trainjob.build_trainjob(launcher_config(tmp_path))
    assert webhook_rule_violations(manifest) == []
    _set(manifest, path, value)
    jsonschema.Draft202012Validator(SCHEMA).validate(manifest)  # structurally fine ...
    assert any(problem in p for p in webhook_rule_violations(manifest))  # ... rejected by the webhook


def test_schema_file_is_built_from_the_pinned_release() -> None:
    """The committed schema equals a fresh build from the installed kubeflow-trainer-api release."""
    require_module("kubeflow_trainer_api", "pip install kubeflow-trainer-api==2.2.0 (a test extra of pyproject.toml)")
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_schema", HERE / "trainjob_crd" / "make_schema.py")
    assert spec is not None and spec.loader is not None
    make_schema = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_schema)
    assert make_schema.render(make_schema.build_schema()) == SCHEMA_FILE.read_text()


def test_config_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not on the dataset volume"):
        launcher_config(tmp_path, train_dir=Path("/elsewhere/runs/k/multitask"))
    with pytest.raises(ValueError, match="num_nodes"):
        launcher_config(tmp_path, nodes=0)
    with pytest.raises(ValueError, match="unknown keys"):
        trainjob.build_trainjob(launcher_config(tmp_path, tolerations=[{"key": "a", "effects": "NoSchedule"}]))
    assert trainjob.job_name("srseg-multitask", "X" * 80) == "srseg-multitask-" + "x" * 47
    with pytest.raises(ValueError, match="RFC 1035"):
        TrainJobConfig(
            name="Bad", namespace="ns", image="i", command=["x"], num_nodes=1, gpus_per_node=0, cpu="1", memory="1Gi"
        )


# ------------------------------------------------------------------------------ fake cluster


class ApiError(Exception):
    def __init__(self, status: int):
        super().__init__(f"HTTP {status}")
        self.status = status


class FakeApi:
    """The CustomObjectsApi calls the launcher makes, with scripted TrainJob states."""

    def __init__(self, states: list[str], existing: str | None = None, create_status: int | None = None):
        self.states = list(states)
        self.existing = existing
        self.create_status = create_status
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []

    @staticmethod
    def _obj(state: str) -> dict[str, Any]:
        if state == "Running":
            return {"status": {}}
        return {
            "status": {
                "conditions": [
                    {
                        "type": state,
                        "status": "True",
                        "reason": "JobsFailed" if state == "Failed" else state,
                        "message": "node-0 exited 1" if state == "Failed" else "",
                    }
                ]
            }
        }

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict, **kwargs: Any
    ) -> dict:
        assert (group, version, plural) == ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
        if self.create_status:
            raise ApiError(self.create_status)
        if self.existing is not None:
            raise ApiError(409)
        self.created.append(body)
        return body

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> dict:
        if self.existing is not None:
            return self._obj(self.existing)
        return self._obj(self.states.pop(0) if len(self.states) > 1 else self.states[0])

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> None:
        self.deleted.append(name)
        self.existing = None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_create_and_wait_until_complete(tmp_path: Path) -> None:
    manifest = trainjob.build_trainjob(launcher_config(tmp_path))
    api, clock = FakeApi(["Running", "Running", "Complete"]), Clock()
    trainjob.create_trainjob(api, manifest)
    done = trainjob.wait_for_trainjob(
        api,
        "srseg-sr-only-0123456789abcdef",
        "kubeflow-user",
        timeout_s=3600,
        poll_s=30,
        sleep=clock.sleep,
        clock=clock,
    )
    assert api.created == [manifest] and trainjob.trainjob_state(done) == "Complete" and clock.now == 60


def test_failed_and_timed_out_jobs_raise(tmp_path: Path) -> None:
    clock = Clock()
    with pytest.raises(TrainJobError, match="failed: JobsFailed: node-0 exited 1"):
        trainjob.wait_for_trainjob(
            FakeApi(["Running", "Failed"]), "j", "ns", timeout_s=3600, sleep=clock.sleep, clock=clock
        )
    with pytest.raises(TrainJobError, match="not finished after 100 s"):
        trainjob.wait_for_trainjob(
            FakeApi(["Suspended"]), "j", "ns", timeout_s=100, poll_s=30, sleep=clock.sleep, clock=clock
        )


def test_retried_launcher_reuses_a_running_job_and_replaces_a_failed_one(tmp_path: Path) -> None:
    manifest = trainjob.build_trainjob(launcher_config(tmp_path))
    running = FakeApi(["Running"], existing="Running")
    trainjob.create_trainjob(running, manifest)
    assert running.created == [] and running.deleted == []
    failed = FakeApi(["Running"], existing="Failed")
    trainjob.create_trainjob(failed, manifest, sleep=lambda s: None)
    assert failed.deleted == [manifest["metadata"]["name"]] and failed.created == [manifest]
    with pytest.raises(TrainJobError, match="install Kubeflow Trainer"):
        trainjob.create_trainjob(FakeApi([], create_status=404), manifest)


# --------------------------------------------------------------------- torchrun, two processes


def test_torchrun_two_processes_train_on_cpu(cocostuff_sample: Path, tmp_path: Path) -> None:
    """The one-pod training command with --nproc_per_node=2 (gloo): two ranks, one checkpoint."""
    from train.trainkit import TRAIN_IDS, build_prepared_root, tiny_params

    from srseg.train import checkpoint as ckpt

    root = build_prepared_root(cocostuff_sample, tmp_path / "data", train_ids=TRAIN_IDS[:4], crop=32)
    params = tiny_params(
        root,
        tmp_path / "runs" / "k" / "multitask",
        {
            "train": {
                "deterministic": False,
                "psnr_stage": {"iterations": 2, "val_every": 2, "checkpoint_every": 2},
                "selection_images": 1,
            }
        },
    )
    params_file = steps.write_params(tmp_path / "params.yaml", params)
    command = steps.local_torchrun_command(params_file, "psnr", 2)
    assert (
        command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nnodes=1"]
        and "--nproc_per_node=2" in command
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    state = ckpt.load_file(Path(params.train.output_dir) / "psnr" / "checkpoints" / ckpt.checkpoint_name(2))
    assert state["data"]["world_size"] == 2 and len(state["rng"]) == 2
    assert yaml.safe_load(params_file.read_text())["train"]["output_dir"] == params.train.output_dir
