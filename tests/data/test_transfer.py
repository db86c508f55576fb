"""Fetcher: resume, retries, dropped connections, refused ranges, verification, file://."""

from __future__ import annotations

import hashlib
import logging
import socket
from pathlib import Path

import pytest
from mirror import MirrorServer, mirror_server, sample_mirror  # noqa: F401 - fixtures

from srseg.data.transfer import (
    Expected,
    Fetcher,
    IntegrityError,
    NotFoundError,
    RangeNotSupported,
    TransferError,
    verify_file,
)

ZIP = "zips/val2017.zip"
IMAGE = "val2017/000000000139.jpg"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fetcher(**kwargs: object) -> Fetcher:
    options: dict[str, object] = {"retries": 3, "backoff_s": 0.001, "timeout_s": 5.0}
    options.update(kwargs)
    return Fetcher(**options)  # type: ignore[arg-type]


def test_download_and_verify(mirror_server: MirrorServer, sample_mirror: Path, tmp_path: Path) -> None:  # noqa: F811
    source = sample_mirror / ZIP
    with _fetcher() as fetcher:
        out = fetcher.download(
            f"{mirror_server.url}/{ZIP}", tmp_path / "v.zip", Expected(size=source.stat().st_size, sha256=_sha(source))
        )
    assert _sha(out) == _sha(source)
    assert not (tmp_path / "v.zip.part").exists()


def _cut_off(server: MirrorServer, dest: Path) -> int:
    """An earlier process whose transfer of ZIP was cut off: leaves dest.part; returns its size."""
    server.state.drop_once.add(ZIP)
    with _fetcher(retries=0) as fetcher, pytest.raises(TransferError, match="giving up after 1 failed attempts"):
        fetcher.download(f"{server.url}/{ZIP}", dest)
    server.state.hits.clear()
    return dest.with_name(dest.name + ".part").stat().st_size


def test_resumes_existing_part_file(mirror_server: MirrorServer, sample_mirror: Path, tmp_path: Path) -> None:  # noqa: F811
    source = sample_mirror / ZIP
    data = source.read_bytes()
    have = _cut_off(mirror_server, tmp_path / "v.zip")
    assert 0 < have < len(data) and (tmp_path / "v.zip.part.json").is_file()
    with _fetcher() as fetcher:
        fetcher.download(f"{mirror_server.url}/{ZIP}", tmp_path / "v.zip", Expected(sha256=_sha(source)))
    assert _sha(tmp_path / "v.zip") == _sha(source)
    hits = mirror_server.state.hits_for(ZIP)
    assert [(h.status, h.range) for h in hits] == [(206, f"bytes={have}-")]
    assert mirror_server.state.bytes_sent == len(data) - have
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.zip"]


