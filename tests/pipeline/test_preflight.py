"""The pipeline's preflight checks (srseg.pipeline.preflight): which tracking URIs a cluster run can
share, a tracking server that does not answer, the image's code against the submitted code
version, a volume this user cannot write, and the whole step as the pipeline runs it."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from srseg.config import load_params
from srseg.models.vgg import MissingWeightsError
from srseg.pipeline import preflight
from srseg.pipeline.preflight import PreflightError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "uri",
    [
        "https://mlflow.example.org",
        "http://mlflow.mlflow.svc.cluster.local:5000",
        "http://10.0.3.7:5000/",
        "https://mlflow.example.org/prefix",
    ],
)
def test_tracking_servers_the_pods_share_are_accepted(uri: str) -> None:
    assert preflight.tracking_problem(uri, "x") is None


def test_a_silent_tracking_server_fails_within_seconds() -> None:
    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(401)  # a proxy wanting a token still proves the server is there
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        preflight.check_reachable(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    started = time.monotonic()
    with pytest.raises(PreflightError, match=rf"127\.0\.0\.1:{port} does not answer"):
        preflight.check_reachable(f"http://127.0.0.1:{port}", timeout_s=5)
    assert time.monotonic() - started < 5


def test_code_digest_follows_the_code_and_catches_a_stale_image(tmp_path: Path) -> None:
    checkout = preflight.code_digest(REPO / "srseg")
    assert preflight.code_digest() == checkout  # the imported package is this checkout's
    copy = tmp_path / "srseg"
    shutil.copytree(REPO / "srseg", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"cache")  # caches do not count
    assert preflight.code_digest(copy) == checkout
    (copy / "study" / "static" / "study.js").write_text("// edited\n")  # package data counts
    assert preflight.code_digest(copy) != checkout
    assert preflight.check_code_version(checkout) == checkout and preflight.check_code_version("") == checkout
    with pytest.raises(PreflightError, match="image is stale"):
        preflight.check_code_version(checkout, copy)


def test_an_unwritable_volume_names_the_recipe(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(PreflightError, match=r"not writable by uid \d+ .*volume-permissions-job\.yaml"):
        preflight.check_writable(blocker / "work")
    assert preflight.check_writable(tmp_path / "work") == tmp_path / "work"
    assert list((tmp_path / "work").iterdir()) == []  # the probe file is gone


def test_the_preflight_step_on_and_off_the_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    demo = load_params(REPO / "params.yaml")
    local = preflight.run_preflight(demo, tmp_path / "work", preflight.code_digest(), cluster=False)  # kfp.local: fine
    assert local.tracking_uri == "sqlite:///mlflow.db" and local.to_dict()["weights"] == "none needed"
    with pytest.raises(PreflightError, match="a store local to each pod"):  # the same params in a pod
        preflight.run_preflight(demo, tmp_path / "work", cluster=True)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # how the step knows it runs in a pod
    with pytest.raises(PreflightError, match="a store local to each pod"):
        preflight.run_preflight(demo, tmp_path / "work")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://localhost:5000")  # what the pod would really use
    with pytest.raises(PreflightError, match="the pod itself"):
        preflight.run_preflight(demo, tmp_path / "work")
    paper = load_params(REPO / "params.yaml", profile="paper")
    with pytest.raises(MissingWeightsError, match=r"(?s)vgg19-dcbb9e9d\.pth.*alexnet-owt-7be5be79\.pth"):
        preflight.run_preflight(paper, tmp_path / "work", cluster=False)
