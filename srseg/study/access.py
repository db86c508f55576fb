"""Who is asking: the rater session, CSRF tokens, admin credentials and the wrong-token rate limit.

The request helpers the study views share (see :mod:`srseg.study.app` for the security model).
They read the study's :class:`StudyContext` from the current Flask app, so the views stay plain
module-level functions.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import abort, current_app, request, session
from werkzeug.exceptions import TooManyRequests

from srseg.study.bundle import Study
from srseg.study.store import Rater, StudyStore

log = logging.getLogger("srseg.study.app")  # one logger name for the whole app (stays under `python -m`)

ENV_ADMIN_TOKEN = "SRSEG_STUDY_ADMIN_TOKEN"
MAX_FAILED_TOKENS = 10
FAILED_TOKEN_WINDOW_S = 900.0
EXTENSION_KEY = "srseg_study"
NOT_INVITED = "This study is by invitation only. Please open the link from your invitation."


@dataclass(frozen=True)
class StudyContext:
    study: Study
    store: StudyStore
    env_admin_token: str | None
    max_failed_tokens: int = MAX_FAILED_TOKENS
    failed_token_window_s: float = FAILED_TOKEN_WINDOW_S

    def order(self, rater_id: str) -> list[str]:
        """Per-rater pair order: shuffled, reproducible from the study seed and the rater id."""
        ids = [pair.id for pair in self.study.pairs]
        random.Random(f"{self.study.seed}:{rater_id}").shuffle(ids)
        return ids


def context() -> StudyContext:
    """The study served by the current app (set by :func:`srseg.study.app.create_app`)."""
    ctx: StudyContext = current_app.extensions[EXTENSION_KEY]
    return ctx


def now_ms() -> int:
    return int(time.time() * 1000)


def client_address() -> str:
    return request.remote_addr or "unknown"


def short(value: Any) -> str:
    """``repr(value)`` cut to 60 characters, for error messages that echo client input."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def json_object(allowed: set[str], required: set[str]) -> dict[str, Any]:
    """The request's JSON object; unknown or missing keys are a 400 naming them."""
    if not request.is_json:
        abort(415, "send JSON (Content-Type: application/json)")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        abort(400, f"unknown field(s): {', '.join(short(k) for k in unknown)}")
    missing = sorted(required - set(body))
    if missing:
        abort(400, f"missing field(s): {', '.join(missing)}")
    return body


def current_rater() -> Rater | None:
    """The rater of this session, or None (no session, or the rater was revoked)."""
    rater_id = session.get("rater")
    if not isinstance(rater_id, str) or not isinstance(session.get("csrf"), str):
        return None
    rater = context().store.get_rater(rater_id)
    if rater is None or rater.revoked:
        session.clear()
        return None
    return rater


def require_rater() -> Rater:
    rater = current_rater()
    if rater is None:
        abort(401, NOT_INVITED)
    return rater


def require_csrf(session_key: str, supplied: str | None) -> None:
    """403 unless ``supplied`` equals the token stored under ``session_key`` in the session."""
    expected = session.get(session_key)
    if not isinstance(expected, str) or not supplied or not hmac.compare_digest(supplied.encode(), expected.encode()):
        abort(403, "missing or invalid CSRF token")


def refuse_while_locked_out() -> None:
    """429 once this address sent too many wrong tokens within the window."""
    ctx = context()
    window_ms = int(ctx.failed_token_window_s * 1000)
    count, oldest = ctx.store.failed_auth_since(client_address(), now_ms() - window_ms)
    if count >= ctx.max_failed_tokens and oldest is not None:
        retry_after = max(1, math.ceil((oldest + window_ms - now_ms()) / 1000))
        log.warning(
            "refused a token attempt from %s: %d wrong tokens in the last %.0f s",
            client_address(),
            count,
            ctx.failed_token_window_s,
        )
        raise TooManyRequests(
            f"Too many wrong tokens from your address; try again in {retry_after} s.", retry_after=retry_after
        )


def note_wrong_token(kind: str) -> None:
    ctx = context()
    ctx.store.record_failed_auth(client_address(), kind, now_ms(), keep_ms=int(ctx.failed_token_window_s * 1000))


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def admin_fingerprints() -> dict[str, Callable[[str], bool]]:
    """Current admin credentials: fingerprint -> checker. A rotated token ends old sessions."""
    ctx = context()
    found: dict[str, Callable[[str], bool]] = {}
    if ctx.env_admin_token:
        env = ctx.env_admin_token
        found["env:" + hashlib.sha256(b"admin-env:" + env.encode()).hexdigest()[:32]] = lambda token: (
            hmac.compare_digest(_digest(token), _digest(env))
        )
    stored = ctx.store.admin_token_hash()
    if stored:
        found["db:" + hashlib.sha256(b"admin-db:" + stored.encode()).hexdigest()[:32]] = ctx.store.check_admin_token
    return found


def is_admin() -> bool:
    """An admin session, or a valid ``Authorization: Bearer`` admin token (rate-limited)."""
    marker = session.get("admin")
    if isinstance(marker, str) and marker in admin_fingerprints():
        return True
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        refuse_while_locked_out()
        token = header[len("Bearer ") :].strip()
        if any(check(token) for check in admin_fingerprints().values()):
            return True
        note_wrong_token("admin")
        log.warning("rejected an admin bearer token from %s", client_address())
    return False
