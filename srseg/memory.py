"""How much more memory this process may use, from every limit that can stop it.

A job can be stopped by any of: the machine running out (``MemAvailable``), its cgroup's limit
(containers, Kubernetes pods, systemd units; exceeding it means the OOM killer, with no Python
error at all), or an address-space rlimit (``ulimit -v``; allocations fail). Checking the
smallest of them before a large allocation turns a kill or a traceback into a clear message.
Linux only; elsewhere the answer is "unknown" (None) and callers skip the check.
"""

from __future__ import annotations

import resource
from pathlib import Path

_UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a huge number


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (cgroup v2: no limit) -> None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    """Limit minus usage of this process's memory cgroup (v2, else v1), or None without a limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, relative = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # cgroup v2 unified hierarchy
            folder = Path("/sys/fs/cgroup") / relative.lstrip("/")
            limit, usage = _read_int(folder / "memory.max"), _read_int(folder / "memory.current")
        elif "memory" in controllers.split(","):  # cgroup v1
            folder = Path("/sys/fs/cgroup/memory") / relative.lstrip("/")
            limit, usage = _read_int(folder / "memory.limit_in_bytes"), _read_int(folder / "memory.usage_in_bytes")
        else:
            continue
        if limit is not None and limit < _UNLIMITED and usage is not None:
            return max(0, limit - usage)
    return None


def _address_space_headroom() -> int | None:
    """RLIMIT_AS minus the current virtual size, or None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return max(0, soft - int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return soft


def available_bytes() -> int | None:
    """The smallest headroom of the machine, the cgroup and the address-space limit (None: unknown)."""
    found = [
        value for value in (_meminfo_available(), _cgroup_headroom(), _address_space_headroom()) if value is not None
    ]
    return min(found) if found else None
