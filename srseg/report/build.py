"""``srseg report``: one page a reviewer can read in five minutes, built from what the stages wrote.

Sections, in reading order: the verdict at a glance; the standard benchmarks (bicubic, SR-only,
multitask; mean and CI over seeds); the COCO-Stuff validation table (report images only) with the
multitask-minus-SR-only difference and what its CI covers; per-class texture gains with CIs (top
and bottom classes among those in at least ``report.min_class_images`` images); the user study's
Bradley-Terry scores and preference CIs when votes exist; training curves of both arms; and the
provenance: exact configuration, data checksums, code version.

Inputs (:class:`ReportInputs`) are folders, not params, so the DVC stage and the Kubeflow component
(whose models and results arrive as artifacts) build the same page. Nothing is recomputed here: a
number in the report is a number a stage wrote, so the two can never disagree.

Outputs in ``output_dir``: ``report.md``, ``report.html`` (same content; relative image links),
``plots/*.png``, ``report.json`` (the headline numbers). With ``dvc_dir``, the curves merged over
seeds (``psnr_stage_val.csv``, ``gan_stage_val.csv``, ``psnr_stage_loss.csv``: ``iteration`` and
one column per arm, the mean over seeds) go there for ``dvc plots``.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from srseg.errors import SrsegError
from srseg.evaluate.benchmark import BenchmarkError, load_results
from srseg.evaluate.report import write_csv
from srseg.fileio import read_json, write_json_atomic, write_text_atomic
from srseg.report.document import Document
from srseg.report.plots import Curve, mean_curve, plot_curves, plot_gains

logger = logging.getLogger(__name__)

METRICS = ("psnr_y", "ssim_y", "lpips")
# training CSV (stage, file, column) -> merged DVC plot file
CURVES = {
    "psnr_stage_val": (
        "psnr",
        "val.csv",
        "psnr_y",
        "PSNR stage: validation psnr_y on the selection images",
        "psnr_y (dB)",
    ),
    "gan_stage_val": (
        "gan",
        "val.csv",
        "psnr_y",
        "GAN stage: validation psnr_y on the selection images",
        "psnr_y (dB)",
    ),
    "psnr_stage_loss": (
        "psnr",
        "train_loss.csv",
        "train/pixel",
        "PSNR stage: training pixel loss",
        "pixel loss (L1 on [0, 1])",
    ),
}


class ReportError(SrsegError, ValueError):
    """A stage output the report needs is missing or unreadable; the message names it."""


@dataclass(frozen=True)
class ReportInputs:
    """Where the stage outputs are. ``runs``: arm -> seed -> training run folder (``psnr/``, ``gan/``)."""

    config: Mapping[str, Any]
    evaluate_dir: Path
    benchmark_dir: Path
    benchmark_sets: Sequence[str]
    runs: Mapping[str, Mapping[int, Path]]
    compare: tuple[str, str] = ("multitask", "sr_only")
    study_dir: Path | None = None
    data_checksums: Mapping[str, str] = field(default_factory=dict)
    code: Mapping[str, str] = field(default_factory=dict)
    top_classes: int = 10
    min_class_images: int = 3


def _need_json(path: Path, stage: str) -> dict[str, Any]:
    if not path.is_file():
        raise ReportError(f"{path} not found: run the {stage} stage first (`srseg {stage}` or `dvc repro {stage}`)")
    data = read_json(path)
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object")
    return data


def _fmt(value: Any, digits: int = 2, signed: bool = False) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(float(value)):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _ci(ci: Sequence[Any] | None, digits: int = 2, signed: bool = False) -> str:
    """``[lo, hi]``, or ``[n/a]`` when there is no interval (too few seeds or images)."""
    if not ci or len(ci) != 2 or any(not isinstance(v, (int, float)) or not math.isfinite(float(v)) for v in ci):
        return "[n/a]"
    return f"[{_fmt(ci[0], digits, signed)}, {_fmt(ci[1], digits, signed)}]"


def _order(methods: Sequence[str], compare: tuple[str, str]) -> list[str]:
    """bicubic, then the SR-only arm, then the multitask arm, then anything else."""
    first = [m for m in ("bicubic", compare[1], compare[0]) if m in methods]
    return first + [m for m in methods if m not in first]


# ------------------------------------------------------------------------------------ sections


def _benchmark_section(doc: Document, bench: Mapping[str, Any], compare: tuple[str, str]) -> list[str]:
    sets = bench.get("sets", {})
    doc.heading("1. Standard benchmarks (x{}, MATLAB protocol)".format(bench.get("meta", {}).get("scale", "?")))
    if not sets:
        doc.text("No benchmark sets were scored.")
        return []
    methods = _order(list(next(iter(sets.values()))["methods"]), compare)
    headers = ["method", "seeds"] + [
        f"{name} ({entry['images']} img) {k}" for name, entry in sets.items() for k in ("psnr_y", "ssim_y")
    ]
    rows, gains, glance = [], [], []
    for method in methods:
        seeds = len(next(iter(sets.values()))["methods"][method].get("models", [method]))
        row, gain = [method, str(seeds)], [f"{method} - bicubic", str(seeds)]
        for name, entry in sets.items():
            m = entry["methods"][method]
            for k, digits in (("psnr_y", 2), ("ssim_y", 4)):
                value = m.get(k) or {}
                row.append(_fmt(value.get("mean"), digits) + (f" {_ci(value.get('ci'), digits)}" if seeds > 1 else ""))
                g = m.get(f"{k}_gain_over_bicubic") or {}
                gain.append(
                    _fmt(g.get("mean"), digits, True) + (f" {_ci(g.get('ci'), digits, True)}" if seeds > 1 else "")
                )
            if method in compare and m.get("psnr_y_gain_over_bicubic"):
                glance.append(
                    f"{name}: {method} {_fmt(m['psnr_y_gain_over_bicubic'].get('mean'), 2, True)} dB over bicubic"
                )
        rows.append(row)
        if method != "bicubic":
            gains.append(gain)
    doc.table(headers, rows + gains)
    doc.note(
        "Mean over training seeds of the set mean; with several seeds, [95% CI over seeds] (Student t over the "
        "per-seed set means: the images are the fixed standard set, so only the seeds vary; n/a below 3 seeds). "
        + str(bench.get("meta", {}).get("protocol", ""))
        + ". LR: the set's own LR_bicubic images where present."
    )
    return glance


def _validation_section(doc: Document, ev: Mapping[str, Any], compare: tuple[str, str]) -> str | None:
    meta = ev.get("meta", {})
    seeds = ev.get("seeds") or {}
    methods = seeds.get("methods") or {}
    doc.heading("2. COCO-Stuff validation (report images)")
    excluded = meta.get("excluded_ids") or []
    doc.text(
        f"{meta.get('images', '?')} images of split {meta.get('split')} (class map {meta.get('class_map')}), "
        f"x{meta.get('scale')}, "
        f"border {meta.get('crop_border')} px; the {len(excluded)} selection images training chose its checkpoints on "
        "are "
        "left out, so these numbers never saw a checkpoint choice."
    )
    if not methods:
        doc.text("The evaluation has no per-seed section (it predates seeds): see outputs/evaluate/summary.md.")
        return None
    metric_names = [k for k in METRICS if any(isinstance(m.get(k), (int, float)) for m in methods.values())]
    rows = []
    for name in _order(list(methods), compare):
        m = methods[name]
        rows.append(
            [name, str(m.get("seeds"))]
            + [
                f"{_fmt(m.get(k), 4 if k != 'psnr_y' else 2)} {_ci(m.get(f'{k}_ci'), 4 if k != 'psnr_y' else 2)}"
                for k in metric_names
            ]
        )
    doc.table(["method", "seeds"] + [f"{k} [95% CI]" for k in metric_names], rows)
    diffs = dict(seeds.get("diff") or {})
    first = f"{compare[0]}-{compare[1]}"
    diffs = {k: diffs[k] for k in sorted(diffs, key=lambda k: (k != first, k))}  # the comparison first
    drows = []
    headline = None
    for pair, d in diffs.items():
        drows.append(
            [
                pair,
                str(d.get("seeds")),
                str(d.get("images")),
                f"{_fmt(d.get('psnr_y'), 3, True)} {_ci(d.get('psnr_y_ci'), 3, True)}",
                f"{_fmt(d.get('ssim_y'), 4, True)} {_ci(d.get('ssim_y_ci'), 4, True)}",
                " ".join(_fmt(v, 3, True) for v in d.get("psnr_y_per_seed", [])),
                str(d.get("ci_covers")),
            ]
        )
        if pair == f"{compare[0]}-{compare[1]}":
            headline = (
                f"{compare[0]} minus {compare[1]} on the COCO-Stuff report images: {_fmt(d.get('psnr_y'), 3, True)} "
                "dB psnr_y "
                f"{_ci(d.get('psnr_y_ci'), 3, True)} ({d.get('seeds')} seed(s), {d.get('images')} images; the CI "
                "covers "
                f"{d.get('ci_covers')})"
            )
    doc.heading("Differences (paired by seed and image)", 3)
    doc.table(
        ["a - b", "seeds", "images", "psnr_y (dB) [95% CI]", "ssim_y [95% CI]", "psnr_y per seed", "CI covers"], drows
    )
    doc.note(
        "Each seed's model pairs with the other arm's model of the same seed, image by image. Several seeds: mean "
        "over seeds of the per-seed mean difference; the CI resamples seeds, then images (two-way bootstrap, "
        f"{meta.get('bootstrap')} resamples). One seed: Student t over images, and the CI covers images only: it says "
        "nothing about how much another training seed would move the difference."
    )
    lpips = meta.get("lpips", "")
    if "lpips" not in metric_names:
        doc.note(
            f"LPIPS: not computed ({str(lpips).split('(')[0].strip() or 'no weights'}; set evaluate.lpips_weights)."
        )
    return headline


def _read_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            parsed: dict[str, Any] = dict(row)
            for key in ("psnr_y_gain", "psnr_y_gain_ci_lo", "psnr_y_gain_ci_hi"):
                try:
                    parsed[key] = float(row.get(key) or "nan")
                except ValueError:
                    parsed[key] = math.nan
            for key in ("pixels", "images", "seeds"):
                parsed[key] = int(row.get(key) or 0)
            rows.append(parsed)
    return rows


def _class_section(doc: Document, inputs: ReportInputs, ev: Mapping[str, Any], out: Path) -> str | None:
    pair = (ev.get("per_class") or {}).get("pair") or list(inputs.compare)
    doc.heading(f"3. Per-class texture gains: {pair[0]} minus {pair[1]}")
    path = inputs.evaluate_dir / "plots" / "per_class_gain.csv"
    if not path.is_file():
        doc.text("No per-class table (the evaluation had no labels or no comparison).")
        return None
    rows = [r for r in _read_rows(path) if math.isfinite(r["psnr_y_gain"])]
    usable = [r for r in rows if r["images"] >= inputs.min_class_images]
    doc.text(
        f"{len(usable)} of {len(rows)} classes appear in at least {inputs.min_class_images} report images; only those "
        "are "
        "ranked (a class in fewer images has no interval)."
    )
    if not usable:
        return None
    ranked = sorted(usable, key=lambda r: -r["psnr_y_gain"])
    n = inputs.top_classes
    chosen = ranked if len(ranked) <= 2 * n else ranked[:n] + ranked[-n:]
    png = plot_gains(
        out / "plots" / "per_class_gain.png",
        chosen,
        f"psnr_y gain per class, {pair[0]} - {pair[1]} (95% CI)",
        f"psnr_y gain, {pair[0]} - {pair[1]} (dB)",
    )
    if png is not None:
        doc.image("plots/per_class_gain.png", "per-class psnr_y gains with 95% CIs")

    def table(part: Sequence[dict[str, Any]]) -> list[list[str]]:
        return [
            [
                str(r["class"]),
                str(r["images"]),
                str(r["pixels"]),
                _fmt(r["psnr_y_gain"], 3, True),
                _ci([r["psnr_y_gain_ci_lo"], r["psnr_y_gain_ci_hi"]], 3, True),
                str(r.get("ci_covers") or ""),
            ]
            for r in part
        ]

    headers = ["class", "images", "pixels", "psnr_y gain (dB)", "95% CI", "CI covers"]
    if len(ranked) <= 2 * n:
        doc.table(headers, table(ranked))
    else:
        doc.heading(f"Top {n}", 3).table(headers, table(ranked[:n]))
        doc.heading(f"Bottom {n}", 3).table(headers, table(ranked[::-1][:n]))
    doc.note(
        "Class PSNR pools the squared errors of the class's pixels over the images that contain it (labels on the HR "
        "grid). Several seeds: mean over seeds of each seed's class gain, CI over seeds then images; one seed: BCa "
        "bootstrap over images."
    )
    positive = sum(r["psnr_y_gain"] > 0 for r in usable)
    largest = f"{ranked[0]['class']} {_fmt(ranked[0]['psnr_y_gain'], 3, True)} dB"
    return f"per class: {positive} of {len(usable)} classes gain; largest {largest}"


def _study_section(doc: Document, study_dir: Path | None) -> str | None:
    doc.heading("4. User study")
    path = study_dir / "analysis.json" if study_dir is not None else None
    if path is None or not path.is_file():
        where = f" (no `analysis.json` in `{study_dir}`)" if study_dir is not None else ""
        doc.text(
            f"No votes analysed yet{where}: serve the study (`srseg study serve`, invite raters with "
            "`srseg study invite`), then `srseg study analyze` and `srseg report`."
        )
        return None
    result = read_json(path)
    counts, params = result.get("counts", {}), result.get("params", {})
    doc.text(
        f"{counts.get('votes_used')} votes of {counts.get('raters_included')} included raters "
        f"(of {counts.get('raters_total')}; attention threshold {params.get('attention_threshold')})."
    )
    bt = sorted(result.get("bradley_terry", []), key=lambda b: -b["score"])
    doc.heading(f"Bradley-Terry scores (reference {params.get('reference')})", 3)
    doc.table(
        ["method", "log-strength", "95% CI", "P(beats reference)"],
        [
            [
                b["method"],
                _fmt(b["score"], 3, True),
                _ci([b.get("ci_low"), b.get("ci_high")], 3, True),
                _fmt(b.get("p_beats_reference"), 3),
            ]
            for b in bt
        ],
    )
    doc.heading("Preferences (Wilson 95% CI)", 3)
    doc.table(
        ["A", "B", "A wins / n", "rate of A", "95% CI"],
        [
            [
                w["a"],
                w["b"],
                f"{w['wins_a']} / {w['n']}",
                _fmt(w.get("rate_a"), 3),
                _ci([w.get("ci_low"), w.get("ci_high")], 3),
            ]
            for w in result.get("win_rates", [])
        ],
    )
    return f"study: {counts.get('votes_used')} votes, top {bt[0]['method']}" if bt else None


def _read_curve(path: Path, column: str) -> list[tuple[float, float]]:
    if not path.is_file():
        return []
    points = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            try:
                x, y = float(row["iteration"]), float(row[column])
            except (KeyError, TypeError, ValueError):
                continue
            if math.isfinite(x) and math.isfinite(y):
                points.append((x, y))
    return points


def _curves_section(doc: Document, inputs: ReportInputs, out: Path, dvc_dir: Path | None) -> None:
    doc.heading("5. Training curves")
    doc.text("Both arms, every seed (thin lines) and their mean (thick). Validation is on the selection images only.")
    for name, (stage, filename, column, title, ylabel) in CURVES.items():
        arms: dict[str, dict[int, Curve]] = {
            arm: {seed: _read_curve(run / stage / "plots" / filename, column) for seed, run in seeds.items()}
            for arm, seeds in inputs.runs.items()
        }
        png = plot_curves(out / "plots" / f"{name}.png", arms, title, ylabel, log_y=name.endswith("loss"))
        if png is not None:
            doc.image(f"plots/{name}.png", title)
        if dvc_dir is not None:
            merged: dict[float, dict[str, float]] = {}
            for arm, seeds in arms.items():
                for x, y in mean_curve([c for c in seeds.values() if c]):
                    merged.setdefault(x, {})[arm] = y
            rows = [{"iteration": int(x), **values} for x, values in sorted(merged.items())]
            write_csv(dvc_dir / f"{name}.csv", rows, ["iteration", *inputs.runs])


def _provenance_section(doc: Document, inputs: ReportInputs, bench: Mapping[str, Any]) -> None:
    doc.heading("6. Provenance")
    items = [f"code: {k} {v}" for k, v in inputs.code.items()]
    items += [f"data: {k} sha256 {v}" for k, v in inputs.data_checksums.items()]
    for name, detail in bench.get("sets", {}).items():
        items.append(
            f"benchmark {name}: {detail.get('root')} ({detail.get('images')} images, LR {detail.get('lr')}), sha256 "
            f"{detail.get('sha256')}"
        )
    items += [
        f"training run {arm} seed {seed}: {run}" for arm, seeds in inputs.runs.items() for seed, run in seeds.items()
    ]
    doc.bullets(items)
    doc.code(yaml.safe_dump(dict(inputs.config), sort_keys=False), "Exact configuration (resolved params.yaml)")


# ------------------------------------------------------------------------------------ the page


def build_report(inputs: ReportInputs, output_dir: str | Path, dvc_dir: str | Path | None = None) -> dict[str, Any]:
    """Write the report (see the module docstring); returns its headline numbers (report.json)."""
    out = Path(output_dir)
    dvc = Path(dvc_dir) if dvc_dir is not None else None
    ev = _need_json(inputs.evaluate_dir / "metrics.json", "evaluate")
    try:
        bench = load_results(inputs.benchmark_dir, inputs.benchmark_sets)
    except BenchmarkError as exc:
        raise ReportError(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    for stale in (out / "plots").glob("*.png") if (out / "plots").is_dir() else []:
        stale.unlink()
    profile = inputs.config.get("profile", "?")
    seeds = sorted({seed for runs in inputs.runs.values() for seed in runs})
    body = Document("sections")  # its blocks follow the title and the at-a-glance list below
    glance = _benchmark_section(body, bench, inputs.compare)
    headline = _validation_section(body, ev, inputs.compare)
    classes = _class_section(body, inputs, ev, out)
    study = _study_section(body, inputs.study_dir)
    _curves_section(body, inputs, out, dvc)
    _provenance_section(body, inputs, bench)

    doc = Document(f"srseg science report: multitask vs SR-only ({profile} profile)")
    doc.text(
        f"Rad et al. (arXiv 1907.12488) claim that training SR together with semantic segmentation improves the SR "
        f"output. Here: the multitask arm ({inputs.compare[0]}) against the SR-only ablation ({inputs.compare[1]}, "
        f"lambda_seg = 0, everything else equal), each trained with seeds {seeds}, and bicubic. Generated "
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}."
    )
    doc.heading("At a glance")
    doc.bullets([line for line in (headline, *glance, classes, study or "study: no votes yet") if line])
    doc.blocks.extend(body.blocks)
    write_text_atomic(out / "report.md", doc.markdown())
    write_text_atomic(out / "report.html", doc.html())
    summary = {
        "profile": profile,
        "seeds": seeds,
        "headline": headline,
        "benchmark": glance,
        "per_class": classes,
        "study": study,
        "files": [
            "report.md",
            "report.html",
            *sorted(p.relative_to(out).as_posix() for p in (out / "plots").glob("*.png")),
        ],
    }
    write_json_atomic(out / "report.json", summary)
    logger.info("report written to %s", out / "report.html")
    return summary
