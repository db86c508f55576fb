"""Safe extraction of downloaded zip/tar archives.

An archive from the network is untrusted input: a member named ``../x``, ``/etc/x`` or ``C:\\x``,
or a link pointing out of the target, would write outside the dataset root. Links can also chain:
``a/b -> ..`` is harmless alone, but it makes ``a/b/c -> ..`` point above the target, and a later
``a/b/c/evil`` would land there. So before anything is written, the whole archive is replayed on
a model of the target (member by member, following the links that earlier members and the target
folder itself already hold), and the archive is refused, naming the archive and member, if any
member would be placed, or any link would resolve, outside the target. Corruption is reported as
ArchiveError: a truncated zip has no readable central directory, a damaged member fails its CRC-32.
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


_MAX_LINK_HOPS = 40  # as the kernel's ELOOP limit


class _Layout:
    """The target folder as extraction would leave it, one member at a time, without writing.

    Paths are tuples of names under the target, always fully resolved (no link in them), so a
    ``..`` can be applied by dropping the last name. Links come from earlier members of the archive
    or, where no member made one, from the target folder on disk (a previous extraction).
    """

    def __init__(self, archive: Path, dest: Path) -> None:
        self.archive = archive
        self.dest = dest
        self.links: dict[tuple[str, ...], str] = {}

    def _link_at(self, path: tuple[str, ...]) -> list[str] | None:
        """The names a link at ``path`` points to (relative to its folder), or None if no link."""
        if path in self.links:
            return _split(self.links[path])
        on_disk = self.dest.joinpath(*path)
        if not on_disk.is_symlink():
            return None
        target = os.readlink(on_disk)
        if os.path.isabs(target):
            relative = os.path.relpath(target, os.path.realpath(on_disk.parent))
            return _split(relative)
        return _split(target)

    def resolve(self, member: str, names: list[str], base: tuple[str, ...] = (), follow_last: bool = True) -> tuple[str, ...]:
        """Where ``names`` (relative to ``base``) ends up once every link on the way is followed."""
        pending, out, hops = list(names), list(base), 0
        while pending:
            name = pending.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if not out:
                    raise UnsafeArchiveError(
                        f"{self.archive}: member {member!r} would reach outside the target through earlier links"
                    )
                out.pop()
                continue
            out.append(name)
            if not pending and not follow_last:
                break
            target = self._link_at(tuple(out))
            if target is not None:
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    raise UnsafeArchiveError(f"{self.archive}: member {member!r} runs into a symlink loop")
                out.pop()
                pending = target + pending
        return tuple(out)

    def add(self, member: str, kind: str, link_target: str | None = None) -> None:
        """Check one member against the layout so far, then record it."""
        names = list(check_member_path(self.archive, member).parts)
        if kind == "symlink":
            assert link_target is not None
            _check_link(self.archive, member, link_target, hard=False)
            parent = self.resolve(member, names[:-1])
            self.resolve(member, _split(link_target), base=parent)  # the link must point inside
            self.links[parent + (names[-1],)] = link_target
        elif kind == "hardlink":
            assert link_target is not None
            _check_link(self.archive, member, link_target, hard=True)
            self.resolve(member, _split(link_target))
            self.resolve(member, names)
        else:  # a file or folder is written (or created) through any link already at its path
            self.resolve(member, names)


def _split(target: str) -> list[str]:
    return [part for part in re.split(r"[/\\]", target) if part not in ("", ".")]


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
        layout = _Layout(archive, dest)
        for info in infos:  # refuse the whole archive before writing anything
            if _zip_is_symlink(info):
                layout.add(info.filename, "symlink", zf.read(info).decode("utf-8", "replace"))
            else:
                layout.add(info.filename, "dir" if info.is_dir() else "file")
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
            layout = _Layout(archive, dest)
            for member in members:  # refuse the whole archive before writing anything
                if member.issym():
                    layout.add(member.name, "symlink", member.linkname)
                elif member.islnk():
                    layout.add(member.name, "hardlink", member.linkname)
                elif member.isfile() or member.isdir():
                    layout.add(member.name, "dir" if member.isdir() else "file")
                else:
                    check_member_path(archive, member.name)
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
