"""The srseg command line: stage wiring, exit codes and messages a user sees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from srseg.cli import main
from srseg.data.classmap import get_class_map
from srseg.data.manifest import Manifest
from srseg.data.mirror import build_sample_mirror
from srseg.fileio import sha256_file

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
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == {"train2017": 13, "val2017": 8}  # the demo takes the whole sample
    manifest = Manifest.load(out)
    assert manifest.meta["class_map"] == get_class_map("fine171").to_json()
    for sample in manifest.splits["val2017"]:
        split_file = Path(sample.label).name
        assert sha256_file(out / sample.label) == sha256_file(cocostuff_sample / "stuffthingmaps" / "val2017" / split_file)


def test_missing_mirror_folder_is_a_clear_error(params_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--params", str(params_file), "download", "--mirror", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "nowhere" in capsys.readouterr().err