def test_dropped_connection_resumes(
    mirror_server: MirrorServer, sample_mirror: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    source = sample_mirror / ZIP
    mirror_server.state.drop_once.add(ZIP)
    with caplog.at_level(logging.WARNING), _fetcher() as fetcher:
        fetcher.download(f"{mirror_server.url}/{ZIP}", tmp_path / "v.zip", Expected(sha256=_sha(source)))
    assert _sha(tmp_path / "v.zip") == _sha(source)
    first, second = mirror_server.state.hits_for(ZIP)
    assert first.status == 200 and first.sent < source.stat().st_size
    assert second.status == 206 and second.range == f"bytes={first.sent}-"
    assert mirror_server.state.bytes_sent == source.stat().st_size  # nothing fetched twice
    assert "retry 1/3" in caplog.text


def test_server_ignoring_resume_restarts(
    mirror_server: MirrorServer, sample_mirror: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    source = sample_mirror / ZIP
    _cut_off(mirror_server, tmp_path / "v.zip")
    mirror_server.state.refuse_ranges = True
    with caplog.at_level(logging.WARNING), _fetcher() as fetcher:
        fetcher.download(f"{mirror_server.url}/{ZIP}", tmp_path / "v.zip", Expected(sha256=_sha(source)))
    assert _sha(tmp_path / "v.zip") == _sha(source)
    assert "restarting" in caplog.text


def test_retries_server_errors_then_succeeds(mirror_server: MirrorServer, sample_mirror: Path, tmp_path: Path) -> None:  # noqa: F811
    mirror_server.state.fail[IMAGE] = [503, 500]
    with _fetcher() as fetcher:
        fetcher.download(f"{mirror_server.url}/{IMAGE}", tmp_path / "i.jpg")
    assert _sha(tmp_path / "i.jpg") == _sha(sample_mirror / IMAGE)
    assert [h.status for h in mirror_server.state.hits_for(IMAGE)] == [503, 500, 200]


def test_gives_up_after_bounded_retries(mirror_server: MirrorServer, tmp_path: Path) -> None:  # noqa: F811
    mirror_server.state.fail[IMAGE] = [503] * 10
    with _fetcher(retries=2) as fetcher, pytest.raises(TransferError, match=r"giving up after 3 failed attempts.*503"):
        fetcher.download(f"{mirror_server.url}/{IMAGE}", tmp_path / "i.jpg")
    assert len(mirror_server.state.hits_for(IMAGE)) == 3
    assert not (tmp_path / "i.jpg").exists()


def test_not_found_is_not_retried(mirror_server: MirrorServer, tmp_path: Path) -> None:  # noqa: F811
    with _fetcher() as fetcher, pytest.raises(NotFoundError, match="nope.jpg.*404"):
        fetcher.download(f"{mirror_server.url}/val2017/nope.jpg", tmp_path / "n.jpg")
    assert len(mirror_server.state.hits) == 1


def test_checksum_mismatch_leaves_nothing(mirror_server: MirrorServer, tmp_path: Path) -> None:  # noqa: F811
    with _fetcher() as fetcher, pytest.raises(IntegrityError, match=r"val2017.zip: sha256 .* != expected 0+"):
        fetcher.download(f"{mirror_server.url}/{ZIP}", tmp_path / "v.zip", Expected(sha256="0" * 64))
    assert list(tmp_path.iterdir()) == []


def test_content_check_failure(mirror_server: MirrorServer, tmp_path: Path) -> None:  # noqa: F811
    def reject(path: Path) -> None:
        raise ValueError("not an image")

    with _fetcher() as fetcher, pytest.raises(IntegrityError, match="content check failed.*not an image"):
        fetcher.download(f"{mirror_server.url}/{IMAGE}", tmp_path / "i.jpg", check=reject)
    assert list(tmp_path.iterdir()) == []


def test_read_range_and_refusal(mirror_server: MirrorServer, sample_mirror: Path) -> None:  # noqa: F811
    data = (sample_mirror / ZIP).read_bytes()
    url = f"{mirror_server.url}/{ZIP}"
    with _fetcher() as fetcher:
        assert fetcher.read_range(url, 100, 50) == data[100:150]
        probe = fetcher.probe(url)
        assert probe.accepts_ranges and probe.size == len(data)
        mirror_server.state.refuse_ranges = True
        assert not fetcher.probe(url).accepts_ranges
        with pytest.raises(RangeNotSupported, match="ignored the byte range"):
            fetcher.read_range(url, 100, 50)


def test_read_range_survives_drop(mirror_server: MirrorServer, sample_mirror: Path) -> None:  # noqa: F811
    data = (sample_mirror / ZIP).read_bytes()
    mirror_server.state.drop_once.add(ZIP)
    with _fetcher() as fetcher:
        assert fetcher.read_range(f"{mirror_server.url}/{ZIP}", 10, 20_000) == data[10:20_010]
    assert [h.range for h in mirror_server.state.hits_for(ZIP)] == ["bytes=10-20009", "bytes=10010-20009"]


def test_file_urls(sample_mirror: Path, tmp_path: Path) -> None:  # noqa: F811
    source = sample_mirror / ZIP
    url = source.resolve().as_uri()
    with _fetcher() as fetcher:
        assert fetcher.read_range(url, 5, 10) == source.read_bytes()[5:15]
        assert fetcher.probe(url).size == source.stat().st_size
        fetcher.download(url, tmp_path / "v.zip", Expected(size=source.stat().st_size))
        with pytest.raises(NotFoundError):
            fetcher.download((tmp_path / "missing.zip").as_uri(), tmp_path / "m.zip")
    assert _sha(tmp_path / "v.zip") == _sha(source)


def test_timeout_on_silent_server(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        with _fetcher(retries=1, timeout_s=0.2) as fetcher, pytest.raises(TransferError, match="giving up after 2"):
            fetcher.download(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip")


def test_verify_file_detects_truncation(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"abc" * 100)
    digest = hashlib.sha256(b"abc" * 100).hexdigest()
    verify_file(path, Expected(size=300, sha256=digest, md5=hashlib.md5(b"abc" * 100).hexdigest()), "a.bin")
    path.write_bytes(b"abc" * 99)
    with pytest.raises(IntegrityError, match="a.bin: got 297 bytes, expected 300"):
        verify_file(path, Expected(size=300), "a.bin")
    with pytest.raises(IntegrityError, match="sha256"):
        verify_file(path, Expected(sha256=digest), "a.bin")


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="retries"):
        Fetcher(retries=-1)
    with pytest.raises(TransferError, match="unsupported URL scheme 'ftp'"):
        Fetcher().read_range("ftp://x/y", 0, 1)
