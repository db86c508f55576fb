"""``srseg promote`` on real COCO-Stuff report images: a registered model worse than bicubic is
refused although there is no champion yet (exit 3, no alias moved); a model that beats bicubic on
those images becomes the first champion (exit 0). The decision table shows the floor's numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from fitting import fit_on_report_images
from srseg.cli import main
from srseg.config import load_params
from srseg.models.io import save_generator
from srseg.registry import log_and_register
from srseg.stages import run_degrade
from train.trainkit import build_prepared_root

NAME = "cli-gate"
VAL_IDS = (139, 785, 1268, 1490, 1503, 1584, 1818, 1993)  # the sample's val split: 1 selection, 7 report images
TAGS = {"git_commit": "0123abcd", "data_manifest_sha256": "c" * 64}


@pytest.mark.timeout(600)
def test_srseg_promote_refuses_worse_than_bicubic_without_champion_and_promotes_a_better_one(
    cocostuff_sample: Path, sr_heads: dict[str, Path], local_store: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = build_prepared_root(cocostuff_sample, tmp_path / "data" / "cocostuff", train_ids=(17914,), val_ids=VAL_IDS)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({
        "paths": {"data_root": str(root), "lr_root": str(tmp_path / "data" / "lr")},
        "train": {"class_map": "coarse8", "selection_images": 1, "device": "cpu", "lr_source": "precomputed"},
        "evaluate": {"output_dir": str(tmp_path / "evaluate"), "bootstrap": 200},
        "registry": {"model_name": NAME},
        "promote": {"perceptual": "none", "min_gain_over_bicubic_db": 0.1},
        "mlflow": {"tracking_uri": local_store},
    }))
    run_degrade(load_params(params_file))
    client = MlflowClient(local_store, registry_uri=local_store)

    worse = log_and_register(sr_heads["nearest"], NAME, local_store, tags=TAGS)
    assert main(["--params", str(params_file), "promote"]) == 3  # rejected, and no --allow-reject
    assert "champion" not in client.get_registered_model(NAME).aliases
    assert client.get_model_version(NAME, worse.version).tags["gate_failed"] == "bicubic floor (psnr_y)"
    per_image = (tmp_path / "evaluate" / "promotion" / "per_image.csv").read_text()
    assert per_image.count("\n") == 1 + 2 * 7  # challenger and bicubic on the 7 report images only

    fitted = save_generator(fit_on_report_images(params_file), tmp_path / "fitted" / "sr_head.safetensors")
    better = log_and_register(fitted, NAME, local_store, tags=TAGS)
    capsys.readouterr()
    assert main(["--params", str(params_file), "promote"]) == 0
    assert str(client.get_registered_model(NAME).aliases["champion"]) == better.version
    assert per_image.splitlines()[0].startswith("image,method,psnr_y")
    scores = (tmp_path / "evaluate" / "promotion" / "per_image.csv").read_text().splitlines()[1:]
    gains = {}
    for line in scores:
        image, method, psnr = line.split(",")[:3]
        gains.setdefault(image, {})[method] = float(psnr)
    assert all(v["challenger"] - v["bicubic"] > 0 for v in gains.values()), gains
    assert np.mean([v["challenger"] - v["bicubic"] for v in gains.values()]) > 0.1
