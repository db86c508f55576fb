"""available_bytes: the smallest of MemAvailable, the cgroup headroom and the RLIMIT_AS headroom."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from srseg import memory

REPO = Path(__file__).resolve().parents[1]


def test_machine_memory_is_reported() -> None:
    available = memory.available_bytes()
    assert available is not None and 0 < available <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_an_address_space_limit_lowers_it() -> None:
    code = (
        "import resource; from srseg import memory; "
        "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); print(memory.available_bytes())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert 0 < int(out) < 3 << 30
