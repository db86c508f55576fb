"""The admin pages (blueprint ``admin``): login with the admin token, progress page and its JSON.

Admins use their own credential (``SRSEG_STUDY_ADMIN_TOKEN`` or a stored hashed token), never a
rater's; see :mod:`srseg.study.access`.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from flask import Blueprint, Response, abort, jsonify, redirect, render_template, request, session, url_for

from srseg.study.access import (
    ENV_ADMIN_TOKEN,
    StudyContext,
    admin_fingerprints,
    client_address,
    context,
    is_admin,
    note_wrong_token,
    refuse_while_locked_out,
    require_csrf,
)
from srseg.study.bundle import DEGRADED, REFERENCE

log = logging.getLogger("srseg.study.app")

_NOT_CONFIGURED = f"Admin access is not configured: set {ENV_ADMIN_TOKEN} or create an admin token."

admin = Blueprint("admin", __name__)


@admin.get("/admin/login")
def admin_login_form() -> str:
    session.setdefault("login_csrf", secrets.token_urlsafe(32))
    return render_template("admin_login.html", study=context().study, csrf=session["login_csrf"], error=None)


@admin.post("/admin/login")
def admin_login() -> Response | tuple[str, int]:
    require_csrf("login_csrf", request.form.get("csrf_token"))
    credentials = admin_fingerprints()
    if not credentials:
        abort(403, _NOT_CONFIGURED)
    refuse_while_locked_out()
    token = request.form.get("token", "")
    matched = [fingerprint for fingerprint, check in credentials.items() if check(token)]
    if not matched:
        note_wrong_token("admin")
        log.warning("failed admin login from %s", client_address())
        page = render_template(
            "admin_login.html", study=context().study, csrf=session["login_csrf"], error="Wrong admin token."
        )
        return page, 403
    session.pop("login_csrf", None)
    session["admin"] = matched[0]
    session["admin_csrf"] = secrets.token_urlsafe(32)
    log.info("admin logged in from %s", client_address())
    return redirect(url_for("admin.admin_page"))


@admin.post("/admin/logout")
def admin_logout() -> Response:
    require_csrf("admin_csrf", request.form.get("csrf_token"))
    session.pop("admin", None)
    session.pop("admin_csrf", None)
    return redirect(url_for("admin.admin_login_form"))


@admin.get("/admin")
def admin_page() -> Response | str:
    if not is_admin():
        if not admin_fingerprints():
            abort(403, _NOT_CONFIGURED)
        return redirect(url_for("admin.admin_login_form"))
    ctx = context()
    return render_template("admin.html", study=ctx.study, progress=progress(ctx), csrf=session.get("admin_csrf", ""))


@admin.get("/admin/api/progress")
def admin_progress() -> Response:
    if not is_admin():
        abort(401, "admin token required (Authorization: Bearer <token>)")
    return jsonify(progress(context()))


def _empty_stats() -> dict[str, int]:
    return {"answered": 0, "attention_answered": 0, "attention_correct": 0}


def progress(ctx: StudyContext) -> dict[str, Any]:
    """Per-rater progress, attention-check results and vote counts per method pair (admin only)."""
    study, votes = ctx.study, ctx.store.votes()
    total = len(study.pairs)
    per_rater: dict[str, dict[str, int]] = {}
    pair_counts: dict[tuple[str, str], dict[str, int]] = {tuple(p): {p[0]: 0, p[1]: 0} for p in study.method_pairs}
    for vote in votes:
        stats = per_rater.setdefault(vote.rater_id, _empty_stats())
        stats["answered"] += 1
        pair = study.by_id.get(vote.pair_id)
        if pair is None:
            continue
        if pair.attention_check:
            stats["attention_answered"] += 1
            stats["attention_correct"] += int(vote.choice == pair.expected)
            continue
        for key, counts in pair_counts.items():
            if {pair.left.method, pair.right.method} == set(key):
                counts[vote.choice] += 1
    raters = [
        {
            "rater_id": r.rater_id,
            "name": r.name,
            "source": r.source,
            "total": total,
            "first_seen_at": r.first_seen_at,
            "finished_at": r.finished_at,
            "comment": r.comment,
            "revoked": r.revoked,
            **per_rater.get(r.rater_id, _empty_stats()),
        }
        for r in ctx.store.raters()
    ]
    return {
        "pairs": total,
        "votes": len(votes),
        "raters": raters,
        "finished": sum(1 for r in raters if r["finished_at"]),
        "method_pairs": [
            {"a": a, "b": b, "wins_a": counts[a], "wins_b": counts[b], "votes": counts[a] + counts[b]}
            for (a, b), counts in pair_counts.items()
        ],
        "attention_labels": {"reference": REFERENCE, "degraded": DEGRADED},
    }
