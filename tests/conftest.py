"""Shared fixtures (the real sample data beside the checkout, ../shared/data) and the CI rule:
with ``CI`` set, a skipped test fails unless it is marked ``cuda`` (see ``realparts.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from realparts import pytest_runtest_makereport  # noqa: F401 - the CI rule, registered as a hook here

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real sample data not found at {SHARED_DATA} (expected ../shared/data beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cocostuff_sample(shared_data: Path) -> Path:
    return shared_data / "cocostuff-sample"


@pytest.fixture(scope="session")
def set5(shared_data: Path) -> Path:
    return shared_data / "set5"

