"""``srseg promote`` on real COCO-Stuff report images: a registered model worse than bicubic is
refused although there is no champion yet (exit 3, no alias moved); a model that beats bicubic on
those images becomes the first champion (exit 0), scored alone: bicubic's scores are read back
from the store. The decision table shows the floor's numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import ReportImages
from mlflow import MlflowClient

from srseg.cli import main
from srseg.config import load_params
from srseg.registry import log_and_register
from srseg.registry.evalcache import EvaluationStore
from srseg.stages.ship import gate_evaluation

NAME = "cli-gate"
TAGS = {"git_commit": "0123abcd", "data_manifest_sha256": "c" * 64}


@pytest.mark.timeout(600)
def test_srseg_promote_refuses_worse_than_bicubic_without_champion_and_promotes_a_better_one(
    report_images: ReportImages,
    local_store: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params_file = report_images.params(tmp_path / "params.yaml", NAME, local_store)
    client = MlflowClient(local_store, registry_uri=local_store)

    worse = log_and_register(report_images.nearest, NAME, local_store, tags=TAGS)
    assert main(["--params", str(params_file), "promote"]) == 3  # rejected, and no --allow-reject
    assert "champion" not in client.get_registered_model(NAME).aliases
    assert client.get_model_version(NAME, worse.version).tags["gate_failed"] == "bicubic floor (psnr_y)"
    per_image = (tmp_path / "promotion" / "per_image.csv").read_text()
    assert per_image.count("\n") == 1 + 2 * 7  # challenger and bicubic on the 7 report images only

    better = log_and_register(report_images.fitted, NAME, local_store, tags=TAGS)
    caplog.clear()
    with caplog.at_level("INFO", logger="srseg"):
        assert main(["--params", str(params_file), "promote"]) == 0
    assert str(client.get_registered_model(NAME).aliases["champion"]) == better.version
    table = caplog.text
    assert "bicubic floor (psnr_y)" in table and "all criteria pass" in table
    per_image = (tmp_path / "promotion" / "per_image.csv").read_text().splitlines()
    assert per_image[0].startswith("image,method,psnr_y") and {r.split(",")[1] for r in per_image[1:]} == {"challenger"}
    assert len(per_image) == 1 + 7  # only the new model was scored: bicubic's scores were stored

    params = load_params(params_file)
    evaluation = gate_evaluation(params, tmp_path / "unused", client).evaluation
    store = EvaluationStore(client, params.mlflow.experiment)
    challenger = store.find(
        evaluation, f"sha256:{client.get_model_version(NAME, better.version).tags['sr_head_sha256']}"
    )
    bicubic = store.find(evaluation, "bicubic")
    assert challenger is not None and bicubic is not None and len(challenger.image_ids) == 7
    gains = np.array(challenger.scores["psnr_y"]) - np.array(bicubic.scores["psnr_y"])
    assert (gains > 0).all() and gains.mean() > 0.1, gains
    assert client.get_model_version(NAME, better.version).tags["gate.evaluation_run_id"] == challenger.run_id
