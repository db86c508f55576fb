"""The rater's pages and JSON endpoints (blueprint ``rater``): start, one blind pair at a time,
votes, the closing comment, and the images (served by pair id and side, never by path)."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from flask import Blueprint, Response, abort, jsonify, redirect, render_template, request, send_file, session, url_for

from srseg.study.access import (
    NOT_INVITED,
    client_address,
    context,
    current_rater,
    is_admin,
    json_object,
    note_wrong_token,
    now_ms,
    refuse_while_locked_out,
    require_csrf,
    require_rater,
    short,
)
from srseg.study.bundle import Pair
from srseg.study.store import MAX_COMMENT, Rater

log = logging.getLogger("srseg.study.app")

MAX_RESPONSE_MS = 3_600_000
_VOTE_STATUS_CODES = {"created": 201, "duplicate": 200, "conflict": 409}

rater = Blueprint("rater", __name__)


def next_pair(who: Rater) -> tuple[Pair | None, int]:
    """The next pair ``who`` has not answered (None when done) and how many pairs are answered."""
    ctx = context()
    done = ctx.store.voted_pairs(who.rater_id)
    pending = [pid for pid in ctx.order(who.rater_id) if pid not in done]
    return (ctx.study.by_id[pending[0]] if pending else None), len(done & ctx.study.by_id.keys())


@rater.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@rater.get("/")
def index() -> Response:
    if current_rater() is not None:
        return redirect(url_for("rater.study_page"))
    abort(401, NOT_INVITED)


@rater.get("/start")
def start() -> str:
    return render_template("start.html", study=context().study)


@rater.post("/api/session")
def api_session() -> Response:
    """Exchange an invitation token (posted from the start page) for a rater session."""
    body = json_object({"token"}, {"token"})
    refuse_while_locked_out()
    token = body["token"]
    who = context().store.rater_for_token(token) if isinstance(token, str) else None
    if who is None:
        note_wrong_token("invitation")
        log.warning("rejected an invitation token from %s", client_address())
        abort(403, "This invitation is not valid.")
    session.clear()
    session.permanent = True
    session["rater"] = who.rater_id
    session["csrf"] = secrets.token_urlsafe(32)
    context().store.mark_seen(who.rater_id)
    log.info("rater %s started a session", who.rater_id)
    return jsonify(rater_id=who.rater_id, csrf_token=session["csrf"], next=url_for("rater.study_page"))


@rater.get("/study")
def study_page() -> Response | str:
    who = require_rater()
    ctx = context()
    pair, done = next_pair(who)
    if pair is None:
        ctx.store.mark_finished(who.rater_id)
        return redirect(url_for("rater.thanks"))
    ctx.store.mark_served(who.rater_id, pair.id, now_ms())
    return render_template(
        "study.html", study=ctx.study, rater=who, pair=pair, done=done, total=len(ctx.study.pairs), csrf=session["csrf"]
    )


def _vote_request() -> tuple[Pair, str, int | None]:
    """(pair, side, claimed response time) of a vote request; a 400 naming the bad field."""
    body = json_object({"pair_id", "side", "response_ms"}, {"pair_id", "side"})
    pair_id, side, response_ms = body["pair_id"], body["side"], body.get("response_ms")
    pair = context().study.by_id.get(pair_id) if isinstance(pair_id, str) else None
    if pair is None:
        abort(400, f"unknown pair_id {short(pair_id)}")
    if side not in ("left", "right"):
        abort(400, f"side must be 'left' or 'right', got {short(side)}")
    if response_ms is not None and (
        isinstance(response_ms, bool) or not isinstance(response_ms, int) or not 0 <= response_ms <= MAX_RESPONSE_MS
    ):
        abort(400, f"response_ms must be an integer in [0, {MAX_RESPONSE_MS}], got {short(response_ms)}")
    return pair, side, response_ms


def _response_time(who: Rater, pair: Pair, claimed: int | None) -> int:
    """The stored response time: at most the time since the server showed ``pair`` to ``who``."""
    served_at = context().store.served_at_ms(who.rater_id, pair.id)
    if served_at is None:
        log.warning("rater %s voted on pair %s, which was never shown to them", who.rater_id, pair.id)
        abort(403, f"pair {pair.id} was not shown to you; answer the pairs the study page shows")
    elapsed = max(0, now_ms() - served_at)  # the client cannot have taken longer than the server saw
    return elapsed if claimed is None else min(claimed, elapsed)


@rater.post("/api/vote")
def api_vote() -> tuple[Response, int]:
    """Record one vote; the answer never names the chosen method."""
    who = require_rater()
    require_csrf("csrf", request.headers.get("X-CSRF-Token"))
    pair, side, claimed = _vote_request()
    ctx = context()
    vote, status = ctx.store.record_vote(
        who.rater_id, pair.id, pair.method(side), side, _response_time(who, pair, claimed)
    )
    _, done = next_pair(who)
    finished = done >= len(ctx.study.pairs)
    if finished:
        ctx.store.mark_finished(who.rater_id)
    payload: dict[str, Any] = {
        "status": status,
        "pair_id": pair.id,
        "side": vote.side,
        "done": done,
        "total": len(ctx.study.pairs),
        "next": url_for("rater.thanks") if finished else url_for("rater.study_page"),
    }
    if status == "conflict":
        payload["error"] = "this pair is already answered; the first answer stands"
    return jsonify(payload), _VOTE_STATUS_CODES[status]


@rater.get("/thanks")
def thanks() -> Response | str:
    who = require_rater()
    pair, done = next_pair(who)
    if pair is not None:
        return redirect(url_for("rater.study_page"))
    return render_template("thanks.html", study=context().study, rater=who, total=done, csrf=session["csrf"])


@rater.post("/api/comment")
def api_comment() -> Response:
    who = require_rater()
    require_csrf("csrf", request.headers.get("X-CSRF-Token"))
    comment = json_object({"comment"}, {"comment"})["comment"]
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        abort(400, f"comment must be a string of at most {MAX_COMMENT} characters")
    context().store.set_comment(who.rater_id, comment)
    return jsonify(status="saved")


@rater.get("/image/<pair_id>/<side>")
def image(pair_id: str, side: str) -> Response:
    """An image of a pair by side (``left``, ``right``, ``reference``), for raters and admins."""
    if current_rater() is None and not is_admin():
        abort(401, "This study is by invitation only.")
    study = context().study
    pair = study.by_id.get(pair_id)
    relative = pair.file(side) if pair is not None and side in ("left", "right", "reference") else None
    if relative is None:
        abort(404, "no such image")
    return send_file(study.path(relative), mimetype="image/png", conditional=True, etag=True, max_age=3600)
