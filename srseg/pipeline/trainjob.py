"""Multi-node training through a Kubeflow Trainer ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``).

A KFP step is one pod, so training on several nodes is handed to Kubeflow Trainer: the launcher
step builds a TrainJob that runs the project image on ``num_nodes`` pods of the
``torch-distributed`` runtime, each with the launcher's resources, the dataset PVC, the GPU
tolerations/node selector and the secrets as environment, then waits for it. Trainer sets the
``PET_*`` variables (nodes, processes per node, node rank, master address/port) that ``torchrun``
reads, so the command is the same ``torchrun -m srseg ... train`` as in a single pod.

The manifest follows the Trainer v2.2 API (``runtimePatches`` replaced ``podTemplateOverrides``):
pod-level settings go into a patch of the runtime's ``node`` replicated job; the environment goes
into ``spec.trainer.env`` because Trainer refuses env patches on the ``node`` container. The pods
run as the pipeline's user with ``fsGroup`` (so a root-owned volume is writable), and are opted out
of Istio sidecar injection (a sidecar keeps a finished Job running and puts NCCL traffic through
the mesh).

Lifetime (:func:`run_trainjob`): the job is deleted when the launcher is terminated (SIGTERM:
the KFP run was stopped, the step timed out or the pod was evicted) or gives up waiting, so GPUs
never outlive the step. Finished jobs stay for ``ttl_after_finished_s`` for their logs and are then
deleted by the next launcher in the namespace (TrainJob v1alpha1 has no TTL field, and runtime
patches cannot set the JobSet's). API errors 403/404/422 become messages that say what to grant
(``deploy/rbac.yaml``) or install.

Every function that talks to the cluster takes the ``CustomObjectsApi`` as an argument, so tests
pass a fake and nothing here reads global Kubernetes configuration unless asked
(:func:`kubernetes_api`).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
PART_OF = {"app.kubernetes.io/part-of": "srseg"}
TTL_ANNOTATION = "srseg/ttl-seconds-after-finished"
LAUNCHER_ANNOTATION = "srseg/launcher-pod"
ISTIO_INJECT = "sidecar.istio.io/inject"
RBAC_HINT = (
    "apply deploy/rbac.yaml in that namespace and submit with --service-account srseg-pipeline, or bind the "
    "Role srseg-trainjobs to the service account the pipeline's pods use"
)
API_TIMEOUT_S = 60  # per Kubernetes API call: a hung connection must not stall the launcher
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class TrainJobError(SrsegError, RuntimeError):
    """The TrainJob failed, was not accepted, or did not finish in time."""


class TrainJobTimeout(TrainJobError):
    """The TrainJob did not finish in time (the launcher deletes it)."""


class LauncherTerminated(BaseException):
    """The launcher got SIGTERM; a BaseException so no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


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
    run_as_user: int | None = IMAGE_UID  # None: the image's user, only fsGroup is set
    run_as_group: int | None = IMAGE_UID
    ttl_after_finished_s: int = 86400
    annotations: Mapping[str, str] = field(default_factory=dict)

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
        if self.ttl_after_finished_s < 0:
            raise ValueError(f"ttl_after_finished_s must be >= 0, got {self.ttl_after_finished_s}")
        for name, uid in (("run_as_user", self.run_as_user), ("run_as_group", self.run_as_group)):
            if uid is not None and uid < 0:
                raise ValueError(f"{name} must be >= 0, got {uid}")


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
    spec: dict[str, Any] = {"securityContext": _security_context(cfg)}
    if volumes:
        spec["volumes"] = volumes
        spec["containers"] = [{"name": NODE, "volumeMounts": mounts}]
    if cfg.tolerations:
        spec["tolerations"] = [_toleration(t) for t in cfg.tolerations]
    if cfg.node_selector:
        spec["nodeSelector"] = {str(k): str(v) for k, v in cfg.node_selector.items()}
    return spec


