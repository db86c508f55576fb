"""Study web app through Flask's test client: who may do what, validation, headers, admin."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from srseg.study.app import create_app
from srseg.study.bundle import load_study

ADMIN = "admin-token-for-tests-0123456789"


@pytest.fixture()
def app(study_bundle: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    return create_app(study_bundle, tmp_path / "state", admin_token=ADMIN)


def _store(app):  # type: ignore[no-untyped-def]
    return app.extensions["srseg_study"].store


def _login(app, client, token: str | None = None) -> str:  # type: ignore[no-untyped-def]
    if token is None:
        token = _store(app).create_invitations(1, names=["ann"])[0].token
    response = client.post("/api/session", json={"token": token})
    assert response.status_code == 200, response.json
    return response.json["csrf_token"]


def test_no_session_no_access(app) -> None:  # type: ignore[no-untyped-def]
    client = app.test_client()
    assert client.get("/").status_code == 401
    assert client.get("/study").status_code == 401
    assert client.get("/thanks").status_code == 401
    assert client.get("/image/p0000/left").status_code == 401
    response = client.post("/api/vote", json={"pair_id": "p0000", "side": "left"})
    assert response.status_code == 401 and "invitation" in response.json["error"]
    assert client.post("/api/session", json={"token": "forged-token"}).status_code == 403
    assert client.post("/api/session", json={"token": 12}).status_code == 403
    assert client.get("/start").status_code == 200 and client.get("/healthz").json == {"status": "ok"}


def test_tampered_cookie_is_no_session(app) -> None:  # type: ignore[no-untyped-def]
    client = app.test_client()
    _login(app, client)
    cookie = client.get_cookie("srseg_study")
    assert cookie.http_only and cookie.same_site == "Strict"
    client.set_cookie("srseg_study", cookie.value[:-3] + "AAA")
    assert client.get("/study").status_code == 401


def test_vote_flow_idempotent_and_conflict(app, study_bundle: Path) -> None:  # type: ignore[no-untyped-def]
    study = load_study(study_bundle)
    client = app.test_client()
    csrf = _login(app, client)
    page = client.get("/study")
    assert page.status_code == 200
    pair_id = page.get_data(as_text=True).split('data-pair-id="')[1].split('"')[0]
    headers = {"X-CSRF-Token": csrf}
    response = client.post("/api/vote", json={"pair_id": pair_id, "side": "right", "response_ms": 800}, headers=headers)
    assert response.status_code == 201 and response.json["status"] == "created" and response.json["done"] == 1
    assert not any(m in response.get_data(as_text=True) for m in study.methods), "the rater must not learn the method"
    again = client.post("/api/vote", json={"pair_id": pair_id, "side": "right", "response_ms": 900}, headers=headers)
    assert again.status_code == 200 and again.json["status"] == "duplicate"
    other = client.post("/api/vote", json={"pair_id": pair_id, "side": "left", "response_ms": 900}, headers=headers)
    assert other.status_code == 409 and other.json["status"] == "conflict"
    (vote,) = _store(app).votes()
    assert (vote.pair_id, vote.side, vote.choice) == (pair_id, "right", study.by_id[pair_id].right.method)
    assert 0 <= vote.response_ms <= 800
    # the next page shows another pair
    assert f'data-pair-id="{pair_id}"' not in client.get("/study").get_data(as_text=True)


def test_client_response_time_cannot_exceed_what_the_server_saw(app) -> None:  # type: ignore[no-untyped-def]
    client = app.test_client()
    csrf = _login(app, client)
    pair_id = client.get("/study").get_data(as_text=True).split('data-pair-id="')[1].split('"')[0]
    client.post(
        "/api/vote", json={"pair_id": pair_id, "side": "left", "response_ms": 3_000_000}, headers={"X-CSRF-Token": csrf}
    )
    assert _store(app).votes()[0].response_ms < 60_000


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"pair_id": "p9999", "side": "left"}, 400, "unknown pair_id 'p9999'"),
        ({"pair_id": "../study.json", "side": "left"}, 400, "unknown pair_id"),
        ({"pair_id": "p0000", "side": "up"}, 400, "side must be 'left' or 'right', got 'up'"),
        ({"pair_id": "p0000", "side": "left", "response_ms": -5}, 400, "got -5"),
        ({"pair_id": "p0000", "side": "left", "response_ms": True}, 400, "response_ms"),
        ({"pair_id": "p0000", "side": "left", "rater_id": "r0"}, 400, "unknown field(s): 'rater_id'"),
        ({"pair_id": "p0000"}, 400, "missing field(s): side"),
        (["p0000", "left"], 400, "JSON object"),
    ],
)
def test_vote_validation(app, body, status: int, message: str) -> None:  # type: ignore[no-untyped-def]
    client = app.test_client()
    csrf = _login(app, client)
    response = client.post("/api/vote", json=body, headers={"X-CSRF-Token": csrf})
    assert response.status_code == status and message in response.json["error"]
    assert _store(app).votes() == []


def test_csrf_is_required_and_bound_to_the_session(app) -> None:  # type: ignore[no-untyped-def]
    ann, bob = app.test_client(), app.test_client()
    ann_csrf = _login(app, ann)
    bob_csrf = _login(app, bob)
    body = {"pair_id": "p0000", "side": "left"}
    assert ann.post("/api/vote", json=body).status_code == 403
    assert ann.post("/api/vote", json=body, headers={"X-CSRF-Token": "x" * 43}).status_code == 403
    assert ann.post("/api/vote", json=body, headers={"X-CSRF-Token": bob_csrf}).status_code == 403
    form = ann.post("/api/vote", data=body, headers={"X-CSRF-Token": ann_csrf})
    assert form.status_code == 415
    assert _store(app).votes() == []


def test_images_only_by_pair_and_side(app, study_bundle: Path) -> None:  # type: ignore[no-untyped-def]
    study = load_study(study_bundle)
    client = app.test_client()
    _login(app, client)
    pair = study.pairs[0]
    response = client.get(f"/image/{pair.id}/left")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.data == study.path(pair.left.file).read_bytes()
    assert "private" in response.headers["Cache-Control"]
    response.close()
    for bad in (
        "/image/p0000/reference",
        "/image/p0000/top",
        "/image/p9999/left",
        "/image/..%2Fstudy.json/left",
        "/image/p0000/..%2F..%2Fstudy.json",
        f"/image/{pair.left.file}",
    ):
        assert client.get(bad).status_code == 404, bad


def test_security_headers(app) -> None:  # type: ignore[no-untyped-def]
    client = app.test_client()
    for path in ("/start", "/study", "/static/study.js"):
        headers = client.get(path).headers
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    assert client.get("/start").headers["Cache-Control"] == "no-store"
    assert "<script>" not in client.get("/start").get_data(as_text=True).replace("<script src=", "")


def test_admin_is_separate_and_protected(app, study_bundle: Path) -> None:  # type: ignore[no-untyped-def]
    rater = app.test_client()
    _login(app, rater)
    assert rater.get("/admin").status_code == 302
    assert rater.get("/admin/api/progress").status_code == 401
    assert rater.get("/admin/api/progress", headers={"Authorization": "Bearer wrong"}).status_code == 401
    api = rater.get("/admin/api/progress", headers={"Authorization": f"Bearer {ADMIN}"})
    assert (
        api.status_code == 200
        and api.json["pairs"] == len(load_study(study_bundle).pairs)
        and len(api.json["raters"]) == 1
    )

    admin = app.test_client()
    form = admin.get("/admin/login").get_data(as_text=True)
    csrf = form.split('name="csrf_token" value="')[1].split('"')[0]
    assert admin.post("/admin/login", data={"token": ADMIN}).status_code == 403  # no CSRF token
    assert admin.post("/admin/login", data={"token": "wrong", "csrf_token": csrf}).status_code == 403
    assert admin.post("/admin/login", data={"token": ADMIN, "csrf_token": csrf}).status_code == 302
    page = admin.get("/admin")
    assert page.status_code == 200 and "ann" in page.get_data(as_text=True)
    assert admin.get("/study").status_code == 401, "an admin session is not a rater session"


def test_admin_disabled_without_a_token(study_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SRSEG_STUDY_ADMIN_TOKEN", raising=False)
    app = create_app(study_bundle, tmp_path / "state")
    assert app.test_client().get("/admin").status_code == 403
    token = _store(app).create_admin_token()
    api = app.test_client().get("/admin/api/progress", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 200


def test_secrets_never_logged(study_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(study_bundle, tmp_path / "state", admin_token=ADMIN)
    token = _store(app).create_invitations(1)[0].token
    client = app.test_client()
    _login(app, client, token)
    client.post("/api/session", json={"token": token + "x"})
    admin = app.test_client()
    admin.get("/admin/login")
    key = _store(app).secret_key()
    for secret in (token, key, ADMIN):
        assert secret not in caplog.text
    assert "rejected an invitation token" in caplog.text


def test_short_secrets_are_refused(study_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too short"):
        create_app(study_bundle, tmp_path / "state", secret_key="short")
    with pytest.raises(ValueError, match="too short"):
        create_app(study_bundle, tmp_path / "state", admin_token="short")
