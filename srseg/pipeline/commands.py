"""What ``srseg pipeline compile | run | submit`` do.

- :func:`compile_pipeline` writes the IR YAML (``pipelines/training_pipeline.yaml``) for an image.
- :func:`run_local` runs that compiled YAML with ``kfp.local``: SubprocessRunner in the current
  environment by default (every step a subprocess), or a given runner such as ``DockerRunner``
  (every step in its own container of the image); the dataset in a local folder.
- :func:`submit` uploads it to a Kubeflow Pipelines endpoint as a run, optionally waiting for it.

The image, its pull secrets and the pods' user are a choice at run/submit time too: given a
:class:`PodOptions`, :func:`run_local` and :func:`submit` compile the pipeline for it into a
temporary file and run that instead of the committed YAML.

``params`` (loaded params or a file) and ``profile`` are resolved here, on the client, into the
``params_yaml`` pipeline argument, so a bad parameter fails before anything is scheduled, with its
key named. :func:`pipeline_arguments` turns ``NAME=VALUE`` strings into typed pipeline arguments.

The pipeline definition and the components live in the project's ``pipelines/`` and
``components/`` folders, which depend on this library, not the other way round: compiling runs
the checkout's compile entry (``python -m pipelines.compile``) as a program in ``root``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srseg.errors import SrsegError
from srseg.pipeline import DEFAULT_IMAGE, MOUNT_PATH, PIPELINE_PACKAGE

if TYPE_CHECKING:
    from srseg.config import Params

TOKEN_ENV = "KFP_TOKEN"  # bearer token for submit (e.g. `kubectl create token ...`), if the endpoint needs one
DEFAULT_EXPERIMENT = "srseg"


class PipelineError(SrsegError, RuntimeError):
    """The pipeline could not be compiled, run or submitted (message says why)."""


@dataclass(frozen=True)
class PodOptions:
    """Compile options of every step's pod (see ``pipelines.training_pipeline.build_pipeline``)."""

    image: str = DEFAULT_IMAGE
    image_pull_secrets: tuple[str, ...] = ()
    run_as_user: int | None = 1000
    run_as_group: int | None = 1000


@dataclass(frozen=True)
class LocalRun:
    """Result of :func:`run_local`."""

    model_uri: str  # the registered model version (pipeline output)
    pipeline_root: Path  # KFP artifacts and step outputs, one folder per run
    work_dir: Path  # the stand-in for the dataset PVC: data/, runs/


@dataclass(frozen=True)
class SubmitResult:
    """Result of :func:`submit`; ``state`` is None unless it waited."""

    run_id: str
    url: str
    state: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.state == "SUCCEEDED"


# ------------------------------------------------------------------------------------- compile


COMPILE_MODULE = "pipelines.compile"  # the checkout's compile entry (pipelines/compile.py)
COMPILE_TIMEOUT_S = 300


def compile_pipeline(
    image: str = DEFAULT_IMAGE,
    output: str | Path | None = None,
    *,
    mount_path: str = MOUNT_PATH,
    root: str | Path = ".",
    pod: PodOptions | None = None,
) -> Path:
    """Compile the pipeline for ``image`` (or ``pod``: image, pull secrets, user) to ``output``
    (default ``<root>/pipelines/training_pipeline.yaml``), with the checkout ``root``'s
    ``python -m pipelines.compile``; its error message becomes a :class:`PipelineError`."""
    pod = pod or PodOptions(image=image)
    for secret in pod.image_pull_secrets:
        if not secret or any(ch.isspace() for ch in secret):
            raise PipelineError(f"image pull secret {secret!r} is not a Kubernetes secret name")
    for name, uid in (("run_as_user", pod.run_as_user), ("run_as_group", pod.run_as_group)):
        if uid is not None and uid < 0:
            raise PipelineError(f"{name} must be >= 0, got {uid}")
    root = Path(root).resolve()
    if not (root / "pipelines" / "compile.py").is_file() or not (root / "components").is_dir():
        raise PipelineError(f"{root} is not the srseg checkout (no pipelines/compile.py or components/)")
    out = Path(output).resolve() if output is not None else root / PIPELINE_PACKAGE
    command = [
        sys.executable,
        "-m",
        COMPILE_MODULE,
        "--output",
        str(out),
        "--image",
        pod.image,
        "--mount-path",
        mount_path,
        "--run-as-user",
        str(pod.run_as_user).lower(),
        "--run-as-group",
        str(pod.run_as_group).lower(),
    ]
    for secret in pod.image_pull_secrets:
        command += ["--image-pull-secret", secret]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise PipelineError(f"compiling the pipeline in {root} failed: {lines[-1].removeprefix('error: ')}")
    return out


