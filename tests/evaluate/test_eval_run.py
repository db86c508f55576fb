"""The evaluate orchestrator: golden bicubic values on Set5, and a full run on a tiny COCO-Stuff root."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from srseg.data.classmap import get_class_map
from srseg.data.manifest import HR_FORMAT, Manifest, Sample
from srseg.evaluate import evaluate
from srseg.evaluate.methods import MethodError
from srseg.evaluate.niqe import NiqeParamsError, fit_niqe_params, save_niqe_params
from srseg.evaluate.run import LPIPS_UNAVAILABLE, NIQE_UNAVAILABLE, EvaluateError
from srseg.evaluate.run import EvaluationSettings as Settings
from srseg.evaluate.run import EvaluationTracking as Tracking
from srseg.fileio import sha256_file
from srseg.imageio import load_rgb
from srseg.models.generator import MultiTaskSRNet
from srseg.models.io import save_generator

GOLDEN_SET5 = (28.42, 0.8104)  # bicubic x4, design.md
ODD_NAME = '<i>"odd"</i> & co'


def _tiny_root(cocostuff_sample: Path, root: Path, count: int = 3, size: tuple[int, int] = (320, 240)) -> Path:
    """``count`` real val images + labels in the download layout, with a manifest.

    Image and label are cropped together (top-left ``size``) and stored losslessly as PNG, which
    keeps them aligned and the test fast on two CPU cores.
    """
    samples = []
    for path in sorted((cocostuff_sample / "images" / "val2017").glob("*.jpg"))[:count]:
        image_id = int(path.stem)
        image_rel, label_rel = f"images/val2017/{path.stem}.png", f"labels/val2017/{path.stem}.png"
        box = (0, 0, *size)
        with (
            Image.open(path) as img,
            Image.open(cocostuff_sample / "stuffthingmaps" / "val2017" / f"{path.stem}.png") as lab,
        ):
            assert img.size == lab.size
            image, label = img.convert("RGB").crop(box), lab.crop(box)
        for picture, rel in ((image, image_rel), (label, label_rel)):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            picture.save(root / rel, format="PNG")
        samples.append(
            Sample(
                image_id,
                image_rel,
                size[0],
                size[1],
                sha256_file(root / image_rel),
                label_rel,
                sha256_file(root / label_rel),
            )
        )
    Manifest(kind="hr", format=HR_FORMAT, splits={"val2017": samples}, meta={"class_map": "fine171"}).save(root)
    return root


def _generator(path: Path, seed: int, num_classes: int) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = MultiTaskSRNet(scale=4, num_features=8, num_blocks=1, num_classes=num_classes, first_kernel_size=3)
    return save_generator(net, path)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_bicubic_on_set5_reproduces_the_golden_values(set5: Path, tmp_path: Path) -> None:
    result = evaluate(
        {"bicubic": "bicubic"},
        set5 / "HR",
        tmp_path / "out",
        Settings("val", 4, "fine171", lpips_weights=str(tmp_path / "no-weights-here"), bootstrap=200, gallery_crops=1),
    )
    bicubic = result["bicubic"]
    assert bicubic["psnr_y"] == pytest.approx(GOLDEN_SET5[0], abs=0.005)
    assert bicubic["ssim_y"] == pytest.approx(GOLDEN_SET5[1], abs=0.0005)
    assert bicubic["psnr_y_ci"][0] < bicubic["psnr_y"] < bicubic["psnr_y_ci"][1]
    assert bicubic["lpips"] == LPIPS_UNAVAILABLE and "lpips_ci" not in bicubic
    assert bicubic["niqe"] == NIQE_UNAVAILABLE
    assert result["meta"]["images"] == 5 and result["meta"]["input"] == "image folder"
    assert result["per_class"]["classes"] == 0
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["bicubic"]["psnr_y"] == bicubic["psnr_y"]
    rows = _read_csv(tmp_path / "out" / "per_image.csv")
    assert [r["image"] for r in rows] == ["baby", "bird", "butterfly", "head", "woman"]
    assert not (tmp_path / "out" / "per_class.csv").exists()

    # The shipped MATLAB-made LR files give the same numbers as LR synthesised on the fly.
    again = evaluate(
        {"bicubic": "bicubic"},
        set5 / "HR",
        tmp_path / "out2",
        Settings(
            "val",
            4,
            "fine171",
            lr_root=set5 / "LR_bicubic" / "X4",
            lpips_weights=str(tmp_path / "no-weights-here"),
            bootstrap=0,
            gallery_crops=0,
        ),
    )
    assert again["bicubic"]["psnr_y"] == pytest.approx(bicubic["psnr_y"], abs=1e-9)


def test_full_run_writes_every_output_and_logs_to_mlflow(cocostuff_sample: Path, tmp_path: Path) -> None:
    import mlflow

    root = _tiny_root(cocostuff_sample, tmp_path / "data")
    multitask = _generator(tmp_path / "models" / "multitask.safetensors", 1, 171)
    sr_only = _generator(tmp_path / "models" / "sr_only.safetensors", 2, 0)
    train_plots = tmp_path / "train" / "gan" / "plots"
    train_plots.mkdir(parents=True)
    (train_plots / "val.csv").write_text(
        "iteration,psnr_y,ssim_y,miou,pixel_acc\n100,20.0,0.5,0.01,0.1\n200,21.0,0.55,0.02,0.2\n"
    )
    (train_plots / "train_loss.csv").write_text("iteration,loss/pixel\n10,0.3\n20,0.2\n")
    pristine = sorted((cocostuff_sample / "images" / "train2017").glob("*.jpg"))[:4]
    niqe_path = save_niqe_params(
        tmp_path / "niqe.npz", fit_niqe_params((load_rgb(p) for p in pristine), sharpness_threshold=0.0)
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.create_experiment("srseg", artifact_location=(tmp_path / "artifacts").as_uri())

    out = tmp_path / "eval"
    methods = {"bicubic": "bicubic", "multitask": str(multitask), ODD_NAME: str(sr_only)}
    result = evaluate(
        methods,
        root,
        out,
        Settings(
            "val2017",
            4,
            "fine171",
            compare=("multitask", ODD_NAME),
            seg_model="multitask",
            lpips_weights="none",
            niqe_params=niqe_path,
            bootstrap=200,
            seed=1,
            gallery_crops=4,
            crop_size=64,
            device="cpu",
        ),
        Tracking(uri=uri),
        train_dirs=[tmp_path / "train" / "gan"],
    )

    # metrics.json: one block per method, paired differences, per-class summary, meta.
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {*methods, "diff", "per_class", "meta"}
    for name in methods:
        block = metrics[name]
        for key in ("psnr_y", "ssim_y", "psnr_rgb", "lpips", "niqe"):
            assert isinstance(block[key], float), (name, key, block[key])
            lo, hi = block[f"{key}_ci"]
            assert lo <= block[key] <= hi
        assert block["lpips_random_weights"] is True and block["images"] == 3
    assert 0.0 <= metrics["multitask"]["miou"] <= 1.0 and 0.0 <= metrics["multitask"]["pixel_acc"] <= 1.0
    assert "miou" not in metrics[ODD_NAME]
    pair = f"multitask-{ODD_NAME}"
    assert set(metrics["diff"]) == {pair, "multitask-bicubic", f"{ODD_NAME}-bicubic"}
    diff = metrics["diff"][pair]
    assert diff["psnr_y"] == pytest.approx(metrics["multitask"]["psnr_y"] - metrics[ODD_NAME]["psnr_y"])
    assert 0.0 <= diff["psnr_y_improved"] <= 1.0 and len(diff["lpips_ci"]) == 2
    assert metrics["meta"]["lpips_random_weights"] is True and metrics["meta"]["compare"] == ["multitask", ODD_NAME]
    assert metrics["per_class"]["compare"] == pair
    assert result["meta"]["mlflow_run_id"]

    # Per-image and per-class tables.
    per_image = _read_csv(out / "per_image.csv")
    assert len(per_image) == 3 * len(methods) and set(per_image[0]) == {
        "image",
        "method",
        "psnr_y",
        "ssim_y",
        "psnr_rgb",
        "lpips",
        "niqe",
    }
    per_class = _read_csv(out / "per_class.csv")
    cmap = get_class_map("fine171")
    seen: set[int] = set()
    for label_path in sorted((root / "labels" / "val2017").glob("*.png")):
        with Image.open(label_path) as img:
            raw = np.asarray(img, dtype=np.uint8)
        h, w = raw.shape[0] - raw.shape[0] % 4, raw.shape[1] - raw.shape[1] % 4
        ids = cmap.apply(raw[:h, :w])[4:-4, 4:-4]
        seen |= {int(v) for v in np.unique(ids) if v != 255}
    assert {int(r["class_id"]) for r in per_class} == seen == set(range(cmap.num_classes)) & seen
    assert metrics["per_class"]["classes"] == len(seen)
    assert {"multitask.psnr_y", f"{ODD_NAME}.lpips", "psnr_y_gain", "psnr_y_gain_ci_lo", "lpips_gain"} <= set(
        per_class[0]
    )
    assert (out / "per_class.md").read_text().startswith("# Per-class metrics")
    gain_csv = _read_csv(out / "plots" / "per_class_gain.csv")
    assert len(gain_csv) == len(seen) and "psnr_y_gain" in gain_csv[0]

    # Plots are real PNGs.
    for png in ("plots/per_class_gain.png", "plots/train_gan_val.png", "plots/train_gan_train_loss.png"):
        with Image.open(out / png) as img:
            assert img.format == "PNG" and img.width > 100

    # Gallery: escaped names, relative links that resolve, LR | bicubic | methods | HR per row.
    page = (out / "gallery.html").read_text()
    assert "&lt;i&gt;&quot;odd&quot;&lt;/i&gt; &amp; co" in page and ODD_NAME not in page
    sources = [s.split('"')[0] for s in page.split('<img src="')[1:]]
    assert len(sources) == 4 * (2 + 2 + 1)  # LR, bicubic, multitask, the odd one, HR
    for src in sources:
        assert not src.startswith(("/", "file:")) and (out / src).is_file()
    with Image.open(out / sources[0]) as lr_tile, Image.open(out / sources[4]) as hr_tile:
        assert lr_tile.size == hr_tile.size
    summary = (out / "summary.md").read_text()
    assert "multitask" in summary and "gallery.html" in summary and ODD_NAME not in summary

    # MLflow: a finished run named "evaluate" with the metrics and the output folder as artifacts.
    run = client.get_run(result["meta"]["mlflow_run_id"])
    assert run.info.run_name == "evaluate" and run.info.status == "FINISHED"
    assert run.data.metrics["multitask.psnr_y"] == pytest.approx(metrics["multitask"]["psnr_y"])
    assert "diff.multitask-bicubic.psnr_y_ci_lo" in run.data.metrics
    assert run.data.tags["evaluate.method.multitask"] == str(multitask)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluate")}
    assert {"evaluate/metrics.json", "evaluate/gallery.html", "evaluate/gallery"} <= artifacts

    # Logging into an existing run leaves that run open.
    existing = client.create_run(run.info.experiment_id, run_name="train").info.run_id
    evaluate(
        {"bicubic": "bicubic"},
        root,
        tmp_path / "eval2",
        Settings("val2017", 4, "fine171", lpips_weights="none", bootstrap=10, gallery_crops=0, max_images=1),
        Tracking(uri=uri, run_id=existing),
    )
    logged = client.get_run(existing)
    assert logged.info.status == "RUNNING" and "bicubic.psnr_y" in logged.data.metrics


def test_bad_arguments_are_named(cocostuff_sample: Path, tmp_path: Path) -> None:
    root = _tiny_root(cocostuff_sample, tmp_path / "data", count=1)
    settings = Settings("val2017", 4, "fine171", lpips_weights="none")
    out = tmp_path / "out"

    def with_(**changes: Any) -> Settings:
        return dataclasses.replace(settings, **changes)

    with pytest.raises(MethodError, match="missing.safetensors"):
        evaluate({"x": str(tmp_path / "missing.safetensors")}, root, out, settings)
    with pytest.raises(MethodError, match="'nope'"):
        evaluate({"nope": "definitely/not/here"}, root, out, settings)
    with pytest.raises(EvaluateError, match="seg_model 'ghost'"):
        evaluate({"bicubic": "bicubic"}, root, out, with_(seg_model="ghost"))
    with pytest.raises(EvaluateError, match="segmentation head"):
        evaluate({"bicubic": "bicubic"}, root, out, with_(seg_model="bicubic"))
    with pytest.raises(EvaluateError, match="compare"):
        evaluate({"bicubic": "bicubic"}, root, out, with_(compare=("bicubic", "other")))
    with pytest.raises(ValueError, match="no split 'test'"):
        evaluate({"bicubic": "bicubic"}, root, out, with_(split="test"))
    with pytest.raises(EvaluateError, match="mlflow_run_id"):
        evaluate({"bicubic": "bicubic"}, root, out, settings, Tracking(run_id="abc"))
    wrong_scale = _generator(tmp_path / "x2.safetensors", 0, 0)
    with pytest.raises(MethodError, match="x4 generator, evaluation scale is x2"):
        evaluate({"g": str(wrong_scale)}, root, out, with_(scale=2))
    with pytest.raises(NiqeParamsError, match="absent.npz"):
        evaluate({"bicubic": "bicubic"}, root, out, with_(niqe_params=tmp_path / "absent.npz"))


def test_mlflow_and_export_methods_go_through_the_upscale_loader(
    cocostuff_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``models:/`` URIs (and non-safetensors files) are loaded by srseg.inference.upscale's
    loader (stubbed here: the real one is tested in tests/inference) and scored like any method."""
    import srseg.inference.upscale as upscale
    from srseg.degrade.bicubic import imresize

    calls: list[tuple[str, int, str | None]] = []

    def fake_loader(
        spec: str, scale: int = 4, device: str = "auto", tracking_uri: str | None = None
    ) -> upscale.SRModel:
        calls.append((spec, scale, tracking_uri))
        return upscale.SRModel(lambda x: imresize(x, scale=float(scale)), scale, spec, torch.device("cpu"))

    monkeypatch.setattr(upscale, "load_sr_model", fake_loader)
    root = _tiny_root(cocostuff_sample, tmp_path / "data", count=1, size=(96, 96))
    result = evaluate(
        {"bicubic": "bicubic", "champion": "models:/srseg@champion"},
        root,
        tmp_path / "out",
        Settings("val2017", 4, "fine171", lpips_weights="none", bootstrap=10, gallery_crops=0, device="cpu"),
    )
    assert calls == [("models:/srseg@champion", 4, None)]
    assert result["champion"]["psnr_y"] == pytest.approx(result["bicubic"]["psnr_y"], abs=1e-6)
    assert result["diff"]["champion-bicubic"]["psnr_y"] == pytest.approx(0.0, abs=1e-6)
