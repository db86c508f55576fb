"""MLflow in one place: where runs go, how they are opened, what gets logged and how it is named.

Every stage that talks to MLflow goes through this module:

- the tracking URI (:func:`resolve_tracking_uri`: ``MLFLOW_TRACKING_URI`` wins, a relative SQLite
  store is anchored at ``DVC_ROOT``) and the standard tags (:func:`git_commit`,
  :func:`dvc_experiment_tags`, :func:`system_info`);
- the experiment (:func:`experiment_id`: get or create, tolerant of a concurrent create);
- runs: a *standalone* run that the caller opens and closes (:func:`standalone_run`: evaluate,
  register, study analysis), or the training's *parent* run with one *nested* run per stage
  (:func:`open_parent_run`, :func:`open_nested_run`), whose ids are recorded in the output folder
  (``mlflow_parent.json``, ``<stage>/mlflow_run.json``) so a later process reopens them;
- logging: params (:func:`flatten_params`, :func:`log_params`), metrics (:func:`flatten_metrics`,
  :func:`log_metrics`), tags (:func:`set_tags`) and artifacts (:func:`log_files`), batched.

Everything goes through an explicit ``MlflowClient`` bound to a URI: no fluent API, so no
process-global active run. mlflow is imported inside the functions that need it, so importing
this module stays cheap for commands that never track.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from srseg.fileio import read_json, write_json_atomic

logger = logging.getLogger(__name__)

PARENT_FILE = "mlflow_parent.json"  # <output_dir>/: the training's parent run
STAGE_FILE = "mlflow_run.json"  # <output_dir>/<stage>/: that stage's nested run
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag
GIT_COMMIT_ENV = "SRSEG_GIT_COMMIT"  # set by the image (build argument GIT_COMMIT): it has no .git
_SQLITE = "sqlite:///"
_METRIC_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")
_METRIC_BATCH = 1000


# -- where runs go and what they are tagged with ----------------------------------------------
def resolve_tracking_uri(configured: str) -> str:
    """``MLFLOW_TRACKING_URI`` from the environment, else the configured value.

    A relative SQLite store (``sqlite:///mlflow.db``) is anchored at ``DVC_ROOT`` when DVC runs
    the command: ``dvc exp run --temp`` (and queued experiments) run the stages in a copy of the
    repository under ``.dvc/tmp/exps`` with ``DVC_ROOT`` set to the original one, so their runs go
    to the project's store, not to a throwaway copy that is deleted afterwards.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    root = os.environ.get("DVC_ROOT")
    path = uri[len(_SQLITE) :] if uri.startswith(_SQLITE) else None
    if root and path and not Path(path).is_absolute():
        return _SQLITE + str(Path(root) / path)
    return uri


def dvc_experiment_tags() -> dict[str, str]:
    """``dvc.exp_name`` / ``dvc.baseline_rev`` when the command runs inside ``dvc exp run``."""
    names = {"DVC_EXP_NAME": "dvc.exp_name", "DVC_EXP_BASELINE_REV": "dvc.baseline_rev"}
    return {tag: os.environ[var] for var, tag in names.items() if os.environ.get(var)}


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The commit of the running code, for the ``git_commit`` tags of runs and model versions.

    ``SRSEG_GIT_COMMIT`` when set (the image records the commit it was built from, and has no
    ``.git``), else ``git rev-parse HEAD`` of the working directory, else None.
    """
    recorded = os.environ.get(GIT_COMMIT_ENV, "").strip()
    if recorded:
        return recorded
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit or None


def system_info(device_name: str, world_size: int) -> dict[str, str]:
    """Tags describing where the run happened."""
    import torch

    return {
        "sys.torch_version": torch.__version__,
        "sys.cuda_version": str(torch.version.cuda),
        "sys.device_name": device_name,
        "sys.world_size": str(world_size),
        "sys.hostname": socket.gethostname(),
    }


# -- naming ------------------------------------------------------------------------------------
def metric_key(name: str) -> str:
    """``name`` with every character MLflow refuses in a key replaced by ``_``."""
    return _METRIC_KEY.sub("_", name)


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"loss": {"lambda_seg": 0.1}}}`` -> ``{"train.loss.lambda_seg": "0.1"}``."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(list(value))
        else:
            flat[name] = str(value)
    return flat


def flatten_metrics(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested result as MLflow metrics, keys joined with ``.``.

    A ``[low, high]`` pair of numbers becomes ``NAME_lo`` / ``NAME_hi``; booleans, None, NaN,
    strings and other lists are skipped (they are not measurements). Keys are made MLflow-safe.
    """
    flat: dict[str, float] = {}
    for key, value in tree.items():
        name = metric_key(f"{prefix}{key}")
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, f"{name}."))
        elif _is_number(value):
            flat[name] = float(value)
        elif isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value):
            flat[f"{name}_lo"], flat[f"{name}_hi"] = float(value[0]), float(value[1])
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# -- experiments and runs ------------------------------------------------------------------------
def make_client(tracking_uri: str | None) -> Any:
    """An ``MlflowClient`` for ``tracking_uri`` (tracking and registry; None: ``MLFLOW_TRACKING_URI``)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def experiment_id(client: Any, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created (with ``artifact_location``) when missing.

    A deleted experiment is an error naming it (MLflow would refuse new runs in it); an experiment
    created concurrently by another process is picked up.
    """
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage != "active":
            raise ValueError(f"MLflow experiment {name!r} is deleted; restore it or choose another name")
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location))
    except MlflowException:  # created concurrently by another process
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


