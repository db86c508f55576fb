"""The Dockerfile keeps its essentials, read statically (building is ``make test-image``'s job):
multi-stage, the final stage without build tools or wheelhouse; dependencies installed from the
hashed lock alone, in a stage that sees neither source nor docs; the lock covering pyproject's
pins; Python 3.11 and a non-root numeric user; the commit as a late build argument behind the OCI
labels and the ``git_commit`` fallback; and a build context without history, venvs or data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    out: list[tuple[str, str]] = []
    buffer = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        full = (buffer + stripped).strip()
        buffer = ""
        if full:
            keyword, _, rest = full.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per stage name (``FROM x AS name``), the FROM line first."""
    out: dict[str, list[tuple[str, str]]] = {}
    current = None
    for kw, rest in instructions():
        if kw == "FROM":
            current = rest.split()[-1]
            out[current] = []
        if current is not None:
            out[current].append((kw, rest))
    return out


def lock_pins() -> dict[str, str]:
    text = (REPO / "requirements.lock").read_text()
    entries = re.findall(r"^([a-z0-9-]+)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", text, re.M)
    body = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert len(body) == 2 * len(entries), "every lock entry is NAME==VERSION plus one sha256 line"
    return {name: version for name, version, _ in entries}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_stages_and_what_the_final_one_keeps() -> None:
    s = stages()
    assert list(s) == ["python", "deps", "app", "final"]
    assert s["deps"][0][1].startswith("python ") and s["app"][0][1].startswith("deps ")
    assert s["final"][0][1].startswith("python ")  # not from deps/app: no wheelhouse, no source tree
    final_copies = [rest for kw, rest in s["final"] if kw == "COPY"]
    assert final_copies[:2] == ["--from=deps /opt/venv /opt/venv", "--from=app /opt/app/ /opt/venv/"]
    for kw, rest in s["final"]:
        assert not (kw == "RUN" and re.search(r"apt-get install|pip install|build-essential|gcc|git ", rest)), rest
        assert not (kw == "COPY" and "wheelhouse" in rest), rest
    for kw, rest in s["python"]:  # shared by every stage: no build tools there either
        assert not (kw == "RUN" and re.search(r"build-essential|gcc|-dev\b|\bgit\b", rest)), rest


def test_dependencies_come_from_the_lock_alone_before_any_source() -> None:
    deps = stages()["deps"]
    copied = [rest.split()[0] for kw, rest in deps if kw == "COPY"]
    assert copied == ["requirements.lock", "wheelhouse"]  # no pyproject, README or source: edits keep this layer
    (install,) = [rest for kw, rest in deps if kw == "RUN"]
    for flag in ("--no-index", "--require-hashes", "--no-deps", "-r /tmp/lock/requirements.lock", "pip check"):
        assert flag in install, flag
    assert "sha256sum -c" in install  # the pip wheel that installs the rest is checked first
    app_install = [rest for kw, rest in stages()["app"] if kw == "RUN"][0]
    assert "--no-deps" in app_install and "--no-index" in app_install  # srseg adds no distribution


def test_lock_pins_every_pyproject_dependency_and_the_install_tools() -> None:
    import tomllib

    pins = lock_pins()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        req = Requirement(line)
        name = canonical(req.name)
        assert name in pins, f"{name} (pyproject.toml) is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), f"lock {name}=={pins[name]} violates {req}"
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            assert req.specifier.contains(pins[canonical(req.name)]), f"lock violates constraints.txt: {req}"
    assert {"pip", "setuptools", "wheel"} <= set(pins)  # the image's pip and srseg's build backend, locked too
    assert "srseg" not in pins
    assert pins["nvidia-cuda-runtime"].startswith("13.")  # torch cu130: CUDA comes from the wheels, not the base


