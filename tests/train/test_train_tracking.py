"""MLflow tracking against a real ``mlflow server`` (SQLite backend, proxied artifacts) on
loopback: parent run with nested PSNR and GAN stage runs, params, metrics, tags, image artifacts
(the helpers themselves are tested in tests/test_tracking.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from trainkit import tiny_params

from srseg.data.manifest import manifest_checksum
from srseg.fileio import read_json
from srseg.stages.train import run_train
from srseg.tracking import PARENT_TAG, git_commit


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real tracking server on 127.0.0.1 (port 0, read back); stopped by PID at teardown."""
    from registry.servers import mlflow_server as start_mlflow_server

    with start_mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as server:
        yield server.tracking_uri


def test_parent_and_nested_stage_runs_on_a_real_server(
    mlflow_server: str, prepared_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    unused_db = tmp_path / "must_not_exist.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # wins over params.mlflow.tracking_uri
    monkeypatch.setenv("SRSEG_KFP_RUN_ID", "kfp-run-42")  # what the pipeline sets from the pod label pipeline/runid
    params = tiny_params(
        prepared_root,
        tmp_path / "out",
        {
            "mlflow": {"enabled": True, "tracking_uri": f"sqlite:///{unused_db}", "experiment": "srseg-test"},
            "train": {"psnr_stage": {"iterations": 4, "val_every": 2}, "gan_stage": {"iterations": 2, "val_every": 2}},
        },
    )
    psnr = run_train(params, "psnr")
    gan = run_train(params, "gan")
    assert not unused_db.exists()
    assert psnr["parent_run_id"] == gan["parent_run_id"] and psnr["run_id"] != gan["run_id"]
    recorded = read_json(tmp_path / "out" / "mlflow_parent.json")
    assert recorded["run_id"] == psnr["parent_run_id"] and recorded["tracking_uri"] == mlflow_server

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("srseg-test")
    children = client.search_runs([experiment.experiment_id], f"tags.`{PARENT_TAG}` = '{psnr['parent_run_id']}'")
    assert sorted(r.data.tags["stage"] for r in children) == ["gan", "psnr"]
    parent = client.get_run(psnr["parent_run_id"])
    assert parent.data.params["train.loss.lambda_seg"] == "0.1"
    # lineage: the branch and the KFP run in the parent's name and tags, and on every stage run
    assert parent.info.run_name == "train-multitask-kfp-run-42"
    assert parent.data.tags["branch"] == "multitask" and parent.data.tags["kfp.run_id"] == "kfp-run-42"
    assert all(r.data.tags["kfp.run_id"] == "kfp-run-42" and r.data.tags["branch"] == "multitask" for r in children)

    for summary, stage, steps in ((psnr, "psnr", [2, 4]), (gan, "gan", [2])):
        run = client.get_run(summary["run_id"])
        assert run.info.status == "FINISHED"
        params_logged = run.data.params
        assert params_logged["train.generator.num_features"] == "8"
        assert params_logged["train.adam_betas"] == "[0.9, 0.99]"
        tags = run.data.tags
        assert tags["data.manifest_sha256"] == manifest_checksum(prepared_root)
        commit = git_commit()  # None outside a git checkout (e.g. an image without .git)
        assert tags.get("git_commit") == commit and tags.get("mlflow.source.git.commit") == commit
        assert tags["sys.torch_version"] and tags["sys.device_name"] == "cpu" and tags["sys.world_size"] == "1"
        history = client.get_metric_history(summary["run_id"], "train/pixel")
        assert [m.step for m in history] == steps  # log_every = 2
        val = client.get_metric_history(summary["run_id"], "val/psnr_y")
        assert val and all(m.value == m.value for m in val)  # present and not NaN
        assert "val/miou" in run.data.metrics and "best/psnr_y" in run.data.metrics
        artifacts = {a.path for a in client.list_artifacts(summary["run_id"])}
        assert {"config.yaml", "class_map.json", "metrics.json", "samples", "plots"} <= artifacts
        samples = [a.path for a in client.list_artifacts(summary["run_id"], "samples")]
        assert samples and all(p.endswith(".png") for p in samples)
        local = client.download_artifacts(summary["run_id"], samples[-1], str(tmp_path / f"dl_{stage}"))
        assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gan_metrics = client.get_run(gan["run_id"]).data.metrics
    assert {"train/adv_g", "train/d", "train/perceptual"} <= set(gan_metrics)
    # a random-weight VGG19 loss was asked for (trainkit): the run says so, the PSNR stage has none
    gan_tags, psnr_tags = client.get_run(gan["run_id"]).data.tags, client.get_run(psnr["run_id"]).data.tags
    assert gan_tags["train.random_vgg_weights"] == "true" and psnr_tags["train.random_vgg_weights"] == "false"
    assert (
        gan_tags["train.perceptual_loss"].startswith("random-weight VGG19")
        and gan_tags["train.selection_rule"] == "final_ema"
    )
