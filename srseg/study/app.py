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
import logging
import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from flask import Flask, Response, jsonify, make_response, render_template, request
from werkzeug.exceptions import HTTPException

from srseg.study.access import (
    ENV_ADMIN_TOKEN,
    EXTENSION_KEY,
    FAILED_TOKEN_WINDOW_S,
    MAX_FAILED_TOKENS,
    StudyContext,
)
from srseg.study.admin import admin, progress  # noqa: F401 - progress: the admin view's numbers
from srseg.study.bundle import load_study
from srseg.study.store import default_state_dir, open_store
from srseg.study.views import rater

log = logging.getLogger("srseg.study.app")  # not __name__: stays the same under `python -m`

ENV_SECRET_KEY = "SRSEG_STUDY_SECRET_KEY"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_JSON_PREFIXES = ("/api/", "/admin/api/")


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
            "max_failed_tokens must be >= 1 and failed_token_window_s > 0, "
            f"got {max_failed_tokens}, {failed_token_window_s}"
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
        log.warning(
            "admin view disabled: set %s or create an admin token (srseg study invite --admin)", ENV_ADMIN_TOKEN
        )

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
    app.extensions[EXTENSION_KEY] = StudyContext(study, store, env_admin, max_failed_tokens, failed_token_window_s)
    if trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=trusted_proxies)  # type: ignore[method-assign]
    app.register_blueprint(rater)
    app.register_blueprint(admin)
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


def create_invitations(
    bundle: Path, count: int, base_url: str, state_dir: Path | None = None, names: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """Create ``count`` raters; return (rater_id, invitation URL) pairs, the only copy of the tokens."""
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
    study = load_study(Path(bundle), verify=False)
    store = open_store(study.study_id, Path(state_dir) if state_dir else default_state_dir(Path(bundle)), create=True)
    return [
        (inv.rater_id, f"{base_url.rstrip('/')}/start#token={inv.token}")
        for inv in store.create_invitations(count, names)
    ]


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
    app = create_app(
        bundle, state_dir, secure_cookies=secure_cookies, trusted_proxies=trusted_proxies
    )  # fail before binding
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
        "bind": bind,
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 60,
        "graceful_timeout": 10,
        "preload_app": True,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
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
    parser.add_argument(
        "--trusted-proxies",
        type=int,
        default=0,
        help="reverse proxies in front (client address from X-Forwarded-For, for the token rate limit)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve_study(
        args.bundle,
        args.state,
        args.host,
        args.port,
        args.workers,
        args.threads,
        args.secure_cookies,
        args.server,
        args.trusted_proxies,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
