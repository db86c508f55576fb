"""Log + register the SR head (local SQLite store): signature, example, any batch/size, tags, alias."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient

from srseg.export import export_sr_head
from srseg.models.generator import MultiTaskSRNet
from srseg.models.io import WeightsFileError, load_generator, save_generator, sidecar_path
from srseg.registry import RegistryError, SRHeadLoadError, load_sr_head, load_sr_head_dir, log_and_register
from srseg.registry.loader import resolve_artifact_uri

TAGS = {"git_commit": "0123abcd", "data_manifest_sha256": "f" * 64}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``srseg export`` folder (weights, sidecar, MODEL_CARD.md) of a tiny multitask generator."""
    torch.manual_seed(3)
    full = MultiTaskSRNet(num_features=8, num_blocks=1, num_classes=5, first_kernel_size=3)
    out = tmp_path_factory.mktemp("export")
    export_sr_head(
        full,
        out,
        metrics={"psnr_y": 24.5},
        data_version="f" * 64,
        model_name="reg-export",
        latency_size=(8, 8),
        latency_runs=1,
    )
    return out


@pytest.fixture(scope="module")
def logged(exported: Path, local_store: str) -> tuple:
    info = log_and_register(
        exported / "sr_head.safetensors",
        "reg-export",
        local_store,
        tags=TAGS,
        metrics={"psnr_y": {"value": 24.5, "ci_low": 24.1, "ci_high": 24.9, "n": 5}, "lpips": None},
        model_card=exported / "MODEL_CARD.md",
    )
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=resolve_artifact_uri(info.model_uri, local_store), tracking_uri=local_store
    )
    return info, Path(local)


def test_logged_model_has_explicit_signature_example_and_no_pickle(logged: tuple, exported: Path) -> None:
    info, local = logged
    assert info.name == "reg-export" and info.version == "1" and info.model_uri == "models:/reg-export/1"
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    spec = {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 3, -1, -1]}}
    assert json.loads(mlmodel["signature"]["inputs"]) == [spec]
    assert json.loads(mlmodel["signature"]["outputs"]) == [spec]
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert "pytorch" not in mlmodel["flavors"]
    assert mlmodel["metadata"]["srseg_format"] == "srseg.sr_head/1"
    example = np.asarray(json.loads((local / mlmodel["saved_input_example_info"]["artifact_path"]).read_text()))
    assert example.shape[0] >= 2 and example.shape[1] == 3
    bundle = local / "artifacts" / "sr_head"
    assert sorted(p.name for p in bundle.iterdir()) == [
        "MODEL_CARD.md",
        "sr_head.safetensors",
        "sr_head.safetensors.json",
    ]
    assert (bundle / "sr_head.safetensors").read_bytes() == (exported / "sr_head.safetensors").read_bytes()
    shipped = [p.name for p in local.rglob("*") if p.is_file()]
    assert not [n for n in shipped if n.endswith((".pkl", ".pickle", ".pth", ".pt", ".pt2"))], shipped
    assert (local / "pyfunc_model.py").read_text().count("set_model(") == 1


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("size", [(17, 23), (64, 48)])
def test_logged_model_runs_any_batch_and_size(
    logged: tuple, exported: Path, local_store: str, batch: int, size: tuple[int, int]
) -> None:
    info, local = logged
    reference = load_generator(exported / "sr_head.safetensors")
    x = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(batch))
    with torch.inference_mode():
        want = reference(x).clamp(0, 1)
    net = load_sr_head("models:/reg-export@challenger", local_store)
    pyfunc = mlflow.pyfunc.load_model(str(local))
    with torch.inference_mode():
        got_torch = net(x).clamp(0, 1)
    got_pyfunc = pyfunc.predict(x.numpy())
    assert got_torch.shape == (batch, 3, 4 * size[0], 4 * size[1]) and got_pyfunc.dtype == np.float32
    assert float((got_torch - want).abs().max()) <= 1e-6
    assert float(np.abs(got_pyfunc - want.numpy()).max()) <= 1e-6


