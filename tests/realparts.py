"""What a test needs from the machine (a browser, a program, an importable module), checked so that
a missing part skips on a developer's machine but fails on CI, naming the part and how to get it.

CI sets ``CI`` (``.ci/run`` exports ``CI=true``). There, a skipped test is a test that did not run,
so the hook below (registered by ``tests/conftest.py``) also turns every other skip into a failure;
the only tests allowed to skip on CI are those marked ``cuda`` (no GPU on the CI machine).
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

CI_FALSE = ("", "0", "false", "no", "off")


def on_ci() -> bool:
    """True when the ``CI`` environment variable is set to anything but a false value."""
    return os.environ.get("CI", "").strip().lower() not in CI_FALSE


def missing(part: str, how: str) -> NoReturn:
    """Skip (developer machine) or fail (CI) because ``part`` is not there; ``how`` says how to get it."""
    message = f"missing real part: {part} ({how})"
    if on_ci():
        pytest.fail(f"{message}; on CI a missing part fails the test instead of skipping it", pytrace=False)
    pytest.skip(message)


def require_executable(path_or_name: str | Path, how: str) -> Path:
    """An executable file (a path, or a name looked up on PATH)."""
    text = str(path_or_name)
    found = shutil.which(text)
    if found is None:
        missing(f"executable {text}", how)
    return Path(found)


def require_module(name: str, how: str) -> ModuleType:
    """An importable module (an optional dependency)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"Python module {name} ({exc})", how)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """On CI, report a skip as a failure (a test that did not run proves nothing), except for
    tests marked ``cuda``: the CI machine has no GPU."""
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and on_ci()) or hasattr(report, "wasxfail") or item.get_closest_marker("cuda"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (
        f"skipped on CI (CI={os.environ.get('CI')!r}): {reason}\n"
        "only tests marked 'cuda' may skip on CI; install the missing part instead"
    )
