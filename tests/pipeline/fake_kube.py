"""A fake Kubernetes API server for the TrainJob launcher: real HTTP on 127.0.0.1 (port 0 read
back), the ``trainjobs.trainer.kubeflow.org`` endpoints the launcher calls, every request recorded.

Scripted behaviour: ``states`` (the TrainJob's state on successive GETs, the last one repeats),
``refuse`` (verb -> HTTP status with the API server's usual body: a Status JSON for 403/404/409/422,
the plain "404 page not found" of an unknown API group), ``existing`` (jobs already in the
namespace, for the TTL sweep). Start it with :func:`serve` (a context manager that stops it).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

PREFIX = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/"
_PATH = re.compile(r"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs(?:/([^/]+))?$")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    token: str

    @property
    def verb(self) -> str:
        """The Kubernetes RBAC verb of this request."""
        match = _PATH.match(self.path)
        named = bool(match and match.group(2))
        if self.method == "GET":
            return "watch" if self.query.get("watch") else "get" if named else "list"
        return {"POST": "create", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}.get(self.method, self.method)


@dataclass
class FakeKube:
    states: list[str] = field(default_factory=lambda: ["Running"])
    refuse: dict[str, int] = field(default_factory=dict)
    existing: list[dict[str, Any]] = field(default_factory=list)
    namespaces: set[str] | None = None  # None: every namespace exists
    requests: list[Request] = field(default_factory=list)
    created: dict[str, dict[str, Any]] = field(default_factory=dict)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def verbs(self) -> list[str]:
        with self._lock:
            return [r.verb for r in self.requests]

    def _next_state(self) -> str:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


def status_body(code: int, message: str, kind: str = "trainjobs") -> bytes:
    reasons = {403: "Forbidden", 404: "NotFound", 409: "AlreadyExists", 422: "Invalid"}
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reasons.get(code, "Unknown"),
            "details": {"kind": kind},
            "code": code,
        }
    ).encode()


def trainjob(
    name: str,
    namespace: str,
    state: str,
    finished: str = "2020-01-01T00:00:00Z",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    conditions = (
        []
        if state == "Running"
        else [
            {
                "type": state,
                "status": "True",
                "reason": state,
                "message": "node-0 exited 1" if state == "Failed" else "",
                "lastTransitionTime": finished,
            }
        ]
    )
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "srseg"},
            "annotations": annotations or {},
        },
        "status": {"conditions": conditions},
    }


def _handler(kube: FakeKube) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _reply(self, code: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            request = Request(
                self.command,
                parts.path,
                parse_qs(parts.query),
                json.loads(raw) if raw else None,
                (self.headers.get("Authorization") or "").removeprefix("Bearer "),
            )
            with kube._lock:
                kube.requests.append(request)
            match = _PATH.match(parts.path)
            if not match:
                self._reply(404, b"404 page not found", "text/plain")
                return
            namespace, name = match.groups()
            if kube.namespaces is not None and namespace not in kube.namespaces:
                self._reply(404, status_body(404, f'namespaces "{namespace}" not found', kind="namespaces"))
                return
            code = kube.refuse.get(request.verb)
            if code == 404 and request.verb in ("create", "list"):  # no such API group: the plain 404
                self._reply(404, b"404 page not found", "text/plain")
                return
            if code:
                user = "system:serviceaccount:kubeflow:pipeline-runner"
                message = (
                    f'trainjobs.trainer.kubeflow.org is forbidden: User "{user}" cannot {request.verb} resource '
                    f'"trainjobs" in API group "trainer.kubeflow.org" in the namespace "{namespace}"'
                    if code == 403
                    else f"refused with {code}"
                )
                self._reply(code, status_body(code, message))
                return
            if request.verb == "create":
                body = request.body
                if body["metadata"]["name"] in kube.created:
                    self._reply(409, status_body(409, "already exists"))
                    return
                kube.created[body["metadata"]["name"]] = body
                self._reply(201, json.dumps(body).encode())
            elif request.verb == "get":
                self._reply(200, json.dumps(trainjob(name, namespace, kube._next_state())).encode())
            elif request.verb == "list":
                self._reply(200, json.dumps({"kind": "TrainJobList", "items": kube.existing}).encode())
            elif request.verb == "delete":
                kube.created.pop(name, None)
                self._reply(200, status_body(200, "deleted").replace(b'"Failure"', b'"Success"'))
            else:
                self._reply(405, status_body(405, "not supported here"))

        do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _handle

    return Handler


@contextmanager
def serve(kube: FakeKube) -> Iterator[FakeKube]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(kube))
    kube.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield kube
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def kubeconfig(kube: FakeKube, path: Path, namespace: str = "kubeflow-user") -> Path:
    """A kubeconfig for the fake server (the launcher reads it when it is not in a pod)."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": kube.url}}],
                "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
            }
        )
    )
    return path


def api(kube: FakeKube) -> Any:
    """A real ``CustomObjectsApi`` bound to the fake server."""
    from kubernetes import client

    config = client.Configuration(host=kube.url)
    config.api_key = {"authorization": "Bearer fake-token"}
    return client.CustomObjectsApi(client.ApiClient(config))
