"""Safe extraction of downloaded zip/tar archives.

An archive from the network is untrusted input: a member named ``../x``, ``/etc/x`` or ``C:\\x``,
or a link pointing out of the target, would write outside the dataset root. Every member name of
the archive is checked before anything is written, and the whole archive is refused (with the
archive and member named) if one is unsafe. Corruption is reported as ArchiveError: a truncated zip
has no readable central directory, a damaged member fails its CRC-32.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable

from srseg.fileio import atomic_open

logger = logging.getLogger(__name__)

_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(ValueError):
    """An archive is truncated, corrupt or not a zip/tar."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would land outside the extraction target."""


def check_member_path(archive: str | os.PathLike[str], name: str) -> PurePosixPath:
    """The member's relative path, or UnsafeArchiveError if it is absolute, has a drive letter,
    a ``..`` component or a NUL byte. Backslashes count as separators (Windows-made archives)."""
    if not name or "\x00" in name:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an empty or NUL-containing name")
    if name.startswith(("/", "\\")):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path")
    if _DRIVE.match(name):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has a drive letter")
    parts = [p for p in re.split(r"[/\\]", name) if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has a '..' component")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _check_link(archive: str | os.PathLike[str], name: str, target: str, hard: bool) -> None:
    """A link must resolve inside the target: symlinks relative to their own folder,
    hard links relative to the archive root."""
    kind = "hard link" if hard else "symlink"
    if not target or target.startswith(("/", "\\")) or _DRIVE.match(target):
        raise UnsafeArchiveError(f"{archive}: member {name!r} is a {kind} to absolute path {target!r}")
    base = [] if hard else list(check_member_path(archive, name).parent.parts)
    for part in re.split(r"[/\\]", target):
        if part in ("", "."):
            continue
        if part == "..":
            if not base:
                raise UnsafeArchiveError(
                    f"{archive}: member {name!r} is a {kind} pointing outside the target ({target!r})"
                )
            base.pop()
        else:
            base.append(part)


def _inside(root: Path, path: Path) -> bool:
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root + os.sep)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _zip_is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def safe_extract(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    select: Callable[[str], bool] | None = None,
) -> list[Path]:
    """Extract the members of a zip or tar archive for which ``select(name)`` is true (all when
    None) under ``dest``, after checking every member name. Returns the regular files written
    or already present. Files are written atomically; one already present with the member's
    size is kept, so an interrupted extraction resumes."""
    archive = Path(archive)
    dest = Path(dest)
    if not archive.is_file():
        raise ArchiveError(f"{archive}: no such archive")
    if zipfile.is_zipfile(archive):
        return _extract_zip(archive, dest, select)
    try:
        is_tar = tarfile.is_tarfile(archive)
    except (OSError, EOFError):
        is_tar = False
    if is_tar:
        return _extract_tar(archive, dest, select)
    raise ArchiveError(f"{archive}: not a readable zip or tar archive (truncated or corrupt?)")


def _extract_zip(archive: Path, dest: Path, select: Callable[[str], bool] | None) -> list[Path]:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{archive}: truncated or corrupt zip ({exc})") from exc
    written: list[Path] = []
    with zf:
        infos = zf.infolist()
        for info in infos:  # refuse the whole archive before writing anything
            check_member_path(archive, info.filename)
            if _zip_is_symlink(info):
                _check_link(archive, info.filename, zf.read(info).decode("utf-8", "replace"), hard=False)
        dest.mkdir(parents=True, exist_ok=True)
        for info in infos:
            if select is not None and not select(info.filename):
                continue
            target = dest / check_member_path(archive, info.filename)
            folder = target if info.is_dir() else target.parent
            if not _inside(dest, _nearest_existing(folder)):
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} would be written outside {dest}")
            folder.mkdir(parents=True, exist_ok=True)
            if info.is_dir():
                continue
            if _zip_is_symlink(info):
                if target.is_symlink() or target.exists():
                    target.unlink()
                os.symlink(zf.read(info).decode("utf-8"), target)
                continue
            if target.is_file() and not target.is_symlink() and target.stat().st_size == info.file_size:
                written.append(target)
                continue
            try:
                with zf.open(info) as src, atomic_open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                raise ArchiveError(f"{archive}: member {info.filename!r} is corrupt or truncated ({exc})") from exc
            written.append(target)
    logger.info("%s: extracted %d files under %s", archive, len(written), dest)
    return written


def _extract_tar(archive: Path, dest: Path, select: Callable[[str], bool] | None) -> list[Path]:
    written: list[Path] = []
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                check_member_path(archive, member.name)
                if member.issym():
                    _check_link(archive, member.name, member.linkname, hard=False)
                elif member.islnk():
                    _check_link(archive, member.name, member.linkname, hard=True)
                elif not (member.isfile() or member.isdir()):
                    raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a device/fifo; refused")
            dest.mkdir(parents=True, exist_ok=True)
            for member in members:
                if select is not None and not select(member.name):
                    continue
                target = dest / check_member_path(archive, member.name)
                if member.isfile() and target.is_file() and target.stat().st_size == member.size:
                    written.append(target)
                    continue
                if not _inside(dest, _nearest_existing(target.parent)):
                    raise UnsafeArchiveError(f"{archive}: member {member.name!r} would be written outside {dest}")
                if hasattr(tarfile, "data_filter"):
                    tf.extract(member, dest, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tf.extract(member, dest)
                if member.isfile():
                    written.append(target)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ArchiveError(f"{archive}: truncated or corrupt tar ({exc})") from exc
    logger.info("%s: extracted %d files under %s", archive, len(written), dest)
    return written


def check_zip_crcs(archive: str | os.PathLike[str]) -> None:
    """Read every member of a zip and check its CRC-32 (for archives with no published digest)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{archive}: truncated or corrupt zip ({exc})") from exc
    if bad is not None:
        raise ArchiveError(f"{archive}: member {bad!r} fails its CRC-32 check (corrupt archive)")
