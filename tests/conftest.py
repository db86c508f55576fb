"""Shared fixtures (the real sample data beside the checkout, ../shared/data) and two rules: tests
marked ``cuda`` skip where torch sees no CUDA device, and with ``CI`` set any other skip fails
(see ``realparts.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from realparts import pytest_runtest_makereport  # noqa: F401 - the CI rule, registered as a hook here

REPO_ROOT = Path(__file__).resolve().parents[1]
# SRSEG_TEST_DATA points elsewhere, e.g. on a GPU machine where ../shared does not exist.
SHARED_DATA = Path(os.environ.get("SRSEG_TEST_DATA") or REPO_ROOT.parent / "shared" / "data")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``cuda`` when no CUDA device is available, saying so."""
    if not any(item.get_closest_marker("cuda") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run `pytest -m cuda` or bench/gpu_check.py on a GPU machine)")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"real sample data not found at {SHARED_DATA} (expected ../shared/data beside the checkout, "
            "or set SRSEG_TEST_DATA)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def cocostuff_sample(shared_data: Path) -> Path:
    return shared_data / "cocostuff-sample"


@pytest.fixture(scope="session")
def set5(shared_data: Path) -> Path:
    return shared_data / "set5"
