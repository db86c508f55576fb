"""SQLite state of one study: raters with hashed invitation tokens, votes, the admin token hash.

Why SQLite in WAL mode: one file and no server, readers never block the writer, and a committed
vote survives a killed server process (``synchronous=FULL`` also survives power loss). The state
lives outside the bundle (default ``<bundle>.state/``) so the bundle stays immutable and can be
shared without secrets; the folder is created 0700 and every file in it 0600.

Only SHA-256 hashes of tokens (salted with a per-study random salt) are stored, so a copy of the
database does not let anyone vote. One vote per rater and pair is enforced by a UNIQUE constraint:
re-sending the same choice returns the stored vote ("duplicate"), a different choice for an
already answered pair is refused ("conflict", the first answer stands).

The store also remembers which pair was shown to which rater and when (``served``: votes are only
taken for pairs shown, and response times are bounded by the time since), and wrong tokens per
client address (``failed_auth``: the app rate-limits guessing). Both live in the database rather
than in a worker's memory, so every gunicorn worker sees them and they survive a restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
DB_NAME = "votes.sqlite3"
SECRET_KEY_FILE = "secret_key"
RATER_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,100}$")
MAX_COMMENT = 2000
MAX_NAME = 200

VoteStatus = Literal["created", "duplicate", "conflict"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS raters (
    rater_id      TEXT PRIMARY KEY,
    token_hash    TEXT UNIQUE,
    name          TEXT NOT NULL DEFAULT '',
    source        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    first_seen_at TEXT,
    finished_at   TEXT,
    comment       TEXT,
    revoked       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS votes (
    id          INTEGER PRIMARY KEY,
    rater_id    TEXT NOT NULL REFERENCES raters(rater_id),
    pair_id     TEXT NOT NULL,
    choice      TEXT NOT NULL,
    side        TEXT NOT NULL CHECK (side IN ('left', 'right')),
    response_ms INTEGER CHECK (response_ms IS NULL OR response_ms >= 0),
    created_at  TEXT NOT NULL,
    source      TEXT NOT NULL,
    UNIQUE (rater_id, pair_id)
);
CREATE TABLE IF NOT EXISTS served (
    rater_id     TEXT NOT NULL REFERENCES raters(rater_id),
    pair_id      TEXT NOT NULL,
    served_at_ms INTEGER NOT NULL,
    PRIMARY KEY (rater_id, pair_id)
);
CREATE TABLE IF NOT EXISTS failed_auth (
    address TEXT NOT NULL,
    kind    TEXT NOT NULL,
    at_ms   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS failed_auth_by_address ON failed_auth (address, at_ms);
"""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def default_state_dir(bundle: Path) -> Path:
    """``<bundle>.state`` beside the bundle: outside it, so the bundle stays immutable."""
    bundle = Path(bundle)
    return bundle.with_name(bundle.name + ".state")


@dataclass(frozen=True)
class Rater:
    rater_id: str
    name: str
    source: str
    created_at: str
    first_seen_at: str | None
    finished_at: str | None
    comment: str | None
    revoked: bool


@dataclass(frozen=True)
class Vote:
    rater_id: str
    pair_id: str
    choice: str
    side: str
    response_ms: int | None
    created_at: str
    source: str

    def to_json(self) -> dict:
        return {
            "rater_id": self.rater_id,
            "pair_id": self.pair_id,
            "choice": self.choice,
            "side": self.side,
            "response_ms": self.response_ms,
            "created_at": self.created_at,
            "source": self.source,
        }


@dataclass(frozen=True)
class Invitation:
    """A new rater and the only copy of its token (shown once, stored hashed)."""

    rater_id: str
    token: str
    name: str


@dataclass(frozen=True)
class ImportResult:
    inserted: int
    duplicates: int
    conflicts: list[tuple[int, Vote]]
    """(index in the input, stored vote) for inputs that disagree with a stored vote."""


