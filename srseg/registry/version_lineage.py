"""Lineage tags of a new model version: the runs that made and scored its weights, the code and data
they came from, and the Kubeflow run.

The training and evaluate runs carry these facts as tags already (:mod:`srseg.lineage`); a version
copies them, so ``MlflowClient().get_model_version(name, v).tags`` answers "where does this model
come from" without following links:

==============================  ================================================================
``lineage.train_run_id``        the training stage run that wrote the weights (GAN stage)
``lineage.train_parent_run_id`` its parent run (the whole training: PSNR + GAN stages)
``lineage.evaluate_run_id``     the evaluate run that scored these weights (metrics on the card)
``git_commit``                  the commit training ran (the registering commit if unknown)
``data_manifest_sha256``        the training data's manifest checksum (the data root's if unknown)
``kfp.run_id``                  the KFP run that registered it, else the one that trained it
``register.git_commit``         the registering commit, when it differs from ``git_commit``
==============================  ================================================================

Applying a gate decision adds ``gate.evaluation_run_id`` (the stored scores it judged); a dry run
(the pipeline's gate step) writes no tag.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from srseg.config import Params
from srseg.fileio import read_json
from srseg.registry.aliases import make_client

logger = logging.getLogger(__name__)

TRAIN_RUN = "lineage.train_run_id"
TRAIN_PARENT_RUN = "lineage.train_parent_run_id"
EVALUATE_RUN = "lineage.evaluate_run_id"
PARENT_TAG = "mlflow.parentRunId"


def _run(client: MlflowClient, run_id: str) -> Any:
    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        logger.warning("lineage: run %s not found on this tracking server (%s)", run_id, exc.message)
        return None


def _export_record(export_dir: Path) -> dict[str, str]:
    path = export_dir / "export.json"
    data = read_json(path) if path.is_file() else {}
    lineage = data.get("lineage") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in (lineage or {}).items() if v}


def exported_method(params: Params) -> str:
    """The evaluate method that names the exported weights (``evaluate.compare[0]`` if none does)."""
    for name, spec in params.evaluate.methods.items():
        if spec == params.export.weights:
            return name
    return params.evaluate.compare[0]


def find_evaluation_run(client: MlflowClient, experiment: str, method: str, train_run_id: str) -> str:
    """The newest finished evaluate run tagged as having scored the weights of ``train_run_id``."""
    found = client.get_experiment_by_name(experiment)
    if found is None or not train_run_id:
        return ""
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=(
            f"tags.stage = 'evaluate' and tags.`lineage.{method}.train_run_id` = '{train_run_id}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else ""


def version_lineage(
    params: Params, export_dir: str | Path, tracking_uri: str, evaluation_run_id: str = ""
) -> dict[str, str]:
    """The lineage tags (table above) of the SR head exported to ``export_dir``; only those known.

    ``evaluation_run_id``: the evaluate run that scored the weights (the pipeline hands it over);
    empty -> the newest evaluate run tagged with the weights' training run.
    """
    from srseg.data.manifest import manifest_checksum
    from srseg.lineage import kfp_tags
    from srseg.tracking import git_commit

    client = make_client(tracking_uri)
    record = _export_record(Path(export_dir))
    train_run_id = record.get("train_run_id", "")
    train = _run(client, train_run_id)
    train_tags = dict(train.data.tags) if train is not None else {}
    parent = record.get("train_parent_run_id") or train_tags.get(PARENT_TAG, "")
    evaluate = evaluation_run_id or find_evaluation_run(
        client, params.mlflow.experiment, exported_method(params), train_run_id
    )
    here = git_commit() or ""
    data_root = Path(params.paths.data_root)
    tags = {
        TRAIN_RUN: train_run_id,
        TRAIN_PARENT_RUN: parent,
        EVALUATE_RUN: evaluate,
        "git_commit": train_tags.get("git_commit") or here,
        "data_manifest_sha256": train_tags.get("data.manifest_sha256")
        or (manifest_checksum(data_root) if (data_root / "manifest.json").is_file() else ""),
        "kfp.run_id": kfp_tags().get("kfp.run_id") or train_tags.get("kfp.run_id", ""),
    }
    if here and here != tags["git_commit"]:
        tags["register.git_commit"] = here
    missing = [k for k in (TRAIN_RUN, EVALUATE_RUN) if not tags[k]]
    if missing:
        logger.warning(
            "registering without %s: the weights' %s not found (export.json of %s, experiment %r)",
            ", ".join(missing),
            "runs were" if len(missing) > 1 else "run was",
            export_dir,
            params.mlflow.experiment,
        )
    return {k: v for k, v in tags.items() if v}
