"""srseg.lineage: the KFP run from the environment, the training runs behind a weights file (in the
training layout and in the pipeline's model artifacts), and an evaluation run that carries both as
tags (run_evaluate into a real MLflow store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from srseg.lineage import branch_of, evaluation_tags, kfp_tags, training_runs
from srseg.models.generator import MultiTaskSRNet
from srseg.models.io import save_generator


def _records(folder: Path, stage_run: str, parent_run: str | None, parent_beside: bool) -> Path:
    """A weights file with the run records training writes (the parent one level up, or beside it
    as in a pipeline model artifact)."""
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = MultiTaskSRNet(scale=4, num_features=8, num_blocks=1, num_classes=9, first_kernel_size=3)
    weights = save_generator(net, folder / "best.safetensors")
    (folder / "mlflow_run.json").write_text(json.dumps({"run_id": stage_run}))
    if parent_run is not None:
        (folder if parent_beside else folder.parent).joinpath("mlflow_parent.json").write_text(
            json.dumps({"run_id": parent_run})
        )
    return weights


def test_kfp_tags_and_branch(monkeypatch: pytest.MonkeyPatch) -> None:
    from srseg.config import Params

    monkeypatch.delenv("SRSEG_KFP_RUN_ID", raising=False)
    monkeypatch.setenv("SRSEG_KFP_POD", " ")
    assert kfp_tags() == {}  # outside KFP: nothing, not empty strings
    monkeypatch.setenv("SRSEG_KFP_RUN_ID", "run-1")
    monkeypatch.setenv("SRSEG_KFP_POD", "srseg-training-abc-1234")
    assert kfp_tags() == {"kfp.run_id": "run-1", "kfp.pod": "srseg-training-abc-1234"}
    params = Params()
    ablation = params.model_copy(
        update={
            "train": params.train.model_copy(update={"loss": params.train.loss.model_copy(update={"lambda_seg": 0.0})})
        }
    )
    assert branch_of(params) == "multitask" and branch_of(ablation) == "sr_only"


def test_training_runs_behind_weights_in_both_layouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SRSEG_KFP_RUN_ID", raising=False)
    trained = _records(tmp_path / "outputs" / "train" / "gan", "gan-run", "parent-run", parent_beside=False)
    artifact = _records(tmp_path / "kfp" / "model", "gan-run-2", "parent-run-2", parent_beside=True)
    bare = _records(tmp_path / "bare", "x", None, parent_beside=True)
    (tmp_path / "bare" / "mlflow_run.json").unlink()
    assert training_runs(trained) == {"run_id": "gan-run", "parent_run_id": "parent-run"}
    assert training_runs(artifact) == {"run_id": "gan-run-2", "parent_run_id": "parent-run-2"}
    assert training_runs(bare) == {}
    tags = evaluation_tags(
        {
            "multitask": str(trained),
            "sr_only": str(artifact),
            "bicubic": "bicubic",
            "champion": "models:/srseg-sr-x4@champion",
            "plain": str(bare),
        }
    )
    assert tags == {
        "lineage.multitask.train_run_id": "gan-run",
        "lineage.multitask.train_parent_run_id": "parent-run",
        "lineage.sr_only.train_run_id": "gan-run-2",
        "lineage.sr_only.train_parent_run_id": "parent-run-2",
    }


def test_evaluation_run_is_tagged_with_its_training_runs(
    cocostuff_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient
    from train.trainkit import build_prepared_root, tiny_params

    from srseg.stages import run_evaluate

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SRSEG_KFP_RUN_ID", "run-9")
    # two val images: one chooses checkpoints (selection), the other is reported
    root = build_prepared_root(cocostuff_sample, tmp_path / "data", train_ids=(17914,), val_ids=(1503, 139), crop=32)
    weights = _records(tmp_path / "model", "gan-run", "parent-run", parent_beside=True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = tiny_params(
        root,
        tmp_path / "train",
        {
            "train": {"class_map": "coarse8", "selection_images": 1},
            "mlflow": {"enabled": True, "tracking_uri": uri, "experiment": "srseg-lineage"},
            "evaluate": {
                "methods": {"multitask": str(weights), "bicubic": "bicubic"},
                "compare": ["multitask", "bicubic"],
                "seg_model": None,
                "lpips_weights": "none",
                "bootstrap": 10,
                "gallery_crops": 0,
                "max_images": 1,
                "output_dir": str(tmp_path / "eval"),
            },
        },
    )
    result = run_evaluate(params)
    tags = MlflowClient(uri).get_run(result["meta"]["mlflow_run_id"]).data.tags
    assert tags["lineage.multitask.train_run_id"] == "gan-run"
    assert tags["lineage.multitask.train_parent_run_id"] == "parent-run"
    assert tags["kfp.run_id"] == "run-9"
