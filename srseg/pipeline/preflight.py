"""Checks that make a cluster run fail in its first minute instead of after days of training.

On a cluster every step is its own pod: a ``sqlite:///`` or ``file:`` tracking URI (or a loopback
tracking server) is a different store in every pod, so the gate would never see the version the
register step created. :func:`tracking_problem` names that, and ``srseg pipeline submit`` calls it
before it contacts the KFP endpoint. The pipeline's first step (``preflight``) runs
:func:`run_preflight` inside the image on the cluster: the same tracking check, the pretrained
weights the params need (:mod:`srseg.weights`), a writable dataset volume, and that the image
holds the code the run was submitted from (:func:`code_digest`; the digest is also part of every
cacheable step's inputs, so KFP's cache keys change when the code does).

Nothing here imports kfp; the checks take plain values and return or raise with a message that
says what to change.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from srseg.errors import SrsegError

if TYPE_CHECKING:
    from srseg.config import Params

IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"  # set by the kubelet in every pod
CODE_SUFFIXES = (".py", ".html", ".js", ".css")  # what the srseg wheel installs (code + package data)
VOLUME_RECIPE = "deploy/volume-permissions-job.yaml"
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


class PreflightError(SrsegError, ValueError):
    """A setting that would make the cluster run fail later (the message says what to change)."""


def in_kubernetes() -> bool:
    """True inside a Kubernetes pod (where a local tracking store is per pod)."""
    return bool(os.environ.get(IN_CLUSTER_ENV))


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def tracking_problem(uri: str, source: str) -> str | None:
    """Why ``uri`` cannot be the tracking URI of a cluster run (None: fine).

    Only an ``http(s)://`` tracking server reachable from the pods works: every step logs to it and
    the registry, gate and promotion all read the same store. ``source`` names where the value came
    from (e.g. "pipeline argument mlflow_uri") for the message.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    fix = (
        "pass the URL of an MLflow tracking server the pods can reach, e.g. --arg "
        "mlflow_uri=https://mlflow.example.org "
        "(or set mlflow.tracking_uri)"
    )
    if scheme in ("", "file", "sqlite"):
        return (
            f"{source} is {uri!r}, a store local to each pod: on a cluster every step would write its own copy and "
            f"the gate could not see the version the register step created; {fix}"
        )
    if scheme not in ("http", "https"):
        return (
            f"{source} is {uri!r}: a {scheme}:// database URI keeps model artifacts on each pod's local disk; "
            f"run an MLflow tracking server on that database and {fix}"
        )
    if not parts.hostname:
        return f"{source} is {uri!r}, which names no host; {fix}"
    if _is_loopback(parts.hostname):
        return f"{source} is {uri!r}: {parts.hostname} inside a pod is the pod itself, not your tracking server; {fix}"
    return None


def check_cluster_tracking(params: Params, mlflow_uri_argument: str = "") -> str:
    """The tracking URI a cluster run will use; :class:`PreflightError` if it cannot work there.

    ``mlflow_uri_argument`` is the pipeline argument (it wins over ``mlflow.tracking_uri``). The
    client's own ``MLFLOW_TRACKING_URI`` is not looked at: the pods do not inherit it.
    """
    if not params.mlflow.enabled:
        raise PreflightError(
            "mlflow.enabled is false, but the pipeline registers and gates the model in MLflow: "
            "set mlflow.enabled: true and a tracking server URI"
        )
    if mlflow_uri_argument:
        uri, source = mlflow_uri_argument, "the tracking URI (pipeline argument mlflow_uri)"
    else:
        uri, source = params.mlflow.tracking_uri, "the tracking URI (mlflow.tracking_uri in the params)"
    problem = tracking_problem(uri, source)
    if problem:
        raise PreflightError(problem)
    return uri


