"""Registry operations under concurrency and failure, against a real ``mlflow server`` on loopback:
the registered-model lock admits one holder at a time (threads racing for it), refuses after
waiting for a live lease and takes over an expired one; two real ``srseg promote`` processes racing
on the same challenger leave exactly one winner, a consistent registry and a one-line refusal
(exit 2, no traceback); an unreachable tracking server is reported within seconds; ``mlflow.enabled:
false`` is refused.

``SRSEG_RACE_ROUNDS`` (default 2) sets how many racing rounds run; the acceptance loop is
``SRSEG_RACE_ROUNDS=10 python -m pytest tests/registry/test_registry_concurrency.py -k racing -s``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import ReportImages
from mlflow import MlflowClient
from servers import MlflowServer, mlflow_server

from srseg.cli import main
from srseg.config import load_params
from srseg.registry import log_and_register
from srseg.registry.lock import LOCK_TAG, LockSettings, RegistryBusy, acquire, current_holder, locked
from srseg.stages import run_promote

REPO = Path(__file__).resolve().parents[2]
TAGS = {"git_commit": "0123abcd", "data_manifest_sha256": "f" * 64}
FAST = LockSettings(lease_s=30.0, wait_s=60.0, max_write_s=1.0, settle_s=1.2, poll_s=0.1)
# Each racer imports everything first, then waits at a file barrier, so both start judging at the
# same moment (interpreter start-up differs by seconds on a loaded machine); then it is `srseg promote`.
RACER = """
import sys, time
from pathlib import Path
import srseg.evaluate.run, srseg.registry.evalcache, srseg.stages.ship
from srseg.cli import main
barrier, me = Path(sys.argv[1]), sys.argv[2]
(barrier / me).touch()
deadline = time.monotonic() + 300
while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
    time.sleep(0.005)
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow-concurrency")) as running:
        yield running


def _model(server: MlflowServer, name: str) -> MlflowClient:
    client = MlflowClient(server.tracking_uri, registry_uri=server.tracking_uri)
    client.create_registered_model(name)
    return client


def test_lock_admits_one_holder_at_a_time(server: MlflowServer) -> None:
    name = "lock-threads"
    _model(server, name)
    spans: list[tuple[float, float, int]] = []
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        client = MlflowClient(server.tracking_uri, registry_uri=server.tracking_uri)
        start.wait()
        try:
            with locked(client, name, f"worker {index}", FAST):
                entered = time.monotonic()
                time.sleep(0.3)
                spans.append((entered, time.monotonic(), index))
        except BaseException as exc:  # reported below, with the spans
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and len(spans) == 4, (errors, spans)
    spans.sort()
    for before, after in zip(spans, spans[1:]):
        assert before[1] <= after[0], f"two holders at once: {before} and {after}"
    assert current_holder(MlflowClient(server.tracking_uri), name) is None  # the last holder released it


