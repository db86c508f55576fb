"""Multi-node training through a Kubeflow Trainer ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``).

A KFP step is one pod, so training on several nodes is handed to Kubeflow Trainer: the launcher
step builds a TrainJob that runs the project image on ``num_nodes`` pods of the
``torch-distributed`` runtime, each with the launcher's resources, the dataset PVC, the GPU
tolerations/node selector and the secrets as environment, then waits for it. Trainer sets the
``PET_*`` variables (nodes, processes per node, node rank, master address/port) that ``torchrun``
reads, so the command is the same ``torchrun -m srseg ... train`` as in a single pod.

The manifest follows the Trainer v2.2 API (``runtimePatches`` replaced ``podTemplateOverrides``):
pod-level settings go into a patch of the runtime's ``node`` replicated job; the environment goes
into ``spec.trainer.env`` because Trainer refuses env patches on the ``node`` container.

Every function that talks to the cluster takes the ``CustomObjectsApi`` as an argument, so tests
pass a fake and nothing here reads global Kubernetes configuration unless asked
(:func:`kubernetes_api`).
"""

from __future__ import annotations

import logging
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from srseg.errors import SrsegError

logger = logging.getLogger(__name__)

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
KIND = "TrainJob"
DEFAULT_RUNTIME = "torch-distributed"
NODE = "node"  # replicated job and container name of the torch runtimes
PATCH_MANAGER = "srseg.pipeline/launcher"
DATA_VOLUME = "srseg-data"
SHM_VOLUME = "dshm"
GPU_RESOURCE = "nvidia.com/gpu"
IMAGE_UID = 1000  # the Dockerfile's non-root user; fsGroup makes the PVC writable for it
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class TrainJobError(SrsegError, RuntimeError):
    """The TrainJob failed, was not accepted, or did not finish in time."""


@dataclass(frozen=True)
class SecretEnv:
    """Environment variable ``env`` read from key ``key`` of Kubernetes secret ``secret``."""

    env: str
    secret: str
    key: str
    optional: bool = True


@dataclass(frozen=True)
class TrainJobConfig:
    """Everything the launcher forwards to the TrainJob (mirrors the KFP step's own settings)."""

    name: str
    namespace: str
    image: str
    command: Sequence[str]
    num_nodes: int
    gpus_per_node: int
    cpu: str
    memory: str
    runtime: str = DEFAULT_RUNTIME
    runtime_kind: str = "ClusterTrainingRuntime"
    pvc_name: str | None = None
    mount_path: str = "/mnt/srseg"
    tolerations: Sequence[Mapping[str, Any]] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Sequence[SecretEnv] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    shm_size: str | None = "16Gi"
    active_deadline_s: int | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or len(self.name) > 63:
            raise ValueError(f"TrainJob name {self.name!r} must be an RFC 1035 label (a-z, 0-9, '-', at most 63 chars)")
        if not self.namespace:
            raise ValueError("TrainJob namespace is empty")
        if self.num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {self.num_nodes}")
        if self.gpus_per_node < 0:
            raise ValueError(f"gpus_per_node must be >= 0, got {self.gpus_per_node}")
        if not self.command:
            raise ValueError("TrainJob command is empty")
        if self.active_deadline_s is not None and self.active_deadline_s < 1:
            raise ValueError(f"active_deadline_s must be >= 1, got {self.active_deadline_s}")


def job_name(prefix: str, unique: str) -> str:
    """An RFC 1035 name of at most 63 chars from a readable prefix and a unique suffix."""
    clean = re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{unique}".lower()).strip("-")
    clean = re.sub(r"^[^a-z]+", "", clean)
    if len(clean) > 63:
        clean = clean[:63].rstrip("-")
    if not clean:
        raise ValueError(f"no valid TrainJob name can be made from {prefix!r} and {unique!r}")
    return clean


def shell_command(commands: Sequence[Sequence[str]]) -> list[str]:
    """One container command that runs ``commands`` in order and stops at the first failure."""
    return ["/bin/sh", "-c", " && ".join(shlex.join(c) for c in commands)]


def _resources(cfg: TrainJobConfig) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": cfg.cpu, "memory": cfg.memory}
    if cfg.gpus_per_node:
        limits[GPU_RESOURCE] = cfg.gpus_per_node
    return {"requests": {"cpu": cfg.cpu, "memory": cfg.memory}, "limits": limits}


def _env(cfg: TrainJobConfig) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(cfg.env.items())]
    env += [
        {"name": s.env, "valueFrom": {"secretKeyRef": {"name": s.secret, "key": s.key, "optional": s.optional}}}
        for s in cfg.secret_env
    ]
    names = [e["name"] for e in env]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"environment variables set twice: {duplicates}")
    return env


def _pod_patch(cfg: TrainJobConfig) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if cfg.pvc_name:
        volumes.append({"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": cfg.pvc_name}})
        mounts.append({"name": DATA_VOLUME, "mountPath": cfg.mount_path})
    if cfg.shm_size:  # DataLoader workers and NCCL need more than the default 64 MiB /dev/shm
        volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": cfg.shm_size}})
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    spec: dict[str, Any] = {"securityContext": {"fsGroup": IMAGE_UID}}
    if volumes:
        spec["volumes"] = volumes
        spec["containers"] = [{"name": NODE, "volumeMounts": mounts}]
    if cfg.tolerations:
        spec["tolerations"] = [_toleration(t) for t in cfg.tolerations]
    if cfg.node_selector:
        spec["nodeSelector"] = {str(k): str(v) for k, v in cfg.node_selector.items()}
    return spec


