"""The registry flow against real servers on loopback: ``mlflow server`` (SQLite backend, proxied
artifacts) storing into SeaweedFS S3 (``weed mini``). No fake registry, no fake S3."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from conftest import SCALE, Set5Evaluator, lr_hr_pairs, super_resolve_uint8
from mlflow import MlflowClient
from PIL import Image

from srseg.inference.upscale import upscale
from srseg.models.io import load_generator
from srseg.registry import Gate, load_sr_head, log_and_register, promote, rollback

NAME = "srseg-sr"
TAGS = {"git_commit": "0123abcd", "data_manifest_sha256": "d" * 64}


def listening_ports(pgid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket that a process of group ``pgid`` listens on (from /proc)."""
    inodes = set()
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or os.getpgid(int(proc.name)) != pgid:
                continue
            fds = list((proc / "fd").iterdir())
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                target = fd.readlink().as_posix()
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A = LISTEN
                address, port = fields[1].split(":")
                address = socket.inet_ntoa(bytes.fromhex(address)[::-1]) if len(address) == 8 else f"[{address}]"
                found.add((address, int(port, 16)))
    return found


def test_servers_listen_on_loopback_only_and_s3_checks_credentials(server_stack: tuple) -> None:
    server, s3, _ = server_stack
    for pid, url in ((s3.pid, s3.endpoint_url), (server.pid, server.tracking_uri)):
        ports = listening_ports(pid)
        assert ("127.0.0.1", int(url.rsplit(":", 1)[1])) in ports, (url, ports)
        assert {address for address, _ in ports} == {"127.0.0.1"}, ports
    import boto3
    from botocore.exceptions import ClientError

    wrong = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key="not-the-secret",
        region_name=s3.region,
    )
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        wrong.list_objects_v2(Bucket="mlflow")


def test_register_promote_refuse_rollback_and_serve_through_s3(
    server_stack: tuple, sr_heads: dict[str, Path], set5: Path, tmp_path: Path
) -> None:
    server, s3, destination = server_stack
    uri = server.tracking_uri
    client = MlflowClient(uri, registry_uri=uri)
    evaluator = Set5Evaluator(set5, uri)
    gate = Gate(perceptual="none")  # LPIPS needs backbone weights the tests do not ship

    def champion() -> str | None:
        value = client.get_registered_model(NAME).aliases.get("champion")
        return None if value is None else str(value)

    # 1. A first version worse than bicubic, no champion yet: refused all the same.
    v1 = log_and_register(sr_heads["nearest"], NAME, uri, tags=TAGS, metrics={"psnr_y": 18.9})
    assert v1.source.startswith("mlflow-artifacts:/")  # proxied: the client never talks to S3
    refused = promote(NAME, uri, evaluator, gate)
    assert evaluator.calls == [{"challenger": f"models:/{NAME}/1", "bicubic": "bicubic"}]
    [floor, _] = refused.criteria
    assert refused.action == "reject" and not floor.passed and floor.difference < -1.0, refused.table()
    assert champion() is None and client.get_model_version(NAME, v1.version).tags["gate_failed"] == floor.name

    # 2. One within a few thousandths of a dB of bicubic: its CI cannot clear the 0.1 dB floor.
    log_and_register(sr_heads["barely"], NAME, uri, tags=TAGS)
    barely = promote(NAME, uri, evaluator, gate)
    assert barely.action == "reject" and abs(barely.criteria[0].difference) < 0.02 and champion() is None, (
        barely.table()
    )

    # 3. A version that beats bicubic on every crop: the first champion, through the gate.
    v3 = log_and_register(sr_heads["fitted"], NAME, uri, tags=TAGS)
    first = promote(NAME, uri, evaluator, gate)
    [floor, _] = first.criteria
    assert first.action == "promote" and floor.passed and floor.ci_low >= 0.1, first.table()
    assert champion() == v3.version and promote(NAME, uri, evaluator, gate).action == "already_champion"

    # 4. Random weights: refused (floor and champion criteria), champion unchanged, the table says why.
    v4 = log_and_register(sr_heads["random"], NAME, uri, tags=TAGS)
    dry = promote(NAME, uri, evaluator, gate, dry_run=True)
    assert (
        dry.action == "reject"
        and not dry.applied
        and "gate_decision" not in client.get_model_version(NAME, v4.version).tags
    )
    refused = promote(NAME, uri, evaluator, gate)
    table = refused.table()
    assert refused.action == "reject" and [c.passed for c in refused.criteria] == [False, False, True], table
    assert "bicubic floor (psnr_y)" in table and f"(champion v{v3.version})" in table and "FAIL" in table
    assert {k: str(v) for k, v in client.get_registered_model(NAME).aliases.items()} == {
        "champion": v3.version,
        "challenger": v4.version,
    }

    # 5. A better-fitted version: beats bicubic and the champion (paired, with CI) -> promoted.
    v5 = log_and_register(sr_heads["fitted_more"], NAME, uri, tags=TAGS)
    promoted = promote(NAME, uri, evaluator, gate)
    [floor, versus, _] = promoted.criteria
    assert promoted.action == "promote" and floor.passed and versus.passed and versus.difference > 0, promoted.table()
    assert client.get_model_version(NAME, v3.version).tags["previous_champion"] == "true"
    assert client.get_registered_model(NAME).tags["previous_champion_version"] == v3.version

    # 6. Roll back: champion returns to v3.
    back = rollback(NAME, uri)
    assert (back.champion_before, back.champion_after) == (v5.version, v3.version) and champion() == v3.version

    # 7. The artifacts really are in SeaweedFS, byte for byte.
    keys = s3.list_keys("mlflow", prefix="artifacts/")
    weights_keys = sorted(k for k in keys if k.endswith("/sr_head/artifacts/sr_head/sr_head.safetensors"))
    assert len(weights_keys) == 5 and sum(k.endswith("/sr_head/MLmodel") for k in keys) == 5, keys
    stored = {
        hashlib.sha256(s3.client().get_object(Bucket="mlflow", Key=k)["Body"].read()).hexdigest() for k in weights_keys
    }
    local = {
        hashlib.sha256(sr_heads[n].read_bytes()).hexdigest()
        for n in ("nearest", "barely", "fitted", "random", "fitted_more")
    }
    assert stored == local
    assert destination == "s3://mlflow/artifacts"

    # 8. Serve the champion: load models:/NAME@champion and upscale a real image.
    net = load_sr_head(f"models:/{NAME}@champion", uri)
    [(lr, hr)] = lr_hr_pairs(set5, ("head",), 128)
    got = super_resolve_uint8(net, lr, "champion")
    want = super_resolve_uint8(load_generator(sr_heads["fitted"]), lr, "local v3")
    assert got.shape == hr.shape == (128, 128, 3) and np.array_equal(got, want)


