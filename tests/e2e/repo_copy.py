"""A fresh copy of this checkout for end-to-end tests: every file git would commit (tracked, and
untracked but not ignored), in a new git repository, with the real sample mirror built inside."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from srseg.data.mirror import build_sample_mirror

REPO = Path(__file__).resolve().parents[2]


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    """Run ``cmd``; fail with its output unless it exits 0. Returns stdout + stderr."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    return done.stdout + done.stderr


def copy_repo(dest: Path, cocostuff_sample: Path) -> tuple[Path, dict[str, str]]:
    """(copy root, environment for commands run there). The environment imports srseg from the copy,
    finds this interpreter's ``srseg``/``dvc`` first on PATH, and leaves MLflow on the copy's
    params (no inherited tracking URI)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    work = dest / "repo"
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, work / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SRSEG_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(work)
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    run(["git", "init", "-q"], work, env)
    run(["git", "add", "-A"], work, env)
    run(["git", "commit", "-qm", "copy"], work, env)
    build_sample_mirror(cocostuff_sample, work / "data" / "mirror")
    # params.yaml names the benchmark sets as ../shared/data/<set>: the real folders, read only
    (dest / "shared").mkdir(exist_ok=True)
    (dest / "shared" / "data").symlink_to(cocostuff_sample.resolve().parent, target_is_directory=True)
    return work, env
