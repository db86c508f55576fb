"""A private Docker engine for building and testing the srseg image on this machine.

``dockerd`` (Debian's ``docker.io``) runs with everything under one folder ``root``: data root,
exec root, pid file, log and its API socket (``root/docker.sock``), so it never touches a system
engine. Networking is off (``--bridge=none --iptables=false``): containers use ``--network host``
or none. It is started by ``make image`` / ``make test-image`` and by the image tests' fixture, and
stopped by its PID.

    python container/engine.py start|stop|status [--root DIR]

Needs root (dockerd does). ``start`` installs ``docker.io`` with apt-get when dockerd is missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path(os.environ.get("SRSEG_DOCKER_ROOT", "/tmp/srseg-docker"))
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


class EngineError(RuntimeError):
    """The engine could not be installed, started or stopped; the message says why."""


@dataclass(frozen=True)
class Engine:
    """A running dockerd: ``host`` is its API endpoint (for ``docker -H`` and ``DOCKER_HOST``)."""

    root: Path
    pid: int

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    def env(self) -> dict[str, str]:
        """The environment for ``docker`` commands and the Python SDK aimed at this engine."""
        return {**os.environ, "DOCKER_HOST": self.host}

    def docker(
        self, *args: str, check: bool = True, capture: bool = True, timeout: float | None = None
    ) -> subprocess.CompletedProcess:
        """Run the engine's own client (``/usr/bin/docker`` of the same package) against it."""
        return subprocess.run(
            [docker_cli(), "-H", self.host, *args], check=check, text=True, capture_output=capture, timeout=timeout
        )


def docker_cli() -> str:
    """The docker client that ships with dockerd (a newer client elsewhere on PATH may need buildx)."""
    packaged = Path("/usr/bin/docker")
    return str(packaged) if packaged.is_file() else (shutil.which("docker") or "docker")


def ensure_installed() -> None:
    """Install Debian's docker.io when dockerd is missing (root only)."""
    if shutil.which("dockerd"):
        return
    if os.geteuid() != 0:
        raise EngineError("dockerd is not installed: run `sudo apt-get install docker.io`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "docker.io"]):
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise EngineError(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    if not shutil.which("dockerd"):
        raise EngineError("apt-get installed docker.io but dockerd is still not on PATH")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours is not alive
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _read_pid(root: Path) -> int | None:
    try:
        return int((root / "dockerd.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _responds(root: Path) -> bool:
    sock = root / "docker.sock"
    if not sock.exists():
        return False
    result = subprocess.run(
        [docker_cli(), "-H", f"unix://{sock}", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.returncode == 0


def running(root: Path = DEFAULT_ROOT) -> Engine | None:
    """The engine already running under ``root``, if any."""
    pid = _read_pid(root)
    if pid is not None and _pid_alive(pid) and _responds(root):
        return Engine(root, pid)
    return None


def start(root: Path = DEFAULT_ROOT) -> Engine:
    """Start dockerd under ``root`` (or return the one already running there)."""
    root = Path(root).resolve()
    existing = running(root)
    if existing is not None:
        return existing
    ensure_installed()
    for sub in ("data", "exec"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "docker.sock").unlink(missing_ok=True)
    log = open(root / "dockerd.log", "ab")  # noqa: SIM115 - the daemon writes to it after this returns
    cmd = [
        "dockerd",
        "--data-root",
        str(root / "data"),
        "--exec-root",
        str(root / "exec"),
        "--pidfile",
        str(root / "dockerd.pid"),
        "--host",
        f"unix://{root / 'docker.sock'}",
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-masq=false",
        "--storage-driver",
        "overlay2",
    ]
    # its own session: a Ctrl-C in the terminal that started it does not reach it
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (root / "dockerd.log").read_text(errors="replace")[-3000:]
            raise EngineError(f"dockerd exited with {proc.returncode}; log {root / 'dockerd.log'}:\n{tail}")
        if _responds(root):
            return Engine(root, proc.pid)
        time.sleep(0.5)
    _terminate(proc.pid)
    raise EngineError(
        f"dockerd did not answer on {root / 'docker.sock'} within {START_TIMEOUT_S:.0f} s (log: {root / 'dockerd.log'})"
    )


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.2)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    try:  # reap it if it is our child
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _unmount_leftovers(root: Path) -> None:
    """dockerd leaves mounts under its exec root (e.g. ``exec/netns/default``): unmount them, so
    the folder can be removed."""
    prefix = f"{root}/"
    mounts = [
        line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if line.split()[1].startswith(prefix)
    ]
    for mount in sorted(mounts, reverse=True):  # deepest first
        subprocess.run(["umount", "-l", mount], capture_output=True)


def stop(root: Path = DEFAULT_ROOT) -> bool:
    """Stop the dockerd of ``root`` by its PID (then unmount what it left); False when none ran."""
    root = Path(root).resolve()
    pid = _read_pid(root)
    was_running = pid is not None and _pid_alive(pid)
    if was_running:
        _terminate(pid)
    _unmount_leftovers(root)
    return was_running


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=f"engine folder (default {DEFAULT_ROOT})")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            engine = start(args.root)
            print(engine.host)
        elif args.action == "stop":
            print("stopped" if stop(args.root) else "not running")
        else:
            engine = running(args.root)
            print(engine.host if engine else "not running")
            return 0 if engine else 1
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
