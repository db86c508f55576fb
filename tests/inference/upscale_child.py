"""Child process for test_upscale_batch.py: runs the real ``srseg`` CLI, optionally measuring.

Argument: a JSON object with ``argv`` (the srseg arguments), ``warmup_argv`` (run first, then the
peak-RSS mark is reset through ``/proc/self/clear_refs`` and ``{"base_mb", "peak_mb"}`` is printed
as the last stdout line) and ``no_preflight`` (skip the pre-flight memory check, so that an
allocation itself fails: the path a wrong estimate would take; everything else is the real CLI).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    raise KeyError(key)


def main() -> int:
    spec = json.loads(sys.argv[1])
    if spec.get("no_preflight"):
        import srseg.inference.upscale as upscale_module

        upscale_module.check_memory = lambda *args, **kwargs: None  # type: ignore[assignment]
    from srseg.cli import main as cli

    if not spec.get("warmup_argv"):
        return cli(spec["argv"])
    cli(spec["warmup_argv"])
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # the peak then also covers the warm-up, which is smaller
    base = _status_mb("VmRSS")
    code = cli(spec["argv"])
    print(json.dumps({"base_mb": base, "peak_mb": _status_mb("VmHWM")}))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
