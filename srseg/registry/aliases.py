"""The registry's alias names and client: what both the writers (register, promote, rollback) and
read-only callers (the gate study, which looks up the versions the aliases point to) need, so a
reader does not import the writing code."""

from __future__ import annotations

from mlflow import MlflowClient

CHALLENGER = "challenger"
CHAMPION = "champion"


def make_client(tracking_uri: str | None) -> MlflowClient:
    """A client using ``tracking_uri`` for tracking and registry (None: ``MLFLOW_TRACKING_URI``)."""
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
