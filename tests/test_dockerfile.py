"""The Dockerfile keeps its essentials: a CUDA runtime base matching torch's CUDA build, pinned
dependencies installed before the source is copied (a code edit does not reinstall torch), a
non-root user, ``srseg`` as entrypoint; and the build context leaves out history, venvs and data.
Parsed, not built: building needs a Docker daemon and the network."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# torch pin in pyproject.toml -> the CUDA version its wheels are built for; update both together.
TORCH_CUDA = {"2.14.1": "13.0"}


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


def arg_defaults(items: list[tuple[str, str]]) -> dict[str, str]:
    return dict(rest.split("=", 1) for kw, rest in items if kw == "ARG" and "=" in rest)


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def index_of(items: list[tuple[str, str]], predicate) -> int:
    return next(i for i, item in enumerate(items) if predicate(*item))


def test_cuda_runtime_base_matches_torch() -> None:
    items = instructions()
    args = arg_defaults(items)
    (base,) = [expand(rest, args) for kw, rest in items if kw == "FROM"]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)(?:\.\d+)?-(?:cudnn-)?runtime-ubuntu[\d.]+", base)
    assert match, f"base image {base!r} is not an nvidia/cuda runtime image"
    base_cuda = f"{match.group(1)}.{match.group(2)}"
    pyproject = (REPO / "pyproject.toml").read_text()
    torch_pin = re.search(r'"torch==([^"]+)"', pyproject).group(1)
    assert torch_pin in TORCH_CUDA, f"torch pin {torch_pin} is new: look up its CUDA build, then update TORCH_CUDA and the base"
    assert base_cuda == TORCH_CUDA[torch_pin], f"base CUDA {base_cuda} != torch {torch_pin}'s CUDA {TORCH_CUDA[torch_pin]}"
    index = args.get("TORCH_INDEX_URL", "")
    assert index.endswith("/cu" + base_cuda.replace(".", "")), f"torch wheel index {index!r} is not the CUDA {base_cuda} build"


def test_pinned_dependencies_install_before_the_source_is_copied() -> None:
    items = instructions()
    copy_source = index_of(items, lambda kw, rest: kw == "COPY" and rest.split()[0] == "srseg")
    install_deps = index_of(items, lambda kw, rest: kw == "RUN" and "pip install" in rest and "-c constraints.txt" in rest)
    assert install_deps < copy_source
    first_copy = items[index_of(items, lambda kw, rest: kw == "COPY")][1].split()
    assert set(first_copy[:-1]) <= {"pyproject.toml", "constraints.txt", "README.md"}, first_copy
    assert "--no-deps" in items[copy_source + 1][1]  # the source layer adds srseg only
    pyproject = (REPO / "pyproject.toml").read_text()
    for pinned in ("torch==", "torchvision==", "kfp==", "mlflow=="):  # kfp in the image: install_kfp_package=False
        assert pinned in pyproject


def test_runs_as_non_root_with_srseg_entrypoint() -> None:
    items = instructions()
    users = [i for i, (kw, _) in enumerate(items) if kw == "USER"]
    assert users, "no USER instruction: the image would run as root"
    user = items[users[-1]][1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "a numeric USER lets Kubernetes check runAsNonRoot"
    assert all(kw != "RUN" for kw, _ in items[users[-1]:]), "RUN after USER"
    (entrypoint,) = [rest for kw, rest in items if kw == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["srseg"]  # exec form: signals reach srseg


def test_dockerignore_excludes_history_envs_and_data() -> None:
    entries = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "data"} <= entries
    assert {"outputs", "mlruns", "mlflow.db"} <= entries


def test_single_stage_with_copy_only() -> None:
    kinds = [kw for kw, _ in instructions()]
    assert kinds[0] == "ARG" and kinds.count("FROM") == 1 and kinds[-1] == "CMD"  # the parser saw the whole file
    assert "ADD" not in kinds, "use COPY (ADD fetches URLs and unpacks archives implicitly)"
