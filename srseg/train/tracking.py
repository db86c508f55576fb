"""MLflow tracking for training: one parent run per training, one nested run per stage.

The parent run id lives in ``<output_dir>/mlflow_parent.json`` so the GAN stage (a separate
process, possibly days later) nests under the same parent as the PSNR stage; a stage's own run id
lives in ``<output_dir>/<stage>/mlflow_run.json`` so a resumed stage keeps logging into the same
run. Opening, naming and logging are :mod:`srseg.tracking`'s; this module adds what training
needs on top: only rank 0 tracks (other ranks get a ``NullTracker``), and once a run is open a
failed logging call is logged as a warning and training goes on: losing a metric point is better
than losing a multi-day run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from srseg import tracking
from srseg.tracking import PARENT_FILE, STAGE_FILE

logger = logging.getLogger(__name__)

__all__ = ["MlflowTracker", "NullTracker", "Tracker"]


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
    ) -> MlflowTracker:
        """Find or create the experiment, the parent run and this stage's nested run.

        ``parent_run_id`` forces the parent (it must exist); otherwise the one recorded in
        ``output_dir`` is reused if it exists on this tracking server, else a new one is made and
        recorded, named ``parent_name`` (default ``train-<timestamp>``) and tagged ``parent_tags``.
        With ``resume`` the stage's recorded run is reopened when it belongs to the same parent;
        otherwise a fresh nested run is created.
        """
        output_dir = Path(output_dir)
        client = tracking.make_client(tracking_uri)
        parent_run_id = tracking.open_parent_run(
            client,
            experiment,
            output_dir / PARENT_FILE,
            tracking_uri,
            parent_run_id=parent_run_id,
            name=parent_name,
            tags=parent_tags,
            params=parent_params,
        )
        run_id = tracking.open_nested_run(
            client, experiment, output_dir / stage / STAGE_FILE, tracking_uri, parent_run_id, stage, resume=resume
        )
        return cls(client, run_id, parent_run_id)

    def _guard(self, what: str, func: Any, *args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except Exception as exc:  # tracking must never kill training
            logger.warning("MLflow %s failed (training continues): %s", what, exc)

    def log_params(self, params: Mapping[str, str]) -> None:
        self._guard("log_params", tracking.log_params, self.client, self.run_id, params)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._guard("log_metrics", tracking.log_metrics, self.client, self.run_id, metrics, step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._guard("set_tags", tracking.set_tags, self.client, self.run_id, tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._guard("log_artifact", self.client.log_artifact, self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        """Close the stage run; the parent is marked with the same status (a later stage reopens it)."""
        self._guard("set_terminated", self.client.set_terminated, self.run_id, status)
        if self.parent_run_id:
            self._guard("set_terminated", self.client.set_terminated, self.parent_run_id, status)