def _write_private(path: Path, data: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


class StudyStore:
    """Access to one state folder. Opens a connection per call, so it is safe across threads."""

    def __init__(self, state_dir: Path, study_id: str) -> None:
        self.state_dir = Path(state_dir)
        self.study_id = study_id
        self.db_path = self.state_dir / DB_NAME
        self._salt: bytes | None = None

    # -- setup -------------------------------------------------------------------------------
    def initialise(self) -> None:
        """Create the folder, database and secret key if missing; check the study id otherwise."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.db_path.exists():
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with self.connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            with _transaction(conn):
                for key, value in (
                    ("schema_version", SCHEMA_VERSION),
                    ("study_id", self.study_id),
                    ("salt", secrets.token_hex(16)),
                ):
                    conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING", (key, value))
        key_path = self.state_dir / SECRET_KEY_FILE
        if not key_path.exists():
            with contextlib.suppress(FileExistsError):
                _write_private(key_path, secrets.token_hex(32))
        self.check()

    def check(self) -> None:
        """Fail clearly when the state is missing, belongs to another bundle, or is world-readable."""
        if not self.db_path.is_file():
            raise FileNotFoundError(f"{self.db_path}: no study state (create it with `srseg study invite` or serve)")
        mode = self.db_path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{self.db_path}: permissions {mode:o} are too open, expected 600 (chmod 600 it)")
        stored = self._meta("study_id")
        if stored != self.study_id:
            raise ValueError(
                f"{self.db_path}: belongs to study {stored}, not to this bundle ({self.study_id}); "
                "use another --state folder for a rebuilt bundle"
            )

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=FULL")
            yield conn
        finally:
            conn.close()

    def _meta(self, key: str) -> str | None:
        with self.connect() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def secret_key(self) -> str:
        """The per-study session signing key (file 0600); never logged."""
        path = self.state_dir / SECRET_KEY_FILE
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{path}: permissions {mode:o} are too open, expected 600 (chmod 600 it)")
        return path.read_text().strip()

    # -- tokens ------------------------------------------------------------------------------
    def hash_token(self, token: str) -> str:
        if self._salt is None:
            salt = self._meta("salt")
            if salt is None:
                raise ValueError(f"{self.db_path}: no salt in meta table")
            self._salt = bytes.fromhex(salt)
        return hashlib.sha256(self._salt + token.encode("utf-8")).hexdigest()

    def create_invitations(self, count: int, names: Sequence[str] | None = None) -> list[Invitation]:
        """Create ``count`` raters with fresh random tokens; the tokens are returned only here."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        labels = list(names) if names is not None else [""] * count
        if len(labels) != count:
            raise ValueError(f"got {len(labels)} names for count={count}")
        invitations = []
        with self.connect() as conn, _transaction(conn):
            for label in labels:
                label = str(label)
                if len(label) > MAX_NAME:
                    raise ValueError(f"rater name longer than {MAX_NAME} characters: {label[:40]!r}...")
                while True:
                    rater_id = "r" + secrets.token_hex(4)
                    token = secrets.token_urlsafe(32)
                    try:
                        conn.execute(
                            "INSERT INTO raters(rater_id, token_hash, name, source, created_at) VALUES (?, ?, ?, "
                            "'invite', ?)",
                            (rater_id, self.hash_token(token), label, now_iso()),
                        )
                        break
                    except sqlite3.IntegrityError:  # id collision: draw again
                        continue
                invitations.append(Invitation(rater_id, token, label))
        log.info("created %d invitation(s) in %s", count, self.db_path)
        return invitations

    def rater_for_token(self, token: str) -> Rater | None:
        """The active rater holding ``token``, or None (unknown, revoked, or malformed)."""
        if not token or len(token) > 200:
            return None
        with self.connect() as conn:
            row = conn.execute(
                f"SELECT {_RATER_COLS} FROM raters WHERE token_hash = ? AND revoked = 0", (self.hash_token(token),)
            ).fetchone()
        return Rater(*row[:-1], bool(row[-1])) if row else None

    def create_admin_token(self) -> str:
        """Store the hash of a new admin token (replacing any older one) and return the token."""
        token = secrets.token_urlsafe(32)
        with self.connect() as conn, _transaction(conn):
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('admin_token_hash', ?) ON CONFLICT(key) DO UPDATE SET value = "
                "excluded.value",
                (self.hash_token(token),),
            )
        return token

    def admin_token_hash(self) -> str | None:
        return self._meta("admin_token_hash")

    def check_admin_token(self, token: str) -> bool:
        stored = self.admin_token_hash()
        if stored is None or not token:
            return False
        return hmac.compare_digest(self.hash_token(token), stored)

    def has_admin_token(self) -> bool:
        return self.admin_token_hash() is not None

    # -- raters ------------------------------------------------------------------------------
    def get_rater(self, rater_id: str) -> Rater | None:
        with self.connect() as conn:
            row = conn.execute(f"SELECT {_RATER_COLS} FROM raters WHERE rater_id = ?", (rater_id,)).fetchone()
        return Rater(*row[:-1], bool(row[-1])) if row else None

    def raters(self) -> list[Rater]:
        with self.connect() as conn:
            rows = conn.execute(f"SELECT {_RATER_COLS} FROM raters ORDER BY created_at, rater_id").fetchall()
        return [Rater(*row[:-1], bool(row[-1])) for row in rows]

    def mark_seen(self, rater_id: str) -> None:
        with self.connect() as conn:
            conn.execute(
                "UPDATE raters SET first_seen_at = ? WHERE rater_id = ? AND first_seen_at IS NULL",
                (now_iso(), rater_id),
            )

    def mark_finished(self, rater_id: str) -> None:
        with self.connect() as conn:
            conn.execute(
                "UPDATE raters SET finished_at = ? WHERE rater_id = ? AND finished_at IS NULL", (now_iso(), rater_id)
            )

    def set_comment(self, rater_id: str, comment: str) -> None:
        if len(comment) > MAX_COMMENT:
            raise ValueError(f"comment longer than {MAX_COMMENT} characters ({len(comment)})")
        with self.connect() as conn:
            conn.execute("UPDATE raters SET comment = ? WHERE rater_id = ?", (comment, rater_id))

    def revoke(self, rater_id: str) -> None:
        with self.connect() as conn:
            if conn.execute("UPDATE raters SET revoked = 1 WHERE rater_id = ?", (rater_id,)).rowcount != 1:
                raise ValueError(f"unknown rater {rater_id!r}")

    # -- votes -------------------------------------------------------------------------------
    def record_vote(
        self, rater_id: str, pair_id: str, choice: str, side: str, response_ms: int | None, source: str = "web"
    ) -> tuple[Vote, VoteStatus]:
        """Store one vote; idempotent for the same choice, the first answer wins on a conflict."""
        vote = Vote(rater_id, pair_id, choice, side, response_ms, now_iso(), source)
        with self.connect() as conn, _transaction(conn):
            inserted = conn.execute(
                "INSERT INTO votes(rater_id, pair_id, choice, side, response_ms, created_at, source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(rater_id, pair_id) DO NOTHING",
                (vote.rater_id, vote.pair_id, vote.choice, vote.side, vote.response_ms, vote.created_at, vote.source),
            ).rowcount
            if inserted == 1:
                return vote, "created"
            row = conn.execute(
                f"SELECT {_VOTE_COLS} FROM votes WHERE rater_id = ? AND pair_id = ?", (rater_id, pair_id)
            ).fetchone()
        stored = Vote(*row)
        return stored, ("duplicate" if (stored.choice, stored.side) == (choice, side) else "conflict")

    def import_votes(self, votes: Sequence[Vote]) -> ImportResult:
        """Insert votes (creating their raters) in one transaction; nothing is written on a conflict."""
        inserted = duplicates = 0
        conflicts: list[tuple[int, Vote]] = []
        with self.connect() as conn, _transaction(conn):
            for index, vote in enumerate(votes):
                conn.execute(
                    "INSERT INTO raters(rater_id, source, created_at) VALUES (?, ?, ?) ON CONFLICT(rater_id) DO "
                    "NOTHING",
                    (vote.rater_id, vote.source, now_iso()),
                )
                row = conn.execute(
                    f"SELECT {_VOTE_COLS} FROM votes WHERE rater_id = ? AND pair_id = ?", (vote.rater_id, vote.pair_id)
                ).fetchone()
                if row is not None:
                    stored = Vote(*row)
                    if (stored.choice, stored.side) == (vote.choice, vote.side):
                        duplicates += 1
                    else:
                        conflicts.append((index, stored))
                    continue
                conn.execute(
                    "INSERT INTO votes(rater_id, pair_id, choice, side, response_ms, created_at, source) VALUES (?, "
                    "?, ?, ?, ?, ?, ?)",
                    (
                        vote.rater_id,
                        vote.pair_id,
                        vote.choice,
                        vote.side,
                        vote.response_ms,
                        vote.created_at,
                        vote.source,
                    ),
                )
                inserted += 1
            if conflicts:
                raise _Rollback()
        if conflicts:
            return ImportResult(0, 0, conflicts)
        return ImportResult(inserted, duplicates, conflicts)

    def votes(self, rater_id: str | None = None) -> list[Vote]:
        with self.connect() as conn:
            if rater_id is None:
                rows = conn.execute(f"SELECT {_VOTE_COLS} FROM votes ORDER BY id").fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_VOTE_COLS} FROM votes WHERE rater_id = ? ORDER BY id", (rater_id,)
                ).fetchall()
        return [Vote(*row) for row in rows]

    def voted_pairs(self, rater_id: str) -> set[str]:
        with self.connect() as conn:
            return {row[0] for row in conn.execute("SELECT pair_id FROM votes WHERE rater_id = ?", (rater_id,))}

    # -- what each rater was shown ------------------------------------------------------------
    def mark_served(self, rater_id: str, pair_id: str, now_ms: int) -> None:
        """Record that ``pair_id`` was just shown to ``rater_id`` (the latest showing counts)."""
        with self.connect() as conn:
            conn.execute(
                "INSERT INTO served(rater_id, pair_id, served_at_ms) VALUES (?, ?, ?) "
                "ON CONFLICT(rater_id, pair_id) DO UPDATE SET served_at_ms = excluded.served_at_ms",
                (rater_id, pair_id, int(now_ms)),
            )

    def served_at_ms(self, rater_id: str, pair_id: str) -> int | None:
        """When ``pair_id`` was last shown to ``rater_id`` (ms since the epoch), or None if never."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT served_at_ms FROM served WHERE rater_id = ? AND pair_id = ?", (rater_id, pair_id)
            ).fetchone()
        return int(row[0]) if row else None

    # -- failed token attempts ---------------------------------------------------------------
    def record_failed_auth(self, address: str, kind: str, now_ms: int, keep_ms: int) -> None:
        """Count one wrong token from ``address``; rows older than ``keep_ms`` are dropped."""
        with self.connect() as conn, _transaction(conn):
            conn.execute("DELETE FROM failed_auth WHERE at_ms < ?", (int(now_ms) - int(keep_ms),))
            conn.execute("INSERT INTO failed_auth(address, kind, at_ms) VALUES (?, ?, ?)", (address, kind, int(now_ms)))

    def failed_auth_since(self, address: str, since_ms: int) -> tuple[int, int | None]:
        """(number of wrong tokens from ``address`` since ``since_ms``, time of the oldest of them)."""
        with self.connect() as conn:
            count, oldest = conn.execute(
                "SELECT COUNT(*), MIN(at_ms) FROM failed_auth WHERE address = ? AND at_ms >= ?",
                (address, int(since_ms)),
            ).fetchone()
        return int(count), (int(oldest) if oldest is not None else None)

    def vote_counts(self) -> dict[str, int]:
        with self.connect() as conn:
            return dict(conn.execute("SELECT rater_id, COUNT(*) FROM votes GROUP BY rater_id").fetchall())


_RATER_COLS = "rater_id, name, source, created_at, first_seen_at, finished_at, comment, revoked"
_VOTE_COLS = "rater_id, pair_id, choice, side, response_ms, created_at, source"


class _Rollback(Exception):
    """Raised inside a transaction to undo it without reporting an error."""


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE (take the write lock up front, so no upgrade deadlocks) ... COMMIT."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except _Rollback:
        conn.execute("ROLLBACK")
        return
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def open_store(study_id: str, state_dir: Path, create: bool = False) -> StudyStore:
    """A store for ``state_dir``; ``create`` initialises it, otherwise it must already exist."""
    store = StudyStore(Path(state_dir), study_id)
    if create:
        store.initialise()
    else:
        store.check()
    return store
