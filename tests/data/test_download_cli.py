"""``srseg download`` failures through the real CLI against the real HTTP mirror server: every
network, integrity, data and archive error is one line (exit 2) naming the URL, file or key, and no
output contains a Python traceback."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from mirror import MirrorServer, mirror_copy, sample_mirror  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[2]


def _download(mirror: str, output: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "srseg", "--params", str(REPO / "params.yaml"),
            "--set", "download.retries=0", "--set", "download.backoff_s=0", "--set", "download.timeout_s=10",
            *[item for o in overrides for item in ("--set", o)], "download", "--mirror", mirror, "--output", str(output)]
    return subprocess.run(argv, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)


def _one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("srseg download: error: "), line
    for needle in needles:
        assert needle in line, line


def _set_sum(mirror: Path, relative: str) -> None:
    """Make the mirror's SHA256SUMS vouch for the (replaced) file at ``relative``."""
    digest = hashlib.sha256((mirror / relative).read_bytes()).hexdigest()
    sums = mirror / "SHA256SUMS"
    lines = [line for line in sums.read_text().splitlines() if not line.endswith(f"  {relative}")]
    sums.write_text("\n".join(lines + [f"{digest}  {relative}"]) + "\n")


def _serve(root: Path):  # type: ignore[no-untyped-def]
    return MirrorServer(root).start()


def test_server_errors_after_retries(sample_mirror: Path, tmp_path: Path) -> None:  # noqa: F811
    server = _serve(sample_mirror)
    try:
        server.state.fail["SHA256SUMS"] = [503] * 5
        proc = _download(server.url, tmp_path / "hr")
    finally:
        server.stop()
    _one_line_error(proc, f"{server.url}/SHA256SUMS: giving up after 1 failed attempts", "HTTP 503")


def test_truncated_archive(mirror_copy: Path, tmp_path: Path) -> None:  # noqa: F811
    archive = mirror_copy / "zips" / "val2017.zip"
    archive.write_bytes(archive.read_bytes()[:-1000])
    server = _serve(mirror_copy)
    try:
        proc = _download(server.url, tmp_path / "hr", "download.mode=full", "download.splits=[val2017]")
    finally:
        server.stop()
    _one_line_error(proc, f"{server.url}/zips/val2017.zip", "sha256", "corrupt or truncated")


def test_damaged_image(mirror_copy: Path, tmp_path: Path) -> None:  # noqa: F811
    (mirror_copy / "SHA256SUMS").unlink()  # like the official hosts: no checksums for single images
    for image in (mirror_copy / "val2017").glob("*.jpg"):
        data = image.read_bytes()
        image.write_bytes(data[: len(data) // 2] + bytes(len(data) - len(data) // 2))
    server = _serve(mirror_copy)
    try:
        proc = _download(server.url, tmp_path / "hr", "download.splits=[val2017]")
    finally:
        server.stop()
    _one_line_error(proc, f"{server.url}/val2017/", ".jpg: content check failed (damaged JPEG")
    assert "download stopped: 0 image/label pairs are complete" in proc.stderr


def test_label_source_without_ids(mirror_copy: Path, tmp_path: Path) -> None:  # noqa: F811
    labels = mirror_copy / "cocostuff" / "stuffthingmaps_trainval2017.zip"
    with zipfile.ZipFile(labels) as old:
        kept = [(info, old.read(info)) for info in old.infolist() if not info.filename.startswith("val2017/")]
    with zipfile.ZipFile(labels, "w") as new:
        for info, data in kept:
            new.writestr(info, data)
    server = _serve(mirror_copy)
    try:
        proc = _download(server.url, tmp_path / "hr", "download.splits=[val2017]")
    finally:
        server.stop()
    _one_line_error(proc, "no val2017 ids found in the stuffthingmaps label source")


def test_archive_with_chained_symlinks(mirror_copy: Path, tmp_path: Path) -> None:  # noqa: F811
    archive = mirror_copy / "zips" / "val2017.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(archive) as old, zipfile.ZipFile(buffer, "w") as new:
        for info in old.infolist():
            new.writestr(info, old.read(info))
        for name, target in (("val2017/a", ".."), ("val2017/a/b", "..")):
            link = zipfile.ZipInfo(name)
            link.create_system = 3
            link.external_attr = (stat.S_IFLNK | 0o777) << 16
            new.writestr(link, target)
        new.writestr("val2017/a/b/evil.jpg", b"x")
    archive.write_bytes(buffer.getvalue())
    _set_sum(mirror_copy, "zips/val2017.zip")
    server = _serve(mirror_copy)
    try:
        proc = _download(server.url, tmp_path / "hr", "download.mode=full", "download.splits=[val2017]")
    finally:
        server.stop()
    _one_line_error(proc, "val2017.zip: member 'val2017/a/b' would reach outside the target")
    assert not (tmp_path / "hr" / "images").exists() and not (tmp_path / "evil.jpg").exists()


@pytest.mark.parametrize("mirror", ["ftp://example.org/coco", "s3://"])
def test_unsupported_mirror_is_refused_at_load(tmp_path: Path, mirror: str) -> None:
    argv = [sys.executable, "-m", "srseg", "--params", str(REPO / "params.yaml"), "--set", f"download.mirror={mirror}",
            "download", "--output", str(tmp_path / "hr")]
    proc = subprocess.run(argv, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr and proc.returncode == 2
    assert "download.mirror" in proc.stderr
    assert "unsupported scheme 'ftp'" in proc.stderr if mirror.startswith("ftp") else "needs a bucket" in proc.stderr
    assert not (tmp_path / "hr").exists()
