"""Fetching bytes from ``http(s)://``, ``file://`` and ``s3://`` URLs, robustly.

Everything the downloader pulls goes through one ``Fetcher``: every request has a timeout,
transient failures (connection errors, dropped connections, 5xx/429) are retried a bounded
number of times with exponential backoff, whole-file downloads resume a ``.part`` file with a
``Range: bytes=N-`` request guarded by ``If-Range`` (the ETag or Last-Modified recorded with the
``.part``; restarting when the server answers 200 instead of 206), and a file only reaches its
final name after its size/digests (and an optional content check) pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import requests
import urllib3
from tqdm import tqdm

from srseg.data import s3 as s3mod
from srseg.data.sources import redact_url
from srseg.errors import SrsegError
from srseg.fileio import write_json_atomic

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


class TransferError(SrsegError, RuntimeError):
    """A URL could not be fetched (after retries, where retrying made sense)."""


class NotFoundError(TransferError):
    """The URL does not exist (HTTP 404/410, missing file or S3 key)."""


class IntegrityError(TransferError):
    """Downloaded bytes do not match the expected size, digest or content check."""


class _ResumedIntegrityError(IntegrityError):
    """Verification failed on a file assembled from more than one request: worth one fresh try."""


class RangeNotSupported(TransferError):
    """The server ignores range requests (answers 200 with the whole resource)."""


class _Transient(TransferError):
    """A failure worth retrying: connection trouble, a dropped stream, 5xx, 429."""


class _Unsatisfiable(TransferError):
    """HTTP 416: the requested start is at/after the end (``total`` from Content-Range)."""

    def __init__(self, message: str, total: int | None) -> None:
        super().__init__(message)
        self.total = total


@dataclass(frozen=True)
class Expected:
    """What a downloaded file must match; ``None`` fields are not checked."""

    size: int | None = None
    md5: str | None = None
    sha256: str | None = None

    def describe(self) -> str:
        parts = [f"size={self.size}" if self.size is not None else ""]
        parts += [f"md5={self.md5}" if self.md5 else "", f"sha256={self.sha256}" if self.sha256 else ""]
        return ", ".join(p for p in parts if p) or "nothing"


@dataclass(frozen=True)
class Probe:
    """What a server says about a resource before we fetch it."""

    size: int | None
    accepts_ranges: bool


@dataclass
class _Stream:
    chunks: Iterator[bytes]
    offset: int  # first byte the server actually sent
    total: int | None  # size of the whole resource, when known
    etag: str | None
    close: Callable[[], None]
    partial: bool  # True when the server honoured the range (206 or equivalent)
    last_modified: str | None = None


def verify_file(path: Path, expected: Expected, source: str) -> None:
    """Raise IntegrityError naming ``source`` when ``path`` does not match ``expected``."""
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        raise IntegrityError(f"{source}: got {size} bytes, expected {expected.size} (truncated or wrong file)")
    if not (expected.md5 or expected.sha256):
        return
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            if expected.md5:
                md5.update(chunk)
            if expected.sha256:
                sha.update(chunk)
    if expected.md5 and md5.hexdigest() != expected.md5.lower():
        raise IntegrityError(f"{source}: md5 {md5.hexdigest()} != expected {expected.md5} (corrupt or truncated)")
    if expected.sha256 and sha.hexdigest() != expected.sha256.lower():
        raise IntegrityError(f"{source}: sha256 {sha.hexdigest()} != expected {expected.sha256} (corrupt or truncated)")


def file_url_path(url: str) -> Path:
    """``file:///abs/path`` -> Path."""
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise ValueError(f"{url!r} is not a local file:// URL")
    return Path(url2pathname(unquote(parts.path)))


def _parse_content_range(value: str) -> tuple[int, int | None]:
    """'bytes 10-99/1000' -> (10, 1000); total '*' -> None."""
    try:
        unit, _, rest = value.strip().partition(" ")
        span, _, total = rest.partition("/")
        if unit != "bytes":
            raise ValueError(unit)
        return int(span.split("-")[0]), (None if total == "*" else int(total))
    except ValueError:
        raise _Transient(f"malformed Content-Range header {value!r}") from None


