"""Talking to the tracking server with bounded waits: a reachability probe and bounded HTTP retries.

MLflow's client retries a failed request 7 times with a backoff factor of 2 (about 250 s) before
it gives up, with a 120 s timeout per request, and the registry code then reported the failure as
"registered model not found". Registry commands instead:

- probe an ``http(s)://`` tracking server first (:func:`check_reachable`): one HTTP request with a
  short timeout; any HTTP answer counts as reachable (the API may still refuse the credentials),
  a refused connection, a DNS failure or no answer within ``timeout_s`` is a
  :class:`TrackingUnreachable` error naming the server (credentials stripped) within seconds;
- run with bounded retries (:func:`bounded_retries`): ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
  ``..._BACKOFF_FACTOR`` and ``..._TIMEOUT`` default to :data:`BOUNDED_HTTP` for the duration of
  the operation, unless the user set them (their values win). They are environment variables
  because that is how MLflow's client reads them (at every request).

Local stores (``sqlite:///``, file paths) need neither.
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from srseg.errors import SrsegError

PROBE_TIMEOUT_S = 5.0
# A failed request is retried 3 times after 1, 2 and 4 s (7 s of backoff, instead of ~250 s).
BOUNDED_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # no progress bars for the small files registry commands read
}


class TrackingUnreachable(SrsegError, ConnectionError):
    """The tracking server did not answer: the message names it (without credentials) and why."""


def public_uri(uri: str) -> str:
    """``uri`` without user info, query or fragment (safe to print: no credentials)."""
    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def is_http(uri: str | None) -> bool:
    return bool(uri) and urllib.parse.urlsplit(str(uri)).scheme in ("http", "https")


def check_reachable(uri: str | None, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise :class:`TrackingUnreachable` unless the ``http(s)`` tracking server ``uri`` answers an
    HTTP request within ``timeout_s``. Other URIs (local stores) are not probed."""
    if not is_http(uri):
        return
    assert uri is not None
    url = public_uri(uri).rstrip("/") + "/health"  # user info would be taken for the host name
    request = urllib.request.Request(url, method="GET", headers={"User-Agent": "srseg-probe"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):  # noqa: S310 - the configured tracking server
            return
    except urllib.error.HTTPError:
        return  # it answered (a proxy may want credentials or not know /health): reachable
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (socket.timeout, TimeoutError)):
            why = f"no answer within {timeout_s:g} s"
        else:
            why = str(reason) or type(reason).__name__
        raise TrackingUnreachable(
            f"MLflow tracking server {public_uri(uri)} is unreachable ({why}); check mlflow.tracking_uri / "
            "MLFLOW_TRACKING_URI and that the server is running"
        ) from exc


@contextmanager
def bounded_retries() -> Iterator[None]:
    """MLflow HTTP requests inside the block retry a bounded number of times (see module doc)."""
    added = {key: value for key, value in BOUNDED_HTTP.items() if not os.environ.get(key)}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextmanager
def registry_session(uri: str | None, timeout_s: float = PROBE_TIMEOUT_S) -> Iterator[None]:
    """Probe ``uri`` and bound the retries of every MLflow request made inside the block."""
    check_reachable(uri, timeout_s)
    with bounded_retries():
        yield
