"""Lineage tags that link MLflow runs to each other and to the Kubeflow run that made them.

- :func:`kfp_tags`: the KFP run id (and the step's pod) from the environment. The pipeline puts
  the run id into every step's environment from the pod label ``pipeline/runid`` that the KFP
  backend sets (Kubernetes downward API), so it costs no step input and leaves cache keys alone.
  Outside KFP the dict is empty.
- :func:`branch_of`: ``multitask`` or ``sr_only`` (the ablation, ``lambda_seg == 0``), the name
  training runs carry.
- :func:`training_runs` / :func:`evaluation_tags`: the training runs behind a weights file, read
  from the run records training writes next to its outputs (``mlflow_run.json`` in the stage
  folder, ``mlflow_parent.json`` one level up; the pipeline copies both into its model
  artifacts), as tags for the evaluation run. Registry-side tags copy these from the runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from srseg.fileio import read_json
from srseg.tracking import PARENT_FILE, STAGE_FILE

if TYPE_CHECKING:
    from srseg.config import Params

KFP_RUN_ID_ENV = "SRSEG_KFP_RUN_ID"  # set by the pipeline from the pod label pipeline/runid
KFP_POD_ENV = "SRSEG_KFP_POD"  # set by the pipeline from the pod name


def kfp_tags() -> dict[str, str]:
    """``kfp.run_id`` / ``kfp.pod`` for the current step, only those the environment has."""
    values = {"kfp.run_id": os.environ.get(KFP_RUN_ID_ENV, ""), "kfp.pod": os.environ.get(KFP_POD_ENV, "")}
    return {k: v.strip() for k, v in values.items() if v and v.strip()}


def branch_of(params: Params) -> str:
    """``sr_only`` for the SR-only ablation (no segmentation loss), else ``multitask``."""
    return "sr_only" if params.train.loss.lambda_seg == 0 else "multitask"


def _run_id(path: Path) -> str:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return ""
    return str(data.get("run_id") or "") if isinstance(data, dict) else ""


def training_runs(weights: str | Path) -> dict[str, str]:
    """``{"run_id", "parent_run_id"}`` of the training that wrote ``weights`` (those found)."""
    folder = Path(weights).parent
    found = {"run_id": _run_id(folder / STAGE_FILE)}
    for candidate in (folder / PARENT_FILE, folder.parent / PARENT_FILE):
        if candidate.is_file():
            found["parent_run_id"] = _run_id(candidate)
            break
    return {k: v for k, v in found.items() if v}


def evaluation_tags(methods: Mapping[str, str]) -> dict[str, str]:
    """``lineage.<method>.train_run_id`` / ``..._parent_run_id`` for every method given as a weights
    file with training records, plus the KFP tags: the evaluation run's links."""
    tags = dict(kfp_tags())
    for name, spec in methods.items():
        if "://" in spec or spec == "bicubic" or not Path(spec).is_file():
            continue
        for key, run_id in training_runs(spec).items():
            tags[f"lineage.{name}.train_{key}"] = run_id
    return tags
