"""DVC across checkouts: the data stages give byte-identical ``dvc.lock`` files at two different
checkout paths, and a clone that pulls from the S3 remote (SeaweedFS on loopback, configured the
way the README says) has nothing left to reproduce."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from registry.servers import seaweed_server

from srseg.data.mirror import build_sample_mirror

REPO = Path(__file__).resolve().parents[2]
DATA_STAGES = ["download", "degrade"]
BUCKET = "srseg-dvc-test"
pytestmark = pytest.mark.e2e


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SRSEG_DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cmd} in {cwd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _checkout(dest: Path, sample: Path) -> Path:
    """A git repository with the tracked files of this one, and the sample mirror built in it."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    env = _env()
    _run(["git", "init", "-q"], dest, env)
    _run(["git", "add", "-A"], dest, env)
    _run(["git", "commit", "-qm", "copy"], dest, env)
    build_sample_mirror(sample, dest / "data" / "mirror")
    return dest


def _ran(output: str) -> set[str]:
    return {stage for stage in DATA_STAGES if f"Running stage '{stage}'" in output}


@pytest.fixture(scope="module")
def first_checkout(tmp_path_factory: pytest.TempPathFactory, cocostuff_sample: Path) -> Path:
    work = _checkout(tmp_path_factory.mktemp("checkout") / "srseg", cocostuff_sample)
    assert _ran(_run([sys.executable, "-m", "dvc", "repro", *DATA_STAGES], work, _env())) == set(DATA_STAGES)
    return work


def test_data_stage_lock_is_identical_at_another_path(
    first_checkout: Path, tmp_path: Path, cocostuff_sample: Path
) -> None:
    other = _checkout(tmp_path / "somewhere" / "else" / "entirely", cocostuff_sample)
    assert _ran(_run([sys.executable, "-m", "dvc", "repro", *DATA_STAGES], other, _env())) == set(DATA_STAGES)
    lock = (first_checkout / "dvc.lock").read_text()
    assert (other / "dvc.lock").read_text() == lock
    assert str(first_checkout) not in lock and str(other) not in lock
    manifest = "data/cocostuff/manifest.json"
    assert (other / manifest).read_bytes() == (first_checkout / manifest).read_bytes()
    assert str(other) not in (other / manifest).read_text()


def test_push_then_pull_in_a_clone_reproduces_nothing(first_checkout: Path, tmp_path: Path) -> None:
    with seaweed_server(tmp_path / "s3", buckets=[BUCKET]) as s3:
        env = _env()
        env.update(s3.env(), AWS_ENDPOINT_URL=s3.endpoint_url, SRSEG_DVC_BUCKET=BUCKET)
        env.pop("MLFLOW_S3_ENDPOINT_URL")
        _run(["make", "-s", "remote"], first_checkout, env)
        _run([sys.executable, "-m", "dvc", "push", *DATA_STAGES], first_checkout, env)
        keys = s3.list_keys(BUCKET)
        assert keys and all(key.startswith("dvc/files/md5/") for key in keys), keys[:5]
        _run(
            ["git", "commit", "-qam", "data stages", "--allow-empty"], first_checkout, env
        )  # the lock may already match

        clone = tmp_path / "clone"
        _run(["git", "clone", "-q", str(first_checkout), str(clone)], tmp_path, env)
        assert not (clone / "data").exists()
        _run(["make", "-s", "remote"], clone, env)
        _run([sys.executable, "-m", "dvc", "pull", *DATA_STAGES], clone, env)

    repro = _run([sys.executable, "-m", "dvc", "repro", *DATA_STAGES], clone, _env())
    assert _ran(repro) == set(), repro
    assert "Running stage" not in repro, repro
    for name in ("data/cocostuff/manifest.json", "data/lr/manifest.json"):
        assert (clone / name).read_bytes() == (first_checkout / name).read_bytes()


def _changed(work: Path) -> set[str]:
    """Stages `dvc status` reports as changed (the data stages; the others never ran here)."""
    out = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json", *DATA_STAGES],
        cwd=work,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    return set(json.loads(out))


EDITS = [  # (file, old text, new text) -> data stages `dvc status` must report as changed
    (("params.yaml", "experiment: srseg", "experiment: renamed"), set()),
    (("params.yaml", "timeout_s: 60.0", "timeout_s: 30.0"), set()),
    (("params.yaml", "subset_size: 13", "subset_size: 7"), {"download"}),
    (("srseg/degrade/bicubic.py", '"""', '"""Edited. '), {"degrade"}),
    (("srseg/data/remotezip.py", '"""', '"""Edited. '), {"download"}),
]


def test_status_sees_code_and_result_params_not_tracking(first_checkout: Path) -> None:
    assert _changed(first_checkout) == set()
    seen = {}
    for (name, old, new), _ in EDITS:
        path = first_checkout / name
        original = path.read_text()
        assert old in original, (name, old)
        try:
            path.write_text(original.replace(old, new, 1))
            seen[(name, new)] = _changed(first_checkout)
        finally:
            path.write_text(original)
    assert seen == {(name, new): expected for (name, _, new), expected in EDITS}
