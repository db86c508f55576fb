"""Study app under abuse: votes only for pairs shown to that rater, response times bounded by what
the server saw, and wrong tokens rate-limited per client address (shared by workers, kept over a
restart because the count lives in the study database)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from srseg.study.app import create_app

ADMIN = "admin-token-for-tests-0123456789"


def _app(bundle: Path, state: Path, **kwargs):  # type: ignore[no-untyped-def]
    return create_app(bundle, state, admin_token=ADMIN, **kwargs)


def _store(app):  # type: ignore[no-untyped-def]
    return app.extensions["srseg_study"].store


def _client(app, address: str = "127.0.0.1"):  # type: ignore[no-untyped-def]
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def _login(app, client) -> str:  # type: ignore[no-untyped-def]
    token = _store(app).create_invitations(1)[0].token
    response = client.post("/api/session", json={"token": token})
    assert response.status_code == 200, response.json
    return response.json["csrf_token"]


def _shown(client) -> str:  # type: ignore[no-untyped-def]
    return client.get("/study").get_data(as_text=True).split('data-pair-id="')[1].split('"')[0]


def test_votes_only_for_pairs_shown_to_that_rater(study_bundle: Path, tmp_path: Path) -> None:
    app = _app(study_bundle, tmp_path / "state")
    ann, bob = _client(app), _client(app)
    ann_csrf, bob_csrf = _login(app, ann), _login(app, bob)
    shown = _shown(ann)
    never_shown = next(p.id for p in app.extensions["srseg_study"].study.pairs if p.id != shown)
    claim = {"side": "left", "response_ms": 3_600_000}
    response = ann.post("/api/vote", json={"pair_id": never_shown, **claim}, headers={"X-CSRF-Token": ann_csrf})
    assert response.status_code == 403 and "not shown to you" in response.json["error"]
    response = bob.post("/api/vote", json={"pair_id": shown, **claim}, headers={"X-CSRF-Token": bob_csrf})
    assert response.status_code == 403, "a pair shown to ann is not bob's to vote on"
    assert _store(app).votes() == []
    time.sleep(0.05)
    response = ann.post("/api/vote", json={"pair_id": shown, **claim}, headers={"X-CSRF-Token": ann_csrf})
    assert response.status_code == 201
    (vote,) = _store(app).votes()
    assert vote.pair_id == shown and 50 <= vote.response_ms < 5_000  # bounded by the time since it was shown


def test_response_time_is_bounded_for_an_earlier_pair_too(study_bundle: Path, tmp_path: Path) -> None:
    # the page is shown again (reload): the bound is the time since the latest showing, not the
    # client's claim, and not only for the pair shown last
    app = _app(study_bundle, tmp_path / "state")
    ann = _client(app)
    csrf = _login(app, ann)
    first = _shown(ann)
    assert _shown(ann) == first
    response = ann.post("/api/vote", json={"pair_id": first, "side": "right"}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 201
    assert 0 <= _store(app).votes()[0].response_ms < 5_000


def test_wrong_invitation_tokens_are_rate_limited_per_address(study_bundle: Path, tmp_path: Path) -> None:
    app = _app(study_bundle, tmp_path / "state", max_failed_tokens=3, failed_token_window_s=1.5)
    good = _store(app).create_invitations(1)[0].token
    guesser, neighbour = _client(app, "10.0.0.7"), _client(app, "10.0.0.8")
    for attempt in range(3):
        assert guesser.post("/api/session", json={"token": f"guess-{attempt}"}).status_code == 403
    locked = guesser.post("/api/session", json={"token": good})
    assert locked.status_code == 429 and 1 <= int(locked.headers["Retry-After"]) <= 2
    assert "Too many wrong tokens" in locked.json["error"]
    assert neighbour.post("/api/session", json={"token": good}).status_code == 200, "other addresses are not locked"
    # the count is in the database: a restarted server (or another gunicorn worker) still refuses
    restarted = _app(study_bundle, tmp_path / "state", max_failed_tokens=3, failed_token_window_s=1.5)
    assert _client(restarted, "10.0.0.7").post("/api/session", json={"token": good}).status_code == 429
    time.sleep(1.6)  # the window passes
    assert guesser.post("/api/session", json={"token": good}).status_code == 200


def test_wrong_admin_tokens_are_rate_limited(study_bundle: Path, tmp_path: Path) -> None:
    app = _app(study_bundle, tmp_path / "state", max_failed_tokens=3, failed_token_window_s=60)
    admin = _client(app, "10.0.0.9")
    csrf = admin.get("/admin/login").get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    assert admin.post("/admin/login", data={"token": "wrong-1", "csrf_token": csrf}).status_code == 403
    bearer = {"Authorization": "Bearer wrong-2"}
    assert admin.get("/admin/api/progress", headers=bearer).status_code == 401
    assert admin.get("/image/p0000/left", headers=bearer).status_code == 401
    for request in (
        lambda: admin.post("/admin/login", data={"token": ADMIN, "csrf_token": csrf}),
        lambda: admin.get("/admin/api/progress", headers={"Authorization": f"Bearer {ADMIN}"}),
        lambda: admin.post("/api/session", json={"token": "x"}),
    ):
        response = request()
        assert response.status_code == 429 and response.headers["Retry-After"], response.status_code
    assert _client(app).get("/admin/api/progress", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200


def test_behind_a_proxy_the_forwarded_address_counts(study_bundle: Path, tmp_path: Path) -> None:
    app = _app(study_bundle, tmp_path / "state", max_failed_tokens=2, trusted_proxies=1)
    proxy = _client(app, "10.0.0.1")
    for _ in range(2):
        proxy.post("/api/session", json={"token": "guess"}, headers={"X-Forwarded-For": "203.0.113.5"})
    assert (
        proxy.post("/api/session", json={"token": "x"}, headers={"X-Forwarded-For": "203.0.113.5"}).status_code == 429
    )
    assert (
        proxy.post("/api/session", json={"token": "x"}, headers={"X-Forwarded-For": "203.0.113.6"}).status_code == 403
    )
    with pytest.raises(ValueError, match="trusted_proxies"):
        _app(study_bundle, tmp_path / "state", trusted_proxies=-1)
