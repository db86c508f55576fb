"""`dvc repro degrade` from a fresh copy of the repository: download + degrade on the sample
mirror, a second repro is a no-op, and a degrade parameter change re-runs degrade only. (The
whole pipeline, training included, runs in test_make_run.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from srseg.data.mirror import build_sample_mirror
from srseg.data.manifest import Manifest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture()
def repo_copy(tmp_path: Path, cocostuff_sample: Path) -> tuple[Path, dict[str, str]]:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    work = tmp_path / "repo"
    for name in files:
        if not (REPO / name).is_file():
            continue
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, work / name)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    _run(["git", "init", "-q"], work, env)
    _run(["git", "add", "-A"], work, env)
    _run(["git", "commit", "-qm", "copy"], work, env)
    build_sample_mirror(cocostuff_sample, work / "data" / "mirror")
    return work, env


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