def _toleration(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Kubernetes toleration from the KFP form (same keys; ``toleration_seconds`` accepted too)."""
    allowed = {"key", "operator", "value", "effect", "tolerationSeconds", "toleration_seconds"}
    unknown = set(raw) - allowed
    if unknown:
        raise ValueError(f"toleration {dict(raw)} has unknown keys {sorted(unknown)}")
    out = {k: raw[k] for k in ("key", "operator", "value", "effect") if raw.get(k) not in (None, "")}
    seconds = raw.get("tolerationSeconds", raw.get("toleration_seconds"))
    if seconds is not None:
        out["tolerationSeconds"] = int(seconds)
    return out


def build_trainjob(cfg: TrainJobConfig) -> dict[str, Any]:
    """The TrainJob manifest for ``cfg`` (a plain dict, ready for the Kubernetes API)."""
    labels = {"app.kubernetes.io/part-of": "srseg", "app.kubernetes.io/component": "train", **cfg.labels}
    trainer: dict[str, Any] = {
        "image": cfg.image,
        "command": list(cfg.command),
        "numNodes": cfg.num_nodes,
        "numProcPerNode": max(1, cfg.gpus_per_node),
        "resourcesPerNode": _resources(cfg),
    }
    env = _env(cfg)
    if env:
        trainer["env"] = env
    spec: dict[str, Any] = {
        "runtimeRef": {"name": cfg.runtime, "apiGroup": GROUP, "kind": cfg.runtime_kind},
        "trainer": trainer,
        "runtimePatches": [{
            "manager": PATCH_MANAGER,
            "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [{
                "name": NODE,
                "template": {"spec": {"template": {
                    "metadata": {"labels": labels},
                    "spec": _pod_patch(cfg),
                }}},
            }]}}},
        }],
    }
    if cfg.active_deadline_s is not None:
        spec["activeDeadlineSeconds"] = cfg.active_deadline_s
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": cfg.name, "namespace": cfg.namespace, "labels": labels},
        "spec": spec,
    }


# ------------------------------------------------------------------------------ cluster calls


def kubernetes_api() -> Any:
    """A ``CustomObjectsApi`` from the pod's service account, or ``~/.kube/config`` outside a pod."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def current_namespace(default: str = "default") -> str:
    """The namespace this pod runs in (where KFP runs its steps)."""
    try:
        return NAMESPACE_FILE.read_text(encoding="utf-8").strip() or default
    except OSError:
        return default


def _create(api: Any, manifest: Mapping[str, Any]) -> dict[str, Any]:
    meta = manifest["metadata"]
    try:
        return api.create_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, dict(manifest))
    except Exception as exc:
        if getattr(exc, "status", None) == 404:
            raise TrainJobError(
                f"the cluster has no {PLURAL}.{GROUP}/{VERSION} API: install Kubeflow Trainer v2 "
                f"(and the {DEFAULT_RUNTIME!r} ClusterTrainingRuntime) or run with nodes=1"
            ) from exc
        raise


def create_trainjob(
    api: Any,
    manifest: Mapping[str, Any],
    *,
    delete_timeout_s: float = 300.0,
    poll_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Create the TrainJob. One of the same name that is running or complete is reused (a retried
    launcher step must not start a second job writing the same checkpoints); a failed one is
    deleted and created again, so a retry really retries (training resumes from its checkpoints)."""
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    try:
        return _create(api, manifest)
    except Exception as exc:
        if getattr(exc, "status", None) != 409:
            raise
    existing = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    if trainjob_state(existing) != "Failed":
        logger.info("TrainJob %s/%s exists already: waiting for it", namespace, name)
        return existing
    logger.warning("TrainJob %s/%s failed before: deleting and creating it again", namespace, name)
    delete_trainjob(api, name, namespace)
    deadline = clock() + delete_timeout_s
    while True:
        try:
            return _create(api, manifest)
        except Exception as exc:
            if getattr(exc, "status", None) != 409:
                raise
        if clock() >= deadline:
            raise TrainJobError(f"TrainJob {namespace}/{name} still exists {delete_timeout_s:.0f} s after deletion")
        sleep(poll_s)


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def trainjob_state(obj: Mapping[str, Any]) -> str:
    """``Complete``, ``Failed``, ``Suspended`` or ``Running`` (no terminal condition yet)."""
    for kind in ("Failed", "Complete", "Suspended"):
        if _condition(obj, kind) is not None:
            return kind
    return "Running"


def wait_for_trainjob(
    api: Any,
    name: str,
    namespace: str,
    *,
    timeout_s: float,
    poll_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll until the TrainJob is Complete (returned) or Failed / out of time (:class:`TrainJobError`).

    A suspended job (e.g. waiting in a Kueue queue) keeps waiting: it counts against the timeout.
    """
    deadline = clock() + timeout_s
    last = ""
    while True:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        state = trainjob_state(obj)
        if state != last:
            logger.info("TrainJob %s/%s: %s", namespace, name, state)
            last = state
        if state == "Complete":
            return obj
        if state == "Failed":
            cond = _condition(obj, "Failed") or {}
            raise TrainJobError(
                f"TrainJob {namespace}/{name} failed: {cond.get('reason', '?')}: {cond.get('message', '')} "
                f"(kubectl -n {namespace} logs -l jobset.sigs.k8s.io/jobset-name={name})"
            )
        if clock() >= deadline:
            raise TrainJobError(f"TrainJob {namespace}/{name} not finished after {timeout_s:.0f} s (state {state})")
        sleep(poll_s)


def delete_trainjob(api: Any, name: str, namespace: str) -> None:
    """Delete the TrainJob (its pods go with it); a missing one is fine."""
    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except Exception as exc:
        if getattr(exc, "status", None) != 404:
            raise
