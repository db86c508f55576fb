"""Build the srseg image on a machine without a container registry (or with one).

Steps, each skipped when its result is already there:

1. the engine: ``$DOCKER_HOST`` if set, else a private dockerd (:mod:`engine`);
2. the base image: ``--base`` when given (pulled by the build), else the local Debian bookworm base
   ``srseg-base:bookworm`` made by ``container/base-image.sh`` (debootstrap, no registry);
3. the wheelhouse: every file of ``requirements.lock``, downloaded by pip with ``--require-hashes``
   into ``wheelhouse/`` (rebuilt when the lock changes);
4. ``docker build``, unless an image with this tag already carries the same build digest (a hash
   of the files the Dockerfile copies and of the build arguments).

``--weights DIR`` first stages the pretrained weights (VGG19, the LPIPS AlexNet backbone and
linear layers, hash-checked by ``srseg.weights.stage_weights``) from DIR into ``container/weights/``,
which the Dockerfile copies into the image's torch hub cache. Files staged there stay for later
builds (delete ``container/weights/*.pth`` to build without them).

    python container/build.py [--tag srseg:0.1.0] [--base IMAGE] [--weights DIR] [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engine as engines  # noqa: E402  (the sibling module, also run as a script)

REPO = Path(__file__).resolve().parents[1]
LOCAL_BASE = "srseg-base:bookworm"
DEFAULT_TAG = "srseg:0.1.0"
DIGEST_LABEL = "io.srseg.build-digest"
BASE_LABEL = "io.srseg.base-image"
SOURCE_URL = "https://github.com/srseg/srseg"
# What the Dockerfile copies (besides the wheelhouse, which the lock determines).
CONTEXT = (
    "Dockerfile",
    ".dockerignore",
    "requirements.lock",
    "pyproject.toml",
    "README.md",
    "params.yaml",
    "dvc.yaml",
    "profiles",
    "srseg",
    "container/weights",
)
WEIGHTS_DIR = REPO / "container" / "weights"  # staged pretrained weights, copied into the image's hub cache


class BuildError(RuntimeError):
    """A build step failed; the message says which and why."""


@dataclass(frozen=True)
class Docker:
    """The docker client bound to one engine."""

    host: str

    def run(self, *args: str, check: bool = True, capture: bool = True, **kw) -> subprocess.CompletedProcess:
        env = {**os.environ, "DOCKER_HOST": self.host}
        result = subprocess.run([engines.docker_cli(), *args], env=env, text=True, capture_output=capture, **kw)
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout or "")[-3000:] if capture else ""
            raise BuildError(f"docker {' '.join(args[:3])} ... failed ({result.returncode})\n{detail}")
        return result

    def image_label(self, tag: str, label: str) -> str | None:
        """The value of ``label`` on image ``tag``; None when the image does not exist."""
        result = self.run("image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', tag, check=False)
        return result.stdout.strip() if result.returncode == 0 else None


def git_commit() -> str:
    """HEAD of the checkout, ``-dirty`` when tracked files differ from it; "" outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return f"{head}-dirty" if dirty else head


def project_version() -> str:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def build_digest(build_args: dict[str, str]) -> str:
    """SHA-256 over the copied files (path + content, caches skipped) and the build arguments."""
    h = hashlib.sha256()
    for name in CONTEXT:
        path = REPO / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            h.update(str(file.relative_to(REPO)).encode() + b"\0" + file.read_bytes() + b"\0")
    for key in sorted(build_args):
        h.update(f"{key}={build_args[key]}\0".encode())
    return h.hexdigest()


def ensure_base(docker: Docker, base: str | None) -> str:
    """The base image reference; builds the local bookworm base when none is given and it is missing."""
    if base:
        return base
    if docker.image_label(LOCAL_BASE, "unused") is None:
        print(f"building the local base image {LOCAL_BASE} (debootstrap bookworm)", flush=True)
        started = time.monotonic()
        env = {**os.environ, "DOCKER_HOST": docker.host, "DOCKER": engines.docker_cli()}
        result = subprocess.run(
            [str(REPO / "container" / "base-image.sh"), LOCAL_BASE], env=env, text=True, capture_output=True
        )
        if result.returncode != 0:
            raise BuildError(f"base image: container/base-image.sh failed\n{result.stderr[-3000:]}")
        print(f"built {LOCAL_BASE} in {time.monotonic() - started:.0f} s", flush=True)
    return LOCAL_BASE


