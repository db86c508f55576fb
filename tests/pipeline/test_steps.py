"""The component glue in ``srseg.pipeline.steps``: pipeline parameters onto params, step requests
that key KFP's cache on the sections a step reads and the code, run folders keyed by training
params and data, the files (and weight digest) a trained model is made of, and reports fit for the
KFP UI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from srseg.config import ConfigError
from srseg.pipeline import steps
from srseg.pipeline.overrides import OVERRIDE_NAMES, override_strings

REPO = Path(__file__).resolve().parents[2]


def test_overrides_keep_params_values_unless_set(tmp_path: Path) -> None:
    assert override_strings("/mnt/srseg", {}) == [
        'paths.data_root="/mnt/srseg/data/cocostuff"',
        'paths.lr_root="/mnt/srseg/data/lr"',
    ]
    values = dict(
        data_mode="full",
        subset_size=5,
        mirror="none",
        scale=2,
        mlflow_uri="http://mlflow:5000",
        s3_bucket="b",
        s3_prefix="p",
        s3_endpoint_url="",
    )
    params = steps.resolve_params("", "", override_strings("/w", values), base_dir=REPO)
    assert params.download.mode == "full" and params.download.subset_size == 5 and params.download.mirror is None
    assert params.download.upload is not None and (params.download.upload.bucket, params.download.upload.prefix) == (
        "b",
        "p",
    )
    assert params.degrade.scale == params.train.scale == 2
    assert params.mlflow.tracking_uri == "http://mlflow:5000"
    with pytest.raises(ValueError, match="work_dir"):
        override_strings("", {})
    with pytest.raises(ValueError, match="unknown run-time overrides.*'lamda_seg'"):
        override_strings("/w", {"lamda_seg": 0.1})


def test_the_pipeline_and_its_component_take_exactly_the_runtime_overrides() -> None:
    """Adding an override is one entry in RUNTIME_OVERRIDES plus the parameter in both signatures."""
    import inspect

    from components.params import resolve_params
    from pipelines.training_pipeline import build_pipeline

    pipeline_inputs = set(build_pipeline().pipeline_spec.root.input_definitions.parameters)
    component_inputs = set(inspect.signature(resolve_params).parameters)
    for name in OVERRIDE_NAMES:
        assert name in pipeline_inputs and name in component_inputs, name
    not_overrides = {"params", "params_yaml", "profile", "work_dir", "code_version"}
    assert component_inputs - not_overrides == set(OVERRIDE_NAMES)


def test_resolve_params_from_content_or_file_with_profile(tmp_path: Path) -> None:
    overrides = override_strings(str(tmp_path), {"scale": 3})
    from_repo = steps.resolve_params("", "paper", overrides, base_dir=REPO)
    assert from_repo.profile == "paper" and from_repo.download.mode == "full" and from_repo.train.scale == 3
    assert from_repo.paths.data_root == str(tmp_path / "data" / "cocostuff")
    content = steps.resolve_params("download: {subset_size: 2}\n", "", overrides, base_dir=tmp_path)
    assert content.download.subset_size == 2
    assert steps.read_params(steps.write_params(tmp_path / "p.yaml", content)) == content
    with pytest.raises(ConfigError, match="download.subset_size"):
        steps.resolve_params("download: {subset_size: 0}\n", "", overrides)
    with pytest.raises(ConfigError, match="params_yaml is empty"):
        steps.resolve_params("", "", overrides, base_dir=tmp_path)


def test_branch_run_folders_depend_on_params_and_data(tmp_path: Path) -> None:
    params = steps.resolve_params("", "", override_strings(str(tmp_path), {}), base_dir=REPO)
    multitask = steps.branch_params(params, tmp_path, "multitask", -1.0, "sha-a")
    ablation = steps.branch_params(params, tmp_path, "sr_only", 0.0, "sha-a")
    assert multitask.train.loss.lambda_seg == params.train.loss.lambda_seg and ablation.train.loss.lambda_seg == 0.0
    assert Path(multitask.train.output_dir).parent.parent == tmp_path / "runs"
    assert Path(multitask.train.output_dir).name == "multitask"
    again = steps.branch_params(params, tmp_path, "multitask", -1.0, "sha-a")
    assert again.train.output_dir == multitask.train.output_dir  # a retry resumes the same checkpoints
    assert (
        steps.branch_params(params, tmp_path, "multitask", -1.0, "sha-b").train.output_dir != multitask.train.output_dir
    )
    other_stage = params.model_copy(update={"evaluate": params.evaluate.model_copy(update={"bootstrap": 7})})
    assert (
        steps.branch_params(other_stage, tmp_path, "multitask", -1.0, "sha-a").train.output_dir
        == multitask.train.output_dir
    )
    other_batch = params.model_copy(
        update={"train": params.train.model_copy(update={"batch_size": params.train.batch_size + 1})}
    )
    assert (
        steps.branch_params(other_batch, tmp_path, "multitask", -1.0, "sha-a").train.output_dir
        != multitask.train.output_dir
    )
    sweep = params.model_copy(update={"train": params.train.model_copy(update={"seeds": (0, 5)})})
    seeded = {seed: steps.branch_params(sweep, tmp_path, "multitask", -1.0, "sha-a", seed) for seed in (0, 5)}
    assert seeded[5].train.seed == 5 and seeded[0].train.output_dir != seeded[5].train.output_dir  # one run per seed
    with pytest.raises(ValueError, match="train.seeds"):
        steps.branch_params(sweep, tmp_path, "multitask", -1.0, "sha-a", 3)
    train_dir, params_file = steps.prepare_branch(params, tmp_path, "sr_only", 0.0, "x")
    assert params_file == train_dir / "params.yaml" and steps.read_params(params_file).train.output_dir == str(
        train_dir
    )
    with pytest.raises(ValueError, match="branch"):
        steps.branch_params(params, tmp_path, "other", 0.0, "x")


def test_step_requests_change_with_their_sections_and_the_code_only(tmp_path: Path) -> None:
    params = steps.resolve_params("", "", override_strings(str(tmp_path), {}), base_dir=REPO)

    def changed(section: str, **update: object):
        return params.model_copy(update={section: getattr(params, section).model_copy(update=update)})

    for step, own, other in (
        ("download", changed("download", subset_size=3), changed("train", batch_size=params.train.batch_size + 1)),
        ("degrade", changed("degrade", method="highorder"), changed("download", subset_size=3)),
        ("train", changed("train", batch_size=params.train.batch_size + 1), changed("evaluate", bootstrap=7)),
    ):
        request = steps.step_request(params, step, "code-1")
        assert steps.step_request(params, step, "code-1") == request  # equal requests: KFP reuses the step
        assert steps.step_request(other, step, "code-1") == request, step  # another stage's change keeps it
        assert steps.step_request(own, step, "code-1") != request, step  # its own section's change re-runs it
        assert steps.step_request(params, step, "code-2") != request, step  # and so does new code
        back = steps.request_params(request, step)
        for section in steps.STEP_SECTIONS[step]:
            assert getattr(back, section) == getattr(params, section)
    with pytest.raises(ValueError, match="not a train step request"):
        steps.request_params(steps.step_request(params, "download", "c"), "train")
    with pytest.raises(ValueError, match="step must be one of"):
        steps.step_request(params, "evaluate", "c")


def test_model_artifacts_replace_the_training_paths(tmp_path: Path) -> None:
    """Every seed's model artifact is laid out like a seed sweep, and the params' weight paths
    (templates over the seeds, the exported first seed) point into that layout."""
    from srseg.seeds import expand_methods

    params = steps.resolve_params("", "", override_strings(str(tmp_path), {}), base_dir=REPO)
    params = params.model_copy(update={"train": params.train.model_copy(update={"seeds": (3, 1)})})
    artifacts = {}
    for branch in ("multitask", "sr_only"):
        for seed in (3, 1):
            folder = tmp_path / "artifacts" / f"{branch}-{seed}"
            folder.mkdir(parents=True)
            (folder / "selected.safetensors").write_text(f"{branch} {seed}")
            artifacts.setdefault(branch, []).append((seed, str(folder)))
    folders = steps.link_seed_models(artifacts, tmp_path / "links", params.train.seeds)
    out = steps.model_overrides(params, folders)
    methods = out["evaluate"]["methods"]
    assert methods["bicubic"] == "bicubic" and out["benchmark"]["methods"]["bicubic"] == "bicubic"
    expanded = expand_methods(methods, params.train.seeds).specs
    for branch in ("multitask", "sr_only"):
        for seed in (3, 1):  # each seed's spec reaches that seed's artifact, nothing else
            assert Path(expanded[f"{branch}@seed{seed}"]).read_text() == f"{branch} {seed}"
    shipped = params.export.weights.replace("seed0", "seed3")
    params = params.model_copy(update={"export": params.export.model_copy(update={"weights": shipped})})
    assert Path(steps.model_overrides(params, folders)["export"]["weights"]).read_text() == "multitask 3"
    staged = steps.stage_params(
        steps.write_params(tmp_path / "p.yaml", params),
        models={"multitask": folders["multitask"]},
        overrides={"evaluate": {"output_dir": "/x"}},
    )
    assert (
        staged.evaluate.output_dir == "/x" and staged.evaluate.methods["sr_only"] == params.evaluate.methods["sr_only"]
    )
    psnr = params.model_copy(
        update={
            "export": params.export.model_copy(
                update={"weights": f"{params.train.output_dir}/seed3/psnr/selected.safetensors"}
            )
        }
    )
    with pytest.raises(ValueError, match="GAN stage's weights of each seed only"):
        steps.model_overrides(psnr, folders)
    with pytest.raises(ValueError, match=r"seeds \[1\], train.seeds is \[3, 1\]"):  # a seed's model missing
        steps.link_seed_models({"multitask": artifacts["multitask"][1:]}, tmp_path / "other", params.train.seeds)


def test_torchrun_commands() -> None:
    assert steps.torchrun_command("/v/p.yaml", "gan", None) == [
        "torchrun",
        "-m",
        "srseg",
        "--params",
        "/v/p.yaml",
        "train",
        "--stage",
        "gan",
    ]
    assert steps.torchrun_command("p.yaml", "psnr", 0, python="py") == [
        "py",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        "--nproc_per_node=1",
        "-m",
        "srseg",
        "--params",
        "p.yaml",
        "train",
        "--stage",
        "psnr",
    ]
    with pytest.raises(ValueError, match="stage"):
        steps.torchrun_command("p.yaml", "both", 1)


def test_model_files_and_training_record(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "k" / "multitask"
    (run / "gan" / "checkpoints").mkdir(parents=True)
    (run / "psnr").mkdir()
    for name in (
        "final.safetensors",
        "final.safetensors.json",
        "selected.safetensors",
        "selected.safetensors.json",
        "metrics.json",
    ):
        (run / "gan" / name).write_text("{}" if name.endswith("json") else "w")
    (run / "gan" / "checkpoints" / "iter_00000002.pt").write_text("big")
    (run / "gan" / "metrics.json").write_text(
        '{"best": {"psnr_y": 20.5, "iteration": 2}, "val": {"lpips": null}, "ok": true}'
    )
    (run / "gan" / "mlflow_run.json").write_text('{"run_id": "gan-run"}')
    (run / "mlflow_parent.json").write_text('{"run_id": "parent"}')
    digest = steps.weights_digest(run)
    copied = steps.copy_model_files(run, tmp_path / "model", expected_digest=digest)
    assert copied == [
        "final.safetensors",
        "final.safetensors.json",
        "metrics.json",
        "mlflow_run.json",
        "selected.safetensors",
        "selected.safetensors.json",
        "mlflow_parent.json",
    ]  # the run records: evaluation links to the training runs
    (run / "gan" / "selected.safetensors").write_text(
        "retrained"
    )  # another run rewrote the folder after training reported
    assert steps.weights_digest(run) != digest
    with pytest.raises(ValueError, match="weights changed after training"):
        steps.copy_model_files(run, tmp_path / "stale", expected_digest=digest)
    assert not (tmp_path / "stale").exists()
    record = steps.training_record(run)
    assert (record["mlflow_run_id"], record["mlflow_parent_run_id"], record["mlflow_psnr_run_id"]) == (
        "gan-run",
        "parent",
        "",
    )
    assert steps.scalar_metrics(record["metrics"]) == {"best/psnr_y": 20.5, "best/iteration": 2.0}
    (tmp_path / "empty" / "gan").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no weights file"):
        steps.copy_model_files(tmp_path / "empty", tmp_path / "m2")
    with pytest.raises(FileNotFoundError, match="GAN stage did not run"):
        steps.training_record(tmp_path / "nothing")


def test_reports_for_the_kfp_ui(tmp_path: Path) -> None:
    (tmp_path / "gallery").mkdir()
    (tmp_path / "gallery" / "a.png").write_bytes(b"\x89PNG")
    (tmp_path / "secret.png").write_bytes(b"x")
    html = '<img src="gallery/a.png"> <img src="../secret.png"> <img src="https://x/y.png">'
    out = steps.inline_images(html, tmp_path)
    assert (
        'src="data:image/png;base64,iVBORw=="' in out
        and 'src="../secret.png"' in out
        and 'src="https://x/y.png"' in out
    )
    assert steps.publish(tmp_path / "missing.md", tmp_path / "o.md", "no report") is False
    assert (tmp_path / "o.md").read_text() == "no report\n"
    md = steps.decision_markdown(
        {
            "passed": False,
            "action": "reject",
            "reason": "gate failed",
            "criteria": [
                {
                    "name": "bicubic floor (psnr_y)",
                    "challenger": 27.0,
                    "opponent": 26.95,
                    "opponent_name": "bicubic",
                    "difference": 0.05,
                    "ci_low": 0.01,
                    "ci_high": 0.09,
                    "n": 5,
                    "threshold": "CI low >= +0.1 dB",
                    "passed": False,
                }
            ],
        }
    )
    assert "**reject** (not passed): gate failed" in md
    assert (
        "| bicubic floor (psnr_y) | 27.0 | 26.95 (bicubic) | +0.0500 [+0.0100, +0.0900] (n=5) | CI low >= +0.1 dB | "
        "FAIL |" in md
    )
    assert steps.plain_metadata({"a": 1, "b": float("nan"), "c": [1], "d": "x"}) == {"a": 1, "d": "x"}


def test_components_import_srseg_inside_their_bodies() -> None:
    """Only a component's body travels in the IR: srseg must be imported inside it, not at the top."""
    for path in sorted((REPO / "components").glob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert all(not (getattr(n, "module", "") or "").startswith("srseg") for n in top), path.name
        funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert funcs, path.name
        for func in funcs:
            inner = [
                n for n in ast.walk(func) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("srseg")
            ]
            assert inner, f"{path.name}:{func.name} does not call srseg"
    assert yaml.safe_load((REPO / "params.yaml").read_text())  # the image's default params parse


def test_decision_links_name_the_versions_judged_and_the_runs_holding_their_scores() -> None:
    links = steps.decision_links(
        {
            "model_name": "m",
            "challenger_version": "3",
            "champion_before": "2",
            "champion_after": "3",
            "evaluation_key": "k",
            "evaluations": {
                "challenger": {"run_id": "r3", "cached": False},
                "champion": {"run_id": "r2", "cached": True},
            },
        }
    )
    assert links == {
        "model_name": "m",
        "challenger_uri": "models:/m/3",
        "champion_before_uri": "models:/m/2",
        "champion_after_uri": "models:/m/3",
        "evaluation_key": "k",
        "challenger_scores_run_id": "r3",
        "challenger_scored_here": True,
        "champion_scores_run_id": "r2",
        "champion_scored_here": False,
    }
    first = steps.decision_links(
        {"model_name": "m", "challenger_version": "1", "champion_before": None, "champion_after": None}
    )
    assert first["champion_before_uri"] == "" and first["challenger_uri"] == "models:/m/1"
