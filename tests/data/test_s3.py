"""S3: uploading a tree and using an s3:// mirror, against moto's server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Iterator

import pytest
from mirror import sample_mirror  # noqa: F401 - fixture

from srseg.data.download import download_cocostuff
from srseg.data.s3 import make_client, parse_s3_url, upload_tree
from srseg.data.transfer import Fetcher, NotFoundError

SECRET = "moto-secret-never-logged"


@pytest.fixture
def moto_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        yield endpoint
    finally:
        server.stop()


def _bucket(name: str) -> Any:
    client = make_client()
    client.create_bucket(Bucket=name)
    return client


def test_upload_tree_is_idempotent(moto_endpoint: str, sample_mirror: Path) -> None:  # noqa: F811
    client = _bucket("mirror")
    files = sorted(p.relative_to(sample_mirror).as_posix() for p in sample_mirror.rglob("*") if p.is_file())
    written = upload_tree(sample_mirror, "mirror", "/coco/v1/", endpoint_url=moto_endpoint)
    assert sorted(written) == [f"coco/v1/{f}" for f in files]
    body = client.get_object(Bucket="mirror", Key="coco/v1/zips/val2017.zip")["Body"].read()
    assert body == (sample_mirror / "zips/val2017.zip").read_bytes()
    assert upload_tree(sample_mirror, "mirror", "coco/v1") == []  # unchanged: nothing sent


def test_s3_mirror_subset_and_full(
    moto_endpoint: str, sample_mirror: Path, cocostuff_sample: Path, tmp_path: Path,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    _bucket("mirror")
    upload_tree(sample_mirror, "mirror", "coco")
    common: dict[str, Any] = {"seed": 3, "retries": 2, "backoff_s": 0.001, "timeout_s": 10.0, "progress": False}
    with caplog.at_level(logging.DEBUG):
        subset = download_cocostuff(tmp_path / "sub", ["val2017"], "subset", 2, mirror="s3://mirror/coco", **common)
        full = download_cocostuff(tmp_path / "full", ["val2017"], "full", 0, mirror="s3://mirror/coco/", **common)
    assert SECRET not in caplog.text
    assert len(subset.splits["val2017"]) == 2 and len(full.splits["val2017"]) == 8
    for root, manifest in ((tmp_path / "sub", subset), (tmp_path / "full", full)):
        for s in manifest.splits["val2017"]:
            src = cocostuff_sample / "images" / "val2017" / f"{s.id:012d}.jpg"
            assert hashlib.sha256((root / s.image).read_bytes()).hexdigest() == s.image_sha256
            assert s.image_sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
            lab = cocostuff_sample / "stuffthingmaps" / "val2017" / f"{s.id:012d}.png"
            assert s.label_sha256 == hashlib.sha256(lab.read_bytes()).hexdigest()
    assert subset.meta["sources"]["stuffthingmaps_trainval2017.zip"] == (
        "s3://mirror/coco/cocostuff/stuffthingmaps_trainval2017.zip"
    )

    # and the prepared root goes back up to S3
    _bucket("datasets")
    keys = upload_tree(tmp_path / "sub", "datasets", "hr/v1")
    assert "hr/v1/manifest.json" in keys and len(keys) == 5


def test_s3_ranges_and_missing_keys(moto_endpoint: str, sample_mirror: Path) -> None:  # noqa: F811
    _bucket("mirror")
    upload_tree(sample_mirror, "mirror", "m")
    data = (sample_mirror / "zips/val2017.zip").read_bytes()
    with Fetcher(retries=1, backoff_s=0.001, timeout_s=10.0) as fetcher:
        assert fetcher.read_range("s3://mirror/m/zips/val2017.zip", 7, 100) == data[7:107]
        assert fetcher.probe("s3://mirror/m/zips/val2017.zip").size == len(data)
        with pytest.raises(NotFoundError, match="s3://mirror/m/nope"):
            fetcher.fetch_bytes("s3://mirror/m/nope")


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://bucket/a/b.zip") == ("bucket", "a/b.zip")
    with pytest.raises(ValueError, match="'http://x/y'"):
        parse_s3_url("http://x/y")
