"""Test helper: the sample COCO mirror served over HTTP from 127.0.0.1.

``MirrorServer`` is a threaded HTTP/1.1 file server that honours single byte ranges (206, 416),
counts the body bytes it sends, logs every request, and can be told to refuse ranges, to drop the
connection halfway through a file once, or to answer a status code a number of times. Fixtures
are defined here and imported by the test modules that use them.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

import pytest

from srseg.data.mirror import build_sample_mirror


@dataclass
class Hit:
    method: str
    path: str
    range: str | None
    status: int
    sent: int


@dataclass
class MirrorState:
    root: Path
    refuse_ranges: bool = False
    drop_once: set[str] = field(default_factory=set)  # paths whose next body is cut in half
    fail: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to answer first
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def bytes_sent(self) -> int:
        with self.lock:
            return sum(h.sent for h in self.hits)

    def hits_for(self, path: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path == path]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # a stuck client cannot hold a server thread forever
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet tests
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    def _record(self, path: str, status: int, sent: int) -> None:
        state = self.server.state
        with state.lock:
            state.hits.append(Hit(self.command, path, self.headers.get("Range"), status, sent))

    def _status_only(self, path: str, status: int, extra: dict[str, str] | None = None) -> None:
        self._record(path, status, 0)  # before answering: the client may look right after
        self.send_response(status)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, body: bool) -> None:
        state = self.server.state
        path = unquote(urlsplit(self.path).path).lstrip("/")
        with state.lock:
            queued = state.fail.get(path)
            status = queued.pop(0) if queued else None
        if status is not None:
            self._status_only(path, status)
            return
        root = state.root.resolve()
        file = (root / path).resolve()
        if not file.is_file() or root not in file.parents:
            self._status_only(path, 404)
            return
        data = file.read_bytes()
        size = len(data)
        etag = f'"{size}-{file.stat().st_mtime_ns}"'
        start, end, status = 0, size - 1, 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted and not state.refuse_ranges and (if_range is None or if_range == etag):
            spec = wanted.strip().removeprefix("bytes=")
            first, _, last = spec.partition("-")
            if first == "":
                start, end = max(0, size - int(last)), size - 1
            else:
                start = int(first)
                end = min(int(last), size - 1) if last else size - 1
            if start >= size or start > end:
                self._status_only(path, 416, {"Content-Range": f"bytes */{size}"})
                return
            status = 206
        chunk = data[start : end + 1]
        with state.lock:
            drop = body and path in state.drop_once and len(chunk) > 1
            if drop:
                state.drop_once.discard(path)
        payload = chunk[: len(chunk) // 2] if drop else chunk
        # recorded before answering (the client may look right after): "sent" is what the server
        # writes, which a client that hangs up early (range probe, refused range) does not read
        self._record(path, status, len(payload) if body else 0)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("ETag", etag)
        if not state.refuse_ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            return
        self.wfile.write(payload)
        self.wfile.flush()
        if drop:
            self.close_connection = True  # hang up with half the announced bytes sent


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: MirrorState

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up early (range probes, refused ranges) are expected


class MirrorServer:
    """Serve ``root`` on 127.0.0.1:<ephemeral port> from a background thread."""

    def __init__(self, root: Path) -> None:
        self.state = MirrorState(root=root)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "MirrorServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def archives_total_size(root: Path) -> int:
    """Bytes of every zip in a mirror: what a full download would transfer."""
    return sum(p.stat().st_size for p in root.rglob("*.zip"))


@pytest.fixture(scope="session")
def sample_mirror(cocostuff_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample mirror, built once per session; treat as read-only (copy it to modify)."""
    return build_sample_mirror(cocostuff_sample, tmp_path_factory.mktemp("mirror") / "coco")


@pytest.fixture
def mirror_copy(sample_mirror: Path, tmp_path: Path) -> Path:
    """A private, modifiable copy of the sample mirror."""
    return Path(shutil.copytree(sample_mirror, tmp_path / "mirror"))


@pytest.fixture
def mirror_server(sample_mirror: Path) -> Iterator[MirrorServer]:
    server = MirrorServer(sample_mirror).start()
    try:
        yield server
    finally:
        server.stop()
