"""End to end: the committed IR, reloaded with ``kfp.components.load_component_from_file``, runs
under ``kfp.local`` (SubprocessRunner, no venv) on the demo profile with the sample mirror, against
a real MLflow server whose artifacts live in S3 (SeaweedFS) on loopback, uploads the prepared
dataset to that S3, and ends with a registered model version that the gate refuses to promote
(a 2-iteration model does not beat bicubic by the required margin)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from srseg.config import deep_merge, load_params
from srseg.data.mirror import build_sample_mirror
from srseg.pipeline import PIPELINE_PACKAGE, commands, steps
from srseg.pipeline.preflight import code_digest

REPO = Path(__file__).resolve().parents[2]
# On top of the demo profile: 4 images per split, tiny CPU training (2 + 2 iterations of a
# 1-block, 8-feature generator on 32 px patches) for two seeds per arm, a 3-image study, Set5 as
# the only benchmark set and fewer bootstrap resamples.
TINY = {
    "download": {"subset_size": 4},
    "evaluate": {"bootstrap": 100, "gallery_crops": 1, "max_images": 2},
    "study": {"num_images": 3, "bootstrap": 100},
    "train": {
        "class_map": "coarse8",
        "generator": {"num_features": 8, "num_blocks": 1},
        "discriminator": {"num_features": 8},
        "loss": {"vgg_weights": "none", "perceptual_layer": "conv2_2"},
        "psnr_stage": {"iterations": 2, "lr": 1e-3, "val_every": 2, "checkpoint_every": 2},
        "gan_stage": {"iterations": 2, "lr": 1e-4, "val_every": 2, "checkpoint_every": 2},
        "batch_size": 2,
        "patch_size": 32,
        "num_workers": 0,
        "device": "cpu",
        "selection_images": 1,
        "val_samples": 1,
        "log_every": 1,
        "seeds": [0, 1],
    },
}


def step_outputs(pipeline_root: Path, task: str) -> dict:
    """The executor outputs of ``task`` (inside a loop: ``for-loop-1-iteration-<i>/<task>``)."""
    (run,) = [p for p in pipeline_root.iterdir() if p.is_dir()]
    return json.loads((run / task / "executor_output.json").read_text())


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_compiled_pipeline_runs_locally_to_a_registered_model(
    cocostuff_sample: Path, set5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient
    from registry.servers import mlflow_on_seaweed

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # it would override the pipeline's mlflow_uri
    monkeypatch.chdir(tmp_path)  # steps inherit the working directory; keep them out of the checkout
    mirror = build_sample_mirror(cocostuff_sample, tmp_path / "mirror")
    raw = load_params(REPO / "params.yaml", profile="demo").model_dump(mode="json")
    raw = deep_merge(deep_merge(raw, TINY), {"download": {"mirror": str(mirror)}})
    raw["benchmark"]["sets"] = {"set5": str(set5)}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))

    with mlflow_on_seaweed(tmp_path / "servers", bucket="srseg") as (server, s3, destination):
        # the steps are subprocesses of this one: S3 credentials reach them through the environment
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
        monkeypatch.setenv("AWS_DEFAULT_REGION", s3.region)
        run = commands.run_local(
            params_file,
            None,
            package=REPO / PIPELINE_PACKAGE,
            work_dir=tmp_path / "work",
            pipeline_root=tmp_path / "kfp",
            arguments={
                "mlflow_uri": server.tracking_uri,
                "s3_bucket": "srseg",
                "s3_prefix": "cocostuff",
                "s3_endpoint_url": s3.endpoint_url,
            },
        )
        keys = [
            o["Key"]
            for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket="srseg")
            for o in page.get("Contents", [])
        ]
        assert "cocostuff/manifest.json" in keys  # the prepared dataset was uploaded
        assert any(k.startswith("artifacts/") and k.endswith("sr_head.safetensors") for k in keys)  # MLflow -> S3
        match = re.fullmatch(r"models:/([^/]+)/(\d+)", run.model_uri)
        assert match, run.model_uri
        name, version = match.groups()
        client = MlflowClient(server.tracking_uri)
        registered = client.get_model_version(name, version)
        # two training iterations of a bicubic-residual net stay at bicubic quality: the gate's floor
        # refuses them, so the promote step never runs and no version becomes champion
        assert step_outputs(run.pipeline_root, "gate")["parameterValues"]["Output"] is False
        assert "champion" not in client.get_registered_model(name).aliases

        # one ParallelFor iteration per seed trained both arms with that seed, in train.seeds order
        collected = {
            (seed, task): step_outputs(run.pipeline_root, f"for-loop-1-iteration-{seed}/{task}")["artifacts"]["model"][
                "artifacts"
            ][0]["metadata"]
            for seed in (0, 1)
            for task in ("collect-model", "collect-model-2")
        }
        assert {(key, meta["seed"], meta["branch"]) for key, meta in collected.items()} == {
            ((s, t), s, b) for s in (0, 1) for t, b in (("collect-model", "multitask"), ("collect-model-2", "sr_only"))
        }
        assert len({meta["mlflow_run_id"] for meta in collected.values()}) == 4  # four trainings
        model = collected[0, "collect-model"]  # the first seed's: the one exported and registered
        assert model["branch"] == "multitask" and model["lambda_seg"] > 0
        assert client.get_run(model["mlflow_run_id"]).data.tags["stage"] == "gan"
        assert client.get_run(model["mlflow_parent_run_id"]).info.status == "FINISHED"
        ablation = collected[0, "collect-model-2"]
        assert ablation["branch"] == "sr_only" and ablation["lambda_seg"] == 0.0
        link = step_outputs(run.pipeline_root, "register")["artifacts"]["registered"]["artifacts"][0]["metadata"]
        assert (link["model_name"], link["model_version"]) == (name, version)
        assert link["mlflow_run_id"] == registered.run_id and link["training_mlflow_run_id"] == model["mlflow_run_id"]
        dataset = step_outputs(run.pipeline_root, "download")["artifacts"]["dataset"]["artifacts"][0]["metadata"]
        assert registered.tags["data_manifest_sha256"] == dataset["manifest_sha256"]  # registry -> data lineage
        # the model artifact is keyed on its weights' content; evaluation links to the training runs
        assert model["weights_sha256"] == steps.weights_digest(model["train_dir"])
        results = step_outputs(run.pipeline_root, "evaluate")["artifacts"]["results"]["artifacts"][0]["metadata"]
        evaluation = client.get_run(results["mlflow_run_id"]).data.tags
        for seed in (0, 1):  # one model per seed and arm (multitask@seed0 -> a tag-safe multitask_seed0)
            assert (
                evaluation[f"lineage.multitask_seed{seed}.train_run_id"]
                == collected[seed, "collect-model"]["mlflow_run_id"]
            )
            assert (
                evaluation[f"lineage.sr_only_seed{seed}.train_parent_run_id"]
                == collected[seed, "collect-model-2"]["mlflow_parent_run_id"]
            )
        assert client.get_run(model["mlflow_parent_run_id"]).info.run_name.startswith("train-multitask-")
        # the version carries the runs that trained and scored it; the gate links to the scores it judged
        assert registered.tags["lineage.train_run_id"] == model["mlflow_run_id"]
        assert registered.tags["lineage.train_parent_run_id"] == model["mlflow_parent_run_id"]
        assert registered.tags["lineage.evaluate_run_id"] == results["mlflow_run_id"]
        verdict = step_outputs(run.pipeline_root, "gate")["artifacts"]["verdict"]["artifacts"][0]["metadata"]
        assert verdict["challenger_uri"] == run.model_uri and verdict["challenger_scored_here"] is True
        scores = client.get_run(verdict["challenger_scores_run_id"]).data.tags
        assert scores["srseg.eval.model"] == f"sha256:{registered.tags['sr_head_sha256']}"
        # the gate step only judges: the rejected version keeps no gate tags (the verdict links to its scores)
        assert not {k for k in registered.tags if k.startswith("gate")}, registered.tags
        # the science report's study section comes from the study-analyze step (no votes in a fresh run)
        (summary,) = [p for p in run.pipeline_root.glob("*/report/summary") if p.is_file()]
        assert "No votes analysed yet (no `analysis.json` in `" in summary.read_text()
        assert "/study-analyze/results`" in summary.read_text()  # this run's study step, not a default path
        checks = step_outputs(run.pipeline_root, "preflight")["artifacts"]["checks"]["artifacts"][0]["metadata"]
        assert checks["code_version"] == code_digest() and checks["in_kubernetes"] is False  # ran first, here

    # the dataset stayed on the volume stand-in; the Dataset artifact is only its manifest
    assert dataset["path"] == str(tmp_path / "work" / "data" / "cocostuff")
    assert dataset["images"] == {"train2017": 4, "val2017": 4}
    assert (tmp_path / "work" / "data" / "lr" / "manifest.json").is_file()


def test_a_local_run_leaves_print_and_logging_as_it_found_them() -> None:
    """kfp.local's ParallelFor threads swap ``builtins.print`` and the root logger in and out; when
    two iterations interleave (enter A, enter B, exit A, exit B) kfp leaves B's swap behind. The
    wrapper around the local run puts both back."""
    import builtins
    import logging

    from kfp.local import logging_utils

    root = logging.getLogger()
    before = (builtins.print, root.handlers[:], root.level)
    with commands._restored_print_and_logging():
        for make in (logging_utils.indented_print, logging_utils.local_logger_context):
            first, second = make(), make()
            first.__enter__()
            second.__enter__()
            first.__exit__(None, None, None)
            second.__exit__(None, None, None)
        assert builtins.print is not before[0]  # the interleaving leaked, as on CI
    assert (builtins.print, root.handlers[:], root.level) == before
