"""The web app raters use: one blind pair at a time, by invitation only.

Security model (why each piece is there):

- Invitation links carry the token in the URL *fragment* (``/start#token=...``), which browsers
  never send to the server, so tokens do not reach access logs, proxies or Referer headers. The
  start page posts the token as JSON; only its salted SHA-256 is stored.
- The session is Flask's signed cookie (HttpOnly, SameSite=Strict, Secure behind TLS). Its key
  comes from ``SRSEG_STUDY_SECRET_KEY`` or the per-study 0600 key file of the state folder.
- Every state-changing request is JSON with an ``X-CSRF-Token`` header equal to the random token
  bound to the rater's session (admin forms carry their own session-bound token). JSON-only
  endpoints also cannot be reached by cross-site HTML forms.
- Images are served by pair id and side, never by a client-given path, and their URLs and file
  names do not reveal the method; vote responses do not reveal the chosen method either.
- Jinja autoescaping for every text (title, names, comments, method names on the admin page); a
  CSP without inline script, ``frame-ancestors 'none'``, ``nosniff``, no referrer.
- Admin pages use a separate credential: ``SRSEG_STUDY_ADMIN_TOKEN`` or a hashed token stored in
  the state (``create_admin_token``), compared with ``hmac.compare_digest``.

One vote per rater and pair: a repeated identical vote answers 200 with status "duplicate"; a
different choice for an answered pair answers 409 "conflict" and the first answer stands. Votes
are taken only for pairs the study page showed to that rater (403 otherwise), and the stored
response time is at most the time since the server showed the pair, whatever the client claims.

Guessing tokens is rate-limited per client address: after ``max_failed_tokens`` wrong invitation
or admin tokens within ``failed_token_window_s``, every token attempt from that address answers 429
(with Retry-After) until the window has passed. Behind a reverse proxy, set ``trusted_proxies`` to
the number of proxies so the address is taken from X-Forwarded-For (otherwise every client would
share the proxy's address).

Served by gunicorn (gthread workers, already installed with mlflow) via :func:`serve_study`;
werkzeug's threaded server is used only by tests (``server="werkzeug"``). Binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import math
import os
import random
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Sequence

from flask import (
    Flask,
    Response,
    abort,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    send_file,
    session,
    url_for,
)
from werkzeug.exceptions import HTTPException, TooManyRequests

from srseg.study.bundle import DEGRADED, REFERENCE, Pair, Study, load_study
from srseg.study.store import MAX_COMMENT, Rater, StudyStore, default_state_dir, open_store

log = logging.getLogger("srseg.study.app")  # not __name__: stays the same under `python -m`

ENV_ADMIN_TOKEN = "SRSEG_STUDY_ADMIN_TOKEN"
ENV_SECRET_KEY = "SRSEG_STUDY_SECRET_KEY"
MAX_RESPONSE_MS = 3_600_000
MAX_FAILED_TOKENS = 10
FAILED_TOKEN_WINDOW_S = 900.0
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_JSON_PREFIXES = ("/api/", "/admin/api/")


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


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def create_app(
    bundle: Path,
    state_dir: Path | None = None,
    *,
    admin_token: str | None = None,
    secret_key: str | None = None,
    secure_cookies: bool = False,
    verify_bundle: bool = True,
    max_failed_tokens: int = MAX_FAILED_TOKENS,
    failed_token_window_s: float = FAILED_TOKEN_WINDOW_S,
    trusted_proxies: int = 0,
) -> Flask:
    """Build the Flask app for ``bundle``; state (votes, key) lives in ``state_dir``.

    ``admin_token`` / ``secret_key`` default to the environment variables
    SRSEG_STUDY_ADMIN_TOKEN / SRSEG_STUDY_SECRET_KEY, then to the state folder. See the module
    docstring for the token rate limit and ``trusted_proxies``.
    """
    if max_failed_tokens < 1 or failed_token_window_s <= 0:
        raise ValueError(
            f"max_failed_tokens must be >= 1 and failed_token_window_s > 0, got {max_failed_tokens}, {failed_token_window_s}"
        )
    if trusted_proxies < 0:
        raise ValueError(f"trusted_proxies must be >= 0, got {trusted_proxies}")
    bundle = Path(bundle).resolve()  # Flask resolves a relative send_file path against the package folder
    study = load_study(bundle, verify=verify_bundle)
    store = open_store(study.study_id, Path(state_dir) if state_dir else default_state_dir(bundle), create=True)
    env_admin = admin_token if admin_token is not None else os.environ.get(ENV_ADMIN_TOKEN) or None
    if env_admin is not None and len(env_admin) < 16:
        raise ValueError(f"{ENV_ADMIN_TOKEN} is too short ({len(env_admin)} characters, need >= 16)")
    key = secret_key or os.environ.get(ENV_SECRET_KEY) or store.secret_key()
    if len(key) < 32:
        raise ValueError(f"session secret key is too short ({len(key)} characters, need >= 32); see {ENV_SECRET_KEY}")
    if env_admin is None and not store.has_admin_token():
        log.warning("admin view disabled: set %s or create an admin token (srseg study invite --admin)", ENV_ADMIN_TOKEN)

    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config.update(
        SECRET_KEY=key,
        SESSION_COOKIE_NAME="srseg_study",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(days=30),
        MAX_CONTENT_LENGTH=64 * 1024,
        SEND_FILE_MAX_AGE_DEFAULT=3600,
    )
    ctx = StudyContext(study, store, env_admin, max_failed_tokens, failed_token_window_s)
    app.extensions["srseg_study"] = ctx
    if trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=trusted_proxies)  # type: ignore[method-assign]
    _register_routes(app, ctx)
    app.after_request(_security_headers)
    app.register_error_handler(HTTPException, _error_page)
    return app


def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    if request.path.startswith("/image/"):
        response.headers["Cache-Control"] = "private, max-age=3600"
    elif not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response


def _error_page(exc: HTTPException) -> Response:
    if request.path.startswith(_JSON_PREFIXES):
        response = jsonify(error=exc.description)
        if exc.code == 401 and request.path.startswith("/admin/api/"):
            response.headers["WWW-Authenticate"] = "Bearer"
    else:
        response = make_response(render_template("denied.html", heading=exc.name, message=exc.description))
    response.status_code = exc.code or 500
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_object(allowed: set[str], required: set[str]) -> dict[str, Any]:
    """The request's JSON object; unknown or missing keys are a 400 naming them."""
    if not request.is_json:
        abort(415, "send JSON (Content-Type: application/json)")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        abort(400, f"unknown field(s): {', '.join(_short(k) for k in unknown)}")
    missing = sorted(required - set(body))
    if missing:
        abort(400, f"missing field(s): {', '.join(missing)}")
    return body