@contextmanager
def standalone_run(
    client: Any,
    experiment: str,
    run_name: str,
    *,
    run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    artifact_location: str | None = None,
) -> Iterator[Any]:
    """Yield the MLflow ``Run`` to log into: ``run_id`` when given (it must exist; left open), else
    a new run ``run_name`` in ``experiment`` that is closed FINISHED, or FAILED when the body raises.
    """
    if run_id is not None:
        yield client.get_run(run_id)  # fails early, naming the run, when it does not exist
        return
    exp_id = experiment_id(client, experiment, artifact_location)
    run = client.create_run(exp_id, run_name=run_name, tags=dict(tags or {}))
    logger.info("MLflow: new run %s (%r) in experiment %r", run.info.run_id, run_name, experiment)
    try:
        yield run
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")


def existing_run(client: Any, run_id: str | None, exp_id: str) -> Any:
    """The run ``run_id`` when it exists in experiment ``exp_id``, else None."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    return run if run.info.experiment_id == exp_id else None


def open_parent_run(
    client: Any,
    experiment: str,
    record: Path,
    tracking_uri: str,
    *,
    parent_run_id: str | None = None,
    name: str | None = None,
    tags: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
) -> str:
    """The parent run's id, recorded in ``record`` and marked RUNNING.

    ``parent_run_id`` forces the parent (it must exist); otherwise the one recorded in ``record``
    is reused if it exists on this tracking server, else a new one is created, named ``name``
    (default ``train-<timestamp>``), tagged ``tags`` and given ``params``.
    """
    exp_id = experiment_id(client, experiment)
    if parent_run_id is not None:
        if existing_run(client, parent_run_id, exp_id) is None:
            raise ValueError(
                f"MLflow parent run {parent_run_id!r} not found in experiment {experiment!r} at {tracking_uri}"
            )
    else:
        recorded = read_record(record)
        if recorded.get("tracking_uri") == tracking_uri and existing_run(client, recorded.get("run_id"), exp_id):
            parent_run_id = str(recorded["run_id"])
        else:
            run_name = name or f"train-{time.strftime('%Y%m%d-%H%M%S')}"
            parent_run_id = client.create_run(exp_id, run_name=run_name, tags=dict(tags or {})).info.run_id
            if params:
                log_params(client, parent_run_id, params)
            logger.info("MLflow: new parent run %s in experiment %r", parent_run_id, experiment)
    write_json_atomic(record, {"run_id": parent_run_id, "tracking_uri": tracking_uri, "experiment": experiment})
    client.update_run(parent_run_id, status="RUNNING")
    return parent_run_id


def open_nested_run(
    client: Any,
    experiment: str,
    record: Path,
    tracking_uri: str,
    parent_run_id: str,
    stage: str,
    *,
    resume: bool = True,
) -> str:
    """The id of ``stage``'s run nested under ``parent_run_id``, recorded in ``record``.

    With ``resume`` the recorded run is reopened when it belongs to the same parent; otherwise a
    fresh nested run (tags ``mlflow.parentRunId`` and ``stage``) is created.
    """
    exp_id = experiment_id(client, experiment)
    recorded = read_record(record)
    run = None
    if resume and recorded.get("parent_run_id") == parent_run_id:
        run = existing_run(client, recorded.get("run_id"), exp_id)
    if run is not None:
        run_id = run.info.run_id
        client.update_run(run_id, status="RUNNING")
        logger.info("MLflow: resuming stage run %s", run_id)
    else:
        run_id = client.create_run(exp_id, run_name=stage, tags={PARENT_TAG: parent_run_id, "stage": stage}).info.run_id
        logger.info("MLflow: stage %r run %s nested under %s", stage, run_id, parent_run_id)
    write_json_atomic(
        record,
        {"run_id": run_id, "parent_run_id": parent_run_id, "tracking_uri": tracking_uri, "experiment": experiment},
    )
    return str(run_id)


def read_record(path: Path) -> dict[str, Any]:
    """A run record (``mlflow_parent.json`` / ``mlflow_run.json``); {} when missing or unreadable."""
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


# -- logging -------------------------------------------------------------------------------------
def log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    """Log in batches; a value that differs from an earlier logged one is warned about, not
    raised (params are immutable in MLflow, e.g. when a resumed run's config changed)."""
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

    items = [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in params.items()]
    for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        chunk = items[start : start + MAX_PARAMS_TAGS_PER_BATCH]
        try:
            client.log_batch(run_id, params=chunk)
        except MlflowException as exc:
            logger.warning(
                "MLflow refused params %s..%s (changed since first logged?): %s", chunk[0].key, chunk[-1].key, exc
            )


def log_metrics(client: Any, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log ``metrics`` at ``step`` with one timestamp, in batches of 1000."""
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    items = [Metric(key, float(value), stamp, int(step)) for key, value in metrics.items()]
    for start in range(0, len(items), _METRIC_BATCH):
        client.log_batch(run_id, metrics=items[start : start + _METRIC_BATCH])


def set_tags(client: Any, run_id: str, tags: Mapping[str, Any]) -> None:
    """Set ``tags`` (values as strings) in one batch."""
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])


def log_files(client: Any, run_id: str, paths: Iterable[str | Path], artifact_path: str | None = None) -> None:
    """Upload files and folders (a folder's content goes under ``artifact_path``)."""
    for path in paths:
        if Path(path).is_dir():
            client.log_artifacts(run_id, str(path), artifact_path)
        else:
            client.log_artifact(run_id, str(path), artifact_path)