@contextmanager
def _package_for(package: str | Path, pod: PodOptions | None, root: str | Path = ".") -> Iterator[Path]:
    """``package`` itself, or (``pod`` given) a temporary compile of the pipeline for ``pod``."""
    if pod is None:
        yield Path(package)
        return
    with tempfile.TemporaryDirectory(prefix="srseg-pipeline-") as tmp:
        yield compile_pipeline(output=Path(tmp) / "pipeline.yaml", root=root, pod=pod)


def package_image(package: str | Path = PIPELINE_PACKAGE) -> str:
    """The image a compiled pipeline runs (every step has the same one)."""
    import yaml

    path = Path(package)
    if not path.is_file():
        raise PipelineError(f"{path}: no compiled pipeline (run `srseg pipeline compile`)")
    spec = next(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    if len(images) != 1:
        raise PipelineError(f"{path}: steps use several images {sorted(images)}")
    return images.pop()


# ----------------------------------------------------------------------------------- arguments


def params_arguments(params: Params | str | Path | None, profile: str | None) -> dict[str, str]:
    """``params_yaml``/``profile`` pipeline arguments.

    Loaded ``Params`` (e.g. the CLI's, with ``--set`` applied) or a params file (``profile``
    applied) become the resolved YAML, validated here; ``None`` leaves the params to the image's
    params.yaml, with ``profile`` applied by the first step.
    """
    from srseg.pipeline.steps import dump_params

    resolved = _resolved(params, profile)
    if resolved is None:
        return {"params_yaml": "", "profile": profile or ""}
    return {"params_yaml": dump_params(resolved), "profile": ""}


def _resolved(params: Params | str | Path | None, profile: str | None) -> Params | None:
    from srseg.config import Params, load_params

    if params is None:
        return None
    return params if isinstance(params, Params) else load_params(params, profile=profile)


def run_arguments(
    params: Params | str | Path | None, profile: str | None, arguments: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Every argument of one run: the params, the caller's ``arguments``, and ``code_version``
    (the digest of the srseg code submitting it, unless given) that keys KFP's cache and that
    the preflight step compares with the image's code."""
    from srseg.pipeline.preflight import code_digest

    args = {**params_arguments(params, profile), **(arguments or {})}
    args.setdefault("code_version", code_digest())
    return args


def pipeline_arguments(pairs: Sequence[str], package: str | Path = PIPELINE_PACKAGE) -> dict[str, Any]:
    """``["nodes=2", "gpu_node_selector={...}"]`` -> typed pipeline arguments, by the compiled
    pipeline's parameter types (numbers, booleans and JSON lists/dicts are parsed)."""
    import json

    import yaml

    path = Path(package)
    if not path.is_file():
        raise PipelineError(f"{path}: no compiled pipeline (run `srseg pipeline compile`)")
    declared = next(yaml.safe_load_all(path.read_text(encoding="utf-8")))["root"]["inputDefinitions"]["parameters"]
    parsers: dict[str, Any] = {
        "NUMBER_INTEGER": int,
        "NUMBER_DOUBLE": float,
        "STRING": str,
        "LIST": json.loads,
        "STRUCT": json.loads,
        "BOOLEAN": lambda v: {"true": True, "false": False}[v.lower()],
    }
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in declared:
            raise PipelineError(f"{pair!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(declared))}")
        kind = declared[name]["parameterType"]
        try:
            out[name] = parsers[kind](value)
        except (ValueError, KeyError) as exc:
            raise PipelineError(f"{pair!r}: {name} takes a {kind} value ({exc})") from None
    return out


def _is_k8s_name(name: str) -> bool:
    """An RFC 1123 subdomain (service accounts, secrets)."""
    import re

    return (
        len(name) <= 253
        and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name) is not None
    )


# ------------------------------------------------------------------------------------------ run


@contextmanager
def _restored_print_and_logging() -> Iterator[None]:
    """Put ``builtins.print`` and the root logger back as they were after a kfp.local run.

    kfp.local runs ParallelFor iterations in threads, each swapping ``builtins.print`` (indented
    output) and the root logger's handlers in and out; interleaved, a thread restores another's
    swap and the process keeps indenting every print and logging to stdout after the run.
    """
    import builtins
    import logging

    root = logging.getLogger()
    print_before, handlers, level = builtins.print, root.handlers[:], root.level
    try:
        yield
    finally:
        builtins.print = print_before
        root.handlers[:] = handlers
        root.setLevel(level)


def run_local(
    params: Params | str | Path | None = "params.yaml",
    profile: str | None = "demo",
    *,
    package: str | Path = PIPELINE_PACKAGE,
    work_dir: str | Path = "outputs/kfp/work",
    pipeline_root: str | Path = "outputs/kfp/runs",
    arguments: Mapping[str, Any] | None = None,
    runner: Any = None,
    pod: PodOptions | None = None,
    root: str | Path = ".",
) -> LocalRun:
    """Run the compiled pipeline locally with kfp.local.

    ``runner`` None: SubprocessRunner without a venv, every step a subprocess of this Python (so
    srseg and torch must be installed here) with the current directory as its working directory.
    A ``kfp.local.DockerRunner`` runs every step in its own container of the pipeline's image
    (``pod.image``: compiled from the checkout ``root`` first). ``work_dir`` stands in for the dataset PVC (a
    container must see it at the same path). ``arguments`` override pipeline parameters (e.g.
    ``{"mlflow_uri": ...}``); the run is single-node (``nodes`` must stay 1: there is no cluster
    for a TrainJob).
    """
    import kfp.components
    from kfp import local

    args: dict[str, Any] = {**run_arguments(params, profile, None), "gpus_per_node": 0}
    args.update(arguments or {})
    if int(args.get("nodes", 1)) != 1:
        raise PipelineError("run_local trains in one process group: nodes must be 1 (multi-node needs a cluster)")
    work = Path(work_dir).resolve()
    runs = Path(pipeline_root).resolve()
    work.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    args["work_dir"] = str(work)
    with _package_for(package, pod, root) as compiled:
        pipeline = kfp.components.load_component_from_file(str(compiled))
    local.init(runner=runner or local.SubprocessRunner(use_venv=False), pipeline_root=str(runs), raise_on_error=True)
    with warnings.catch_warnings(), _restored_print_and_logging():
        # expected here: the IR names the project image and sets resources, a local run has neither
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*", category=UserWarning)
        task = pipeline(**args)
    return LocalRun(model_uri=str(task.output), pipeline_root=runs, work_dir=work)


def submit(
    host: str,
    *,
    package: str | Path = PIPELINE_PACKAGE,
    params: Params | str | Path | None = "params.yaml",
    profile: str | None = None,
    arguments: Mapping[str, Any] | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    namespace: str | None = None,
    wait: bool = False,
    timeout_s: float = 7 * 24 * 3600,
    token: str | None = None,
    client: Any = None,
    pod: PodOptions | None = None,
    root: str | Path = ".",
    service_account: str | None = None,
    enable_caching: bool | None = None,
) -> SubmitResult:
    """Create a run of the compiled pipeline on the KFP endpoint ``host``.

    Before anything is sent, the run's tracking URI is checked (:mod:`srseg.pipeline.preflight`:
    a local or sqlite store cannot work when every step is its own pod). ``pod`` (image, image
    pull secrets, user) recompiles the pipeline (from the checkout ``root``) for this run instead
    of submitting ``package`` as committed. ``token`` (default: the ``KFP_TOKEN`` environment
    variable) is sent as a bearer token; ``namespace`` is the Kubeflow profile namespace
    (multi-user installs); ``service_account`` runs the pods under that account (it needs the
    TrainJob permissions of ``deploy/rbac.yaml`` for multi-node training); ``enable_caching=False``
    runs every step. With ``wait`` the call returns when the run ends (``state`` set).
    ``client`` replaces ``kfp.Client`` (tests).
    """
    import kfp

    from srseg.pipeline.preflight import PreflightError, check_cluster_tracking, tracking_problem

    if pod is None and not Path(package).is_file():
        raise PipelineError(f"{package}: no compiled pipeline (run `srseg pipeline compile --image ...` first)")
    if service_account is not None and not _is_k8s_name(service_account):
        raise PipelineError(f"--service-account {service_account!r} is not a Kubernetes service account name")
    args = run_arguments(params, profile, arguments)
    resolved = _resolved(params, profile)
    if resolved is not None:
        check_cluster_tracking(resolved, str(args.get("mlflow_uri") or ""))
    elif args.get("mlflow_uri"):  # the image's params: only an explicit argument can be checked here
        problem = tracking_problem(str(args["mlflow_uri"]), "the tracking URI (pipeline argument mlflow_uri)")
        if problem:
            raise PreflightError(problem)
    if client is None:
        client = kfp.Client(host=host, existing_token=token or os.environ.get(TOKEN_ENV) or None, namespace=namespace)
    with _package_for(package, pod, root) as compiled:
        result = client.create_run_from_pipeline_package(
            str(compiled),
            arguments=args,
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
            service_account=service_account,
            enable_caching=enable_caching,
        )
    run_id = str(result.run_id)
    url = f"{host.rstrip('/')}/#/runs/details/{run_id}"
    if not wait:
        return SubmitResult(run_id, url)
    run = client.wait_for_run_completion(run_id, timeout=timeout_s)
    return SubmitResult(run_id, url, str(getattr(run, "state", "") or ""))
