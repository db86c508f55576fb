"""Load on loopback: 20 concurrent raters x 50 votes against the real server process (gunicorn),
which is killed with SIGKILL and restarted halfway; every vote is stored exactly once."""

from __future__ import annotations

import gc
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from srseg.study.app import create_invitations
from srseg.study.bundle import build_study, load_study
from srseg.study.store import open_store

RATERS = 20
VOTES = 50
DEADLINE_S = 120.0
LISTENING = re.compile(r"Listening at: (http://127\.0\.0\.1:\d+)")


@pytest.fixture()
def bundle(method_folders: dict[str, Path], tmp_path: Path) -> Path:
    """4 methods x 8 images = 48 pairs + 2 attention checks = 50 pairs."""
    methods = {name: method_folders[name] for name in ("bicubic", "sr_only", "multitask", "blurry")}
    bundle = build_study(
        methods, tmp_path / "study", hr_dir=method_folders["hr"], num_images=8, crop_size=32, attention_checks=2, seed=0
    )
    assert len(load_study(bundle).pairs) == VOTES
    return bundle


def _start(bundle: Path, state: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """Start the server on port 0 (gunicorn binds it; no port chosen here) and read its address back."""
    offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "srseg.study.app",
                "--bundle",
                str(bundle),
                "--state",
                str(state),
                "--port",
                "0",
                "--threads",
                "8",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    base = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        if base is None:
            found = LISTENING.search(log_path.read_text(errors="replace")[offset:])
            base = found.group(1) if found else None
        try:
            if base is not None and requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    _kill(process)
    raise AssertionError(f"server did not come up in 30 s:\n{log_path.read_text()[-3000:]}")


def _kill(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the server's own process group (gunicorn master + worker), then reap the master."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@pytest.mark.timeout(180)
def test_concurrent_raters_survive_a_server_kill(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = load_study(bundle)
    state = tmp_path / "state"
    invitations = create_invitations(bundle, RATERS, "http://study.invalid", state)
    log_path = tmp_path / "server.log"
    progress = {"votes": 0}
    lock = threading.Lock()
    latencies: list[float] = []
    sent: dict[tuple[str, str], str] = {}
    errors: list[str] = []
    stop_at = time.monotonic() + DEADLINE_S

    server_at = {}  # the restarted server has a new port: raters read the current address

    def call(session: requests.Session, path: str, method: str = "POST", **kwargs) -> requests.Response:  # type: ignore[no-untyped-def]
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            try:
                response = session.request(method, f"{server_at['base']}{path}", timeout=10, **kwargs)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError):
                time.sleep(0.05)  # the server was killed before or during its answer: ask again
                continue
            with lock:
                latencies.append(time.perf_counter() - start)
            return response
        raise TimeoutError(f"no answer from {path} within the deadline")

    def rater(rater_id: str, url: str) -> None:
        try:
            token = url.split("#token=", 1)[1]
            with requests.Session() as session:
                response = call(session, "/api/session", json={"token": token})
                assert response.status_code == 200, response.text
                csrf = response.json()["csrf_token"]
                rng = random.Random(rater_id)
                while True:  # votes are taken only for the pair the study page shows
                    page = call(session, "/study", method="GET")
                    if page.url.endswith("/thanks"):
                        break
                    assert page.status_code == 200, f"/study: {page.status_code} {page.text[:200]}"
                    pair_id = page.text.split('data-pair-id="')[1].split('"')[0]
                    side = rng.choice(("left", "right"))
                    response = call(
                        session,
                        "/api/vote",
                        json={"pair_id": pair_id, "side": side, "response_ms": rng.randint(300, 3000)},
                        headers={"X-CSRF-Token": csrf},
                    )
                    assert response.status_code in (200, 201), f"{pair_id}: {response.status_code} {response.text}"
                    with lock:
                        sent[(rater_id, pair_id)] = side
                        progress["votes"] += 1
        except Exception as exc:  # reported by the main thread
            errors.append(f"{rater_id}: {exc!r}")

    server, server_at["base"] = _start(bundle, state, log_path)
    threads = [threading.Thread(target=rater, args=inv, daemon=True) for inv in invitations]
    started = time.perf_counter()
    try:
        for thread in threads:
            thread.start()
        while progress["votes"] < RATERS * VOTES // 3 and time.monotonic() < stop_at and not errors:
            time.sleep(0.01)
        killed_at = progress["votes"]
        _kill(server, signal.SIGKILL)
        server, server_at["base"] = _start(bundle, state, log_path)
        for thread in threads:
            thread.join(timeout=max(1.0, stop_at - time.monotonic()))
        # requests leaves some keep-alive sockets to the garbage collector even after
        # Session.close(); gunicorn's graceful stop would wait graceful_timeout for them.
        gc.collect()
        _kill(server, signal.SIGTERM)
        assert server.returncode == 0, log_path.read_text()[-3000:]
    finally:
        _kill(server, signal.SIGKILL)
    elapsed = time.perf_counter() - started

    assert errors == [] and not any(t.is_alive() for t in threads)
    store = open_store(study.study_id, state)
    votes = store.votes()
    assert len(votes) == RATERS * VOTES
    assert len({(v.rater_id, v.pair_id) for v in votes}) == RATERS * VOTES
    assert {(v.rater_id, v.pair_id): v.side for v in votes} == sent
    assert all(v.choice == study.by_id[v.pair_id].method(v.side) for v in votes)
    ordered = sorted(latencies)
    p50, p99 = ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]
    with capsys.disabled():  # shown in every run, not only with -s
        print(
            f"\nload: {len(votes)} votes from {RATERS} raters in {elapsed:.1f} s (server SIGKILLed after {killed_at} "
            "votes); "
            f"{len(ordered)} answered requests, latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
        )
