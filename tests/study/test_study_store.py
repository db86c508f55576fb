"""Study store: hashed tokens, private files, WAL, one vote per rater and pair, study binding."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from srseg.study.store import SECRET_KEY_FILE, Vote, open_store


def _store(tmp_path: Path, study_id: str = "s1"):
    return open_store(study_id, tmp_path / "state", create=True)


def test_tokens_are_stored_hashed_and_files_are_private(tmp_path: Path) -> None:
    store = _store(tmp_path)
    invitations = store.create_invitations(3, names=["ann", "bob", "<b>eve</b>"])
    assert len({inv.token for inv in invitations}) == 3 and all(len(inv.token) >= 40 for inv in invitations)
    raw = b"".join(p.read_bytes() for p in (tmp_path / "state").iterdir())
    assert not any(inv.token.encode() in raw for inv in invitations)
    assert store.rater_for_token(invitations[1].token).rater_id == invitations[1].rater_id
    assert store.rater_for_token(invitations[1].token + "x") is None and store.rater_for_token("") is None
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    for path in (tmp_path / "state").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert len(store.secret_key()) == 64
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_revoked_rater_cannot_log_in(tmp_path: Path) -> None:
    store = _store(tmp_path)
    (inv,) = store.create_invitations(1)
    store.revoke(inv.rater_id)
    assert store.rater_for_token(inv.token) is None
    with pytest.raises(ValueError, match="unknown rater 'rnope'"):
        store.revoke("rnope")


def test_one_vote_per_rater_and_pair(tmp_path: Path) -> None:
    store = _store(tmp_path)
    a, b = store.create_invitations(2)
    first, status = store.record_vote(a.rater_id, "p0001", "multitask", "left", 900)
    assert status == "created"
    again, status = store.record_vote(a.rater_id, "p0001", "multitask", "left", 1200)
    assert status == "duplicate" and again == first
    kept, status = store.record_vote(a.rater_id, "p0001", "bicubic", "right", 50)
    assert status == "conflict" and kept == first
    assert store.record_vote(b.rater_id, "p0001", "bicubic", "right", 700)[1] == "created"
    assert [(v.rater_id, v.choice) for v in store.votes()] == [(a.rater_id, "multitask"), (b.rater_id, "bicubic")]
    with store.connect() as conn, pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        conn.execute(
            "INSERT INTO votes(rater_id, pair_id, choice, side, created_at, source) VALUES (?, 'p0001', 'x', 'left', "
            "'t', 'web')",
            (a.rater_id,),
        )


def test_state_is_bound_to_one_bundle(tmp_path: Path) -> None:
    _store(tmp_path, "study-a")
    with pytest.raises(ValueError, match="belongs to study study-a"):
        open_store("study-b", tmp_path / "state")
    with pytest.raises(FileNotFoundError, match="no study state"):
        open_store("study-a", tmp_path / "elsewhere")


def test_too_open_permissions_are_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    (tmp_path / "state" / SECRET_KEY_FILE).chmod(0o644)
    with pytest.raises(PermissionError, match="644"):
        store.secret_key()
    store.db_path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        open_store("s1", tmp_path / "state")


def test_admin_token(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert not store.has_admin_token() and not store.check_admin_token("anything")
    token = store.create_admin_token()
    assert store.check_admin_token(token) and not store.check_admin_token(token[:-1])
    assert token.encode() not in store.db_path.read_bytes()


def test_import_is_all_or_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    vote = lambda rater, pair, choice, side: Vote(
        rater, pair, choice, side, None, "2024-01-01T00:00:00.000+00:00", "crowd"
    )
    result = store.import_votes([vote("crowd:w1", "p0001", "a", "left"), vote("crowd:w2", "p0001", "b", "right")])
    assert (result.inserted, result.duplicates, result.conflicts) == (2, 0, [])
    result = store.import_votes([vote("crowd:w3", "p0002", "a", "left"), vote("crowd:w1", "p0001", "b", "right")])
    assert result.inserted == 0 and [i for i, _ in result.conflicts] == [1]
    assert len(store.votes()) == 2 and store.get_rater("crowd:w3") is None
    assert store.import_votes([vote("crowd:w1", "p0001", "a", "left")]).duplicates == 1
