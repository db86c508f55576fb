"""A lease on one registered model, so that alias changes (promote, rollback) never interleave.

MLflow has no transactions and no compare-and-set for aliases or tags: every write is
last-writer-wins. The lock is therefore built from what the registry does offer, linearizable
reads and writes of one registered-model tag (``srseg.lock``), with Fischer's timed mutual
exclusion:

1. read the tag; if it holds someone else's unexpired lease, wait (poll) or give up;
2. write our lease (a random token, the owner, the expiry) and measure how long step 1's read to
   step 2's answer took; if longer than ``max_write_s``, the write may have landed too late for the
   argument below, so start again from step 1 (our own token reads as free to us);
3. wait ``settle_s`` (> ``max_write_s``), read the tag again: still our token -> we hold the lock;
   another token -> we lost (someone wrote after us), go back to step 1.

Why at most one holder: a writer B whose write lands after ours read the tag before that write
of ours plus ``max_write_s``, or it would have seen our unexpired lease and not written; so its
write lands before our re-read (``settle_s`` after our write), and we see its token and back off.
The last writer wins, the earlier ones see its token. This holds for any store whose reads see
every write answered before them: the tracking server (one SQL database behind it, however many
server replicas) and a direct SQL store alike.

What it relies on, and what it does not guarantee:

- a lease expires ``lease_s`` after it was taken (wall clock of the holder, compared with the wall
  clock of the next process: clocks must agree to well within ``lease_s``); a holder that is
  stopped longer than that (SIGSTOP, a frozen VM) may find another holder when it resumes.
  :meth:`Lease.check` refuses to go on once the lease is close to expiry, and callers re-read
  what they wrote (the champion alias) to detect such an overlap;
- a process that crashes while holding the lock leaves the tag until the lease expires; then the
  next one takes over (or delete the tag ``srseg.lock`` of the registered model by hand);
- only writers that take this lock are excluded: someone moving an alias in the MLflow UI is not.
  Promotion therefore also compares the aliases with what it judged (compare-and-set, in
  :mod:`srseg.registry.promote`) and re-reads the alias it set.

The cost is ``settle_s`` (default 2.5 s) per acquisition; promotions are rare.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from srseg.errors import SrsegError

logger = logging.getLogger(__name__)

LOCK_TAG = "srseg.lock"


class RegistryBusy(SrsegError, RuntimeError):
    """The model's lock is held by another operation (or the lease ran out): one-line message."""


@dataclass(frozen=True)
class LockSettings:
    """Timing of the lease: ``lease_s`` how long a taken lock is valid, ``wait_s`` how long to wait
    for a held one, ``max_write_s`` the longest read-to-write window trusted, ``settle_s`` the wait
    before the confirming re-read (must exceed ``max_write_s``), ``poll_s`` the polling interval."""

    lease_s: float = 120.0
    wait_s: float = 15.0
    max_write_s: float = 2.0
    settle_s: float = 2.5
    poll_s: float = 0.5

    def __post_init__(self) -> None:
        if not self.settle_s > self.max_write_s > 0:
            raise ValueError(
                f"LockSettings: settle_s ({self.settle_s}) must exceed max_write_s ({self.max_write_s}) > 0"
            )
        if self.lease_s < 4 * self.settle_s:
            raise ValueError(f"LockSettings: lease_s ({self.lease_s}) must be at least 4 x settle_s ({self.settle_s})")
        if self.wait_s < 0 or self.poll_s <= 0:
            raise ValueError(f"LockSettings: wait_s must be >= 0 and poll_s > 0, got {self.wait_s}, {self.poll_s}")


@dataclass(frozen=True)
class Holder:
    """What the lock tag says: whose lease, for which operation, until when (epoch seconds)."""

    token: str
    owner: str
    operation: str
    expires_at: float

    def describe(self, now: float) -> str:
        left = self.expires_at - now
        return f"{self.operation} by {self.owner} (lease {'expired' if left <= 0 else f'ends in {left:.0f} s'})"


def _parse(raw: str | None) -> Holder | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return Holder(str(data["token"]), str(data["owner"]), str(data["operation"]), float(data["expires_at"]))
    except (ValueError, KeyError, TypeError):
        logger.warning("ignoring a malformed %s tag: %r", LOCK_TAG, raw[:200])
        return None