def _security_context(cfg: TrainJobConfig) -> dict[str, Any]:
    """The pipeline's user, and fsGroup so a root-owned volume is group-writable for it."""
    context: dict[str, Any] = {"fsGroup": cfg.run_as_group if cfg.run_as_group is not None else IMAGE_UID}
    if cfg.run_as_user is not None:
        context.update(runAsUser=cfg.run_as_user, runAsNonRoot=cfg.run_as_user != 0)
    if cfg.run_as_group is not None:
        context["runAsGroup"] = cfg.run_as_group
    return context


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
    labels = {**PART_OF, "app.kubernetes.io/component": "train", **cfg.labels}
    pod_labels = {**labels, ISTIO_INJECT: "false"}  # current Istio reads the label, older releases the annotation
    annotations = {**cfg.annotations, TTL_ANNOTATION: str(cfg.ttl_after_finished_s)}
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
        "runtimePatches": [
            {
                "manager": PATCH_MANAGER,
                "trainingRuntimeSpec": {
                    "template": {
                        "spec": {
                            "replicatedJobs": [
                                {
                                    "name": NODE,
                                    "template": {
                                        "spec": {
                                            "template": {
                                                "metadata": {
                                                    "labels": pod_labels,
                                                    "annotations": {ISTIO_INJECT: "false"},
                                                },
                                                "spec": _pod_patch(cfg),
                                            }
                                        }
                                    },
                                }
                            ]
                        }
                    }
                },
            }
        ],
    }
    if cfg.active_deadline_s is not None:
        spec["activeDeadlineSeconds"] = cfg.active_deadline_s
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": cfg.name, "namespace": cfg.namespace, "labels": labels, "annotations": annotations},
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


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


def _server_message(exc: BaseException) -> str:
    """The API server's own words from an ``ApiException`` (its Status message, else the body)."""
    body = getattr(exc, "body", None) or ""
    try:
        return str(json.loads(body).get("message") or body)
    except (ValueError, AttributeError):
        return str(body or getattr(exc, "reason", "") or exc).strip()


def _explain(exc: BaseException, verb: str, namespace: str, name: str = "") -> TrainJobError | None:
    """A :class:`TrainJobError` saying what to grant or install for a 403/404/422, else None."""
    status, said = _status(exc), _server_message(exc)
    what = f"{PLURAL}.{GROUP}"
    if status == 403:
        return TrainJobError(
            f"the pipeline's service account may not {verb} {what} in namespace {namespace!r} "
            f"(API server: {said}): {RBAC_HINT}"
        )
    if status == 404 and verb in ("create", "list"):
        try:
            kind = (json.loads(getattr(exc, "body", "") or "{}").get("details") or {}).get("kind")
        except ValueError:
            kind = None
        if kind == "namespaces":
            return TrainJobError(
                f"namespace {namespace!r} does not exist (pipeline parameter trainer_namespace): {said}"
            )
        return TrainJobError(
            f"the cluster has no {what}/{VERSION} API: install Kubeflow Trainer >= v2.2 "
            f"(and the {DEFAULT_RUNTIME!r} ClusterTrainingRuntime) or run with nodes=1 (API server: {said})"
        )
    if status == 404:
        return TrainJobError(
            f"TrainJob {namespace}/{name} disappeared while the launcher used it (deleted by someone?): {said}"
        )
    if status == 422:
        return TrainJobError(
            f"Kubeflow Trainer rejected TrainJob {namespace}/{name}: {said} (is the runtime installed? "
            "`kubectl get clustertrainingruntimes`; Trainer >= v2.2 is needed for runtimePatches)"
        )
    return None