def test_registration_tags_metrics_alias_and_card(logged: tuple, exported: Path, local_store: str) -> None:
    info, _ = logged
    client = MlflowClient(local_store, registry_uri=local_store)
    version = client.get_model_version("reg-export", info.version)
    tags = version.tags
    assert tags["git_commit"] == "0123abcd" and tags["data_manifest_sha256"] == "f" * 64
    assert float(tags["metric.psnr_y"]) == 24.5 and float(tags["metric.psnr_y.ci_low"]) == 24.1
    assert tags["metric.lpips"] == "unavailable"
    assert tags["srseg.format"] == "srseg.sr_head/1" and tags["scale"] == "4"
    assert version.aliases == ["challenger"] and version.run_id == info.run_id
    assert version.description.startswith("# reg-export")
    run = client.get_run(info.run_id)
    assert run.data.metrics["psnr_y"] == 24.5 and "lpips" not in run.data.metrics
    assert run.data.tags["git_commit"] == "0123abcd" and run.info.status == "FINISHED"
    assert {k: str(v) for k, v in client.get_registered_model("reg-export").aliases.items()} == {"challenger": "1"}


def test_second_version_moves_challenger_and_logs_into_given_run(sr_heads: dict[str, Path], local_store: str) -> None:
    client = MlflowClient(local_store, registry_uri=local_store)
    first = log_and_register(sr_heads["nearest"], "reg-runs", local_store, tags=TAGS)
    run = client.create_run(client.get_experiment_by_name("srseg").experiment_id, run_name="training")
    second = log_and_register(
        sr_heads["dimmed"], "reg-runs", local_store, run_id=run.info.run_id, tags=TAGS, metrics={"psnr_y": 20.0}
    )
    assert (first.version, second.version) == ("1", "2") and second.run_id == run.info.run_id
    assert {k: str(v) for k, v in client.get_registered_model("reg-runs").aliases.items()} == {"challenger": "2"}
    assert client.get_run(run.info.run_id).info.status == "RUNNING"  # a caller's run is left open
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["sr_head"]
    net = load_sr_head("models:/reg-runs/1", local_store)
    assert torch.equal(net.sr_head.weight, load_generator(sr_heads["nearest"]).sr_head.weight)


def test_bad_inputs_are_refused_before_logging(tmp_path: Path, sr_heads: dict[str, Path], local_store: str) -> None:
    with pytest.raises(RegistryError, match="no such file"):
        log_and_register(tmp_path / "missing.safetensors", "reg-bad", local_store)
    lonely = tmp_path / "lonely" / "sr_head.safetensors"
    lonely.parent.mkdir()
    shutil.copyfile(sr_heads["nearest"], lonely)
    with pytest.raises(WeightsFileError, match="sidecar"):
        log_and_register(lonely, "reg-bad", local_store)
    multitask = save_generator(
        MultiTaskSRNet(num_features=8, num_blocks=1, num_classes=3), tmp_path / "mt" / "g.safetensors"
    )
    with pytest.raises(RegistryError, match="segmentation head"):
        log_and_register(multitask, "reg-bad", local_store)
    with pytest.raises(RegistryError, match="model_name"):
        log_and_register(sr_heads["nearest"], "bad/name", local_store)
    with pytest.raises(RegistryError, match="champion"):
        log_and_register(sr_heads["nearest"], "reg-bad", local_store, alias="champion")
    client = MlflowClient(local_store, registry_uri=local_store)
    assert not client.search_registered_models("name='reg-bad'")


def test_loader_refuses_foreign_or_tampered_models(logged: tuple, tmp_path: Path) -> None:
    _, local = logged
    copy = tmp_path / "model"
    shutil.copytree(local, copy)
    mlmodel = yaml.safe_load((copy / "MLmodel").read_text())
    mlmodel["metadata"]["srseg_weights"] = "../../etc/passwd"
    (copy / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(SRHeadLoadError, match="outside the model directory"):
        load_sr_head_dir(copy)
    mlmodel["metadata"]["srseg_format"] = "something/else"
    (copy / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(SRHeadLoadError, match="srseg.sr_head/1"):
        load_sr_head_dir(copy)
    weights = local / "artifacts" / "sr_head" / "sr_head.safetensors"
    shutil.copytree(local, tmp_path / "swapped")
    swapped = tmp_path / "swapped" / "artifacts" / "sr_head" / "sr_head.safetensors"
    other = save_generator(
        MultiTaskSRNet(num_features=8, num_blocks=1, num_classes=0, first_kernel_size=3), tmp_path / "o.safetensors"
    )
    shutil.copyfile(other, swapped)
    shutil.copyfile(sidecar_path(other), sidecar_path(swapped))
    with pytest.raises(SRHeadLoadError, match="SHA-256"):
        load_sr_head_dir(tmp_path / "swapped")
    assert weights.is_file()
    with pytest.raises(SRHeadLoadError, match="models:/NAME@ALIAS"):
        load_sr_head("models:/reg-export/Production", "sqlite:///" + str(tmp_path / "unused.db"))
