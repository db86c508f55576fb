"""``srseg register`` is idempotent: the same exported SR head never becomes a second version, and
registering it again points ``@challenger`` back at it (so promotion judges that head)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from srseg.config import parse_params
from srseg.models.io import sidecar_path
from srseg.stages import run_register


def _export_dir(root: Path, weights: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copy(weights, root / "sr_head.safetensors")
    shutil.copy(sidecar_path(weights), sidecar_path(root / "sr_head.safetensors"))
    (root / "MODEL_CARD.md").write_text("# test head\n")
    return root


def test_register_twice_adds_one_version_and_renominates(
    tmp_path: Path, sr_heads: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text("{}\n")
    params = parse_params(
        {
            "paths": {"data_root": str(tmp_path / "data")},
            "evaluate": {"output_dir": str(tmp_path / "no-evaluation")},
            "registry": {"model_name": "once"},
            "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        }
    )
    good = _export_dir(tmp_path / "good", sr_heads["nearest"])
    other = _export_dir(tmp_path / "other", sr_heads["random"])

    first = run_register(params, export_dir=good)
    assert (first["registered"], first["version"], first["aliases"]) == (True, "1", ["challenger"])
    again = run_register(params, export_dir=good)
    assert (again["registered"], again["version"], again["aliases"]) == (False, "1", ["challenger"])

    second = run_register(params, export_dir=other)
    assert (second["registered"], second["version"]) == (True, "2")
    back = run_register(params, export_dir=good)
    assert (back["registered"], back["version"], back["aliases"]) == (False, "1", ["challenger"])
    assert run_register(params, export_dir=other)["version"] == "2"


def test_the_kfp_register_step_run_twice_returns_the_same_version(
    tmp_path: Path, sr_heads: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The component function itself (as KFP calls it: artifacts in, artifacts out), run twice on
    the same export, e.g. a retried or re-submitted step: one version, and the second run's
    outputs name it with ``registered: false``."""
    import json

    import yaml
    from kfp.dsl import Artifact, Model
    from mlflow import MlflowClient

    from components.register import register

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text("{}\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params_file = tmp_path / "params.yaml"
    params_file.write_text(
        yaml.safe_dump(
            {
                "paths": {"data_root": str(tmp_path / "data")},
                "registry": {"model_name": "step-once"},
                "mlflow": {"tracking_uri": uri},
            }
        )
    )
    exported = Model(uri=str(_export_dir(tmp_path / "export", sr_heads["nearest"])))
    evaluation = Artifact(uri=str(tmp_path / "evaluation"), metadata={"mlflow_run_id": ""})
    outputs = []
    for attempt in range(2):
        registered = Artifact(uri=str(tmp_path / f"registered-{attempt}.json"))
        name, version, model_uri = register(Artifact(uri=str(params_file)), exported, evaluation, registered)
        record = json.loads(Path(registered.path).read_text())
        assert registered.metadata["model_version"] == version == record["version"]
        outputs.append((name, version, model_uri, record["registered"]))
    assert outputs == [
        ("step-once", "1", "models:/step-once/1", True),
        ("step-once", "1", "models:/step-once/1", False),
    ]
    assert [str(v.version) for v in MlflowClient(uri).search_model_versions("name='step-once'")] == ["1"]