def test_upscale_cli_path_loads_the_champion(
    server_stack: tuple, sr_heads: dict[str, Path], set5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``srseg upscale --model models:/NAME@champion`` (the loader contract of srseg.registry.loader)."""
    server, _, _ = server_stack
    name = "srseg-sr-upscale"
    version = log_and_register(sr_heads["nearest"], name, server.tracking_uri, tags=TAGS).version
    # the loader is under test here, not the gate (which would refuse a nearest-neighbour net)
    MlflowClient(server.tracking_uri).set_registered_model_alias(name, "champion", version)
    monkeypatch.chdir(tmp_path)  # should anything fall back to MLflow's default store, it lands here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    [(lr, _)] = lr_hr_pairs(set5, ("bird",), 64)
    Image.fromarray(lr.mul(255).round().byte().permute(1, 2, 0).numpy()).save(tmp_path / "bird.png")
    [out] = upscale(
        [tmp_path / "bird.png"],
        tmp_path / "out",
        f"models:/{name}@champion",
        scale=SCALE,
        tile=None,
        device="cpu",
        progress=False,
        tracking_uri=server.tracking_uri,
    )
    got = np.asarray(Image.open(out).convert("RGB"))
    want = super_resolve_uint8(load_generator(sr_heads["nearest"]), lr, "local")
    assert np.array_equal(got, want)
    assert np.array_equal(
        got[::SCALE, ::SCALE], lr.mul(255).round().byte().permute(1, 2, 0).numpy()
    )  # nearest neighbour


def test_weed_start_retries_when_a_port_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A port lost to another process between choosing and binding costs one retry, not a failure."""
    import servers

    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    real_free_ports = servers.free_ports
    calls = []

    def first_s3_port_taken(count: int, host: str = servers.HOST) -> list[int]:
        ports = real_free_ports(count, host)
        calls.append(count)
        if len(calls) == 1 and count == 8:
            ports[6] = taken  # the S3 port of the first attempt
        return ports

    monkeypatch.setattr(servers, "free_ports", first_s3_port_taken)
    try:
        with servers.seaweed_server(tmp_path, buckets=["retried"]) as s3:
            assert int(s3.endpoint_url.rsplit(":", 1)[1]) != taken
            assert s3.list_keys("retried") == []
        first_log = (tmp_path / "weed.attempt1.log").read_text()
        assert servers.PORT_TAKEN.search(first_log) and str(taken) in first_log
    finally:
        busy.close()
