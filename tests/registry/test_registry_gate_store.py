"""The gate's stored evaluations and a version's lineage, against a real ``mlflow server`` on real
COCO-Stuff report images: each model is scored once per evaluation set (a second gate scores
nothing and decides the same; the promote half applies the gate's verdict without scoring; a new
challenger is scored alone), the key follows the data, the settings and the scoring code, a
stale verdict is refused, and a registered version carries the runs that trained and scored it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ReportImages
from importgraph import ImportGraph, Ref
from mlflow import MlflowClient
from servers import MlflowServer, mlflow_server

from srseg.config import load_params
from srseg.data.manifest import Manifest, manifest_checksum
from srseg.models.io import sidecar_path
from srseg.registry import RegistryError, evalcache, log_and_register
from srseg.registry.evalcache import SCORING_CODE, evaluation_set, scoring_code_digest
from srseg.stages import run_apply_decision, run_evaluate, run_export, run_promote, run_register
from srseg.train.tracking import MlflowTracker

REPO = Path(__file__).resolve().parents[2]
TAGS = {"git_commit": "0123abcd", "data_manifest_sha256": "a" * 64}
NOT_SCORING = {
    "errors.py",
    "fileio.py",
    "export.py",
    "evaluate/stats.py",
    "evaluate/perclass.py",
    "tracking.py",  # the MLflow client the loader resolves models:/ URIs with
}  # no value depends on them


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow-gate-store")) as running:
        yield running


class Counting:
    """``srseg.stages.ship.run_evaluate``, counted: every scoring pass of the gate goes through it."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []

    def __call__(self, params: Any, **kwargs: Any) -> Any:
        self.calls.append(dict(kwargs.get("methods") or {}))
        return run_evaluate(params, **kwargs)


def _criteria(decision: dict) -> list[tuple]:
    return [(c["name"], c["difference"], c["ci_low"], c["passed"]) for c in decision["criteria"]]


