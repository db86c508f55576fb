"""Generator weights files (safetensors + JSON sidecar): round trip and every refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from srseg.fileio import sha256_file
from srseg.models.generator import MultiTaskSRNet, build_sr_only
from srseg.models.io import (
    GENERATOR_FORMAT,
    WeightsFileError,
    load_generator,
    read_sidecar,
    save_generator,
    sidecar_path,
)


def _tiny(num_classes: int = 5, seed: int = 0) -> MultiTaskSRNet:
    torch.manual_seed(seed)
    return MultiTaskSRNet(num_features=8, num_blocks=2, num_classes=num_classes).eval()


def _rewrite(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Replace the weights and fix the digest, as a buggy writer would: only the keys are wrong."""
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    side = sidecar_path(path)
    data = json.loads(side.read_text())
    data["sha256"] = sha256_file(path)
    side.write_text(json.dumps(data))


def test_round_trip_restores_config_weights_and_outputs(tmp_path: Path) -> None:
    model = _tiny()
    path = save_generator(model, tmp_path / "best_ema.safetensors", metadata={"iteration": 1200})
    side = read_sidecar(path)
    assert side["format"] == GENERATOR_FORMAT
    assert side["config"] == model.config
    assert side["sha256"] == sha256_file(path)
    assert side["metadata"] == {"iteration": "1200"}
    loaded = load_generator(path)
    assert loaded.config == model.config and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.rand(2, 3, 9, 13)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))
        assert torch.equal(loaded.forward_multitask(x)[1], model.forward_multitask(x)[1])


def test_sr_only_network_round_trips(tmp_path: Path) -> None:
    sr = build_sr_only(_tiny())
    loaded = load_generator(save_generator(sr, tmp_path / "sr.safetensors"))
    assert loaded.config["num_classes"] == 0 and loaded.seg_head is None


@pytest.mark.parametrize("change", ["missing", "extra", "shape"])
def test_tampered_keys_are_refused_and_named(tmp_path: Path, change: str) -> None:
    path = save_generator(_tiny(), tmp_path / "g.safetensors")
    state = _tiny().state_dict()
    if change == "missing":
        del state["sr_head.weight"]
        expected = "missing keys ['sr_head.weight']"
    elif change == "extra":
        state["backdoor.weight"] = torch.zeros(3)
        expected = "unexpected keys ['backdoor.weight']"
    else:
        state["sr_head.bias"] = torch.zeros(4)
        expected = "sr_head.bias: file (4,) vs net (3,)"
    _rewrite(path, state)
    with pytest.raises(WeightsFileError) as err:
        load_generator(path)
    assert expected in str(err.value) and str(path) in str(err.value)


def test_weights_swapped_without_sidecar_fail_the_digest(tmp_path: Path) -> None:
    path = save_generator(_tiny(seed=0), tmp_path / "g.safetensors")
    save_file(_tiny(seed=1).state_dict(), str(path))
    with pytest.raises(WeightsFileError, match="SHA-256 does not match"):
        load_generator(path)


def test_pickle_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = save_generator(_tiny(), tmp_path / "g.safetensors")
    torch.save(_tiny().state_dict(), path)  # a torch.save zip archive behind a .safetensors name
    with pytest.raises(WeightsFileError, match="refusing to unpickle"):
        load_generator(path)
    path.write_bytes(b"\x80\x04\x95" + b"\x00" * 32)  # a raw pickle stream
    with pytest.raises(WeightsFileError, match="pickle"):
        load_generator(path)


def test_missing_or_bad_sidecar_is_named(tmp_path: Path) -> None:
    path = save_generator(_tiny(), tmp_path / "g.safetensors")
    side = sidecar_path(path)
    assert side.name == "g.safetensors.json"
    data = json.loads(side.read_text())
    side.write_text(json.dumps({**data, "config": {**data["config"], "num_featurez": 8}}))
    with pytest.raises(WeightsFileError, match="does not build a multitask_srresnet generator"):
        load_generator(path)
    side.write_text(json.dumps({**data, "format": "other/9"}))
    with pytest.raises(WeightsFileError, match="other/9"):
        load_generator(path)
    side.unlink()
    with pytest.raises(WeightsFileError, match="g.safetensors.json not found"):
        load_generator(path)
    with pytest.raises(WeightsFileError, match="not found"):
        load_generator(tmp_path / "absent.safetensors")


def test_save_rejects_wrong_suffix_and_foreign_modules(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_generator(_tiny(), tmp_path / "g.pt")
    with pytest.raises(TypeError, match="Conv2d"):
        save_generator(torch.nn.Conv2d(3, 3, 3), tmp_path / "g.safetensors")


def test_sidecar_records_the_architecture_and_older_files_still_load(tmp_path: Path) -> None:
    model = MultiTaskSRNet(num_features=8, num_blocks=1, num_classes=3, global_residual="bicubic").eval()
    path = save_generator(model, tmp_path / "g.safetensors")
    side = sidecar_path(path)
    data = json.loads(side.read_text())
    assert data["architecture"] == "multitask_srresnet" and data["config"]["global_residual"] == "bicubic"
    x = torch.rand(1, 3, 5, 6)
    with torch.inference_mode():
        assert torch.equal(load_generator(path)(x), model(x))
    # a sidecar written before the registry: no architecture, no global_residual key
    save_generator(_tiny(num_classes=3), tmp_path / "old.safetensors")
    old_side = sidecar_path(tmp_path / "old.safetensors")
    legacy = json.loads(old_side.read_text())
    legacy.pop("architecture")
    legacy["config"].pop("global_residual")
    old_side.write_text(json.dumps(legacy))
    loaded = load_generator(tmp_path / "old.safetensors")
    assert loaded.config["global_residual"] == "none" and loaded.skip is None
    side.write_text(json.dumps({**data, "architecture": "rrdb"}))
    with pytest.raises(WeightsFileError, match="unknown generator architecture 'rrdb'"):
        load_generator(path)