def _register_routes(app: Flask, ctx: StudyContext) -> None:
    study, store = ctx.study, ctx.store

    def current_rater() -> Rater | None:
        rater_id = session.get("rater")
        if not isinstance(rater_id, str) or not isinstance(session.get("csrf"), str):
            return None
        rater = store.get_rater(rater_id)
        if rater is None or rater.revoked:
            session.clear()
            return None
        return rater

    def require_rater() -> Rater:
        rater = current_rater()
        if rater is None:
            abort(401, "This study is by invitation only. Please open the link from your invitation.")
        return rater

    def require_csrf(session_key: str, supplied: str | None) -> None:
        expected = session.get(session_key)
        if not isinstance(expected, str) or not supplied or not hmac.compare_digest(supplied.encode(), expected.encode()):
            abort(403, "missing or invalid CSRF token")

    def now_ms() -> int:
        return int(time.time() * 1000)

    def client_address() -> str:
        return request.remote_addr or "unknown"

    def refuse_while_locked_out() -> None:
        """429 once this address sent too many wrong tokens within the window."""
        window_ms = int(ctx.failed_token_window_s * 1000)
        count, oldest = store.failed_auth_since(client_address(), now_ms() - window_ms)
        if count >= ctx.max_failed_tokens and oldest is not None:
            retry_after = max(1, math.ceil((oldest + window_ms - now_ms()) / 1000))
            log.warning("refused a token attempt from %s: %d wrong tokens in the last %.0f s",
                        client_address(), count, ctx.failed_token_window_s)
            raise TooManyRequests(f"Too many wrong tokens from your address; try again in {retry_after} s.",
                                  retry_after=retry_after)

    def note_wrong_token(kind: str) -> None:
        store.record_failed_auth(client_address(), kind, now_ms(), keep_ms=int(ctx.failed_token_window_s * 1000))

    def next_pair(rater: Rater) -> tuple[Pair | None, int]:
        done = store.voted_pairs(rater.rater_id)
        pending = [pid for pid in ctx.order(rater.rater_id) if pid not in done]
        return (study.by_id[pending[0]] if pending else None), len(done & study.by_id.keys())

    def admin_fingerprints() -> dict[str, Callable[[str], bool]]:
        """Current admin credentials: fingerprint -> checker. A rotated token ends old sessions."""
        found: dict[str, Callable[[str], bool]] = {}
        if ctx.env_admin_token:
            env = ctx.env_admin_token
            found["env:" + hashlib.sha256(b"admin-env:" + env.encode()).hexdigest()[:32]] = (
                lambda token: hmac.compare_digest(_digest(token), _digest(env))
            )
        stored = store.admin_token_hash()
        if stored:
            found["db:" + hashlib.sha256(b"admin-db:" + stored.encode()).hexdigest()[:32]] = store.check_admin_token
        return found

    def is_admin() -> bool:
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

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/")
    def index() -> Response:
        if current_rater() is not None:
            return redirect(url_for("study_page"))
        abort(401, "This study is by invitation only. Please open the link from your invitation.")

    @app.get("/start")
    def start() -> str:
        return render_template("start.html", study=study)

    @app.post("/api/session")
    def api_session() -> Response:
        body = _json_object({"token"}, {"token"})
        refuse_while_locked_out()
        token = body["token"]
        rater = store.rater_for_token(token) if isinstance(token, str) else None
        if rater is None:
            note_wrong_token("invitation")
            log.warning("rejected an invitation token from %s", client_address())
            abort(403, "This invitation is not valid.")
        session.clear()
        session.permanent = True
        session["rater"] = rater.rater_id
        session["csrf"] = secrets.token_urlsafe(32)
        store.mark_seen(rater.rater_id)
        log.info("rater %s started a session", rater.rater_id)
        return jsonify(rater_id=rater.rater_id, csrf_token=session["csrf"], next=url_for("study_page"))

    @app.get("/study")
    def study_page() -> Response | str:
        rater = require_rater()
        pair, done = next_pair(rater)
        if pair is None:
            store.mark_finished(rater.rater_id)
            return redirect(url_for("thanks"))
        store.mark_served(rater.rater_id, pair.id, now_ms())
        return render_template(
            "study.html", study=study, rater=rater, pair=pair, done=done, total=len(study.pairs), csrf=session["csrf"]
        )

    @app.post("/api/vote")
    def api_vote() -> tuple[Response, int]:
        rater = require_rater()
        require_csrf("csrf", request.headers.get("X-CSRF-Token"))
        body = _json_object({"pair_id", "side", "response_ms"}, {"pair_id", "side"})
        pair_id, side, response_ms = body["pair_id"], body["side"], body.get("response_ms")
        pair = study.by_id.get(pair_id) if isinstance(pair_id, str) else None
        if pair is None:
            abort(400, f"unknown pair_id {_short(pair_id)}")
        if side not in ("left", "right"):
            abort(400, f"side must be 'left' or 'right', got {_short(side)}")
        if response_ms is not None and (
            isinstance(response_ms, bool) or not isinstance(response_ms, int) or not 0 <= response_ms <= MAX_RESPONSE_MS
        ):
            abort(400, f"response_ms must be an integer in [0, {MAX_RESPONSE_MS}], got {_short(response_ms)}")
        served_at = store.served_at_ms(rater.rater_id, pair.id)
        if served_at is None:
            log.warning("rater %s voted on pair %s, which was never shown to them", rater.rater_id, pair.id)
            abort(403, f"pair {pair.id} was not shown to you; answer the pairs the study page shows")
        elapsed = max(0, now_ms() - served_at)  # the client cannot have taken longer than the server saw
        response_ms = elapsed if response_ms is None else min(response_ms, elapsed)
        vote, status = store.record_vote(rater.rater_id, pair.id, pair.method(side), side, response_ms)
        _, done = next_pair(rater)
        finished = done >= len(study.pairs)
        if finished:
            store.mark_finished(rater.rater_id)
        code = {"created": 201, "duplicate": 200, "conflict": 409}[status]
        payload = {
            "status": status, "pair_id": pair.id, "side": vote.side, "done": done, "total": len(study.pairs),
            "next": url_for("thanks") if finished else url_for("study_page"),
        }
        if status == "conflict":
            payload["error"] = "this pair is already answered; the first answer stands"
        return jsonify(payload), code

    @app.get("/thanks")
    def thanks() -> Response | str:
        rater = require_rater()
        pair, done = next_pair(rater)
        if pair is not None:
            return redirect(url_for("study_page"))
        return render_template("thanks.html", study=study, rater=rater, total=done, csrf=session["csrf"])

    @app.post("/api/comment")
    def api_comment() -> Response:
        rater = require_rater()
        require_csrf("csrf", request.headers.get("X-CSRF-Token"))
        comment = _json_object({"comment"}, {"comment"})["comment"]
        if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
            abort(400, f"comment must be a string of at most {MAX_COMMENT} characters")
        store.set_comment(rater.rater_id, comment)
        return jsonify(status="saved")

    @app.get("/image/<pair_id>/<side>")
    def image(pair_id: str, side: str) -> Response:
        if current_rater() is None and not is_admin():
            abort(401, "This study is by invitation only.")
        pair = study.by_id.get(pair_id)
        relative = pair.file(side) if pair is not None and side in ("left", "right", "reference") else None
        if relative is None:
            abort(404, "no such image")
        return send_file(study.path(relative), mimetype="image/png", conditional=True, etag=True, max_age=3600)

    @app.get("/admin/login")
    def admin_login_form() -> str:
        session.setdefault("login_csrf", secrets.token_urlsafe(32))
        return render_template("admin_login.html", study=study, csrf=session["login_csrf"], error=None)

    @app.post("/admin/login")
    def admin_login() -> Response | tuple[str, int]:
        require_csrf("login_csrf", request.form.get("csrf_token"))
        credentials = admin_fingerprints()
        if not credentials:
            abort(403, f"Admin access is not configured: set {ENV_ADMIN_TOKEN} or create an admin token.")
        refuse_while_locked_out()
        token = request.form.get("token", "")
        matched = [fingerprint for fingerprint, check in credentials.items() if check(token)]
        if not matched:
            note_wrong_token("admin")
            log.warning("failed admin login from %s", client_address())
            return render_template("admin_login.html", study=study, csrf=session["login_csrf"], error="Wrong admin token."), 403
        session.pop("login_csrf", None)
        session["admin"] = matched[0]
        session["admin_csrf"] = secrets.token_urlsafe(32)
        log.info("admin logged in from %s", client_address())
        return redirect(url_for("admin_page"))

    @app.post("/admin/logout")
    def admin_logout() -> Response:
        require_csrf("admin_csrf", request.form.get("csrf_token"))
        session.pop("admin", None)
        session.pop("admin_csrf", None)
        return redirect(url_for("admin_login_form"))

    @app.get("/admin")
    def admin_page() -> Response | str:
        if not is_admin():
            if not admin_fingerprints():
                abort(403, f"Admin access is not configured: set {ENV_ADMIN_TOKEN} or create an admin token.")
            return redirect(url_for("admin_login_form"))
        return render_template("admin.html", study=study, progress=progress(ctx), csrf=session.get("admin_csrf", ""))

    @app.get("/admin/api/progress")
    def admin_progress() -> Response:
        if not is_admin():
            abort(401, "admin token required (Authorization: Bearer <token>)")
        return jsonify(progress(ctx))


