"""Safe extraction: unsafe member names and links are refused, corruption is detected."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from srseg.data.archive import (
    ArchiveError,
    UnsafeArchiveError,
    check_member_path,
    check_zip_crcs,
    safe_extract,
)


def _zip(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return path


def _zip_symlink(path: Path, name: str, target: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo(name)
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
        zf.writestr("train2017/ok.txt", b"ok")
    return path


def _tar(path: Path, members: list[tarfile.TarInfo], data: bytes = b"payload") -> Path:
    with tarfile.open(path, "w") as tf:
        for info in members:
            if info.isfile():
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return path


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def test_extracts_selected_members_and_resumes(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"train2017/1.jpg": b"one", "train2017/2.jpg": b"two", "val2017/3.jpg": b"x"})
    out = tmp_path / "out"
    written = safe_extract(archive, out, select=lambda n: n.startswith("train2017/"))
    assert sorted(p.relative_to(out).as_posix() for p in written) == ["train2017/1.jpg", "train2017/2.jpg"]
    assert (out / "train2017/2.jpg").read_bytes() == b"two"
    assert not (out / "val2017").exists()
    before = (out / "train2017/1.jpg").stat().st_mtime_ns
    safe_extract(archive, out, select=lambda n: n.startswith("train2017/"))
    assert (out / "train2017/1.jpg").stat().st_mtime_ns == before  # complete files are kept


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("../evil.txt", r"'\.\.' component"),
        ("train2017/../../evil.txt", r"'\.\.' component"),
        ("..\\evil.txt", r"'\.\.' component"),
        ("/tmp/evil.txt", "absolute path"),
        ("\\evil.txt", "absolute path"),
        ("C:\\evil.txt", "drive letter"),
        ("c:evil.txt", "drive letter"),
    ],
)
def test_zip_with_unsafe_member_is_refused(tmp_path: Path, member: str, reason: str) -> None:
    archive = _zip(tmp_path / "evil.zip", {"train2017/ok.jpg": b"ok", member: b"evil"})
    out = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeArchiveError, match=rf"evil\.zip: member .* {reason}"):
        safe_extract(archive, out)
    assert not out.exists()  # refused before anything was written
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep" / "evil.txt").exists()


def test_zip_symlink_outside_is_refused_inside_is_kept(tmp_path: Path) -> None:
    bad = _zip_symlink(tmp_path / "bad.zip", "train2017/link", "../../etc/passwd")
    with pytest.raises(UnsafeArchiveError, match=r"bad\.zip: member 'train2017/link' is a symlink pointing outside"):
        safe_extract(bad, tmp_path / "out")
    absolute = _zip_symlink(tmp_path / "abs.zip", "train2017/link", "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symlink to absolute path"):
        safe_extract(absolute, tmp_path / "out")
    good = _zip_symlink(tmp_path / "good.zip", "train2017/link", "ok.txt")
    safe_extract(good, tmp_path / "out2")
    assert (tmp_path / "out2/train2017/link").is_symlink()
    assert (tmp_path / "out2/train2017/link").read_bytes() == b"ok"


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (tarfile.TarInfo("../evil.txt"), r"'\.\.' component"),
        (tarfile.TarInfo("/abs/evil.txt"), "absolute path"),
        (_link("a/link", "../../outside", tarfile.SYMTYPE), "symlink pointing outside"),
        (_link("a/link", "/etc/passwd", tarfile.SYMTYPE), "symlink to absolute path"),
        (_link("a/hard", "../outside", tarfile.LNKTYPE), "hard link pointing outside"),
    ],
)
def test_tar_with_unsafe_member_is_refused(tmp_path: Path, member: tarfile.TarInfo, reason: str) -> None:
    archive = _tar(tmp_path / "evil.tar", [tarfile.TarInfo("a/ok.txt"), member])
    with pytest.raises(UnsafeArchiveError, match=rf"evil\.tar: member .* {reason}"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_safe_tar_extracts_with_inside_links(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "ok.tar",
        [tarfile.TarInfo("a/ok.txt"), _link("a/sym", "ok.txt", tarfile.SYMTYPE), _link("a/hard", "a/ok.txt", tarfile.LNKTYPE)],
    )
    written = safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out/a/ok.txt").read_bytes() == b"payload"
    assert (tmp_path / "out/a/sym").read_bytes() == b"payload"
    assert (tmp_path / "out/a/hard").read_bytes() == b"payload"
    assert tmp_path / "out/a/ok.txt" in written


def test_truncated_zip_is_detected(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"train2017/1.jpg": b"x" * 10_000})
    cut = tmp_path / "cut.zip"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ArchiveError, match=r"cut\.zip: not a readable zip or tar archive"):
        safe_extract(cut, tmp_path / "out")
    with pytest.raises(ArchiveError, match=r"cut\.zip: truncated or corrupt zip"):
        check_zip_crcs(cut)


def test_corrupt_member_fails_crc(tmp_path: Path) -> None:
    data = b"0123456789" * 1000
    archive = _zip(tmp_path / "a.zip", {"train2017/1.jpg": data}, method=zipfile.ZIP_STORED)
    raw = bytearray(archive.read_bytes())
    raw[raw.find(data) + 10] ^= 0x01
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match=r"bad\.zip: member 'train2017/1\.jpg' is corrupt"):
        safe_extract(bad, tmp_path / "out")
    assert not (tmp_path / "out/train2017/1.jpg").exists()  # nothing half-written under the final name
    with pytest.raises(ArchiveError, match=r"'train2017/1\.jpg' fails its CRC-32"):
        check_zip_crcs(bad)


def test_check_member_path_normalises_safe_names() -> None:
    assert check_member_path("a.zip", "train2017/./x.jpg").as_posix() == "train2017/x.jpg"
    with pytest.raises(UnsafeArchiveError, match="NUL"):
        check_member_path("a.zip", "x\x00.jpg")


def _chained_zip(path: Path, files: int = 8) -> Path:
    """``files`` harmless members, then ``a/b -> ..``, ``a/b/c -> ..`` and ``a/b/c/evil``."""
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(files):
            zf.writestr(f"train2017/{i}.txt", b"ok")
        for name, target in (("a/b", ".."), ("a/b/c", "..")):
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
        zf.writestr("a/b/c/evil", b"pwned")
    return path


def _chained_tar(path: Path, files: int = 8) -> Path:
    members = [tarfile.TarInfo(f"train2017/{i}.txt") for i in range(files)]
    members += [_link("a/b", "..", tarfile.SYMTYPE), _link("a/b/c", "..", tarfile.SYMTYPE), tarfile.TarInfo("a/b/c/evil")]
    return _tar(path, members)


@pytest.mark.parametrize("make", [_chained_zip, _chained_tar], ids=["zip", "tar"])
def test_chained_symlinks_are_refused_before_anything_is_written(tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    # each link is harmless on its own (a/b -> .. is the root, a/b/c -> .. looks like a/), but
    # once a/b is a link, a/b/c points above the target and a/b/c/evil would be written there
    archive = make(tmp_path / "chain.bin")
    parent = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="'a/b/c'.*outside the target"):
        safe_extract(archive, parent / "dest")
    assert not parent.exists(), sorted(str(p) for p in parent.rglob("*"))
    assert not (tmp_path / "evil").exists()


def test_links_already_in_the_target_are_followed(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (dest / "data").symlink_to(tmp_path / "elsewhere")  # left by someone else, points outside
    archive = _zip(tmp_path / "a.zip", {"ok.txt": b"1", "data/x.txt": b"2"})
    with pytest.raises(UnsafeArchiveError, match="'data/x.txt'"):
        safe_extract(archive, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["data"] and not any((tmp_path / "elsewhere").iterdir())


def test_links_that_stay_inside_and_loops(tmp_path: Path) -> None:
    inside = _tar(tmp_path / "in.tar", [_link("a/up", "..", tarfile.SYMTYPE), tarfile.TarInfo("a/up/top.txt")])
    assert safe_extract(inside, tmp_path / "out") == [tmp_path / "out" / "a" / "up" / "top.txt"]
    assert (tmp_path / "out" / "top.txt").read_bytes() == b"payload"
    loop = _tar(tmp_path / "loop.tar", [_link("x", "y", tarfile.SYMTYPE), _link("y", "x", tarfile.SYMTYPE),
                                        tarfile.TarInfo("x/f.txt")])
    with pytest.raises(UnsafeArchiveError, match="loop"):
        safe_extract(loop, tmp_path / "loop-out")
