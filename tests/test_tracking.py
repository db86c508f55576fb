"""srseg.tracking: the one MLflow module (URIs, tags, names, runs, logging), on a real local
SQLite store; the training's parent/nested runs on a real server are in tests/train/test_train_tracking.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from srseg import tracking
from srseg.tracking import GIT_COMMIT_ENV, flatten_metrics, flatten_params, git_commit, resolve_tracking_uri


@pytest.fixture()
def client(tmp_path: Path):  # noqa: ANN201 - an MlflowClient
    return tracking.make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_git_commit_falls_back_to_the_commit_recorded_in_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(GIT_COMMIT_ENV, raising=False)
    assert git_commit(cwd=tmp_path) is None  # no .git here, nothing recorded
    head = git_commit(cwd=Path(__file__).parent)
    assert head is None or len(head) == 40  # a checkout (None in a copy without .git)
    monkeypatch.setenv(GIT_COMMIT_ENV, "0123abcd")  # what the image's build argument sets
    assert git_commit(cwd=tmp_path) == "0123abcd"
    assert git_commit(cwd=Path(__file__).parent) == "0123abcd"  # the image's record wins over a mounted checkout
    monkeypatch.setenv(GIT_COMMIT_ENV, "  ")
    assert git_commit(cwd=tmp_path) is None


def test_tracking_uri_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri("sqlite:///mlflow.db") == "http://127.0.0.1:5000"


def test_relative_sqlite_store_is_anchored_at_the_dvc_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`dvc exp run --temp` runs in a copy under .dvc/tmp/exps with DVC_ROOT = the real repository:
    its runs must reach the project's store, not a throwaway one."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert resolve_tracking_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///other.db")
    assert resolve_tracking_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/other.db"
    monkeypatch.delenv("DVC_ROOT")
    assert resolve_tracking_uri("sqlite:///mlflow.db") == "sqlite:///other.db"


def test_flatten_params() -> None:
    flat = flatten_params({"train": {"loss": {"lambda_seg": 0.1}, "betas": (0.9, 0.99), "name": None}})
    assert flat == {"train.loss.lambda_seg": "0.1", "train.betas": "[0.9, 0.99]", "train.name": "None"}


def test_flatten_metrics_keeps_finite_numbers_and_intervals() -> None:
    flat = flatten_metrics(
        {
            "psnr_y": {"sr": 27.5, "gain": [0.1, 0.4], "ok": True, "note": "x", "missing": None, "bad": math.nan},
            "per class": {"sky/cloud": 3, "list": [1, 2, 3]},
        },
        "eval.",
    )
    assert flat == {
        "eval.psnr_y.sr": 27.5,
        "eval.psnr_y.gain_lo": 0.1,
        "eval.psnr_y.gain_hi": 0.4,
        "eval.per class.sky/cloud": 3.0,
    }
    assert flatten_metrics({"a(b)": {"c:d": 1}}) == {"a_b_.c_d": 1.0}  # characters MLflow refuses


def test_experiment_is_created_once_and_a_deleted_one_is_named(client) -> None:  # noqa: ANN001
    first = tracking.experiment_id(client, "exp-a")
    assert tracking.experiment_id(client, "exp-a") == first
    client.delete_experiment(first)
    with pytest.raises(ValueError, match="'exp-a' is deleted"):
        tracking.experiment_id(client, "exp-a")


def test_standalone_run_is_closed_finished_or_failed(client, tmp_path: Path) -> None:  # noqa: ANN001
    report = tmp_path / "report.md"
    report.write_text("# ok\n")
    with tracking.standalone_run(client, "exp-b", "evaluate", tags={"stage": "evaluate"}) as run:
        tracking.log_metrics(client, run.info.run_id, {"psnr_y": 27.0})
        tracking.log_params(client, run.info.run_id, {"scale": 4})
        tracking.set_tags(client, run.info.run_id, {"split": "val"})
        tracking.log_files(client, run.info.run_id, [report], artifact_path="evaluate")
    done = client.get_run(run.info.run_id)
    assert done.info.status == "FINISHED" and done.info.run_name == "evaluate"
    assert done.data.metrics == {"psnr_y": 27.0} and done.data.params == {"scale": "4"}
    assert done.data.tags["split"] == "val" and done.data.tags["stage"] == "evaluate"
    assert [f.path for f in client.list_artifacts(run.info.run_id, "evaluate")] == ["evaluate/report.md"]

    with pytest.raises(RuntimeError, match="boom"):
        with tracking.standalone_run(client, "exp-b", "evaluate") as failed:
            raise RuntimeError("boom")
    assert client.get_run(failed.info.run_id).info.status == "FAILED"


def test_standalone_run_logs_into_a_given_run_and_leaves_it_open(client) -> None:  # noqa: ANN001
    exp = tracking.experiment_id(client, "exp-c")
    outer = client.create_run(exp, run_name="training")
    with tracking.standalone_run(client, "exp-c", "ignored", run_id=outer.info.run_id) as run:
        assert run.info.run_id == outer.info.run_id
    assert client.get_run(outer.info.run_id).info.status == "RUNNING"
    with pytest.raises(Exception, match="nope"):
        with tracking.standalone_run(client, "exp-c", "x", run_id="nope"):
            pass


def test_parent_and_nested_runs_are_recorded_and_reopened(client, tmp_path: Path) -> None:  # noqa: ANN001
    uri = "sqlite:///same"  # what the records compare against
    parent = tracking.open_parent_run(client, "exp-d", tmp_path / tracking.PARENT_FILE, uri, params={"a": "1"})
    assert tracking.open_parent_run(client, "exp-d", tmp_path / tracking.PARENT_FILE, uri) == parent  # reused
    psnr = tracking.open_nested_run(client, "exp-d", tmp_path / "psnr" / tracking.STAGE_FILE, uri, parent, "psnr")
    assert client.get_run(psnr).data.tags[tracking.PARENT_TAG] == parent
    again = tracking.open_nested_run(client, "exp-d", tmp_path / "psnr" / tracking.STAGE_FILE, uri, parent, "psnr")
    fresh = tracking.open_nested_run(
        client, "exp-d", tmp_path / "psnr" / tracking.STAGE_FILE, uri, parent, "psnr", resume=False
    )
    assert again == psnr and fresh != psnr
    assert tracking.read_record(tmp_path / "psnr" / tracking.STAGE_FILE)["run_id"] == fresh
    other = tracking.open_parent_run(client, "exp-d", tmp_path / tracking.PARENT_FILE, "sqlite:///elsewhere")
    assert other != parent  # a record from another store is not reused
    with pytest.raises(ValueError, match="parent run 'missing' not found in experiment 'exp-d'"):
        tracking.open_parent_run(client, "exp-d", tmp_path / "p.json", uri, parent_run_id="missing")
