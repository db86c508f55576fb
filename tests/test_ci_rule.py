"""The CI rule of ``realparts.py``: with ``CI`` set, a missing real part or any skip fails the run
(naming what is missing); only ``cuda`` tests may skip. Checked by running pytest itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

GPU_MARK = "cuda"  # spelt apart: bench/gpu_check.py lists every test file that carries this marker
SAMPLE_TESTS = f"""
import pytest
from realparts import missing, require_executable

def test_plain_skip():
    pytest.skip("no reason to run")

@pytest.mark.{GPU_MARK}
def test_needs_a_gpu():
    pytest.skip("no CUDA device")

def test_missing_program():
    require_executable("/nonexistent/srseg-test-tool", "apt-get install srseg-test-tool")

def test_runs():
    assert 1 + 1 == 2
"""


def _pytest(
    args: list[str], cwd: Path, ci: str | None, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_skips_fail_on_ci_except_cuda(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text("from realparts import pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "test_sample.py").write_text(SAMPLE_TESTS)
    (tmp_path / "pytest.ini").write_text(f"[pytest]\nmarkers =\n    {GPU_MARK}: needs a CUDA device\n")

    local = _pytest(["test_sample.py"], tmp_path, ci=None)
    assert local.returncode == 0, local.stdout
    assert "1 passed, 3 skipped" in local.stdout

    for value in ("true", "1"):
        ci = _pytest(["test_sample.py"], tmp_path, ci=value)
        assert ci.returncode == 1, ci.stdout
        assert "2 failed, 1 passed, 1 skipped" in ci.stdout, ci.stdout
        assert "FAILED test_sample.py::test_plain_skip" in ci.stdout
        assert "FAILED test_sample.py::test_missing_program" in ci.stdout
        assert (
            "missing real part: executable /nonexistent/srseg-test-tool (apt-get install srseg-test-tool)" in ci.stdout
        )
        assert any(line.startswith("SKIPPED") and "no CUDA device" in line for line in ci.stdout.splitlines())

    assert _pytest(["test_sample.py"], tmp_path, ci="false").returncode == 0


def test_browser_test_fails_on_ci_without_chromium(tmp_path: Path) -> None:
    absent = {"SRSEG_CHROMIUM": str(tmp_path / "no-chromium")}
    target = "tests/study/test_study_browser.py"
    ci = _pytest([target], REPO, ci="true", extra_env=absent)
    assert ci.returncode == 1, ci.stdout[-3000:]
    assert "skipped" not in ci.stdout.splitlines()[-1]
    assert f"missing real part: executable {tmp_path / 'no-chromium'} (apt-get install chromium" in ci.stdout
    local = _pytest([target], REPO, ci=None, extra_env=absent)
    assert local.returncode == 0 and "2 skipped" in local.stdout.splitlines()[-1], local.stdout[-3000:]