def progress(ctx: StudyContext) -> dict[str, Any]:
    """Per-rater progress, attention-check results and vote counts per method pair (admin only)."""
    study, votes = ctx.study, ctx.store.votes()
    total = len(study.pairs)
    per_rater: dict[str, dict[str, int]] = {}
    pair_counts: dict[tuple[str, str], dict[str, int]] = {tuple(p): {p[0]: 0, p[1]: 0} for p in study.method_pairs}
    for vote in votes:
        stats = per_rater.setdefault(vote.rater_id, {"answered": 0, "attention_answered": 0, "attention_correct": 0})
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
    raters = []
    for rater in ctx.store.raters():
        stats = per_rater.get(rater.rater_id, {"answered": 0, "attention_answered": 0, "attention_correct": 0})
        raters.append({
            "rater_id": rater.rater_id, "name": rater.name, "source": rater.source, "total": total,
            "first_seen_at": rater.first_seen_at, "finished_at": rater.finished_at, "comment": rater.comment,
            "revoked": rater.revoked, **stats,
        })
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


def create_invitations(
    bundle: Path, count: int, base_url: str, state_dir: Path | None = None, names: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """Create ``count`` raters; return (rater_id, invitation URL) pairs, the only copy of the tokens."""
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
    study = load_study(Path(bundle), verify=False)
    store = open_store(study.study_id, Path(state_dir) if state_dir else default_state_dir(Path(bundle)), create=True)
    return [(inv.rater_id, f"{base_url.rstrip('/')}/start#token={inv.token}") for inv in store.create_invitations(count, names)]


def create_admin_token(bundle: Path, state_dir: Path | None = None) -> str:
    """Store the hash of a new admin token for ``bundle`` and return the token (shown once)."""
    study = load_study(Path(bundle), verify=False)
    store = open_store(study.study_id, Path(state_dir) if state_dir else default_state_dir(Path(bundle)), create=True)
    return store.create_admin_token()


def serve_study(
    bundle: Path,
    state_dir: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    threads: int = 8,
    secure_cookies: bool = False,
    server: str = "gunicorn",
    trusted_proxies: int = 0,
) -> None:
    """Serve the study until interrupted: gunicorn (gthread) by default, werkzeug for tests only."""
    if server not in ("gunicorn", "werkzeug"):
        raise ValueError(f"server must be 'gunicorn' or 'werkzeug', got {server!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in [0, 65535], got {port}")
    if workers < 1 or threads < 1:
        raise ValueError(f"workers and threads must be >= 1, got workers={workers}, threads={threads}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s, not loopback: put it behind a TLS proxy and use secure cookies", host)
    app = create_app(bundle, state_dir, secure_cookies=secure_cookies, trusted_proxies=trusted_proxies)  # fail before binding
    log.info("serving study %s on http://%s:%d (%s)", Path(bundle), host, port, server)
    if server == "werkzeug":
        from werkzeug.serving import make_server

        log.warning("werkzeug's development server is for tests; use the default gunicorn server for a real study")

        make_server(host, port, app, threaded=True).serve_forever()
        return
    _gunicorn(app, host, port, workers, threads)


def _gunicorn(app: Flask, host: str, port: int, workers: int, threads: int) -> None:
    from gunicorn.app.base import BaseApplication

    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    options = {
        "bind": bind, "workers": workers, "worker_class": "gthread", "threads": threads, "timeout": 60,
        "graceful_timeout": 10, "preload_app": True, "accesslog": None, "errorlog": "-", "loglevel": "info",
        "proc_name": "srseg-study",
    }

    class _Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)
            if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 25: no socket in $HOME
                self.cfg.set("control_socket_disable", True)

        def load(self) -> Flask:
            return app

    _Server().run()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m srseg.study.app --bundle B [--state S] [--port P]``: serve a study."""
    parser = argparse.ArgumentParser(prog="python -m srseg.study.app", description=main.__doc__)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--state", type=Path, default=None, help="state folder (default <bundle>.state)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--secure-cookies", action="store_true", help="set when served over HTTPS")
    parser.add_argument("--server", choices=("gunicorn", "werkzeug"), default="gunicorn")
    parser.add_argument("--trusted-proxies", type=int, default=0,
                        help="reverse proxies in front (client address from X-Forwarded-For, for the token rate limit)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve_study(args.bundle, args.state, args.host, args.port, args.workers, args.threads, args.secure_cookies, args.server,
                args.trusted_proxies)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
