"""Reading single members of a zip archive that lives behind a URL, with byte-range requests.

Subset mode needs a few hundred label maps out of a 659 MB archive (or one JSON out of a 241 MB
one). A zip's table of contents is at its end, so three kinds of small range reads suffice: the
tail (End Of Central Directory record, ZIP64 locator/record when counts or offsets overflow), the
central directory itself, and per member its local header plus compressed bytes. Stored (0) and
deflate (8) members are supported; the CRC-32 and size of every member are checked.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from srseg.data.sources import redact_url
from srseg.data.transfer import Fetcher, RangeNotSupported
from srseg.fileio import atomic_open

logger = logging.getLogger(__name__)

# (start, length) -> exactly `length` bytes
RangeReader = Callable[[int, int], bytes]

_EOCD = struct.Struct("<4s4H2LH")  # sig, disk, cd disk, entries on disk, entries, cd size, cd offset, comment len
_EOCD_SIG = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # sig, disk with zip64 eocd, its offset, total disks
_ZIP64_LOCATOR_SIG = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")  # sig, record size, made by, needed, disk, cd disk, entries x2, cd size, cd offset
_ZIP64_EOCD_SIG = b"PK\x06\x06"
_CENTRAL = struct.Struct("<4s6H3L5H2L")  # 46 bytes
_CENTRAL_SIG = b"PK\x01\x02"
_LOCAL = struct.Struct("<4s5H3L2H")  # 30 bytes
_LOCAL_SIG = b"PK\x03\x04"
_MAX_COMMENT = 0xFFFF
_STORED, _DEFLATED = 0, 8
_READ_BLOCK = 8 << 20
_FIRST_TAIL = 8 << 10


class ZipFormatError(ValueError):
    """The remote bytes are not a zip we can read (corrupt, truncated, unsupported)."""


@dataclass(frozen=True)
class ZipMember:
    """One central-directory entry."""

    name: str
    method: int
    flags: int
    crc32: int
    compressed_size: int
    file_size: int
    header_offset: int
    external_attr: int

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")


class RemoteZip:
    """The central directory of a zip read through ``reader``; members fetched on demand."""

    def __init__(self, reader: RangeReader, size: int, name: str) -> None:
        if size < _EOCD.size:
            raise ZipFormatError(f"{name}: {size} bytes is too small to be a zip archive")
        self._read = reader
        self.size = size
        self.name = name
        self.members: dict[str, ZipMember] = self._read_central_directory()

    # -- directory -------------------------------------------------------------------------
    def _read_central_directory(self) -> dict[str, ZipMember]:
        # Archives rarely carry a comment: try a small tail first, the largest possible one after.
        for tail_len in (_FIRST_TAIL, _EOCD.size + _MAX_COMMENT + _ZIP64_LOCATOR.size):
            tail_len = min(self.size, tail_len)
            tail_start = self.size - tail_len
            tail = self._read(tail_start, tail_len)
            pos = _find_eocd(tail)
            if pos >= 0 or tail_len == self.size:
                break
        if pos < 0:
            raise ZipFormatError(f"{self.name}: no End Of Central Directory record (truncated or not a zip)")
        _, disk, cd_disk, _, entries, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, pos)
        if disk != 0 or cd_disk != 0:
            raise ZipFormatError(f"{self.name}: multi-disk (split) zip archives are not supported")
        if entries == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
            entries, cd_size, cd_offset = self._zip64_eocd(tail, tail_start, pos)
        if cd_offset + cd_size > self.size:
            raise ZipFormatError(
                f"{self.name}: central directory ({cd_offset}+{cd_size}) lies beyond the archive size {self.size}"
            )
        if cd_offset >= tail_start:  # small archive: the directory came with the tail
            directory = tail[cd_offset - tail_start : cd_offset - tail_start + cd_size]
        else:
            directory = self._read(cd_offset, cd_size)
        members = self._parse_central_directory(directory, entries)
        logger.debug("%s: %d members, central directory %d bytes", self.name, len(members), cd_size)
        return members

    def _zip64_eocd(self, tail: bytes, tail_start: int, eocd_pos: int) -> tuple[int, int, int]:
        loc_pos = eocd_pos - _ZIP64_LOCATOR.size
        if loc_pos < 0 or tail[loc_pos : loc_pos + 4] != _ZIP64_LOCATOR_SIG:
            raise ZipFormatError(f"{self.name}: ZIP64 fields set but no ZIP64 locator found")
        _, _, record_offset, _ = _ZIP64_LOCATOR.unpack_from(tail, loc_pos)
        if record_offset >= tail_start:
            record = tail[record_offset - tail_start : record_offset - tail_start + _ZIP64_EOCD.size]
        else:
            record = self._read(record_offset, _ZIP64_EOCD.size)
        if len(record) < _ZIP64_EOCD.size or record[:4] != _ZIP64_EOCD_SIG:
            raise ZipFormatError(f"{self.name}: bad ZIP64 End Of Central Directory record at {record_offset}")
        fields = _ZIP64_EOCD.unpack(record)
        return fields[7], fields[8], fields[9]

    def _parse_central_directory(self, data: bytes, entries: int) -> dict[str, ZipMember]:
        members: dict[str, ZipMember] = {}
        pos = 0
        for _ in range(entries):
            if data[pos : pos + 4] != _CENTRAL_SIG:
                raise ZipFormatError(f"{self.name}: bad central directory entry at offset {pos}")
            (
                _,
                _made_by,
                _needed,
                flags,
                method,
                _time,
                _date,
                crc,
                csize,
                usize,
                name_len,
                extra_len,
                comment_len,
                _disk,
                _internal,
                external,
                offset,
            ) = _CENTRAL.unpack_from(data, pos)
            pos += _CENTRAL.size
            raw_name = data[pos : pos + name_len]
            extra = data[pos + name_len : pos + name_len + extra_len]
            pos += name_len + extra_len + comment_len
            name = raw_name.decode("utf-8" if flags & 0x800 else "cp437")
            usize, csize, offset = _apply_zip64_extra(extra, usize, csize, offset, self.name, name)
            members[name] = ZipMember(name, method, flags, crc, csize, usize, offset, external)
        return members

    def names(self) -> list[str]:
        return list(self.members)

    # -- members ---------------------------------------------------------------------------
    def _member(self, name: str) -> ZipMember:
        try:
            return self.members[name]
        except KeyError:
            raise KeyError(f"{self.name}: no member {name!r}") from None

    def _data_offset(self, member: ZipMember, head: bytes) -> int:
        if head[:4] != _LOCAL_SIG:
            raise ZipFormatError(f"{self.name}: bad local header for {member.name!r} at {member.header_offset}")
        name_len, extra_len = struct.unpack_from("<2H", head, 26)
        return member.header_offset + _LOCAL.size + name_len + extra_len

    def iter_member(self, name: str, block: int = _READ_BLOCK) -> Iterator[bytes]:
        """Yield a member's uncompressed bytes, fetching ``block``-sized ranges; CRC/size checked."""
        member = self._member(name)
        if member.flags & 0x1:
            raise ZipFormatError(f"{self.name}: member {name!r} is encrypted")
        if member.method not in (_STORED, _DEFLATED):
            raise ZipFormatError(f"{self.name}: member {name!r} uses unsupported compression method {member.method}")
        # One request for the local header and (most or all of) the data: the local name/extra
        # lengths usually equal the central ones; any shortfall is fetched below.
        guess = _LOCAL.size + len(member.name.encode("utf-8")) + 64
        first_len = min(self.size - member.header_offset, guess + min(member.compressed_size, block))
        head = self._read(member.header_offset, first_len)
        start = self._data_offset(member, head)
        end = start + member.compressed_size
        if end > self.size:
            raise ZipFormatError(f"{self.name}: member {name!r} extends beyond the end of the archive")
        inflater = zlib.decompressobj(-15) if member.method == _DEFLATED else None
        crc, produced = 0, 0
        pos = start
        buffered = head[start - member.header_offset :]
        while pos < end:
            if buffered:
                piece, buffered = buffered[: end - pos], b""
            else:
                piece = self._read(pos, min(block, end - pos))
            pos += len(piece)
            try:
                out = inflater.decompress(piece) if inflater else piece
            except zlib.error as exc:
                raise ZipFormatError(f"{self.name}: member {name!r} is corrupt ({exc})") from exc
            if out:
                crc = zlib.crc32(out, crc)
                produced += len(out)
                yield out
        if inflater is not None:
            out = inflater.flush()
            if out:
                crc = zlib.crc32(out, crc)
                produced += len(out)
                yield out
            if not inflater.eof:
                raise ZipFormatError(f"{self.name}: member {name!r} ends inside its deflate stream (corrupt)")
        if produced != member.file_size or crc != member.crc32:
            raise ZipFormatError(
                f"{self.name}: member {name!r} failed its check: {produced} bytes crc {crc:08x}, "
                f"expected {member.file_size} bytes crc {member.crc32:08x}"
            )

    def read(self, name: str) -> bytes:
        """A member's bytes (for small members)."""
        return b"".join(self.iter_member(name))

    def extract(self, name: str, dest: str | os.PathLike[str]) -> Path:
        """Stream a member to ``dest`` atomically (for large members such as annotation JSON)."""
        dest = Path(dest)
        with atomic_open(dest, "wb") as handle:
            for block in self.iter_member(name):
                handle.write(block)
        return dest