class Lease:
    """A held lock: :meth:`check` before each write, so no write happens on an expiring lease."""

    def __init__(
        self,
        client: MlflowClient,
        name: str,
        holder: Holder,
        taken_at: float,
        settings: LockSettings,
        clock: Callable[[], float],
    ) -> None:
        self.client, self.name, self.holder, self.settings = client, name, holder, settings
        self._taken_at = taken_at  # monotonic time of the read that preceded our write (conservative)
        self._clock = clock

    def remaining(self) -> float:
        return self.settings.lease_s - (self._clock() - self._taken_at)

    def check(self) -> None:
        """Refuse to continue when less than a quarter of the lease is left (another process could
        take over before our next write lands)."""
        if self.remaining() < self.settings.lease_s / 4:
            raise RegistryBusy(
                f"model {self.name!r}: the {LOCK_TAG} lease of this {self.holder.operation} is about to expire "
                f"({self.remaining():.0f} s left); stopped before changing more; run it again"
            )

    def release(self) -> None:
        """Delete the tag if it still holds our token and the lease has time left (otherwise another
        holder may have it by now: leave it to expire)."""
        try:
            current = _parse(self.client.get_registered_model(self.name).tags.get(LOCK_TAG))
            if current is not None and current.token == self.holder.token and self.remaining() > self.settings.settle_s:
                self.client.delete_registered_model_tag(self.name, LOCK_TAG)
        except MlflowException as exc:  # the lease expires by itself
            logger.warning(
                "could not release the %s tag of %r (%s); it expires by itself", LOCK_TAG, self.name, exc.message
            )


def _read(client: MlflowClient, name: str) -> Holder | None:
    return _parse((client.get_registered_model(name).tags or {}).get(LOCK_TAG))


def acquire(
    client: MlflowClient,
    name: str,
    operation: str,
    settings: LockSettings = LockSettings(),
    *,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Lease:
    """Take the lock of registered model ``name`` for ``operation`` (see the module docstring).

    Raises :class:`RegistryBusy` when another unexpired lease holds it for longer than
    ``settings.wait_s``. ``clock``/``wall``/``sleep`` are the time sources (tests pass others).
    """
    token = uuid.uuid4().hex
    owner = f"{socket.gethostname()}:{os.getpid()}"
    deadline = clock() + settings.wait_s
    refused = ""  # why the last attempt did not get the lock, for the final message
    while True:
        if refused and clock() >= deadline:
            raise RegistryBusy(f"model {name!r} {refused}; {operation} refused, nothing changed (try again later)")
        started = clock()
        current = _read(client, name)
        if current is not None and current.token != token and current.expires_at > wall():
            refused = f"is locked by another registry operation: {current.describe(wall())}"
            if clock() < deadline:
                sleep(settings.poll_s)
            continue
        mine = Holder(token, owner, operation, wall() + settings.lease_s)
        try:
            client.set_registered_model_tag(name, LOCK_TAG, json.dumps(mine.__dict__))
        except MlflowException as exc:
            # two first-time writes of the tag collide in the store (unique key): someone else wrote
            refused = f"lock tag write failed ({exc.message[:200]})"
            sleep(settings.poll_s)
            continue
        if clock() - started > settings.max_write_s:
            logger.info(
                "lock write of %r took %.1f s (> %.1f s): confirming again",
                name,
                clock() - started,
                settings.max_write_s,
            )
            refused = f"lock writes take longer than {settings.max_write_s:g} s"
            continue
        sleep(settings.settle_s)
        current = _read(client, name)
        if current is not None and current.token == token:
            logger.info("%s holds the %s of %r", operation, LOCK_TAG, name)
            return Lease(client, name, mine, started, settings, clock)
        refused = "was taken by another registry operation first: " + (
            current.describe(wall()) if current else "unknown"
        )


@contextmanager
def locked(client: MlflowClient, name: str, operation: str, settings: LockSettings = LockSettings()) -> Iterator[Lease]:
    """``with locked(client, name, "promote") as lease: ...`` holds the lock for the block."""
    lease = acquire(client, name, operation, settings)
    try:
        yield lease
    finally:
        lease.release()


def current_holder(client: MlflowClient, name: str) -> Holder | None:
    """Who holds the lock of ``name`` now (None: nobody, or a malformed tag)."""
    return _read(client, name)