def ensure_wheelhouse(lock: Path, wheelhouse: Path, python: str = sys.executable) -> Path:
    """``wheelhouse`` holding exactly the lock's files, hash-checked by pip (kept while the lock is unchanged)."""
    stamp = wheelhouse / ".lock-sha256"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return wheelhouse
    staging = wheelhouse.with_name(wheelhouse.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    print(f"downloading the wheelhouse of {lock.name} into {wheelhouse}", flush=True)
    started = time.monotonic()
    result = subprocess.run(
        [
            python,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--require-hashes",
            "-r",
            str(lock),
            "-d",
            str(staging),
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BuildError(f"wheelhouse: pip download failed (run on Python 3.11, Linux x86-64)\n{result.stderr[-3000:]}")
    (staging / ".lock-sha256").write_text(digest + "\n")
    shutil.rmtree(wheelhouse, ignore_errors=True)
    staging.rename(wheelhouse)
    print(f"wheelhouse ready in {time.monotonic() - started:.0f} s", flush=True)
    return wheelhouse


def stage_weights(source: Path, dest: Path = WEIGHTS_DIR) -> list[Path]:
    """Copy the pretrained weights from ``source`` into the build context (hash-checked)."""
    sys.path.insert(0, str(REPO))
    try:
        from srseg.models.vgg import MissingWeightsError
        from srseg.weights import stage_weights as stage
    finally:
        sys.path.remove(str(REPO))
    try:
        staged = stage(dest, source)
    except MissingWeightsError as exc:
        raise BuildError(f"weights: {exc}") from exc
    print(
        f"staged {len(staged)} weight files into {dest.relative_to(REPO)}: {', '.join(p.name for p in staged)}",
        flush=True,
    )
    return staged


def build(docker: Docker, tag: str = DEFAULT_TAG, base: str | None = None, force: bool = False) -> str:
    """Build ``tag`` unless it is up to date; returns the tag."""
    base_ref = ensure_base(docker, base)
    ensure_wheelhouse(REPO / "requirements.lock", REPO / "wheelhouse")
    args = {"BASE_IMAGE": base_ref, "GIT_COMMIT": git_commit(), "VERSION": project_version(), "SOURCE": SOURCE_URL}
    digest = build_digest(args)
    if not force and docker.image_label(tag, DIGEST_LABEL) == digest:
        print(f"{tag} is up to date (build digest {digest[:12]})")
        return tag
    cmd = [
        "build",
        "--network",
        "host",
        "--tag",
        tag,
        "--label",
        f"{DIGEST_LABEL}={digest}",
        "--label",
        f"{BASE_LABEL}={base_ref}",
    ]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    started = time.monotonic()
    docker.run(*cmd, str(REPO), capture=False)
    print(f"built {tag} in {time.monotonic() - started:.0f} s", flush=True)
    return tag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default=DEFAULT_TAG)
    parser.add_argument("--base", default="", help=f"base image (default: the local {LOCAL_BASE})")
    parser.add_argument("--force", action="store_true", help="build even when the tag is up to date")
    parser.add_argument("--keep-engine", action="store_true", help="leave a private engine running afterwards")
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="folder with vgg19-dcbb9e9d.pth and alexnet-owt-7be5be79.pth to bake into the image's torch hub cache",
    )
    args = parser.parse_args(argv)
    own_engine = None
    try:
        if args.weights is not None:
            stage_weights(args.weights)
        host = os.environ.get("DOCKER_HOST")
        if not host:
            was_running = engines.running() is not None
            own_engine = engines.start()
            host = own_engine.host
            if was_running:
                own_engine = None  # someone else started it: leave it running
        build(Docker(host), args.tag, args.base or None, args.force)
    except (BuildError, engines.EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if own_engine is not None and not args.keep_engine:
            engines.stop(own_engine.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
