"""`dvc repro degrade` from a fresh copy of the repository: download + degrade on the sample
mirror, a second repro is a no-op, and a degrade parameter change re-runs degrade only. (The
whole pipeline, training included, runs in test_all_stages.py.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from repo_copy import copy_repo
from repo_copy import run as _run

from srseg.data.manifest import Manifest

pytestmark = pytest.mark.e2e


@pytest.fixture()
def repo_copy(tmp_path: Path, cocostuff_sample: Path) -> tuple[Path, dict[str, str]]:
    return copy_repo(tmp_path, cocostuff_sample)


def _ran_stages(output: str) -> set[str]:
    return {stage for stage in ("download", "degrade") if f"Running stage '{stage}'" in output}


def test_repro_is_cached_and_reruns_only_changed_stage(repo_copy: tuple[Path, dict[str, str]]) -> None:
    work, env = repo_copy
    dvc = [sys.executable, "-m", "dvc", "repro", "degrade"]
    first = _run(dvc, work, env)
    assert _ran_stages(first) >= {"download", "degrade"}
    hr = Manifest.load(work / "data" / "cocostuff")
    lr = Manifest.load(work / "data" / "lr")
    assert {k: len(v) for k, v in hr.splits.items()} == {"train2017": 13, "val2017": 8}  # the whole sample
    assert lr.meta["scale"] == 4 and set(lr.splits) == set(hr.splits)

    second = _run(dvc, work, env)
    assert _ran_stages(second) == set(), second

    params = yaml.safe_load((work / "params.yaml").read_text())
    params["degrade"]["scale"] = 2
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _run(dvc, work, env)
    assert _ran_stages(third) == {"degrade"}, third
    assert Manifest.load(work / "data" / "lr").meta["scale"] == 2