def _call(verb: str, namespace: str, name: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """One API call, 403/404/422 turned into :class:`TrainJobError` (409 and the rest pass through)."""
    try:
        return func(*args, _request_timeout=API_TIMEOUT_S, **kwargs)
    except Exception as exc:
        explained = _explain(exc, verb, namespace, name)
        if explained is not None:
            raise explained from exc
        raise


def _create(api: Any, manifest: Mapping[str, Any]) -> dict[str, Any]:
    meta = manifest["metadata"]
    return _call(
        "create",
        meta["namespace"],
        meta["name"],
        api.create_namespaced_custom_object,
        GROUP,
        VERSION,
        meta["namespace"],
        PLURAL,
        dict(manifest),
    )


def _get(api: Any, name: str, namespace: str) -> dict[str, Any]:
    return _call("get", namespace, name, api.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)


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
        if _status(exc) != 409:
            raise
    existing = _get(api, name, namespace)
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
            if _status(exc) != 409:
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
    """Poll until the TrainJob is Complete (returned) or Failed (:class:`TrainJobError`) or out of
    time (:class:`TrainJobTimeout`).

    A suspended job (e.g. waiting in a Kueue queue) keeps waiting: it counts against the timeout.
    """
    deadline = clock() + timeout_s
    last = ""
    while True:
        obj = _get(api, name, namespace)
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
            raise TrainJobTimeout(f"TrainJob {namespace}/{name} not finished after {timeout_s:.0f} s (state {state})")
        sleep(poll_s)


def delete_trainjob(api: Any, name: str, namespace: str) -> None:
    """Delete the TrainJob (its pods go with it, in the background); a missing one is fine."""
    try:
        api.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background", _request_timeout=API_TIMEOUT_S
        )
    except Exception as exc:
        if _status(exc) == 404:
            return
        explained = _explain(exc, "delete", namespace, name)
        if explained is not None:
            raise explained from exc
        raise


def _finished_at(obj: Mapping[str, Any]) -> datetime | None:
    for kind in ("Complete", "Failed"):
        cond = _condition(obj, kind)
        if cond is not None and cond.get("lastTransitionTime"):
            return datetime.fromisoformat(str(cond["lastTransitionTime"]).replace("Z", "+00:00"))
    return None


def sweep_finished(api: Any, namespace: str, *, keep: str = "", now: datetime | None = None) -> list[str]:
    """Delete srseg's TrainJobs in ``namespace`` that finished longer ago than their TTL annotation.

    ``keep`` is the launcher's own job (a finished one is reused, not recreated). Best effort: a
    refused list is logged with what to grant, and the launcher goes on.
    """
    now = now or datetime.now(UTC)
    selector = ",".join(f"{k}={v}" for k, v in PART_OF.items())
    try:
        found = _call(
            "list",
            namespace,
            "",
            api.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            label_selector=selector,
        )
    except TrainJobError as exc:
        logger.warning("finished TrainJobs not cleaned up: %s", exc)
        return []
    deleted = []
    for obj in found.get("items") or []:
        meta = obj.get("metadata") or {}
        name, ttl = meta.get("name", ""), (meta.get("annotations") or {}).get(TTL_ANNOTATION)
        finished = _finished_at(obj)
        if name == keep or ttl is None or finished is None:
            continue
        if (now - finished).total_seconds() >= int(ttl):
            logger.info(
                "TrainJob %s/%s finished at %s, TTL %s s: deleting it", namespace, name, finished.isoformat(), ttl
            )
            delete_trainjob(api, name, namespace)
            deleted.append(name)
    return deleted


@contextmanager
def _deleted_when_terminated(api: Any, name: str, namespace: str) -> Iterator[None]:
    """Delete the TrainJob if SIGTERM/SIGINT arrives inside the block, then exit 128 + signal."""

    def terminate(signum: int, frame: Any) -> None:
        raise LauncherTerminated(signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except (LauncherTerminated, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, LauncherTerminated) else signal.SIGINT
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the deletion
        logger.warning("launcher terminated (signal %d): deleting TrainJob %s/%s", signum, namespace, name)
        delete_trainjob(api, name, namespace)
        raise SystemExit(128 + int(signum)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_trainjob(
    api: Any,
    manifest: Mapping[str, Any],
    *,
    timeout_s: float,
    poll_s: float = 30.0,
) -> dict[str, Any]:
    """The launcher's whole life: clean up expired jobs, create (or reuse) this one, wait for it.

    SIGTERM while waiting deletes the job and exits 143; giving up after ``timeout_s`` deletes it
    too. A failed job stays (its pods hold no GPUs) until its TTL, for ``kubectl logs``.
    Must run in the main thread (signal handlers).
    """
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    sweep_finished(api, namespace, keep=name)
    with _deleted_when_terminated(api, name, namespace):
        create_trainjob(api, manifest)
        try:
            return wait_for_trainjob(api, name, namespace, timeout_s=timeout_s, poll_s=poll_s)
        except TrainJobTimeout:
            delete_trainjob(api, name, namespace)
            raise
