"""``srseg export``: the SR head equals the full net, every format matches PyTorch, the card says what ships."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import srseg.export as export_module
from srseg.export import ExportError, ExportReport, export_sr_head, load_torchscript, render_model_card
from srseg.models.generator import MultiTaskSRNet, build_sr_only
from srseg.models.io import load_generator, save_generator

DATA_VERSION = "9f2c" * 16
METRICS = {
    "psnr_y": {"value": 27.91, "ci_low": 27.5, "ci_high": 28.3, "n": 8},
    "lpips": {"mean": 0.213, "ci": [0.19, 0.24], "ci_level": 0.9},
    "niqe": 5.1,
}
SHAPES = [(1, 17, 23), (3, 31, 8), (1, 1, 1), (2, 40, 33)]


def _tiny(seed: int = 0) -> MultiTaskSRNet:
    torch.manual_seed(seed)
    return MultiTaskSRNet(num_features=8, num_blocks=2, num_classes=7, seg_head_features=6).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[MultiTaskSRNet, ExportReport, Path]:
    """One export (from a weights file, as the trainer writes it) shared by the tests below."""
    root = tmp_path_factory.mktemp("export")
    model = _tiny()
    weights = save_generator(model, root / "best_ema.safetensors")
    out = root / "out"
    report = export_sr_head(
        weights, out, data_version=DATA_VERSION, metrics=METRICS, latency_size=(24, 24), latency_runs=2
    )
    return model, report, out


def _inputs(n: int, h: int, w: int) -> torch.Tensor:
    return torch.rand((n, 3, h, w), generator=torch.Generator().manual_seed(h * 100 + w))


def test_sr_head_equals_full_model_sr_output() -> None:
    model = _tiny()
    sr = build_sr_only(model).eval()
    assert sr.seg_head is None and sr.num_parameters() < model.num_parameters()
    x = _inputs(2, 19, 26)
    with torch.inference_mode():
        assert float((sr(x) - model.forward_multitask(x)[0]).abs().max()) <= 1e-6


def test_export_writes_all_artifacts_and_report(exported: tuple) -> None:
    model, report, out = exported
    names = ["sr_head.safetensors", "sr_head.safetensors.json", "sr_head.torchscript.pt", "sr_head.onnx"]
    for name in names + ["MODEL_CARD.md", "export.json"]:
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "export.json").read_text())
    assert ExportReport.from_dict(on_disk) == report
    assert report.sr_vs_full_max_abs_diff <= 1e-6
    assert report.config == model.config and report.sr_config["num_classes"] == 0
    assert report.parameters_full == model.num_parameters()
    assert report.parameters_sr == model.num_parameters(include_seg_head=False) < report.parameters_full
    assert report.latency_ms_sr > 0 and report.latency_ms_full is not None and report.latency_ms_full > 0
    assert report.receptive_field_radius == 11 and report.data_version == DATA_VERSION
    assert {c.backend for c in report.parity} == {"torchscript", "onnxruntime"}
    assert all(c.max_abs_diff <= c.tolerance for c in report.parity)
    assert set(report.sha256) == set(report.files)


def test_safetensors_export_round_trips(exported: tuple) -> None:
    model, _, out = exported
    sr = load_generator(out / "sr_head.safetensors")
    assert sr.seg_head is None
    x = _inputs(1, 17, 23)
    with torch.inference_mode():
        assert float((sr(x) - model(x)).abs().max()) <= 1e-6


@pytest.mark.parametrize("n,h,w", SHAPES)
def test_torchscript_matches_pytorch(exported: tuple, n: int, h: int, w: int) -> None:
    model, _, out = exported
    scripted = load_torchscript(out / "sr_head.torchscript.pt")
    x = _inputs(n, h, w)
    with torch.inference_mode():
        got, want = scripted(x), model(x)
    assert got.shape == (n, 3, 4 * h, 4 * w)
    assert float((got - want).abs().max()) <= 1e-5


@pytest.mark.parametrize("n,h,w", SHAPES)
def test_onnx_matches_pytorch_on_dynamic_shapes(exported: tuple, n: int, h: int, w: int) -> None:
    model, _, out = exported
    session = ort.InferenceSession(str(out / "sr_head.onnx"), providers=["CPUExecutionProvider"])
    x = _inputs(n, h, w)
    got = session.run(["sr"], {"lr": x.numpy()})[0]
    with torch.inference_mode():
        want = model(x).numpy()
    assert got.shape == (n, 3, 4 * h, 4 * w)
    assert float(np.abs(got - want).max()) <= 1e-4


def test_onnx_declares_dynamic_axes_and_metadata(exported: tuple) -> None:
    model, report, out = exported
    proto = onnx.load(str(out / "sr_head.onnx"))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, False, True, True]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["srseg.config"]) == report.sr_config
    assert meta["srseg.data_version"] == DATA_VERSION


def test_model_card_contents(exported: tuple) -> None:
    _, report, out = exported
    card = (out / "MODEL_CARD.md").read_text()
    assert DATA_VERSION in card
    assert f"{report.parameters_sr:,}" in card and f"{report.parameters_full:,}" in card
    assert "| `num_features` | `8` |" in card and "| `seg_head_features` | `6` |" in card
    assert "| `psnr_y` | 27.91 | [27.5, 28.3] (95%) | 8 |" in card
    assert "| `lpips` | 0.213 | [0.19, 0.24] (90%) | - |" in card
    assert "| `niqe` | 5.1 | - | - |" in card
    for heading in ["## Intended use", "## Limitations", "## How to load", "## Speed"]:
        assert heading in card
    snippets = ["load_generator(", "torch.jit.load(", "ort.InferenceSession(", "load_sr_head("]
    for snippet in snippets + ["models:/srseg-sr@champion"]:
        assert snippet in card
    assert "SR head (shipped)" in card and "forward_multitask" in card


def test_model_card_without_metrics_says_not_evaluated(exported: tuple) -> None:
    _, report, _ = exported
    card = render_model_card(dataclasses.replace(report, metrics=None, data_version=None, latency_ms_full=None))
    assert "Not evaluated" in card and "not recorded" in card and "n/a (no segmentation head)" in card


def test_bad_metrics_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="metric 'psnr_y': unknown keys \\['stderr'\\]"):
        export_sr_head(_tiny(), tmp_path, metrics={"psnr_y": {"value": 1.0, "stderr": 0.1}})
    with pytest.raises(ValueError, match="metric 'ssim': give both ends"):
        export_sr_head(_tiny(), tmp_path, metrics={"ssim": {"value": 0.8, "ci_low": 0.7}})


def test_export_refuses_an_sr_head_that_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(model: MultiTaskSRNet) -> MultiTaskSRNet:
        sr = build_sr_only(model)
        with torch.no_grad():
            sr.sr_head.bias.add_(1e-3)
        return sr

    monkeypatch.setattr(export_module, "build_sr_only", broken)
    with pytest.raises(ExportError, match="differs from the full network"):
        export_sr_head(_tiny(), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_export_leaves_the_callers_model_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _tiny().train()
    monkeypatch.setattr(export_module, "_check_parity", lambda *a, **k: (_ for _ in ()).throw(ExportError("stop")))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sr_head.onnx").write_bytes(b"previous export")
    with pytest.raises(ExportError, match="stop"):
        export_sr_head(model, tmp_path / "out")
    assert model.training and model.seg_head is not None
    # all or nothing: no new files, no staging folder, the previous export untouched
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["sr_head.onnx"]
    assert (tmp_path / "out" / "sr_head.onnx").read_bytes() == b"previous export"


def test_export_rejects_other_inputs(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="MultiTaskSRNet or a path"):
        export_sr_head(torch.nn.Conv2d(3, 3, 3), tmp_path)  # type: ignore[arg-type]


def test_global_residual_head_exports_with_its_bicubic_path(tmp_path: Path) -> None:
    """The bicubic skip is part of every exported format (dynamic sizes down to 1x1), and the card
    says what was trained and how the weights were chosen, warning about a random-VGG19 loss."""
    from srseg.degrade.bicubic import imresize

    torch.manual_seed(3)
    model = MultiTaskSRNet(num_features=8, num_blocks=1, num_classes=4, global_residual="bicubic").eval()
    with torch.no_grad():
        model.sr_head.weight.normal_(std=0.02)
    training = {
        "stage": "gan",
        "iteration": "200",
        "selection_rule": "final_ema",
        "perceptual_loss": "random-weight VGG19 (train.loss.vgg_weights=random): not a meaningful perceptual loss",
    }
    weights = save_generator(model, tmp_path / "selected.safetensors", metadata=training)
    report = export_sr_head(weights, tmp_path / "out", latency_size=(16, 16), latency_runs=1)
    assert report.sr_config["global_residual"] == "bicubic" and report.training == training
    assert all(c.max_abs_diff <= c.tolerance for c in report.parity)
    session = ort.InferenceSession(str(tmp_path / "out" / "sr_head.onnx"), providers=["CPUExecutionProvider"])
    scripted = load_torchscript(tmp_path / "out" / "sr_head.torchscript.pt")
    zeroed = build_sr_only(model).eval()
    with torch.no_grad():
        zeroed.sr_head.weight.zero_()
        zeroed.sr_head.bias.zero_()
    for n, h, w in [(1, 1, 1), (2, 13, 7)]:
        x = _inputs(n, h, w)
        with torch.inference_mode():
            want = model(x)
            assert float((zeroed(x) - imresize(x, scale=4.0)).abs().max()) <= 1e-5  # the path is MATLAB bicubic
            assert float((scripted(x) - want).abs().max()) <= 1e-5
        got = torch.from_numpy(session.run(["sr"], {"lr": x.numpy()})[0])
        assert float((got - want).abs().max()) <= 1e-4
    card = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    assert "global residual `bicubic`" in card and "beyond the paper" in card
    assert "final_ema" in card and "Warning: trained with a random-weight VGG19 perceptual loss" in card
    assert load_generator(tmp_path / "out" / "sr_head.safetensors").config["global_residual"] == "bicubic"
