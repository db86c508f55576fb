"""The registry flow against real servers on loopback: ``mlflow server`` (SQLite backend, proxied
artifacts) storing into SeaweedFS S3 (``weed mini``). No fake registry, no fake S3."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from srseg.inference.upscale import upscale
from srseg.models.io import load_generator
from srseg.registry import Gate, load_sr_head, log_and_register, promote, rollback
from conftest import SCALE, Set5Evaluator, lr_hr_pairs, super_resolve_uint8

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

    wrong = boto3.client("s3", endpoint_url=s3.endpoint_url, aws_access_key_id=s3.access_key,
                         aws_secret_access_key="not-the-secret", region_name=s3.region)
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

    # 1. First version (dimmed output): no champion yet -> bootstrap.
    v1 = log_and_register(sr_heads["dimmed"], NAME, uri, tags=TAGS, metrics={"psnr_y": 18.9})
    assert v1.source.startswith("mlflow-artifacts:/")  # proxied: the client never talks to S3
    boot = promote(NAME, uri, evaluator, gate)
    assert boot.action == "bootstrap" and client.get_registered_model(NAME).aliases["champion"] in (1, "1")

    # 2. Second version (nearest neighbour, clearly better on real images) -> promoted.
    v2 = log_and_register(sr_heads["nearest"], NAME, uri, tags=TAGS)
    promoted = promote(NAME, uri, evaluator, gate)
    assert evaluator.calls == [f"models:/{NAME}/2", f"models:/{NAME}/1"]
    [psnr, _] = promoted.criteria
    assert promoted.action == "promote" and psnr.passed and psnr.challenger > psnr.champion + 3.0, promoted.table()
    assert client.get_model_version(NAME, v1.version).tags["previous_champion"] == "true"
    assert client.get_registered_model(NAME).tags["previous_champion_version"] == v1.version
    assert promote(NAME, uri, evaluator, gate).action == "already_champion"

    # 3. Third version (random weights) -> refused, champion unchanged, the table says why.
    v3 = log_and_register(sr_heads["random"], NAME, uri, tags=TAGS)
    dry = promote(NAME, uri, evaluator, gate, dry_run=True)
    assert dry.action == "reject" and not dry.applied and "gate_decision" not in client.get_model_version(NAME, v3.version).tags
    refused = promote(NAME, uri, evaluator, gate)
    table = refused.table()
    assert refused.action == "reject" and "psnr_y" in table and "FAIL" in table, table
    aliases = {k: str(v) for k, v in client.get_registered_model(NAME).aliases.items()}
    assert aliases == {"champion": v2.version, "challenger": v3.version}

    # 4. Roll back: champion returns to v1.
    back = rollback(NAME, uri)
    assert (back.champion_before, back.champion_after) == (v2.version, v1.version)
    assert str(client.get_registered_model(NAME).aliases["champion"]) == v1.version

    # 5. The artifacts really are in SeaweedFS, byte for byte.
    keys = s3.list_keys("mlflow", prefix="artifacts/")
    weights_keys = sorted(k for k in keys if k.endswith("/sr_head/artifacts/sr_head/sr_head.safetensors"))
    assert len(weights_keys) == 3 and sum(k.endswith("/sr_head/MLmodel") for k in keys) == 3, keys
    stored = {hashlib.sha256(s3.client().get_object(Bucket="mlflow", Key=k)["Body"].read()).hexdigest() for k in weights_keys}
    local = {hashlib.sha256(p.read_bytes()).hexdigest() for p in sr_heads.values()}
    assert stored == local
    assert destination == "s3://mlflow/artifacts"

    # 6. Serve the champion: load models:/NAME@champion and upscale a real image.
    net = load_sr_head(f"models:/{NAME}@champion", uri)
    [(lr, hr)] = lr_hr_pairs(set5, ("head",), 128)
    got = super_resolve_uint8(net, lr, "champion")
    want = super_resolve_uint8(load_generator(sr_heads["dimmed"]), lr, "local v1")
    assert got.shape == hr.shape == (128, 128, 3) and np.array_equal(got, want)


def test_upscale_cli_path_loads_the_champion(server_stack: tuple, sr_heads: dict[str, Path], set5: Path,
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``srseg upscale --model models:/NAME@champion`` (the loader contract of srseg.registry.loader)."""
    server, _, _ = server_stack
    name = "srseg-sr-upscale"
    log_and_register(sr_heads["nearest"], name, server.tracking_uri, tags=TAGS)
    promote(name, server.tracking_uri)
    monkeypatch.chdir(tmp_path)  # should anything fall back to MLflow's default store, it lands here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    [(lr, _)] = lr_hr_pairs(set5, ("bird",), 64)
    Image.fromarray(lr.mul(255).round().byte().permute(1, 2, 0).numpy()).save(tmp_path / "bird.png")
    [out] = upscale([tmp_path / "bird.png"], tmp_path / "out", f"models:/{name}@champion", scale=SCALE,
                    tile=None, device="cpu", progress=False, tracking_uri=server.tracking_uri)
    got = np.asarray(Image.open(out).convert("RGB"))
    want = super_resolve_uint8(load_generator(sr_heads["nearest"]), lr, "local")
    assert np.array_equal(got, want)
    assert np.array_equal(got[::SCALE, ::SCALE], lr.mul(255).round().byte().permute(1, 2, 0).numpy())  # nearest neighbour


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
