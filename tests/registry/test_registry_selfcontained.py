"""The registered SR head is self-contained: its MLmodel names no path of the logging machine, it
ships the srseg code it needs (``code_paths``), and it loads, predicts and serves in a fresh
Python environment where ``srseg`` is not installed, importing nothing beyond its requirements."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import mlflow.artifacts
import numpy as np
import pytest
import torch
import yaml

from srseg.export import export_sr_head
from srseg.models.generator import MultiTaskSRNet
from srseg.registry import load_sr_head_dir, log_and_register
from srseg.registry.loader import resolve_artifact_uri

REPO = Path(__file__).resolve().parents[2]

# Runs in the fresh environment: loads and predicts, then lists the third-party modules that the
# loaded srseg code imports and that the model's requirements.txt (with their own dependencies)
# does not cover.
PROBE = r'''
import ast, importlib.metadata as md, importlib.util, json, re, sys
from pathlib import Path
assert importlib.util.find_spec("srseg") is None, "srseg is installed here"
import mlflow.pyfunc, numpy as np
from packaging.requirements import Requirement
model_dir = Path(sys.argv[1])
model = mlflow.pyfunc.load_model(str(model_dir))
np.save(sys.argv[3], model.predict(np.load(sys.argv[2])))

def import_time_names(path):
    """Top-level names imported when the module loads (function bodies run later, if ever)."""
    names, stack = set(), list(ast.parse(Path(path).read_text()).body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
        stack.extend(ast.iter_child_nodes(node))
    return names

canon = lambda n: re.sub(r"[-_.]+", "-", n).lower()
def closure(names):
    seen, stack = set(), [canon(n) for n in names]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(canon(req.name))
    return seen

loaded = [m for name, m in sys.modules.items() if name.split(".")[0] == "srseg" and getattr(m, "__file__", None)]
imported = set().union(*(import_time_names(m.__file__) for m in loaded))
third_party = imported - set(sys.stdlib_module_names) - {"srseg", "__future__"}
lines = (model_dir / "requirements.txt").read_text().split()
required = [Requirement(l).name for l in lines if l and not l.startswith("#")]
covered, owners = closure(required), md.packages_distributions()
uncovered = sorted(n for n in third_party if not any(canon(d) in covered for d in owners.get(n, [])))
print(json.dumps({"srseg": sys.modules["srseg"].__file__, "third_party": sorted(third_party), "uncovered": uncovered}))
'''


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registered SR head, downloaded from the registry as a deployment would."""
    torch.manual_seed(5)
    full = MultiTaskSRNet(num_features=8, num_blocks=1, num_classes=5, first_kernel_size=3)
    root = tmp_path_factory.mktemp("selfcontained")
    export_sr_head(
        full,
        root / "export",
        metrics={"psnr_y": 24.0},
        data_version="a" * 64,
        model_name="portable",
        latency_size=(8, 8),
        latency_runs=1,
    )
    store = f"sqlite:///{root / 'mlflow.db'}"
    info = log_and_register(
        root / "export" / "sr_head.safetensors",
        "portable",
        store,
        tags={"git_commit": "0123abcd", "data_manifest_sha256": "a" * 64},
        artifact_location=str(root / "artifacts"),
    )
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=resolve_artifact_uri(info.model_uri, store), dst_path=str(root / "download"), tracking_uri=store
    )
    return Path(local)


@pytest.fixture(scope="module")
def python_without_srseg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv seeing this environment's third-party packages (a .pth line: nested .pth files,
    such as srseg's editable install, are not processed) but not srseg."""
    venv = tmp_path_factory.mktemp("venv-no-srseg")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(sysconfig.get_paths()["purelib"])
    (site,) = (venv / "lib").glob("python3.*/site-packages")
    (site / "shared.pth").write_text(f"{purelib}\n")
    # `mlflow models serve` starts `uvicorn` from PATH: give this venv its own launcher, so the
    # server runs under this interpreter (the shared venv's launcher could import srseg).
    uvicorn = venv / "bin" / "uvicorn"
    uvicorn.write_text(f"#!{venv / 'bin' / 'python'}\nfrom uvicorn.main import main\nmain()\n")
    uvicorn.chmod(0o755)
    return venv / "bin" / "python"


def clean_env(python: Path) -> dict[str, str]:
    """No PYTHONPATH (a checkout on it would make srseg importable), no tracking URI, and the
    srseg-free venv's bin first on PATH (what `mlflow models serve` launches comes from there)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_mlmodel_names_no_local_path_and_ships_the_code(model_dir: Path) -> None:
    text = (model_dir / "MLmodel").read_text()
    spec = yaml.safe_load(text)
    assert not re.search(r"(^|[\s'\"])/(tmp|work|home|root|Users)/", text), text  # no absolute local path
    pyfunc = spec["flavors"]["python_function"]
    assert pyfunc["model_code_path"] == "pyfunc_model.py" and pyfunc["code"] == "code"
    assert (model_dir / "code" / "srseg" / "models" / "generator.py").is_file()
    assert not list((model_dir / "code").rglob("__pycache__"))
    requirements = (model_dir / "requirements.txt").read_text().split()
    pinned = {line.split("==")[0] for line in requirements if "==" in line}
    assert {"mlflow", "torch", "safetensors", "numpy"} <= pinned


def test_loads_and_predicts_without_srseg_installed(
    model_dir: Path, python_without_srseg: Path, tmp_path: Path
) -> None:
    x = np.random.default_rng(1).random((2, 3, 10, 12), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run(
        [str(python_without_srseg), "-c", PROBE, str(model_dir), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        cwd=tmp_path,
        env=clean_env(python_without_srseg),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["srseg"]).resolve().is_relative_to(model_dir.resolve() / "code")  # the shipped copy ran
    assert "torch" in report["third_party"]  # the probe saw the code's imports
    assert report["uncovered"] == [], f"imported but not in requirements.txt: {report['uncovered']}"
    with torch.inference_mode():
        want = load_sr_head_dir(model_dir)(torch.from_numpy(x)).clamp(0, 1).numpy()
    got = np.load(tmp_path / "y.npy")
    assert got.shape == (2, 3, 40, 48)
    assert float(np.abs(got - want).max()) <= 1e-6


@pytest.mark.timeout(300)
def test_mlflow_models_serve_answers_invocations_without_srseg(
    model_dir: Path, python_without_srseg: Path, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [
                str(python_without_srseg),
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                str(model_dir),
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                "0",
                "--workers",
                "1",
            ],
            cwd=tmp_path,
            env=clean_env(python_without_srseg),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        port = None
        deadline = time.monotonic() + 180
        while port is None and time.monotonic() < deadline:
            assert server.poll() is None, log.read_text()[-3000:]
            match = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
            port = int(match.group(1)) if match else None
            time.sleep(0.5)
        assert port, f"server did not start:\n{log.read_text()[-3000:]}"
        x = np.random.default_rng(2).random((1, 3, 6, 7), dtype=np.float32)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": x.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.loads(response.read())
        got = np.asarray(body["predictions"], dtype=np.float32)
        with torch.inference_mode():
            want = load_sr_head_dir(model_dir)(torch.from_numpy(x)).clamp(0, 1).numpy()
        assert got.shape == (1, 3, 24, 28) and float(np.abs(got - want).max()) <= 1e-5
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its worker: one session, stopped by its id
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)
