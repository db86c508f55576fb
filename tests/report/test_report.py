"""The science report from real stage outputs: an evaluation of two seeds per arm on real COCO-Stuff
val images and a benchmark on the real Set5, plus training curves and a study analysis. The page
says what each CI covers, ranks only classes seen in enough images, merges the curves over seeds
for DVC, and escapes every name it prints."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from evaluate.test_eval_run import _tiny_root

from srseg.evaluate import evaluate
from srseg.evaluate.benchmark import benchmark
from srseg.evaluate.run import EvaluationSettings
from srseg.fileio import read_json
from srseg.models.generator import MultiTaskSRNet
from srseg.models.io import save_generator
from srseg.report.build import ReportError, ReportInputs, build_report
from srseg.report.document import Document

SEEDS = (0, 1)
ARMS = ("multitask", "sr_only")


def _model(path: Path, seed: int) -> str:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = MultiTaskSRNet(
            scale=4, num_features=4, num_blocks=1, num_classes=171, first_kernel_size=3, global_residual="bicubic"
        )
        with torch.no_grad():
            net.sr_head.weight.normal_(0.0, 0.02)
    save_generator(net.eval(), path)
    return str(path)


def _curves(run: Path, offset: float) -> None:
    """Training curves in the layout run_train writes (plots/val.csv, plots/train_loss.csv)."""
    for stage, rows in (("psnr", [(100, 25.0), (200, 26.0)]), ("gan", [(50, 25.5)])):
        (run / stage / "plots").mkdir(parents=True, exist_ok=True)
        with open(run / stage / "plots" / "val.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([("iteration", "psnr_y", "ssim_y"), *((i, v + offset, 0.7) for i, v in rows)])
    with open(run / "psnr" / "plots" / "train_loss.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(
            [("iteration", "train/pixel"), (10, 0.05 + offset / 100), (20, 0.04 + offset / 100)]
        )


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory, cocostuff_sample: Path, set5: Path) -> dict:
    tmp = tmp_path_factory.mktemp("report")
    root = _tiny_root(cocostuff_sample, tmp / "data", count=4)
    methods = {
        f"{arm}@seed{seed}": _model(tmp / "models" / arm / f"seed{seed}.safetensors", 10 * i + seed)
        for i, arm in enumerate(ARMS)
        for seed in SEEDS
    }
    methods["bicubic"] = "bicubic"
    groups = {arm: [f"{arm}@seed{seed}" for seed in SEEDS] for arm in ARMS} | {"bicubic": ["bicubic"]}
    ev = evaluate(
        methods,
        root,
        tmp / "evaluate",
        EvaluationSettings(
            "val2017",
            4,
            "fine171",
            compare=("multitask@seed0", "sr_only@seed0"),
            gallery_crops=0,
            bootstrap=200,
            device="cpu",
        ),
        seed_groups=groups,
    )
    benchmark(methods, {"set5": set5}, 4, tmp / "benchmark", groups=groups, bootstrap=0, device="cpu")
    runs = {arm: {seed: tmp / "runs" / arm / f"seed{seed}" for seed in SEEDS} for arm in ARMS}
    for i, arm in enumerate(ARMS):
        for seed in SEEDS:
            _curves(runs[arm][seed], offset=i + seed / 2)
    return {"tmp": tmp, "evaluation": ev, "runs": runs}


def _inputs(outputs: dict, **changes: object) -> ReportInputs:
    tmp = outputs["tmp"]
    values = dict(
        config={"profile": "test", "train": {"seeds": list(SEEDS)}},
        evaluate_dir=tmp / "evaluate",
        benchmark_dir=tmp / "benchmark",
        benchmark_sets=["set5"],
        runs=outputs["runs"],
        study_dir=tmp / "analysis",
        data_checksums={"COCO-Stuff manifest": "abc123"},
        code={"git commit": "0123abc"},
        min_class_images=2,
    )
    values.update(changes)
    return ReportInputs(**values)  # type: ignore[arg-type]


def test_evaluation_over_seeds_pairs_the_seeds(outputs: dict) -> None:
    ev = outputs["evaluation"]
    diff = ev["seeds"]["diff"]["multitask-sr_only"]
    per_model = [ev[f"multitask@seed{s}"]["psnr_y"] - ev[f"sr_only@seed{s}"]["psnr_y"] for s in SEEDS]
    assert diff["psnr_y_per_seed"] == pytest.approx(per_model) and diff["psnr_y"] == pytest.approx(np.mean(per_model))
    assert diff["ci_covers"] == "seeds and images" and diff["seeds"] == 2 and diff["images"] == 4
    assert set(ev["seeds"]["diff"]) == {"multitask-sr_only", "multitask-bicubic", "sr_only-bicubic"}
    assert ev["per_class"]["pair"] == ["multitask", "sr_only"]


def test_report_says_what_each_interval_covers_and_merges_curves(outputs: dict) -> None:
    tmp = outputs["tmp"]
    summary = build_report(_inputs(outputs), tmp / "out", dvc_dir=tmp / "dvc")
    assert "2 seed(s), 4 images; the CI covers seeds and images" in summary["headline"]
    md = (tmp / "out" / "report.md").read_text()
    page = (tmp / "out" / "report.html").read_text()
    for text in (
        "Standard benchmarks",
        "| bicubic | 1 | 28.42",
        "COCO-Stuff validation",
        "Per-class texture gains",
        "No votes analysed yet",
        "Training curves",
        "Provenance",
        "abc123",
        "0123abc",
    ):
        assert text in md, text
    assert page.count("<table>") >= 4 and '<img src="plots/psnr_stage_val.png"' in page
    ranked = [
        r for r in csv.DictReader(open(tmp / "evaluate" / "plots" / "per_class_gain.csv")) if int(r["images"]) >= 2
    ]
    assert ranked and all(r["class"] in md for r in ranked)
    rare = [
        r["class"]
        for r in csv.DictReader(open(tmp / "evaluate" / "plots" / "per_class_gain.csv"))
        if int(r["images"]) < 2
    ]
    assert all(f"| {name} |" not in md for name in rare)  # a class in one image is not ranked
    merged = list(csv.DictReader(open(tmp / "dvc" / "psnr_stage_val.csv")))
    assert [int(r["iteration"]) for r in merged] == [100, 200]
    assert float(merged[0]["multitask"]) == pytest.approx(25.25) and float(merged[1]["sr_only"]) == pytest.approx(27.25)
    assert {p.name for p in (tmp / "out" / "plots").glob("*.png")} >= {
        "psnr_stage_val.png",
        "gan_stage_val.png",
        "per_class_gain.png",
    }
    assert read_json(tmp / "out" / "report.json")["seeds"] == list(SEEDS)


def test_one_seed_is_labelled_as_covering_images_only(outputs: dict, tmp_path: Path) -> None:
    tmp = outputs["tmp"]
    ev = evaluate(
        {
            "multitask": str(tmp / "models" / "multitask" / "seed0.safetensors"),
            "sr_only": str(tmp / "models" / "sr_only" / "seed0.safetensors"),
            "bicubic": "bicubic",
        },
        tmp / "data",
        tmp_path / "evaluate",
        EvaluationSettings(
            "val2017", 4, "fine171", compare=("multitask", "sr_only"), gallery_crops=0, bootstrap=100, device="cpu"
        ),
        seed_groups={"multitask": ["multitask"], "sr_only": ["sr_only"], "bicubic": ["bicubic"]},
    )
    assert ev["seeds"]["diff"]["multitask-sr_only"]["ci_covers"] == "images only (1 seed)"
    summary = build_report(_inputs(outputs, evaluate_dir=tmp_path / "evaluate"), tmp_path / "out")
    assert "the CI covers images only (1 seed)" in summary["headline"]
    assert "images only (1 seed)" in (tmp_path / "out" / "report.md").read_text()


def test_study_scores_appear_when_votes_were_analysed(outputs: dict, tmp_path: Path) -> None:
    analysis = {
        "counts": {"votes_used": 40, "raters_included": 4, "raters_total": 5},
        "params": {"attention_threshold": 0.75, "reference": "bicubic"},
        "bradley_terry": [
            {"method": "multitask", "score": 0.8, "ci_low": 0.2, "ci_high": 1.3, "p_beats_reference": 0.69},
            {"method": "bicubic", "score": 0.0, "ci_low": None, "ci_high": None, "p_beats_reference": 0.5},
        ],
        "win_rates": [
            {"a": "multitask", "b": "bicubic", "wins_a": 15, "n": 20, "rate_a": 0.75, "ci_low": 0.53, "ci_high": 0.89}
        ],
    }
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "analysis.json").write_text(json.dumps(analysis))
    build_report(_inputs(outputs, study_dir=tmp_path / "analysis"), tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert (
        "| multitask | +0.800 | [+0.200, +1.300] | 0.690 |" in md
        and "| multitask | bicubic | 15 / 20 | 0.750 | [0.530, 0.890] |" in md
    )


def test_missing_stage_outputs_name_the_stage(outputs: dict, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"evaluate/metrics.json not found: run the evaluate stage"):
        build_report(_inputs(outputs, evaluate_dir=tmp_path / "evaluate"), tmp_path / "out")
    with pytest.raises(ReportError, match=r"set14/benchmark.json not found"):
        build_report(_inputs(outputs, benchmark_sets=["set5", "set14"]), tmp_path / "out")


def test_document_escapes_names_in_markdown_and_html() -> None:
    doc = Document("a <b> report").text("x < y").table(["class", "gain"], [["<script>alert(1)</script>", "a|b"]])
    html = doc.html()
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;" in html
    md = doc.markdown()
    assert "a\\|b" in md and "&lt;script&gt;" in md
    with pytest.raises(ValueError, match="2 cells"):
        Document("t").table(["a", "b"], [["only one"]])