def test_a_live_lease_is_refused_after_waiting_and_an_expired_one_is_taken_over(server: MlflowServer) -> None:
    name = "lock-lease"
    client = _model(server, name)
    quick = LockSettings(lease_s=3.0, wait_s=0.5, max_write_s=0.5, settle_s=0.6, poll_s=0.1)
    first = acquire(client, name, "promote v1", quick)
    with pytest.raises(
        RegistryBusy, match=r"locked by another registry operation: promote v1 by .+:\d+ \(lease ends in \d+ s\)"
    ):
        acquire(client, name, "promote v2", quick)
    time.sleep(first.remaining() + 1.0)  # the holder stalls (or crashed) past its lease
    with pytest.raises(RegistryBusy, match="about to expire"):
        first.check()  # it must not write any more
    second = acquire(client, name, "rollback v1", quick)
    first.release()  # a late release leaves the new holder's lease alone
    holder = current_holder(client, name)
    assert holder is not None and holder.token == second.holder.token and holder.operation == "rollback v1"
    second.release()
    assert LOCK_TAG not in client.get_registered_model(name).tags


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _race_round(server: MlflowServer, images: ReportImages, tmp: Path, index: int) -> str:
    """One round: champion v1, challenger v2 (the same weights: it passes the gate), two racers.
    Returns how the loser was refused."""
    uri = server.tracking_uri
    name = f"race-{index}"
    client = MlflowClient(uri, registry_uri=uri)
    v1 = log_and_register(images.fitted, name, uri, tags=TAGS)
    client.set_registered_model_alias(name, "champion", v1.version)  # setup, not under test
    v2 = log_and_register(images.fitted, name, uri, tags=TAGS)
    params_file = images.params(tmp / f"params-{index}.yaml", name, uri)
    barrier = tmp / f"barrier-{index}"
    barrier.mkdir()
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(barrier), str(k), "--params", str(params_file), "promote"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=tmp,
        )
        for k in range(2)
    ]
    results = []
    for racer in racers:
        try:
            _, err = racer.communicate(timeout=300)
        finally:
            if racer.poll() is None:
                racer.kill()
        results.append((racer.returncode, err))
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], [(code, err[-2000:]) for code, err in results]
    (_, won), (_, lost) = sorted(results, key=lambda r: r[0])
    assert "Traceback" not in won + lost
    refusals = [line for line in lost.splitlines() if line.startswith("srseg promote: error:")]
    assert len(refusals) == 1, lost[-2000:]
    assert "all criteria pass" in won and "promotion decision applied" in won

    model = client.get_registered_model(name)
    assert {k: str(v) for k, v in model.aliases.items()} == {"champion": v2.version, "challenger": v2.version}
    assert json.loads(model.tags["champion_history"]) == [v1.version]  # displaced once, not once per racer
    assert model.tags["previous_champion_version"] == v1.version and LOCK_TAG not in model.tags
    assert client.get_model_version(name, v1.version).tags["previous_champion"] == "true"
    assert client.get_model_version(name, v2.version).tags["gate_decision"] == "promote"
    return (
        "lock busy"
        if "locked by another" in refusals[0] or "took the lock first" in refusals[0]
        else ("aliases moved" if "aliases moved" in refusals[0] else refusals[0])
    )


@pytest.mark.timeout(1800)
def test_two_racing_srseg_promote_processes_leave_one_winner(
    server: MlflowServer, report_images: ReportImages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # score the weights and bicubic once, so the racers read their scores back and meet at the lock
    seed = report_images.params(tmp_path / "seed.yaml", "race-seed", server.tracking_uri)
    log_and_register(report_images.fitted, "race-seed", server.tracking_uri, tags=TAGS)
    assert run_promote(load_params(seed), dry_run=True)["passed"]
    rounds = int(os.environ.get("SRSEG_RACE_ROUNDS", "2"))
    outcomes = [_race_round(server, report_images, tmp_path, i) for i in range(rounds)]
    print(
        f"\n{rounds} racing rounds: one winner each; the loser was refused by: "
        + ", ".join(f"{o} x{outcomes.count(o)}" for o in sorted(set(outcomes)))
    )


def _plain_params(path: Path, **mlflow: object) -> Path:
    path.write_text(
        yaml.safe_dump({"registry": {"model_name": "unreachable"}, "promote": {"perceptual": "none"}, "mlflow": mlflow})
    )
    return path


def test_unreachable_tracking_server_is_reported_within_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts connections, nobody ever answers
    try:
        for sock, why in ((refused, "Connection refused"), (silent, "no answer within 5 s")):
            uri = f"http://user:secret@127.0.0.1:{sock.getsockname()[1]}"
            for command in (["promote"], ["rollback"]):
                capsys.readouterr()
                started = time.monotonic()
                code = main(["--params", str(_plain_params(tmp_path / "params.yaml", tracking_uri=uri)), *command])
                elapsed = time.monotonic() - started
                err = capsys.readouterr().err.strip()
                assert code == 2 and elapsed < 15, (code, elapsed, err)
                assert len(err.splitlines()) == 1 and err.startswith(
                    f"srseg {command[0]}: error: MLflow tracking server"
                )
                assert "unreachable" in err and why in err and "secret" not in err, err
    finally:
        refused.close()
        silent.close()


def test_promote_and_rollback_refuse_when_mlflow_is_disabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = _plain_params(tmp_path / "params.yaml", enabled=False, tracking_uri=f"sqlite:///{tmp_path / 'never.db'}")
    for command in ("promote", "rollback", "register"):
        capsys.readouterr()
        assert main(["--params", str(params), command]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (
            f"srseg {command}: error: mlflow.enabled is false: {command} works on the MLflow model registry "
            "and does nothing without it (set mlflow.enabled: true and mlflow.tracking_uri)"
        )
    assert not (tmp_path / "never.db").exists()