PART_SUFFIX = ".part"
_RECORD_SUFFIX = ".json"


@dataclass(frozen=True)
class _PartRecord:
    """Where the bytes of a ``.part`` came from, kept beside it so a later run can resume safely."""

    url: str  # redacted
    etag: str | None
    last_modified: str | None

    def validator(self) -> str | None:
        """The If-Range value: a strong ETag, else the Last-Modified date (weak ETags are not allowed)."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    def changed(self, stream: _Stream) -> bool:
        """True when a resumed answer carries a validator that differs from the recorded one."""
        if self.etag and stream.etag:
            return self.etag != stream.etag
        if self.last_modified and stream.last_modified:
            return self.last_modified != stream.last_modified
        return False


def record_path(part: Path) -> Path:
    return part.with_name(part.name + _RECORD_SUFFIX)


def _read_record(part: Path) -> _PartRecord | None:
    try:
        data = json.loads(record_path(part).read_text(encoding="utf-8"))
        return _PartRecord(str(data["url"]), data.get("etag"), data.get("last_modified"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_record(part: Path, record: _PartRecord) -> None:
    write_json_atomic(record_path(part), dataclasses.asdict(record))


def _drop_unrecorded_part(part: Path, shown_url: str) -> None:
    """A ``.part`` whose origin is unknown (no record, or a record for another URL) is deleted."""
    if not part.exists():
        record_path(part).unlink(missing_ok=True)
        return
    record = _read_record(part)
    if record is None or record.url != shown_url:
        logger.info("%s: no record of where its bytes came from; starting over", part)
        part.unlink()
        record_path(part).unlink(missing_ok=True)


class Fetcher:
    """One transfer policy (attempts, backoff, timeout, progress) applied to every URL.

    ``retries`` is the number of retries after the first attempt; a retry that received new
    bytes resets the count, so a slow-but-progressing server finishes while a dead one fails.
    """

    def __init__(
        self,
        *,
        retries: int = 4,
        backoff_s: float = 1.0,
        timeout_s: float = 60.0,
        progress: bool = False,
        s3_endpoint_url: str | None = None,
        chunk_size: int = _CHUNK,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if backoff_s < 0 or timeout_s <= 0:
            raise ValueError(f"backoff_s must be >= 0 and timeout_s > 0, got {backoff_s}, {timeout_s}")
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.progress = progress
        self.s3_endpoint_url = s3_endpoint_url
        self.chunk_size = chunk_size
        self.bytes_received = 0
        self._session: requests.Session | None = None
        self._s3: Any = None

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public operations -----------------------------------------------------------------
    def probe(self, url: str) -> Probe:
        """Size of a resource and whether the server honours byte ranges (asks for byte 0)."""

        def once() -> Probe:
            stream = self._open(url, 0, 0)
            try:
                if stream.offset == 0 and stream.partial:
                    return Probe(size=stream.total, accepts_ranges=True)
                return Probe(size=stream.total, accepts_ranges=False)
            finally:
                stream.close()

        return self._retry(url, once)

    def read_range(self, url: str, start: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``start``; raises RangeNotSupported if ranges are ignored."""
        if length <= 0:
            return b""
        buf = bytearray()
        end = start + length - 1

        def once() -> bytes:
            want = start + len(buf)
            stream = self._open(url, want, end)
            try:
                if stream.offset != want or not stream.partial:
                    raise RangeNotSupported(
                        f"{redact_url(url)}: server ignored the byte range {want}-{end} (no 206 answer)"
                    )
                for chunk in stream.chunks:
                    buf.extend(chunk)
                    self.bytes_received += len(chunk)
                    if len(buf) >= length:
                        break
            finally:
                stream.close()
            if len(buf) < length:
                raise _Transient(f"{redact_url(url)}: range ended after {len(buf)} of {length} bytes")
            return bytes(buf[:length])

        return self._retry(url, once, progress=lambda: len(buf))

    def fetch_bytes(self, url: str) -> bytes:
        """A whole (small) resource in memory, e.g. a checksum list."""

        def once() -> bytes:
            stream = self._open(url, 0, None)
            try:
                data = b"".join(stream.chunks)
            finally:
                stream.close()
            self.bytes_received += len(data)
            if stream.total is not None and len(data) != stream.total:
                raise _Transient(f"{redact_url(url)}: got {len(data)} of {stream.total} bytes")
            return data

        return self._retry(url, once)

    def download(
        self,
        url: str,
        dest: str | os.PathLike[str],
        expected: Expected = Expected(),
        *,
        check: Callable[[Path], None] | None = None,
        desc: str | None = None,
        progress: bool | None = None,
    ) -> Path:
        """Download ``url`` to ``dest`` through ``dest.part`` (resumed if present), verify it
        (``expected``, the server's announced size, then ``check``), and rename it into place.
        ``progress`` overrides the fetcher's progress-bar setting for this file.

        A ``.part`` is resumed only when its record (``dest.part.json``: URL, ETag, Last-Modified)
        says where its bytes came from; the validator goes out as ``If-Range``, so a server whose
        file changed answers with the whole new file instead of appending to stale bytes. A
        ``.part`` with no record is started over. If the file still fails verification after a
        resume (a server without validators), it is fetched once more from the start before
        IntegrityError (naming the URL) is raised; bytes that failed are never kept."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + PART_SUFFIX)
        shown = redact_url(url)
        _drop_unrecorded_part(part, shown)
        show = self.progress if progress is None else progress
        try:
            size = self._fetch_part(url, part, expected, check, desc or dest.name, show)
        except _ResumedIntegrityError as exc:
            logger.warning(
                "%s; the resumed %s may mix two versions of the file: fetching it from the start", exc, part.name
            )
            size = self._fetch_part(url, part, expected, check, desc or dest.name, show)
        with open(part, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(part, dest)
        record_path(part).unlink(missing_ok=True)
        logger.debug("%s -> %s (%d bytes)", shown, dest, size)
        return dest

    def _fetch_part(
        self, url: str, part: Path, expected: Expected, check: Callable[[Path], None] | None, desc: str, show: bool
    ) -> int:
        """Bring ``part`` to the whole file (resuming what is there) and verify it; returns its size.

        On a verification failure the ``.part`` and its record are deleted and IntegrityError raised
        (_ResumedIntegrityError when some of the bytes came from a resumed request)."""
        job = _PartDownload(self, url, part, expected)
        with tqdm(
            total=expected.size,
            initial=job.have(),
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=desc,
            disable=not show,
            leave=False,
        ) as bar:
            self._retry(url, lambda: job.attempt(bar), progress=job.have)
        return job.verify(check)

    # -- retry policy ----------------------------------------------------------------------
    def _retry(self, url: str, once: Callable[[], Any], progress: Callable[[], int] | None = None) -> Any:
        failures = 0
        mark = progress() if progress else 0
        while True:
            try:
                return once()
            except _Transient as exc:
                now = progress() if progress else 0
                if now > mark:
                    failures = 0  # bytes arrived: this is a resume, not a repeat failure
                mark = now
                failures += 1
                if failures > self.retries:
                    raise TransferError(
                        f"{redact_url(url)}: giving up after {failures} failed attempts: {exc}"
                    ) from exc
                delay = self.backoff_s * 2 ** (failures - 1)
                logger.warning("%s: %s; retry %d/%d in %.2fs", redact_url(url), exc, failures, self.retries, delay)
                time.sleep(delay)

    # -- backends --------------------------------------------------------------------------
    def _open(self, url: str, start: int, end: int | None, if_range: str | None = None) -> _Stream:
        scheme = urlsplit(url).scheme
        if scheme in ("http", "https"):
            return self._open_http(url, start, end, if_range)
        if scheme == "file":
            return self._open_file(url, start, end)
        if scheme == "s3":
            return self._open_s3(url, start, end)
        raise TransferError(f"{redact_url(url)}: unsupported URL scheme {scheme!r}")

    def _open_http(self, url: str, start: int, end: int | None, if_range: str | None) -> _Stream:
        shown = redact_url(url)
        if self._session is None:
            self._session = requests.Session()
        headers = {"Accept-Encoding": "identity"}
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end}"
            if if_range:
                headers["If-Range"] = if_range
        try:
            resp = self._session.get(url, headers=headers, stream=True, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise _Transient(f"{shown}: {exc}") from exc
        code = resp.status_code
        length = resp.headers.get("Content-Length")
        if code == 206:
            offset, total = _parse_content_range(resp.headers.get("Content-Range", ""))
        elif code == 200:
            offset, total = 0, (int(length) if length and length.isdigit() else None)
        else:
            resp.close()
            if code == 416:
                content_range = resp.headers.get("Content-Range", "")
                total = int(content_range.rpartition("/")[2]) if content_range.rpartition("/")[2].isdigit() else None
                raise _Unsatisfiable(f"{shown}: HTTP 416 for bytes {start}-", total)
            if code in (404, 410):
                raise NotFoundError(f"{shown}: HTTP {code} (not found)")
            if code in (408, 425, 429) or code >= 500:
                raise _Transient(f"{shown}: HTTP {code} {resp.reason}")
            raise TransferError(f"{shown}: HTTP {code} {resp.reason}")

        def chunks() -> Iterator[bytes]:
            # read1 hands over whatever arrived, so bytes received before a dropped connection
            # reach the .part file and the resume starts exactly where the stream broke.
            try:
                while block := resp.raw.read1(self.chunk_size, decode_content=False):
                    yield block
            except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
                raise _Transient(f"{shown}: connection broken ({exc})") from exc

        return _Stream(
            chunks(),
            offset,
            total,
            resp.headers.get("ETag"),
            resp.close,
            partial=code == 206,
            last_modified=resp.headers.get("Last-Modified"),
        )

    def _open_file(self, url: str, start: int, end: int | None) -> _Stream:
        path = file_url_path(url)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the returned stream's close()
        except FileNotFoundError:
            raise NotFoundError(f"{url}: no such file") from None
        except OSError as exc:
            raise TransferError(f"{url}: cannot open ({exc})") from exc
        total = os.fstat(handle.fileno()).st_size
        if start > 0 and start >= total:
            handle.close()
            raise _Unsatisfiable(f"{url}: start {start} beyond size {total}", total)
        handle.seek(start)
        remaining = None if end is None else end - start + 1

        def chunks() -> Iterator[bytes]:
            left = remaining
            while left is None or left > 0:
                block = handle.read(self.chunk_size if left is None else min(self.chunk_size, left))
                if not block:
                    return
                if left is not None:
                    left -= len(block)
                yield block

        return _Stream(chunks(), start, total, None, handle.close, partial=True)

    def _open_s3(self, url: str, start: int, end: int | None) -> _Stream:
        shown = redact_url(url)
        if self._s3 is None:
            self._s3 = s3mod.make_client(self.s3_endpoint_url, timeout_s=self.timeout_s)
        try:
            body, offset, total = s3mod.open_range(self._s3, url, start, end)
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code == "InvalidRange":
                raise _Unsatisfiable(f"{shown}: range {start}- not satisfiable", None) from exc
            if s3mod.is_not_found(exc):
                raise NotFoundError(f"{shown}: no such S3 object") from exc
            if s3mod.is_client_error(exc):
                raise TransferError(f"{shown}: {exc}") from exc
            raise _Transient(f"{shown}: {exc}") from exc

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(self.chunk_size)
            except Exception as exc:  # botocore streaming errors, sockets
                raise _Transient(f"{shown}: connection broken ({exc})") from exc

        def close() -> None:
            with contextlib.suppress(Exception):
                body.close()

        return _Stream(chunks(), offset, total, None, close, partial=True)


class _PartDownload:
    """One file being brought to completion in its ``.part``: each :meth:`attempt` resumes (or
    restarts) the transfer; :meth:`verify` checks the result. State shared between attempts: the
    size the server announced and whether any bytes came from a resumed request."""

    def __init__(self, fetcher: Fetcher, url: str, part: Path, expected: Expected) -> None:
        self.fetcher = fetcher
        self.url = url
        self.shown = redact_url(url)
        self.part = part
        self.expected = expected
        self.total = expected.size
        self.resumed = False

    def have(self) -> int:
        return self.part.stat().st_size if self.part.exists() else 0

    def restart(self) -> None:
        self.part.unlink(missing_ok=True)
        record_path(self.part).unlink(missing_ok=True)

    def attempt(self, bar: Any) -> None:
        """One request for the missing bytes; _Transient when it has to be retried."""
        start = self._start_offset()
        if start is None:
            return
        record = _read_record(self.part) if start else None
        try:
            stream = self.fetcher._open(self.url, start, None, if_range=record.validator() if record else None)
        except _Unsatisfiable as exc:
            if start > 0 and exc.total == start:
                self.total = start
                return  # the .part already holds everything
            self.restart()
            raise _Transient(f"{self.shown}: range {start}- not satisfiable; restarting") from exc
        try:
            start = self._accept(stream, start, record, bar)
            self._append(stream, start, bar)
        finally:
            stream.close()
        got = self.have()
        if self.total is not None and got < self.total:
            raise _Transient(f"{self.shown}: connection closed after {got} of {self.total} bytes")

    def _start_offset(self) -> int | None:
        """Where to continue (0: from the start); None when the ``.part`` is already complete."""
        start = self.have()
        size = self.expected.size
        if size is not None and start > size:
            logger.warning("%s: %s is larger than expected; starting over", self.shown, self.part)
            self.restart()
            start = 0
        if start:
            self.resumed = True  # bytes of an earlier request may end up in the file
        if size is not None and start == size and start > 0:
            return None
        return start

    def _accept(self, stream: _Stream, start: int, record: _PartRecord | None, bar: Any) -> int:
        """Check the server's answer against the asked offset; returns where its bytes go."""
        if stream.offset != start:
            if stream.offset != 0:
                raise _Transient(f"{self.shown}: server resumed at byte {stream.offset}, asked {start}")
            if start:
                logger.warning(
                    "%s: server did not resume at byte %d (file changed, or ranges unsupported); restarting",
                    self.shown,
                    start,
                )
            start = 0
            bar.reset(total=stream.total)
        elif start and record is not None and record.changed(stream):
            self.restart()
            raise _Transient(f"{self.shown}: changed on the server since {self.part.name} was started; restarting")
        if start == 0:  # the record must describe the bytes: old bytes go first
            self.restart()
            _write_record(self.part, _PartRecord(self.shown, stream.etag, stream.last_modified))
        if stream.total is not None:
            self.total = stream.total
            bar.total = stream.total
        return start

    def _append(self, stream: _Stream, start: int, bar: Any) -> None:
        with open(self.part, "ab" if start else "wb") as handle:
            for chunk in stream.chunks:
                handle.write(chunk)
                self.fetcher.bytes_received += len(chunk)
                bar.update(len(chunk))

    def verify(self, check: Callable[[Path], None] | None) -> int:
        """Size, digests and content check of the finished ``.part``; its size. A failure deletes it."""
        size = self.have()
        try:
            if self.total is not None and size != self.total:
                raise IntegrityError(f"{self.shown}: got {size} bytes, server announced {self.total}")
            verify_file(self.part, self.expected, self.shown)
            if check is not None:
                try:
                    check(self.part)
                except IntegrityError:
                    raise
                except Exception as exc:
                    raise IntegrityError(f"{self.shown}: content check failed ({exc})") from exc
        except IntegrityError as exc:
            self.restart()
            if self.resumed:
                raise _ResumedIntegrityError(str(exc)) from exc
            raise
        return size
