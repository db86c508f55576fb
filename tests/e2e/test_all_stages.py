"""The whole pipeline as a user runs it (`make run`): `dvc repro` of every stage in dvc.yaml from
a fresh copy of the repository with the demo profile, then `srseg register` and `srseg promote`. Asserts on what a user
looks at: evaluation metrics of every method, the study bundle, the exported files, the model
registered and promoted to @champion; and a second `dvc repro` does nothing. Paths come from the
copy's params.yaml and dvc.yaml, and the commands after `dvc repro` from the Makefile's `run` target."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from repo_copy import copy_repo, run

from srseg.config import load_params
from srseg.seeds import expand_methods
from srseg.study.bundle import load_study

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
EXPORT_FILES = ("sr_head.safetensors", "sr_head.onnx", "sr_head.torchscript.pt", "MODEL_CARD.md")


def _stages(work: Path) -> list[str]:
    return list(yaml.safe_load((work / "dvc.yaml").read_text())["stages"])


def _ran(output: str, stages: list[str]) -> list[str]:
    """The stages that ran; a `foreach` stage counts when any of its variants (name@key) ran."""
    return [stage for stage in stages if re.search(rf"Running stage '{re.escape(stage)}(@[^']+)?'", output)]


def _make_run_recipe(work: Path) -> list[list[str]]:
    """The commands of the Makefile's `run` target (echo lines left out), so this test follows
    `make run` when its recipe changes."""
    lines = (work / "Makefile").read_text().split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("run:"))
    commands = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        if not line.strip().startswith("@"):
            commands.append(line.split())
    return commands


@pytest.mark.timeout(2400)
def test_dvc_repro_runs_every_stage_then_promotes(tmp_path: Path, cocostuff_sample: Path) -> None:
    from mlflow import MlflowClient

    work, env = copy_repo(tmp_path, cocostuff_sample)
    params = load_params(work / "params.yaml")
    assert params.profile == "demo"
    stages = _stages(work)

    recipe = _make_run_recipe(work)
    assert recipe[0] == ["dvc", "repro"], recipe
    first = run([sys.executable, "-m", "dvc", "repro"], work, env, timeout=2000)
    assert _ran(first, stages) == stages, first[-4000:]

    metrics = json.loads((work / params.evaluate.output_dir / "metrics.json").read_text())
    evaluated = expand_methods(params.evaluate.methods, params.train.seeds).specs  # multitask@seed0, ..., bicubic
    for method in evaluated:
        assert {"psnr_y", "ssim_y"} <= set(metrics[method]), (method, metrics.get(method))

    bundle = work / params.study.output_dir / "bundle"
    study = load_study(bundle)  # verifies every image against the bundle's checksums
    assert set(study.methods) == set(params.study.methods) and study.pairs
    assert {m for pair in study.pairs for m in (pair.left.method, pair.right.method)} >= set(params.study.methods)

    export_dir = work / params.export.output_dir
    for name in EXPORT_FILES:
        assert (export_dir / name).stat().st_size > 0, name

    for command in recipe[1:]:  # what `make run` does after `dvc repro`: register, then the gate
        run([sys.executable, "-m", *command], work, env)
    record = json.loads((work / params.registry.record).read_text())
    client = MlflowClient(params.mlflow.tracking_uri.replace("sqlite:///", f"sqlite:///{work}/", 1))
    champion = client.get_model_version_by_alias(params.registry.model_name, "champion")
    assert str(champion.version) == str(record["version"])

    second = run([sys.executable, "-m", "dvc", "repro"], work, env)
    assert _ran(second, stages) == [], second[-4000:]
