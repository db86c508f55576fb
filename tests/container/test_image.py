"""The built image: runs as uid 1000, holds no compilers, headers, git or wheelhouse, installs
exactly requirements.lock on the Python minor version of development, carries the OCI labels and
the commit, and keeps its dependency layer when only the source changes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from imagekit import REPO, image_build

pytestmark = pytest.mark.image


def run(docker, image: str, *args: str, entrypoint: str | None = None) -> str:
    cmd = ["run", "--rm", "--network", "none"]
    if entrypoint is not None:
        cmd += ["--entrypoint", entrypoint]
    return docker.run(*cmd, image, *args).stdout


def lock_pins() -> dict[str, str]:
    text = (REPO / "requirements.lock").read_text()
    return {name: version for name, version in re.findall(r"^([a-z0-9-]+)==(\S+) \\$", text, re.M)}


def test_help_runs_as_uid_1000(docker, image: str) -> None:
    assert "usage: srseg" in run(docker, image, "--help")
    assert run(docker, image, "-c", "id -u; id -g", entrypoint="sh").split() == ["1000", "1000"]
    config = json.loads(docker.run("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "1000:1000" and config["Entrypoint"] == ["srseg"]


def test_final_image_has_no_compilers_headers_git_or_wheelhouse(docker, image: str) -> None:
    probe = (
        "for t in gcc cc c++ g++ make git; do command -v $t; done; "
        "ls -d /tmp/wheelhouse /usr/include/python3* /src 2>/dev/null; true"
    )
    assert run(docker, image, "-c", probe, entrypoint="sh").split() == []
    history = docker.run("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert history.strip()
    for word in ("build-essential", "gcc", "python3-dev", "wheelhouse", "git "):
        assert word not in history, f"{word!r} in the final image's history"


def test_installs_exactly_the_lock_on_the_development_python(docker, image: str) -> None:
    listing = run(
        docker,
        image,
        "-c",
        "import importlib.metadata as md, json; "
        "print(json.dumps([[d.metadata['Name'], d.version] for d in md.distributions()]))",
        entrypoint="python",
    )
    installed = {}
    for name, version in json.loads(listing):
        key = re.sub(r"[-_.]+", "-", name).lower()
        assert key not in installed, f"{key} installed twice"
        installed[key] = version
    assert installed.pop("srseg") == image_build.project_version()
    assert installed == lock_pins()
    version = run(docker, image, "-c", "import sys; print(*sys.version_info[:2])", entrypoint="python").split()
    assert tuple(map(int, version)) == sys.version_info[:2]  # the image runs the Python of development and CI


def test_oci_labels_and_commit(docker, image: str) -> None:
    config = json.loads(docker.run("image", "inspect", image).stdout)[0]["Config"]
    labels = config["Labels"]
    commit = image_build.git_commit()
    assert labels["org.opencontainers.image.revision"] == commit
    assert labels["org.opencontainers.image.version"] == image_build.project_version()
    assert labels["org.opencontainers.image.source"].startswith("https://")
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["SRSEG_GIT_COMMIT"] == commit
    tagged = run(docker, image, "-c", "from srseg.tracking import git_commit; print(git_commit())", entrypoint="python")
    assert tagged.strip() == commit  # the git_commit tags of runs and model versions


@pytest.mark.timeout(1200)
def test_source_edit_keeps_the_dependency_layer(docker, image: str, tmp_path: Path) -> None:
    """Rebuild from a copy of the context with an edited module and README: every layer up to and
    including the installed dependencies is reused; only the srseg layer and what follows differ."""
    context = tmp_path / "context"
    context.mkdir()
    for name in image_build.CONTEXT:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, context / name)
    subprocess.run(["cp", "-al", str(REPO / "wheelhouse"), str(context / "wheelhouse")], check=True)  # hard links
    (context / "srseg" / "__init__.py").open("a").write("# edited\n")
    (context / "README.md").open("a").write("\nedited\n")
    edited = f"{image.split(':')[0]}:edited-test"
    base = json.loads(docker.run("image", "inspect", image).stdout)[0]
    try:
        docker.run(
            "build",
            "--network",
            "host",
            "--tag",
            edited,
            "--build-arg",
            f"BASE_IMAGE={base['Config']['Labels'][image_build.BASE_LABEL]}",
            str(context),
        )
        layers = json.loads(docker.run("image", "inspect", edited).stdout)[0]["RootFS"]["Layers"]
    finally:
        docker.run("rmi", edited, check=False)
    original = base["RootFS"]["Layers"]
    venv_layer = 2  # base file system, user, /opt/venv (dependencies)
    assert layers[: venv_layer + 1] == original[: venv_layer + 1]
    assert layers[venv_layer + 1] != original[venv_layer + 1]  # the srseg layer changed
