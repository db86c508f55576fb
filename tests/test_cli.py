"""The srseg command line, every subcommand with real inputs: stage wiring, outputs, exit codes, and
the one-line message (exit 2, no traceback) a user gets for a mistake."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from fitting import fit_on_report_images
from PIL import Image

from srseg.cli import main
from srseg.data.classmap import get_class_map
from srseg.data.manifest import Manifest
from srseg.data.mirror import build_sample_mirror
from srseg.fileio import sha256_file
from srseg.imageio import load_rgb

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def params_file(tmp_path: Path) -> Path:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    return tmp_path / "params.yaml"


def test_params_prints_resolved_profile(params_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--params", str(params_file), "--profile", "paper", "params"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["profile"] == "paper" and shown["download"]["mode"] == "full"


def test_bad_parameter_exits_2_naming_the_key(params_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params_file.write_text(params_file.read_text().replace("scale: 4 ", "scale: 7 "))
    assert main(["--params", str(params_file), "params"]) == 2
    err = capsys.readouterr().err
    assert "degrade.scale" in err and str(params_file) in err


def test_download_stage_from_folder_mirror(
    params_file: Path, tmp_path: Path, cocostuff_sample: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror = build_sample_mirror(cocostuff_sample, tmp_path / "mirror")
    out = tmp_path / "cocostuff"
    argv = ["--params", str(params_file), "download", "--mirror", str(mirror), "--output", str(out)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == {
        "train2017": 13,
        "val2017": 8,
    }  # the demo takes the whole sample
    manifest = Manifest.load(out)
    assert manifest.meta["class_map"] == get_class_map("fine171").to_json()
    for sample in manifest.splits["val2017"]:
        split_file = Path(sample.label).name
        assert sha256_file(out / sample.label) == sha256_file(
            cocostuff_sample / "stuffthingmaps" / "val2017" / split_file
        )


def test_missing_mirror_folder_is_a_clear_error(
    params_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--params",
        str(params_file),
        "download",
        "--mirror",
        str(tmp_path / "nowhere"),
        "--output",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert "nowhere" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Every subcommand with real inputs, in a workspace laid out like the repository root.
# --------------------------------------------------------------------------------------------

FAST = {  # small but real settings for the workspace's params.yaml
    "evaluate": {"bootstrap": 50, "gallery_crops": 1},  # every report image: the gate needs n >= 3
    "study": {"num_images": 2, "attention_checks": 1, "bootstrap": 50},
    # the commands are under test here, the gate's thresholds in tests/registry/test_registry_cli_gate.py:
    # fitted on 5 report images, the nets' gains are real but their CIs are wide
    "promote": {"min_gain_over_bicubic_db": 0.0, "max_psnr_drop_db": 1.0},
}


def _deep_update(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict):
            _deep_update(base.setdefault(key, {}), value)
        else:
            base[key] = value
    return base


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, cocostuff_sample: Path, set5: Path) -> Path:
    """A repository-root layout: params.yaml (+ FAST, Set5 as the only benchmark set), profiles/,
    the sample mirror, the data stages run through the CLI, and tiny generator weights where
    evaluate.methods expects them (one per seed of train.seeds): both beat bicubic on every report
    image (fitted to them, tests/fitting.py), so the gate can pass."""
    from srseg.config import load_params
    from srseg.models.io import save_generator
    from srseg.seeds import for_seed

    ws = tmp_path_factory.mktemp("cli_ws")
    shutil.copytree(REPO / "profiles", ws / "profiles")
    params = _deep_update(yaml.safe_load((REPO / "params.yaml").read_text()), FAST)
    params["benchmark"]["sets"] = {"set5": str(set5)}
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ws)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        loaded = load_params(ws / "params.yaml")
        assert main(["mirror", "build", "--sample", str(cocostuff_sample), "--output", loaded.paths.mirror_dir]) == 0
        assert main(["download"]) == 0
        assert main(["degrade"]) == 0
        classes = get_class_map(loaded.train.class_map).num_classes
        for index, name in enumerate(("multitask", "sr_only")):
            net = fit_on_report_images(
                ws / "params.yaml", steps=100, num_classes=classes, seed=index, crops=None, lr=3e-3
            )
            for seed in loaded.train.seeds:
                save_generator(net, ws / for_seed(loaded.evaluate.methods[name], seed))
    return ws


@pytest.fixture()
def in_workspace(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(workspace)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return workspace


def test_data_stages_and_folder_commands(in_workspace: Path, set5: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """download/degrade ran in the fixture; here: their outputs, degrade/upscale/metrics on folders."""
    from srseg.config import load_params

    params = load_params(in_workspace / "params.yaml")
    assert {k: len(v) for k, v in Manifest.load(params.paths.data_root).splits.items()} == {
        "train2017": 13,
        "val2017": 8,
    }  # the whole sample (demo profile)
    assert Manifest.load(params.paths.lr_root).meta["scale"] == 4

    code, out, _ = run_cli(["degrade", "--input", str(set5 / "HR"), "--output", "set5_lr"], capsys)
    assert code == 0 and json.loads(out.strip().splitlines()[-1])
    for shipped in sorted((set5 / "LR_bicubic" / "X4").glob("*.png")):  # MATLAB's files, bit for bit
        ours = next(Path("set5_lr").rglob(shipped.name.replace("x4.png", "*.png")))
        assert np.array_equal(load_rgb(ours), load_rgb(shipped)), ours

    code, out, _ = run_cli(
        ["upscale", str(set5 / "LR_bicubic" / "X4"), "--model", "bicubic", "--output", "set5_sr"], capsys
    )
    assert code == 0 and "wrote 5 images" in out
    code, out, _ = run_cli(
        ["metrics", "--pred", "set5_sr", "--ref", str(set5 / "HR"), "--scale", "4", "--json", "m.json"], capsys
    )
    assert code == 0
    mean_line = next(line for line in out.splitlines() if line.startswith("mean"))
    written = json.loads(Path("m.json").read_text())
    assert written["count"] == 5 and f"{written['mean']['psnr_y']:8.4f}" in mean_line
    assert written["mean"]["psnr_y"] == pytest.approx(28.42, abs=0.01)  # published bicubic x4 Set5


def test_evaluate_study_export_register_promote_rollback_upscale(
    in_workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow import MlflowClient

    from srseg.config import load_params
    from srseg.seeds import expand_methods, for_seed

    params = load_params(in_workspace / "params.yaml")
    code, out, _ = run_cli(["evaluate"], capsys)
    assert code == 0
    metrics = json.loads((Path(params.evaluate.output_dir) / "metrics.json").read_text())
    models = expand_methods(params.evaluate.methods, params.train.seeds).specs  # multitask@seed0, ..., bicubic
    assert set(models) <= set(metrics) and set(params.evaluate.methods) == set(metrics["seeds"]["methods"])
    assert all(f"{name:<12} psnr_y" in out for name in models)

    # the benchmark (Set5 here) and the science report, which the evaluation's MLflow run then holds
    code, out, _ = run_cli(["benchmark", "--set", "set5", "--report-dir", "reports/benchmark/set5"], capsys)
    assert code == 0 and "| bicubic | 1 | 28.42 | 0.8102 |" in out
    assert json.loads(Path("reports/benchmark/set5/metrics.json").read_text())["images"] == 5
    code, out, _ = run_cli(["report", "--report-dir", "reports/report"], capsys)
    report_dir = Path(params.report.output_dir)
    assert code == 0 and str(report_dir / "report.html") in out
    page = (report_dir / "report.html").read_text()
    assert "Standard benchmarks" in page and "28.42" in page and "multitask minus sr_only" in page
    assert (report_dir / "report.md").read_text().count("|") > 20 and Path(
        "reports/report/psnr_stage_val.csv"
    ).is_file()

    # the user study, build to analysis
    code, out, _ = run_cli(["study", "build"], capsys)
    bundle = Path(params.study.output_dir) / "bundle"
    assert code == 0 and (bundle / "study.json").is_file() and str(bundle) in out
    code, out, _ = run_cli(
        ["study", "invite", "--count", "2", "--admin", "--base-url", "https://study.example.org"], capsys
    )
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3
    assert all("\thttps://study.example.org/start#token=" in line for line in lines[:2])
    assert lines[2].startswith("admin token (shown once): ")
    code, out, _ = run_cli(["study", "export", "--output", "pairs.csv"], capsys)
    assert code == 0
    pairs = list(csv.DictReader(open("pairs.csv", newline="")))
    assert pairs and set(pairs[0]) >= {"pair_id", "left_image", "right_image"}
    with open("votes.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rater_id", "pair_id", "choice"])
        for worker in ("w1", "w2"):
            writer.writerows([worker, p["pair_id"], "left"] for p in pairs)
    code, out, _ = run_cli(["study", "import", "--csv", "votes.csv"], capsys)
    assert code == 0 and f"{2 * len(pairs)} rows, {2 * len(pairs)} new votes, 0 duplicates" in out
    code, out, _ = run_cli(["study", "import", "--csv", "votes.csv"], capsys)
    assert code == 0 and f"0 new votes, {2 * len(pairs)} duplicates" in out
    code, out, _ = run_cli(["study", "analyze"], capsys)
    assert code == 0 and json.loads(out)

    # export, registry
    code, out, _ = run_cli(["export"], capsys)
    export_dir = Path(params.export.output_dir)
    assert code == 0 and json.loads(out)
    for name in ("sr_head.safetensors", "sr_head.onnx", "sr_head.torchscript.pt", "MODEL_CARD.md"):
        assert (export_dir / name).is_file(), name
    client = MlflowClient(params.mlflow.tracking_uri)
    evaluation_run = json.loads((Path(params.evaluate.output_dir) / "mlflow_run.json").read_text())["run_id"]
    assert {a.path for a in client.list_artifacts(evaluation_run, "report")} >= {
        "report/report.html",
        "report/report.md",
    }
    card = (export_dir / "MODEL_CARD.md").read_text()
    assert f"{report_dir / 'report.html'}" in card and evaluation_run in card  # the card links to the report
    name = params.registry.model_name

    def alias(which: str) -> str | None:
        try:
            return str(client.get_model_version_by_alias(name, which).version)
        except Exception:  # noqa: BLE001 - MLflow raises its own error for a missing alias
            return None

    code, out, _ = run_cli(["register", "--record", "rec1.json"], capsys)
    first = json.loads(Path("rec1.json").read_text())
    assert code == 0 and json.loads(out)["version"] == first["version"] and alias("challenger") == str(first["version"])
    assert run_cli(["promote", "--dry-run"], capsys)[0] == 0 and alias("champion") is None
    assert run_cli(["promote"], capsys)[0] == 0 and alias("champion") == str(first["version"])
    assert run_cli(["register", "--record", "rec1b.json"], capsys)[0] == 0  # the same SR head again: no new version
    assert json.loads(Path("rec1b.json").read_text())["version"] == first["version"]
    # the other (better) model as the next challenger: export it, register, promote, roll back
    assert (
        run_cli(
            [
                "--set",
                f"export.weights={for_seed(params.evaluate.methods['sr_only'], params.train.seeds[0])}",
                "export",
            ],
            capsys,
        )[0]
        == 0
    )
    assert run_cli(["register", "--record", "rec2.json"], capsys)[0] == 0
    second = json.loads(Path("rec2.json").read_text())
    assert second["version"] != first["version"]
    code, out, err = run_cli(["promote"], capsys)
    assert code == 0 and alias("champion") == str(second["version"]), out + err
    assert run_cli(["rollback", "--dry-run"], capsys)[0] == 0 and alias("champion") == str(second["version"])
    assert run_cli(["rollback"], capsys)[0] == 0 and alias("champion") == str(first["version"])

    code, out, _ = run_cli(
        [
            "upscale",
            str(Path(params.paths.lr_root) / "val2017"),
            "--model",
            f"models:/{name}@champion",
            "--output",
            "sr_out",
            "--tile",
            "32",
        ],
        capsys,
    )
    lr_files = sorted((Path(params.paths.lr_root) / "val2017").glob("*.png"))
    assert code == 0 and f"wrote {len(lr_files)} images" in out
    with Image.open(lr_files[0]) as lr, Image.open(next(Path("sr_out").glob(f"{lr_files[0].stem}*"))) as sr:
        assert sr.size == (lr.width * 4, lr.height * 4)


def test_study_serve_command_answers(in_workspace: Path) -> None:
    """``srseg study serve`` (the installed script) on port 0, stopped with SIGTERM."""
    from srseg.config import load_params

    bundle = Path(load_params(in_workspace / "params.yaml").study.output_dir) / "bundle"
    if not (bundle / "study.json").is_file():
        assert main(["study", "build"]) == 0
    script = Path(sys.executable).parent / "srseg"
    log = in_workspace / "serve.log"
    with open(log, "wb") as handle:
        server = subprocess.Popen(
            [str(script), "study", "serve", "--port", "0"],
            cwd=in_workspace,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        base = None
        while base is None and time.monotonic() < deadline and server.poll() is None:
            found = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
            base = found.group(1) if found else time.sleep(0.2)
        assert base, log.read_text()[-3000:]
        deadline = time.monotonic() + 30
        while True:
            try:
                assert requests.get(f"{base}/healthz", timeout=2).status_code == 200
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
        assert requests.get(f"{base}/study", timeout=5).status_code == 401  # raters need their link
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert server.returncode == 0, log.read_text()[-3000:]


def test_pipeline_compile_profile_use_and_params(
    params_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        ["pipeline", "compile", "--image", "registry.example/srseg:9.9", "--output", str(tmp_path / "p.yaml")], capsys
    )
    assert code == 0 and str(tmp_path / "p.yaml") in out
    spec, *platform = yaml.safe_load_all((tmp_path / "p.yaml").read_text())  # pipeline spec, then platform config
    assert spec["pipelineInfo"]["name"] and spec["root"]["dag"]["tasks"]
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/srseg:9.9"}

    assert run_cli(["--params", str(params_file), "profile", "use", "paper"], capsys)[0] == 0
    code, out, _ = run_cli(["--params", str(params_file), "params"], capsys)
    assert code == 0 and yaml.safe_load(out)["profile"] == "paper"
    assert run_cli(["--params", str(params_file), "profile", "use", "demo"], capsys)[0] == 0
    shown = yaml.safe_load(run_cli(["--params", str(params_file), "--set", "train.seed=7", "params"], capsys)[1])
    assert shown["profile"] == "demo" and shown["train"]["seed"] == 7


# ------------------------------------------------------------------------------- user errors

USER_ERRORS = {  # subcommand: argv that a user could type by mistake, in an empty repository root
    "download": ["download", "--mirror", "no-such-mirror"],
    "degrade": ["degrade"],
    "degrade --input": ["degrade", "--input", "photos"],
    "metrics": ["metrics", "--pred", "no-such-dir", "--ref", "no-ref", "--scale", "4"],
    "train": ["train", "--stage", "psnr"],
    "evaluate": ["evaluate"],
    "benchmark": ["benchmark"],  # ../shared/data/set5 is not beside an empty repository root
    "report": ["report"],
    "study build": ["study", "build"],
    "study invite": ["study", "invite", "--count", "2"],
    "study serve": ["study", "serve", "--port", "0"],
    "study analyze": ["study", "analyze"],
    "study export": ["study", "export", "--output", "pairs.csv"],
    "study import": ["study", "import", "--csv", "votes.csv"],
    "export": ["export"],
    "register": ["register"],
    "promote": ["promote"],
    "promote --dry-run": ["promote", "--dry-run"],
    "rollback": ["rollback"],
    "upscale": ["upscale", "holiday.jpg", "--model", "bicubic", "--output", "out"],
    "pipeline compile": ["pipeline", "compile"],  # outside the srseg checkout
    "mirror build": ["mirror", "build", "--sample", "no-sample", "--output", "mirror"],
    "profile use": ["profile", "use", "no-such-profile"],
    "params": ["--set", "train.no_such_key=1", "params"],
}


@pytest.mark.parametrize(("case", "argv"), list(USER_ERRORS.items()), ids=list(USER_ERRORS))
def test_user_error_exits_2_with_one_line(
    case: str, argv: list[str], params_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(params_file.parent)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (params_file.parent / "votes.csv").write_text("rater_id,pair_id,choice\n")
    code, out, err = run_cli(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    command = case.split(" --")[0]  # "study build", "degrade", ...
    assert code == 2, (out, err)
    # one line says what is wrong; libraries may have logged before it (MLflow creating its database)
    assert lines[-1].startswith(f"srseg {command}: error: "), err
    assert [line for line in lines if "error" in line.lower()] == lines[-1:], err
    assert "Traceback" not in err
