"""Reading zip members by byte ranges: local readers, ZIP64, corruption, and over HTTP."""

from __future__ import annotations

import hashlib
import struct
import zipfile
from pathlib import Path

import pytest
from mirror import MirrorServer, mirror_server, sample_mirror  # noqa: F401 - fixtures

from srseg.data.remotezip import RemoteZip, ZipFormatError, file_reader, open_local, open_remote
from srseg.data.transfer import Fetcher, RangeNotSupported


def _make_zip(path: Path, members: dict[str, tuple[bytes, int]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("folder/"), b"")
        for name, (data, method) in members.items():
            zf.writestr(name, data, compress_type=method)
    return path


def _counting_reader(path: Path) -> tuple[list[tuple[int, int]], object]:
    calls: list[tuple[int, int]] = []
    inner = file_reader(path)

    def read(start: int, length: int) -> bytes:
        calls.append((start, length))
        return inner(start, length)

    return calls, read


def test_reads_stored_and_deflated_members(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 400
    members = {
        "folder/stored.bin": (payload, zipfile.ZIP_STORED),
        "folder/deflated.bin": (payload, zipfile.ZIP_DEFLATED),
        "ünïcode.txt": ("grüße".encode(), zipfile.ZIP_DEFLATED),
        "empty.txt": (b"", zipfile.ZIP_DEFLATED),
    }
    path = _make_zip(tmp_path / "a.zip", members)
    calls, reader = _counting_reader(path)
    rz = RemoteZip(reader, path.stat().st_size, "a.zip")  # type: ignore[arg-type]
    assert set(rz.names()) == {"folder/", *members}
    assert rz.members["folder/"].is_dir
    for name, (data, _) in members.items():
        assert rz.read(name) == data
    # the tail (holding the whole small central directory), then one read per member
    assert len(calls) == 1 + len(members)


def test_streams_large_members_in_blocks(tmp_path: Path) -> None:
    data = hashlib.sha256(b"x").digest() * 50_000  # 1.6 MB, incompressible-ish pattern
    path = _make_zip(tmp_path / "big.zip", {"big.bin": (data, zipfile.ZIP_DEFLATED)})
    rz = open_local(path)
    pieces = list(rz.iter_member("big.bin", block=64 * 1024))
    assert b"".join(pieces) == data
    out = rz.extract("big.bin", tmp_path / "out" / "big.bin")
    assert out.read_bytes() == data


def test_zip64_records_and_extra_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Lower zipfile's limits so a tiny archive gets ZIP64 EOCD/locator and ZIP64 extra fields,
    # exactly as a >4 GiB / >65535-member archive (train2017.zip) has.
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 0)
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 0)
    members = {f"train2017/{i:012d}.jpg": (bytes([i]) * (1000 + i), zipfile.ZIP_DEFLATED) for i in range(5)}
    path = tmp_path / "z64.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, (data, method) in members.items():
            zf.writestr(name, data, compress_type=method)
    monkeypatch.undo()
    raw = bytearray(path.read_bytes())
    assert b"PK\x06\x06" in raw and b"PK\x06\x07" in raw  # ZIP64 EOCD record + locator
    assert b"\xff\xff\xff\xff" in raw  # central sizes deferred to ZIP64 extra fields
    # Like a >65535-member, >4 GiB archive: the classic EOCD only holds the ZIP64 sentinels.
    eocd = raw.rfind(b"PK\x05\x06")
    struct.pack_into("<2H2L", raw, eocd + 8, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    path.write_bytes(bytes(raw))
    rz = open_local(path)
    assert sorted(rz.names()) == sorted(members)
    for name, (data, _) in members.items():
        assert rz.read(name) == data
    assert zipfile.ZipFile(path).testzip() is None  # the stdlib agrees it is a valid archive


def test_truncated_archive_has_no_directory(tmp_path: Path) -> None:
    path = _make_zip(tmp_path / "a.zip", {"x.bin": (b"x" * 5000, zipfile.ZIP_DEFLATED)})
    cut = tmp_path / "cut.zip"
    cut.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(ZipFormatError, match="End Of Central Directory"):
        open_local(cut)


def test_corrupt_member_fails_its_check(tmp_path: Path) -> None:
    data = b"0123456789" * 1000
    path = _make_zip(tmp_path / "a.zip", {"x.bin": (data, zipfile.ZIP_STORED)})
    raw = bytearray(path.read_bytes())
    at = raw.find(data)
    raw[at + 100] ^= 0xFF
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ZipFormatError, match="x.bin"):
        open_local(bad).read("x.bin")


def test_missing_member_names_archive(tmp_path: Path) -> None:
    path = _make_zip(tmp_path / "a.zip", {"x.bin": (b"x", zipfile.ZIP_STORED)})
    with pytest.raises(KeyError, match="nope"):
        open_local(path).read("nope")


def test_over_http_reads_only_what_it_needs(mirror_server: MirrorServer, sample_mirror: Path) -> None:  # noqa: F811
    rel = "cocostuff/stuffthingmaps_trainval2017.zip"
    with Fetcher(retries=1, backoff_s=0.0, timeout_s=5) as fetcher:
        rz = open_remote(fetcher, f"{mirror_server.url}/{rel}")
        member = "val2017/000000000139.png"
        expected = zipfile.ZipFile(sample_mirror / rel).read(member)
        assert rz.read(member) == expected
    sent = mirror_server.state.bytes_sent
    assert sent < (sample_mirror / rel).stat().st_size / 4
    assert all(h.status == 206 for h in mirror_server.state.hits)


def test_over_http_refused_ranges(mirror_server: MirrorServer) -> None:  # noqa: F811
    mirror_server.state.refuse_ranges = True
    with Fetcher(retries=0, timeout_s=5) as fetcher, pytest.raises(RangeNotSupported, match="range"):
        open_remote(fetcher, f"{mirror_server.url}/cocostuff/stuffthingmaps_trainval2017.zip")


def test_directory_larger_than_first_tail_and_comment(tmp_path: Path) -> None:
    members = {f"train2017/{i:012d}.png": (bytes([i % 256]) * 50, zipfile.ZIP_DEFLATED) for i in range(400)}
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, (data, method) in members.items():
            zf.writestr(name, data, compress_type=method)
        zf.comment = b"c" * 60_000  # EOCD beyond the first 8 KiB tail, directory beyond the largest
    calls, reader = _counting_reader(path)
    rz = RemoteZip(reader, path.stat().st_size, "many.zip")  # type: ignore[arg-type]
    assert len(rz.members) == 400
    assert rz.read("train2017/000000000399.png") == members["train2017/000000000399.png"][0]
    assert len(calls) == 4  # small tail, full tail, directory, member