def check_reachable(uri: str, timeout_s: float = 10.0) -> None:
    """Fail within ``timeout_s`` when nothing answers at the tracking server's address.

    Any HTTP answer counts (a proxy may want a token for ``/health``): the point is to stop a run
    whose pods cannot reach the server before it trains, not to validate credentials.
    """
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
    except requests.RequestException as exc:
        raise PreflightError(
            f"the MLflow tracking server {uri} does not answer from this pod within {timeout_s:.0f} s "
            f"({type(exc).__name__}): check the URL, the server and the network policy"
        ) from exc


# ----------------------------------------------------------------------------------- code


def code_digest(package_dir: str | Path | None = None) -> str:
    """SHA-256 over the srseg package's code files (relative path + content).

    The same on the checkout (``<root>/srseg``) and in the image (the installed package): the wheel
    installs exactly the ``CODE_SUFFIXES`` files. Caches (``__pycache__``) are skipped.
    """
    if package_dir is None:
        import srseg

        package_dir = Path(srseg.__file__).parent
    root = Path(package_dir)
    if not (root / "__init__.py").is_file():
        raise PreflightError(f"{root} is not the srseg package (no __init__.py)")
    digest = hashlib.sha256()
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix in CODE_SUFFIXES and "__pycache__" not in p.parts
    )
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def check_code_version(expected: str, package_dir: str | Path | None = None) -> str:
    """This environment's code digest; :class:`PreflightError` when ``expected`` is set and differs."""
    actual = code_digest(package_dir)
    if expected and expected != actual:
        raise PreflightError(
            f"the run was submitted for srseg code {expected[:12]} but this image holds {actual[:12]}: the image is "
            "stale "
            "(rebuild and push it from the checkout you submit from, or submit with --image pointing at the matching "
            "build)"
        )
    return actual


# --------------------------------------------------------------------------------- volume


def check_writable(folder: str | Path) -> Path:
    """Create ``folder`` if needed and prove this user can write there (a file is created and removed)."""
    folder = Path(folder)
    probe = folder / f".srseg-write-test-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise PreflightError(
            f"the dataset volume at {folder} is not writable by uid {os.getuid()} gid {os.getgid()} ({exc.strerror}): "
            f"make it writable once with {VOLUME_RECIPE} (chown to 1000:1000), or run the steps as the volume's owner"
        ) from exc
    return folder


# ----------------------------------------------------------------------------------- all


@dataclass
class PreflightReport:
    """What the preflight step checked (also its artifact metadata)."""

    tracking_uri: str
    code_version: str
    work_dir: str
    weights: list[str] = field(default_factory=list)
    in_kubernetes: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "tracking_uri": self.tracking_uri,
            "code_version": self.code_version,
            "work_dir": self.work_dir,
            "weights": "; ".join(self.weights) or "none needed",
            "in_kubernetes": self.in_kubernetes,
        }


def run_preflight(
    params: Params, work_dir: str | Path, code_version: str = "", cluster: bool | None = None
) -> PreflightReport:
    """Every check of the pipeline's first step; raises on the first problem class found.

    ``cluster`` None: decided by the environment (a Kubernetes pod). Off the cluster (kfp.local)
    the steps share one machine, so a local tracking store is fine there.
    """
    from srseg.tracking import resolve_tracking_uri
    from srseg.weights import check_weights

    cluster = in_kubernetes() if cluster is None else cluster
    uri = resolve_tracking_uri(params.mlflow.tracking_uri)
    if cluster:
        if not params.mlflow.enabled:
            check_cluster_tracking(params)  # raises: the pipeline needs MLflow
        problem = tracking_problem(
            uri, "the tracking URI of this run (pipeline argument mlflow_uri or mlflow.tracking_uri)"
        )
        if problem:
            raise PreflightError(problem)
        check_reachable(uri)
    found = check_weights(params, scope="pipeline")
    actual = check_code_version(code_version)
    check_writable(work_dir)
    return PreflightReport(
        tracking_uri=uri,
        code_version=actual,
        work_dir=str(work_dir),
        weights=[f"{w.purpose}: {w.path}" for w in found],
        in_kubernetes=cluster,
    )
