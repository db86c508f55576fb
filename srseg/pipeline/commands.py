"""What ``srseg pipeline compile | run | submit`` do.

- :func:`compile_pipeline` writes the IR YAML (``pipelines/training_pipeline.yaml``) for an image.
- :func:`run_local` runs that compiled YAML with ``kfp.local``'s SubprocessRunner in the current
  environment: the same IR a cluster runs, every step a subprocess, the dataset in a local folder.
- :func:`submit` uploads it to a Kubeflow Pipelines endpoint as a run, optionally waiting for it.

``params`` (loaded params or a file) and ``profile`` are resolved here, on the client, into the
``params_yaml`` pipeline argument, so a bad parameter fails before anything is scheduled, with its
key named. :func:`pipeline_arguments` turns ``NAME=VALUE`` strings into typed pipeline arguments.

The pipeline definition and the components live in the project's ``pipelines/`` and
``components/`` folders (not in the installed package: only their compiled IR travels), so compiling
imports them from ``root``, the project checkout.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from srseg.errors import SrsegError
from srseg.pipeline import DEFAULT_IMAGE, MOUNT_PATH, PIPELINE_PACKAGE

if TYPE_CHECKING:
    from srseg.config import Params

TOKEN_ENV = "KFP_TOKEN"  # bearer token for submit (e.g. `kubectl create token ...`), if the endpoint needs one
DEFAULT_EXPERIMENT = "srseg"


class PipelineError(SrsegError, RuntimeError):
    """The pipeline could not be compiled, run or submitted (message says why)."""


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


@contextmanager
def _on_path(root: Path) -> Iterator[None]:
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))


def load_pipeline_module(root: str | Path = ".") -> ModuleType:
    """``pipelines.training_pipeline`` from the checkout at ``root``."""
    root = Path(root).resolve()
    if not (root / "pipelines" / "training_pipeline.py").is_file() or not (root / "components").is_dir():
        raise PipelineError(f"{root} is not the srseg checkout (no pipelines/training_pipeline.py or components/)")
    with _on_path(root):
        module = importlib.import_module("pipelines.training_pipeline")
    found = Path(module.__file__ or "").resolve()
    if root not in found.parents:
        raise PipelineError(f"imported pipelines.training_pipeline from {found}, not from {root}")
    return module


def compile_pipeline(
    image: str = DEFAULT_IMAGE,
    output: str | Path | None = None,
    *,
    mount_path: str = MOUNT_PATH,
    root: str | Path = ".",
) -> Path:
    """Compile the pipeline for ``image`` to ``output`` (default ``<root>/pipelines/training_pipeline.yaml``)."""
    from kfp import compiler

    module = load_pipeline_module(root)
    out = Path(output) if output is not None else Path(root) / PIPELINE_PACKAGE
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:  # atomic: a failed compile keeps the old file
        staged = Path(tmp) / out.name
        compiler.Compiler().compile(module.build_pipeline(image, mount_path), str(staged))
        os.replace(staged, out)
    return out


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
    from srseg.config import Params, load_params
    from srseg.pipeline.steps import dump_params

    if params is None:
        return {"params_yaml": "", "profile": profile or ""}
    resolved = params if isinstance(params, Params) else load_params(params, profile=profile)
    return {"params_yaml": dump_params(resolved), "profile": ""}


def pipeline_arguments(pairs: Sequence[str], package: str | Path = PIPELINE_PACKAGE) -> dict[str, Any]:
    """``["nodes=2", "gpu_node_selector={...}"]`` -> typed pipeline arguments, by the compiled
    pipeline's parameter types (numbers, booleans and JSON lists/dicts are parsed)."""
    import json

    import yaml

    path = Path(package)
    if not path.is_file():
        raise PipelineError(f"{path}: no compiled pipeline (run `srseg pipeline compile`)")
    declared = next(yaml.safe_load_all(path.read_text(encoding="utf-8")))["root"]["inputDefinitions"]["parameters"]
    parsers: dict[str, Any] = {"NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "STRING": str, "LIST": json.loads,
                               "STRUCT": json.loads, "BOOLEAN": lambda v: {"true": True, "false": False}[v.lower()]}
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


# ------------------------------------------------------------------------------------------ run


def run_local(
    params: Params | str | Path | None = "params.yaml",
    profile: str | None = "demo",
    *,
    package: str | Path = PIPELINE_PACKAGE,
    work_dir: str | Path = "outputs/kfp/work",
    pipeline_root: str | Path = "outputs/kfp/runs",
    arguments: Mapping[str, Any] | None = None,
) -> LocalRun:
    """Run the compiled pipeline locally (kfp.local, SubprocessRunner without a venv).

    Every step runs as a subprocess of this Python (so srseg and torch must be installed here)
    with the current directory as its working directory; ``work_dir`` stands in for the dataset
    PVC. ``arguments`` override pipeline parameters (e.g. ``{"mlflow_uri": ...}``); the run is
    single-node (``nodes`` must stay 1: there is no cluster for a TrainJob).
    """
    import kfp.components
    from kfp import local

    args: dict[str, Any] = {**params_arguments(params, profile), "gpus_per_node": 0}
    args.update(arguments or {})
    if int(args.get("nodes", 1)) != 1:
        raise PipelineError("run_local trains in one process group: nodes must be 1 (multi-node needs a cluster)")
    work = Path(work_dir).resolve()
    root = Path(pipeline_root).resolve()
    work.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    args["work_dir"] = str(work)
    pipeline = kfp.components.load_component_from_file(str(package))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    with warnings.catch_warnings():
        # expected here: the IR names the project image and sets resources, a local run has neither
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*", category=UserWarning)
        task = pipeline(**args)
    return LocalRun(model_uri=str(task.output), pipeline_root=root, work_dir=work)


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
) -> SubmitResult:
    """Create a run of the compiled pipeline on the KFP endpoint ``host``.

    ``token`` (default: the ``KFP_TOKEN`` environment variable) is sent as a bearer token;
    ``namespace`` is the Kubeflow profile namespace (multi-user installs). With ``wait`` the call
    returns when the run ends (``state`` set). ``client`` replaces ``kfp.Client`` (tests).
    """
    import kfp

    if not Path(package).is_file():
        raise PipelineError(f"{package}: no compiled pipeline (run `srseg pipeline compile --image ...` first)")
    if client is None:
        client = kfp.Client(host=host, existing_token=token or os.environ.get(TOKEN_ENV) or None, namespace=namespace)
    args = {**params_arguments(params, profile), **(arguments or {})}
    result = client.create_run_from_pipeline_package(
        str(package), arguments=args, run_name=run_name, experiment_name=experiment, namespace=namespace,
    )
    run_id = str(result.run_id)
    url = f"{host.rstrip('/')}/#/runs/details/{run_id}"
    if not wait:
        return SubmitResult(run_id, url)
    run = client.wait_for_run_completion(run_id, timeout=timeout_s)
    return SubmitResult(run_id, url, str(getattr(run, "state", "") or ""))
