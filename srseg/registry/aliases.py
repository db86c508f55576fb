"""The registry's alias names and client: what both the writers (register, promote, rollback) and
read-only callers (the gate study, which looks up the versions the aliases point to) need, so a
reader does not import the writing code."""

from __future__ import annotations

from srseg.tracking import make_client  # noqa: F401 - the registry's callers reach it here

CHALLENGER = "challenger"
CHAMPION = "champion"