@pytest.mark.timeout(900)
def test_each_model_is_scored_once_and_promote_applies_the_gates_verdict(
    server: MlflowServer, report_images: ReportImages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    counting = Counting()
    monkeypatch.setattr("srseg.stages.ship.run_evaluate", counting)
    uri, name = server.tracking_uri, "gate-store"
    client = MlflowClient(uri, registry_uri=uri)
    params = load_params(report_images.params(tmp_path / "params.yaml", name, uri))
    first = log_and_register(report_images.fitted, name, uri, tags=TAGS)

    gate = run_promote(params, dry_run=True)
    assert counting.calls == [{"challenger": f"models:/{name}/{first.version}", "bicubic": "bicubic"}]
    assert gate["action"] == "promote" and gate["passed"] and not gate["applied"]
    assert {role: s["cached"] for role, s in gate["evaluations"].items()} == {"challenger": False, "bicubic": False}

    again = run_promote(params, dry_run=True)  # the gate re-run (a retried step, a second dry run)
    assert len(counting.calls) == 1, counting.calls  # nothing scored again
    assert _criteria(again) == _criteria(gate) and again["reason"] == gate["reason"]
    assert {role: (s["cached"], s["run_id"]) for role, s in again["evaluations"].items()} == {
        role: (True, s["run_id"]) for role, s in gate["evaluations"].items()
    }
    assert client.get_run(gate["evaluations"]["bicubic"]["run_id"]).data.tags["srseg.eval.model"] == "bicubic"

    applied = run_apply_decision(params, again)  # the pipeline's promote step: the gate's second half
    assert len(counting.calls) == 1 and applied["applied"] and applied["action"] == "promote"
    assert str(client.get_registered_model(name).aliases["champion"]) == first.version
    assert (
        client.get_model_version(name, first.version).tags["gate.evaluation_run_id"]
        == gate["evaluations"]["challenger"]["run_id"]
    )

    second = log_and_register(report_images.nearest, name, uri, tags=TAGS)  # worse than bicubic
    verdict = run_promote(params, dry_run=True)
    assert counting.calls[1:] == [{"challenger": f"models:/{name}/{second.version}"}]  # champion and bicubic read back
    assert verdict["action"] == "reject" and verdict["evaluations"]["champion"]["cached"]
    with pytest.raises(RegistryError, match="aliases moved since the decision"):
        run_apply_decision(params, gate)  # a verdict about the old challenger is stale now
    assert str(client.get_registered_model(name).aliases["champion"]) == first.version

    changed = load_params(report_images.params(tmp_path / "fewer.yaml", name, uri, evaluate={"max_images": 5}))
    run_promote(changed, dry_run=True)  # another evaluation set: every model scored again, once
    assert counting.calls[2:] == [
        {
            "challenger": f"models:/{name}/{second.version}",
            "bicubic": "bicubic",
            "champion": f"models:/{name}/{first.version}",
        }
    ]


def test_evaluation_key_follows_the_images_the_settings_and_the_scoring_code(
    report_images: ReportImages, tmp_path: Path
) -> None:
    def key(**kwargs: Any) -> str:
        args = {"lr_root": report_images.lr_root, "exclude_ids": {139}, "lpips_weights": "none", **kwargs}
        return evaluation_set(report_images.root, "val2017", 4, **args).key

    base = key()
    assert key() == base and len(evaluation_set(report_images.root, "val2017", 4, exclude_ids={139}).image_ids) == 7
    assert key(exclude_ids=set()) != base and key(max_images=3) != base
    assert key(lr_root=None) != base  # LR made on the fly instead of the degrade stage's files
    assert key(lpips_weights="auto") != base  # real LPIPS weights (here: unavailable) vs random ones

    lr_copy = tmp_path / "lr"
    shutil.copytree(report_images.lr_root, lr_copy)
    assert key(lr_root=lr_copy) == base  # where the files live does not matter, their bytes do
    manifest = Manifest.load(lr_copy)
    first = manifest.splits["val2017"][1]
    manifest.splits["val2017"][1] = type(first)(**{**first.__dict__, "image_sha256": "0" * 64})
    manifest.save(lr_copy)
    assert key(lr_root=lr_copy) != base

    package = tmp_path / "srseg"
    shutil.copytree(REPO / "srseg", package, ignore=shutil.ignore_patterns("__pycache__"))
    assert scoring_code_digest(package) == scoring_code_digest()
    (package / "metrics.py").write_text((package / "metrics.py").read_text() + "\n# changed\n")
    assert scoring_code_digest(package) != scoring_code_digest()
    (package / "evaluate" / "report.py").write_text("# not scoring code\n")
    (package / "metrics.py").write_text((REPO / "srseg" / "metrics.py").read_text())
    assert scoring_code_digest(package) == scoring_code_digest()


def test_scoring_code_covers_what_computes_the_per_image_values() -> None:
    graph = ImportGraph(REPO, "srseg")
    roots = [
        Ref("srseg.evaluate.run", "_score_images"),
        Ref("srseg.evaluate.run", "_Source"),
        Ref("srseg.evaluate.methods", "load_method"),
        Ref("srseg.evaluate.run", "_load_lpips"),
        Ref("srseg.evaluate.niqe", "load_niqe_params"),
    ]
    closure = {path.relative_to(REPO / "srseg").as_posix() for path in graph.closure(roots)}

    def listed(path: str) -> bool:
        return any(path == entry or path.startswith(entry + "/") for entry in SCORING_CODE)

    assert sorted(p for p in closure - NOT_SCORING if not listed(p)) == []
    assert all((evalcache.PACKAGE_ROOT / entry).exists() for entry in SCORING_CODE)


@pytest.mark.timeout(900)
def test_registered_version_carries_the_runs_that_trained_and_scored_it(
    server: MlflowServer, report_images: ReportImages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("SRSEG_GIT_COMMIT", raising=False)
    uri, name = server.tracking_uri, "lineage"
    client = MlflowClient(uri, registry_uri=uri)
    # a training record as `srseg train` leaves it: parent + GAN stage run, run files beside the weights
    train_dir = tmp_path / "train"
    tracker = MlflowTracker.open(
        uri,
        "srseg",
        train_dir,
        "gan",
        parent_name="train-multitask-run-7",
        parent_tags={"branch": "multitask", "kfp.run_id": "run-7"},
    )
    tracker.set_tags(
        {
            "stage": "gan",
            "git_commit": "feedbeef" * 5,
            "kfp.run_id": "run-7",
            "data.manifest_sha256": manifest_checksum(report_images.root),
        }
    )
    tracker.finish()
    weights = train_dir / "gan" / "selected.safetensors"
    shutil.copy(report_images.fitted, weights)
    shutil.copy(sidecar_path(report_images.fitted), sidecar_path(weights))
    params = load_params(
        report_images.params(
            tmp_path / "params.yaml",
            name,
            uri,
            evaluate={
                "methods": {"multitask": str(weights), "bicubic": "bicubic"},
                "compare": ["multitask", "bicubic"],
                "seg_model": None,
                "gallery_crops": 0,
            },
            export={"weights": str(weights), "output_dir": str(tmp_path / "export")},
            train={"output_dir": str(tmp_path / "no-training-curves")},
        )
    )
    evaluation = run_evaluate(params)  # the evaluate stage, logged to MLflow with its lineage tags
    run_export(params)
    monkeypatch.setenv("SRSEG_KFP_RUN_ID", "run-8")  # registered by a later KFP run

    info = run_register(params)
    tags = client.get_model_version(name, info["version"]).tags
    assert (
        tags["lineage.train_run_id"] == tracker.run_id and tags["lineage.train_parent_run_id"] == tracker.parent_run_id
    )
    assert tags["lineage.evaluate_run_id"] == evaluation["meta"]["mlflow_run_id"]
    assert tags["git_commit"] == "feedbeef" * 5 and tags["data_manifest_sha256"] == manifest_checksum(
        report_images.root
    )
    assert tags["kfp.run_id"] == "run-8" and tags["sr_head_sha256"]
    assert client.get_run(info["run_id"]).data.tags["lineage.train_run_id"] == tracker.run_id  # the registering run too

    again = run_register(params)  # the same weights (a re-run of the register step): no new version
    assert (again["registered"], again["version"]) == (False, info["version"])
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