def _find_eocd(tail: bytes) -> int:
    """Offset of the End Of Central Directory record in ``tail`` (whose comment ends the file), or -1."""
    pos = tail.rfind(_EOCD_SIG, 0, len(tail) - _EOCD.size + len(_EOCD_SIG))
    while pos >= 0:
        comment_len = struct.unpack_from("<H", tail, pos + 20)[0]
        if pos + _EOCD.size + comment_len == len(tail):
            return pos
        pos = tail.rfind(_EOCD_SIG, 0, pos)
    return -1


def _apply_zip64_extra(extra: bytes, usize: int, csize: int, offset: int, archive: str, name: str) -> tuple[int, int, int]:
    """Replace 0xFFFFFFFF sizes/offset with the 64-bit values of the ZIP64 extra field (0x0001)."""
    if 0xFFFFFFFF not in (usize, csize, offset):
        return usize, csize, offset
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<2H", extra, pos)
        body = extra[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if tag != 0x0001:
            continue
        values = list(struct.unpack_from(f"<{len(body) // 8}Q", body))
        try:
            if usize == 0xFFFFFFFF:
                usize = values.pop(0)
            if csize == 0xFFFFFFFF:
                csize = values.pop(0)
            if offset == 0xFFFFFFFF:
                offset = values.pop(0)
        except IndexError:
            break
        return usize, csize, offset
    raise ZipFormatError(f"{archive}: member {name!r} has ZIP64 markers but no usable ZIP64 extra field")


def file_reader(path: str | os.PathLike[str]) -> RangeReader:
    """A RangeReader over a local file (used after falling back to a full archive download)."""

    def read(start: int, length: int) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read(length)
        if len(data) != length:
            raise ZipFormatError(f"{path}: wanted {length} bytes at {start}, file ends early (truncated)")
        return data

    return read


def open_local(path: str | os.PathLike[str]) -> RemoteZip:
    return RemoteZip(file_reader(path), Path(path).stat().st_size, name=str(path))


def open_remote(fetcher: Fetcher, url: str) -> RemoteZip:
    """Open a zip behind ``url`` by range requests; raises RangeNotSupported when the server
    does not honour them (the caller then downloads the whole archive)."""
    probe = fetcher.probe(url)
    if not probe.accepts_ranges or probe.size is None:
        raise RangeNotSupported(f"{redact_url(url)}: server does not answer byte-range requests")
    return RemoteZip(lambda start, length: fetcher.read_range(url, start, length), probe.size, redact_url(url))