def test_python_version_and_default_base() -> None:
    items = instructions()
    assert items[0] == ("ARG", "BASE_IMAGE=srseg-base:bookworm")  # container/base-image.sh: debootstrap + python3.11
    python_stage = " ".join(rest for kw, rest in stages()["python"] if kw == "RUN")
    assert "python3.11" in python_stage and "python3.11 -m venv" in " ".join(r for _, r in stages()["deps"])
    assert "# Python 3.11," in (REPO / "requirements.lock").read_text()
    assert (
        "3.11" in (REPO / "Makefile").read_text()
        and 'requires-python = ">=3.11' in (REPO / "pyproject.toml").read_text()
    )


def test_runs_as_non_root_with_srseg_entrypoint() -> None:
    items = instructions()
    users = [i for i, (kw, _) in enumerate(items) if kw == "USER"]
    assert users, "no USER instruction: the image would run as root"
    user = items[users[-1]][1]
    assert user == "1000:1000", "a numeric USER lets Kubernetes check runAsNonRoot"
    assert all(kw != "RUN" for kw, _ in items[users[-1] :]), "RUN after USER"
    (entrypoint,) = [rest for kw, rest in items if kw == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["srseg"]  # exec form: signals reach srseg


def test_commit_is_a_late_build_argument_behind_labels_and_git_commit() -> None:
    final = stages()["final"]
    args = [i for i, (kw, rest) in enumerate(final) if kw == "ARG" and rest.startswith("GIT_COMMIT")]
    last_fs_change = max(i for i, (kw, _) in enumerate(final) if kw in ("COPY", "RUN"))
    assert args and args[0] > last_fs_change, "GIT_COMMIT before a COPY/RUN would rebuild layers on every commit"
    labels = " ".join(rest for kw, rest in final if kw == "LABEL")
    for key, arg in (("revision", "GIT_COMMIT"), ("version", "VERSION"), ("source", "SOURCE")):
        assert f'org.opencontainers.image.{key}="${{{arg}}}"' in labels, key
    assert ("ENV", "SRSEG_GIT_COMMIT=${GIT_COMMIT}") in final  # srseg.tracking.GIT_COMMIT_ENV


def test_dockerignore_excludes_history_envs_and_data() -> None:
    entries = {
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "data", "outputs", "mlruns", "mlflow.db", "wheelhouse.tmp"} <= entries
    assert "wheelhouse" not in entries and "requirements.lock" not in entries  # the deps stage copies them


def test_copy_only() -> None:
    kinds = [kw for kw, _ in instructions()]
    assert kinds[0] == "ARG" and kinds[-1] == "CMD"  # the parser saw the whole file
    assert "ADD" not in kinds, "use COPY (ADD fetches URLs and unpacks archives implicitly)"


def test_pretrained_weights_can_be_baked_into_the_torch_hub_cache(tmp_path: Path) -> None:
    """`make image WEIGHTS=<folder>`: build.py stages the files into container/weights/, the only part
    of container/ in the build context, and the final stage copies it into TORCH_HOME's hub cache
    (where `vgg_weights: auto` / `lpips_weights: auto` look). A bad folder stops the build."""
    import importlib.util
    import sys

    final = stages()["final"]
    assert ("ENV", "TORCH_HOME=/opt/torch") in final
    assert ("COPY", "container/weights/ /opt/torch/hub/checkpoints/") in final
    ignore = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert (
        ignore.index("container/*") < ignore.index("!container/weights") < ignore.index("container/weights/.gitignore")
    )
    assert "container" not in ignore  # the whole folder would take the weights with it
    assert (
        REPO / "container" / "weights" / ".gitignore"
    ).is_file()  # the folder exists in every checkout (COPY needs it)
    spec = importlib.util.spec_from_file_location("srseg_build", REPO / "container" / "build.py")
    build = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = build  # its dataclasses look their module up
    spec.loader.exec_module(build)
    assert "container/weights" in build.CONTEXT  # staged weights change the build digest: the image is rebuilt
    with pytest.raises(build.BuildError, match=r"(?s)weights: cannot stage weights from .*vgg19-dcbb9e9d\.pth"):
        build.stage_weights(tmp_path / "no-weights-here", dest=tmp_path / "staged")
    assert "$(if $(WEIGHTS),--weights $(WEIGHTS))" in (REPO / "Makefile").read_text()
