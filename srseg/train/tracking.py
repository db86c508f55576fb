"""MLflow tracking for training: one parent run per training, one nested run per stage.

The parent run id lives in ``<output_dir>/mlflow_parent.json`` so the GAN stage (a separate
process, possibly days later) nests under the same parent as the PSNR stage; a stage's own run id
lives in ``<output_dir>/<stage>/mlflow_run.json`` so a resumed stage keeps logging into the same
run. Nesting is MLflow's standard ``mlflow.parentRunId`` tag. Everything goes through an explicit
``MlflowClient`` (no fluent API, so no process-global active run).

The tracking URI is ``params.mlflow.tracking_uri`` (default ``sqlite:///mlflow.db``) unless the
environment variable ``MLFLOW_TRACKING_URI`` is set, which wins. Only rank 0 tracks; other ranks
get a ``NullTracker``. Once a run is open, a failed logging call is logged as a warning and
training goes on: losing a metric point is better than losing a multi-day run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from srseg.fileio import read_json, write_json_atomic

logger = logging.getLogger(__name__)

PARENT_FILE = "mlflow_parent.json"
STAGE_FILE = "mlflow_run.json"
PARENT_TAG = "mlflow.parentRunId"
_SQLITE = "sqlite:///"


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


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"loss": {"lambda_seg": 0.1}}}`` -> ``{"train.loss.lambda_seg": "0.1"}``."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(list(value))
        else:
            flat[name] = str(value)
    return flat


GIT_COMMIT_ENV = "SRSEG_GIT_COMMIT"  # set by the image (build argument GIT_COMMIT): it has no .git


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


class Tracker:
    """Interface of a training tracker; this base class does nothing (non-zero ranks, tests)."""

    run_id: str | None = None
    parent_run_id: str | None = None

    def log_params(self, params: Mapping[str, str]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass


NullTracker = Tracker


class MlflowTracker(Tracker):
    """A stage's nested MLflow run; build it with ``MlflowTracker.open``."""

    def __init__(self, client: Any, run_id: str, parent_run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.parent_run_id = parent_run_id

    @classmethod
    def open(
        cls,
        tracking_uri: str,
        experiment: str,
        output_dir: str | Path,
        stage: str,
        parent_run_id: str | None = None,
        resume: bool = True,
        parent_params: Mapping[str, str] | None = None,
        parent_name: str | None = None,
        parent_tags: Mapping[str, str] | None = None,
    ) -> "MlflowTracker":
        """Find or create the experiment, the parent run and this stage's nested run.

        ``parent_run_id`` forces the parent (it must exist); otherwise the one recorded in
        ``output_dir`` is reused if it exists on this tracking server, else a new one is made and
        recorded, named ``parent_name`` (default ``train-<timestamp>``) and tagged ``parent_tags``.
        With ``resume`` the stage's recorded run is reopened when it belongs to the same parent;
        otherwise a fresh nested run is created.
        """
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        output_dir = Path(output_dir)
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment_id = _experiment_id(client, experiment)

        def existing(run_id: str | None) -> Any:
            if not run_id:
                return None
            try:
                run = client.get_run(run_id)
            except MlflowException:
                return None
            return run if run.info.experiment_id == experiment_id else None

        parent_file = output_dir / PARENT_FILE
        if parent_run_id is not None:
            if existing(parent_run_id) is None:
                raise ValueError(
                    f"MLflow parent run {parent_run_id!r} not found in experiment {experiment!r} at {tracking_uri}"
                )
        else:
            recorded = _read_record(parent_file)
            if recorded.get("tracking_uri") == tracking_uri and existing(recorded.get("run_id")) is not None:
                parent_run_id = recorded["run_id"]
            else:
                run = client.create_run(experiment_id, run_name=parent_name or f"train-{time.strftime('%Y%m%d-%H%M%S')}",
                                        tags=dict(parent_tags or {}))
                parent_run_id = run.info.run_id
                if parent_params:
                    _log_params(client, parent_run_id, parent_params)
                logger.info("MLflow: new parent run %s in experiment %r", parent_run_id, experiment)
        write_json_atomic(parent_file, {"run_id": parent_run_id, "tracking_uri": tracking_uri, "experiment": experiment})
        client.update_run(parent_run_id, status="RUNNING")

        stage_file = output_dir / stage / STAGE_FILE
        recorded = _read_record(stage_file)
        run_id = None
        if resume and recorded.get("parent_run_id") == parent_run_id:
            run = existing(recorded.get("run_id"))
            if run is not None:
                run_id = run.info.run_id
                client.update_run(run_id, status="RUNNING")
                logger.info("MLflow: resuming stage run %s", run_id)
        if run_id is None:
            run = client.create_run(experiment_id, run_name=stage, tags={PARENT_TAG: parent_run_id, "stage": stage})
            run_id = run.info.run_id
            logger.info("MLflow: stage %r run %s nested under %s", stage, run_id, parent_run_id)
        write_json_atomic(
            stage_file, {"run_id": run_id, "parent_run_id": parent_run_id, "tracking_uri": tracking_uri, "experiment": experiment}
        )
        return cls(client, run_id, parent_run_id)

    def _guard(self, what: str, func: Any, *args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except Exception as exc:  # tracking must never kill training
            logger.warning("MLflow %s failed (training continues): %s", what, exc)

    def log_params(self, params: Mapping[str, str]) -> None:
        self._guard("log_params", _log_params, self.client, self.run_id, params)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, int(step)) for key, value in metrics.items()]
        self._guard("log_metrics", self.client.log_batch, self.run_id, metrics=items)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(key, str(value)) for key, value in tags.items()]
        self._guard("set_tags", self.client.log_batch, self.run_id, tags=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._guard("log_artifact", self.client.log_artifact, self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        """Close the stage run; the parent is marked with the same status (a later stage reopens it)."""
        self._guard("set_terminated", self.client.set_terminated, self.run_id, status)
        if self.parent_run_id:
            self._guard("set_terminated", self.client.set_terminated, self.parent_run_id, status)


def _experiment_id(client: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage != "active":
            raise ValueError(f"MLflow experiment {name!r} is deleted; restore it or choose another name")
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # created concurrently by another process
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _read_record(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _log_params(client: Any, run_id: str, params: Mapping[str, str]) -> None:
    """Log in batches of 100; a value that differs from an earlier logged one is warned about
    (params are immutable in MLflow, e.g. when a resumed run's config changed)."""
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

    items = [Param(k, str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in params.items()]
    for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        chunk = items[start : start + MAX_PARAMS_TAGS_PER_BATCH]
        try:
            client.log_batch(run_id, params=chunk)
        except MlflowException as exc:
            logger.warning("MLflow refused params %s..%s (changed since first logged?): %s", chunk[0].key, chunk[-1].key, exc)
