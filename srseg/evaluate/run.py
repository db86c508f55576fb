"""The ``evaluate`` stage: score several SR methods on the validation images, image by image.

For every image: LR = MATLAB bicubic downscale of the modcropped HR (or the precomputed LR of
``lr_root``); each method super-resolves it; we measure ``psnr_y``/``ssim_y``/``psnr_rgb``
(:mod:`srseg.metrics`, border = scale), LPIPS and NIQE when their weights/parameters are
available, per-class sums on the HR label map, and the segmentation confusion matrix of
``seg_model``. Only sums and per-image numbers are kept, so memory does not grow with image size.

Afterwards: bootstrap CIs over images, paired differences between methods, per-class tables, plots,
an HTML gallery of crops where semantics helped or hurt most, and optional MLflow logging.

Input modes: ``hr_root`` with a ``manifest.json`` (``srseg download`` layout: labels available,
``split`` selects the split; ``exclude_ids`` drops images, e.g. the validation images training
used to choose its checkpoints, so only the report part is scored: :mod:`srseg.data.holdout`)
or a plain folder of images (e.g. Set5 ``HR/``: no labels, so no per-class analysis or
segmentation; ``split`` is ignored; ``lr_root`` may hold ``<name>.png`` or ``<name>x<scale>.png``).

Outputs in ``output_dir`` (see :func:`evaluate` for metrics.json's schema)::

    metrics.json  per_image.csv  per_class.csv  per_class.md  summary.md  gallery.html  gallery/*.png
    plots/per_class_gain.csv  plots/per_class_gain.png  plots/train_<dir>_<csv>.png
    mlflow_run.json  the MLflow run it logged to (when it logged one)
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from srseg.degrade.bicubic import bicubic_downscale, modcrop
from srseg.errors import SrsegError
from srseg.evaluate import RUN_RECORD, report
from srseg.evaluate.methods import Method, load_method, resolve_device, to_tensor, to_uint8
from srseg.evaluate.perclass import PerClassAccumulator, crop, image_class_stats, pooled_psnr, seed_gain_rows
from srseg.evaluate.stats import paired_difference, seed_summary, summarize
from srseg.fileio import write_json_atomic, write_text_atomic
from srseg.imageio import IMAGE_EXTENSIONS, list_images, load_rgb, save_png_atomic
from srseg.metrics import image_metrics, rgb_to_y

logger = logging.getLogger(__name__)

DEFAULT_COMPARE: tuple[str, str] = ("multitask", "sr_only")
BASE_METRICS: tuple[str, ...] = ("psnr_y", "ssim_y", "psnr_rgb")
HIGHER_IS_BETTER: dict[str, bool] = {"psnr_y": True, "ssim_y": True, "psnr_rgb": True, "lpips": False, "niqe": False}
LPIPS_UNAVAILABLE = "unavailable: no weights"
NIQE_UNAVAILABLE = "unavailable: no parameter file"
RESERVED_NAMES = frozenset({"diff", "meta", "per_class", "seg", "seeds"})


class EvaluateError(SrsegError, ValueError):
    """Bad evaluation arguments or inputs; the message names the value or file."""


@dataclass
class _Image:
    id: str
    hr: np.ndarray  # (H, W, 3) uint8, modcropped
    lr: np.ndarray  # (H/s, W/s, 3) uint8
    label: np.ndarray | None  # (H, W) uint8 training ids, 255 = ignore


def _to_u8(t: torch.Tensor) -> np.ndarray:
    """Dataset float (3, H, W) in [0, 1] (made by /255 from uint8) back to exact (H, W, 3) uint8."""
    return t.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    return bicubic_downscale(torch.from_numpy(hr).permute(2, 0, 1), scale).permute(1, 2, 0).numpy()


class _Source:
    """Random access to the evaluation images in either input mode."""

    def __init__(
        self,
        hr_root: Path,
        split: str,
        scale: int,
        class_map: str,
        lr_root: Path | None,
        max_images: int | None,
        exclude_ids: Collection[int] = (),
    ) -> None:
        self.scale = scale
        self.lr_root = lr_root
        self.labelled = (hr_root / "manifest.json").is_file()
        self.excluded: list[int] = []
        if self.labelled:
            from srseg.data.dataset import FullImageDataset

            self.dataset = FullImageDataset(hr_root, split, scale, class_map, lr_root=lr_root)
            self.class_names: tuple[str, ...] = self.dataset.class_map.names
            ids = [sample.id for sample in self.dataset.source.samples]
            drop = {int(i) for i in exclude_ids}
            self.positions = [i for i, image_id in enumerate(ids) if image_id not in drop]
            self.excluded = [image_id for image_id in ids if image_id in drop]
            count = len(self.positions)
        else:
            if not hr_root.is_dir():
                raise EvaluateError(f"hr_root {hr_root}: not a dataset root (no manifest.json) nor an image folder")
            self.files = list_images(hr_root)
            self.root = hr_root
            self.class_names = ()
            self.lr_files = self._pair_lr(lr_root) if lr_root is not None else None
            count = len(self.files)
        if count == 0:
            raise EvaluateError(f"hr_root {hr_root}: no images" + (f" in split {split!r}" if self.labelled else ""))
        self.count = count if max_images is None else min(count, max_images)

    def _pair_lr(self, lr_root: Path) -> dict[str, str]:
        found = list_images(lr_root)
        by_key: dict[str, str] = {}
        for rel in found:
            stem = str(Path(rel).with_suffix(""))
            by_key.setdefault(stem, rel)
            by_key.setdefault(re.sub(rf"[_-]?x{self.scale}$", "", stem, flags=re.IGNORECASE), rel)
        pairs: dict[str, str] = {}
        for rel in self.files:
            stem = str(Path(rel).with_suffix(""))
            if stem not in by_key:
                raise EvaluateError(
                    f"lr_root {lr_root}: no LR image for {self.root / rel} (looked for {stem}[x{self.scale}] with "
                    f"{sorted(IMAGE_EXTENSIONS)})"
                )
            pairs[rel] = by_key[stem]
        return pairs

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> _Image:
        if self.labelled:
            item = self.dataset[self.positions[index]]
            hr = _to_u8(item["hr"])
            lr = _to_u8(item["lr"]) if "lr" in item else _downscale(hr, self.scale)
            label = item["label"].numpy().astype(np.uint8)
            return _Image(f"{int(item['id']):012d}", hr, lr, label)
        rel = self.files[index]
        hr = np.ascontiguousarray(modcrop(load_rgb(self.root / rel), self.scale))
        if self.lr_files is not None:
            assert self.lr_root is not None
            lr_path = self.lr_root / self.lr_files[rel]
            lr = load_rgb(lr_path)
            expected = (hr.shape[0] // self.scale, hr.shape[1] // self.scale)
            if lr.shape[:2] != expected:
                raise EvaluateError(
                    f"{lr_path}: LR is {lr.shape[1]}x{lr.shape[0]}, expected {expected[1]}x{expected[0]} for "
                    f"{self.root / rel}"
                )
        else:
            lr = _downscale(hr, self.scale)
        return _Image(str(Path(rel).with_suffix("")), hr, lr, None)

    def __iter__(self) -> Iterator[_Image]:
        for index in range(self.count):
            yield self[index]


def _check_args(
    methods: dict[str, str],
    scale: int,
    seg_model: str | None,
    bootstrap: int,
    gallery_crops: int,
    crop_size: int,
    max_images: int | None,
) -> None:
    if not isinstance(methods, dict) or not methods:
        raise EvaluateError(f"methods must be a non-empty {{name: model string}} dict, got {methods!r}")
    for name, spec in methods.items():
        if not isinstance(name, str) or not name.strip() or name in RESERVED_NAMES:
            raise EvaluateError(f"method name {name!r} is empty or reserved ({sorted(RESERVED_NAMES)})")
        if not isinstance(spec, (str, Path)) or not str(spec).strip():
            raise EvaluateError(f"method {name!r}: model string must be a non-empty string, got {spec!r}")
    if not isinstance(scale, int) or scale < 2:
        raise EvaluateError(f"scale must be an integer >= 2, got {scale!r}")
    if seg_model is not None and seg_model not in methods:
        raise EvaluateError(f"seg_model {seg_model!r} is not one of the methods {sorted(methods)}")
    if not isinstance(bootstrap, int) or bootstrap < 0:
        raise EvaluateError(f"bootstrap must be an integer >= 0, got {bootstrap!r}")
    if not isinstance(gallery_crops, int) or gallery_crops < 0:
        raise EvaluateError(f"gallery_crops must be an integer >= 0, got {gallery_crops!r}")
    if not isinstance(crop_size, int) or crop_size < scale:
        raise EvaluateError(f"crop_size must be an integer >= scale {scale}, got {crop_size!r}")
    if max_images is not None and (not isinstance(max_images, int) or max_images < 1):
        raise EvaluateError(f"max_images must be None or an integer >= 1, got {max_images!r}")


def _resolve_compare(compare: tuple[str, str] | None, methods: dict[str, str]) -> tuple[str, str] | None:
    if compare is None:
        return None
    a, b = compare
    missing = [m for m in (a, b) if m not in methods]
    if not missing and a != b:
        return (a, b)
    if tuple(compare) == DEFAULT_COMPARE:
        logger.info("no %r/%r methods: per-class gains and the gallery comparison are skipped", a, b)
        return None
    raise EvaluateError(
        f"compare {tuple(compare)!r}: names {missing or [a]} must be two different methods of {sorted(methods)}"
    )


def _load_lpips(weights: str, net: str, device: torch.device) -> tuple[Any, str | None]:
    """(LPIPS module or None, reason it is unavailable)."""
    from srseg.evaluate.lpips import load_lpips
    from srseg.models.vgg import MissingWeightsError

    try:
        return load_lpips(weights, net).to(device), None
    except MissingWeightsError as exc:
        logger.warning("LPIPS not computed (%s): %s", LPIPS_UNAVAILABLE, exc)
        return None, str(exc)


def _lpips_description(model: Any, reason: str | None) -> str:
    if model is None:
        return f"{LPIPS_UNAVAILABLE} ({reason})"
    if model.random_weights:
        return "random backbone and uniform linear weights (lpips_weights='none'): values are not comparable"
    return f"weights {model.weights_source}"


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, non-finite floats to None (as the train stage does)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _diff_pairs(methods: Sequence[str], compare: tuple[str, str] | None) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = [compare] if compare is not None else []
    if "bicubic" in methods:
        pairs += [(m, "bicubic") for m in methods if m != "bicubic" and (m, "bicubic") not in pairs]
    return pairs


def _seg_scores(confusion: np.ndarray) -> dict[str, float]:
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    present = union > 0
    total = confusion.sum()
    return {
        "miou": float(np.mean(tp[present] / union[present])) if present.any() else math.nan,
        "pixel_acc": float(tp.sum() / total) if total else math.nan,
        "seg_classes_present": int(present.sum()),
    }


def _crop_window(mask: np.ndarray | None, height: int, width: int, size: int, scale: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop of about ``size`` px, on the LR grid, covering most of ``mask``."""
    ch = max(scale, min(size, height) - min(size, height) % scale)
    cw = max(scale, min(size, width) - min(size, width) % scale)
    if mask is None or not mask.any():
        cy, cx = height // 2, width // 2
    else:
        from scipy.ndimage import uniform_filter

        density = uniform_filter(mask.astype(np.float32), size=(ch, cw), mode="constant")
        cy, cx = np.unravel_index(int(np.argmax(density)), density.shape)
    top = int(np.clip(cy - ch // 2, 0, height - ch)) // scale * scale
    left = int(np.clip(cx - cw // 2, 0, width - cw)) // scale * scale
    return top, left, ch, cw


def _gallery(
    output_dir: Path,
    source: _Source,
    loaded: dict[str, Method],
    bicubic: Method,
    picks: list[tuple[str, str, int, int | None, str]],
    scale: int,
    crop_size: int,
    intro: str,
    device: torch.device,
) -> Path:
    """Re-run the methods on the chosen images and write crops + gallery.html."""
    folder = output_dir / "gallery"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):
        stale.unlink()
    columns = [("LR (nearest)", None), ("bicubic", bicubic)]
    columns += [(name, m) for name, m in loaded.items() if m.kind != "bicubic"]
    rows: list[report.GalleryRow] = []
    for row_index, (title, detail, image_index, class_id, key) in enumerate(picks):
        image = source[image_index]
        height, width = image.hr.shape[:2]
        mask = image.label == class_id if (image.label is not None and class_id is not None) else None
        top, left, ch, cw = _crop_window(mask, height, width, crop_size, scale)
        region = (slice(top, top + ch), slice(left, left + cw))
        lr_t = to_tensor(image.lr, device)
        row = report.GalleryRow(title, f"{detail}; image {image.id}; crop {cw}x{ch} at ({left}, {top})")
        crop_mask = mask[region] if mask is not None else None
        tiles: list[tuple[str, np.ndarray]] = []
        for label, method in columns:
            if method is None:
                lr_crop = image.lr[top // scale : (top + ch) // scale, left // scale : (left + cw) // scale]
                tiles.append((label, np.repeat(np.repeat(lr_crop, scale, axis=0), scale, axis=1)))
            else:
                tiles.append((label, to_uint8(method.super_resolve(lr_t))[region]))
        tiles.append(("HR", image.hr[region]))
        y_ref = rgb_to_y(image.hr[region])
        for col, (label, pixels) in enumerate(tiles):
            caption = label
            if label not in ("HR", "LR (nearest)"):
                err = (rgb_to_y(np.ascontiguousarray(pixels)) - y_ref) ** 2
                sel = crop_mask if crop_mask is not None and crop_mask.any() else np.ones_like(err, dtype=bool)
                value = float(pooled_psnr(err[sel].sum(), sel.sum()))
                caption = f"{label}: PSNR_Y {report.format_value(value, 2)} dB" + (
                    " (class pixels)" if crop_mask is not None else ""
                )
            name = f"{row_index:02d}_{report.slug(key)[:40]}_{col}_{report.slug(label)[:30]}.png"
            save_png_atomic(folder / name, np.ascontiguousarray(pixels))
            row.tiles.append(report.GalleryTile(caption, f"gallery/{name}"))
        rows.append(row)
    return report.write_gallery(output_dir / "gallery.html", "srseg evaluation gallery", intro, rows)


def _min_class_pixels(crop_size: int) -> int:
    """Classes smaller than a sixteenth of a gallery crop are too small to show or rank."""
    return max(1, crop_size * crop_size // 16)


def _gallery_picks(
    class_rows: list[dict[str, Any]],
    acc: PerClassAccumulator | None,
    per_image_diff: np.ndarray | None,
    ids: list[str],
    compare: tuple[str, str] | None,
    n: int,
    crop_size: int,
) -> list[tuple[str, str, int, int | None, str]]:
    """(title, detail, image index, class id, file key) for the gallery rows."""
    if n == 0:
        return []
    picks: list[tuple[str, str, int, int | None, str]] = []
    if acc is not None and compare is not None and class_rows:
        a, b = compare
        min_pixels = _min_class_pixels(crop_size)
        finite = [r for r in class_rows if math.isfinite(r.get("psnr_y_gain", math.nan))]
        usable = [r for r in finite if r["pixels"] >= min_pixels] or finite
        usable.sort(key=lambda r: r["psnr_y_gain"], reverse=True)
        n_top = (n + 1) // 2
        chosen = usable[:n_top] + [r for r in usable[::-1][: n - n_top] if r not in usable[:n_top]]
        for r in chosen:
            gains = acc.image_gains(int(r["class_id"]), a, b)
            counts = acc.pixel_counts_by_image(int(r["class_id"]))
            image_index = max(counts, key=lambda i: counts[i])
            title = f"{r['class']}: {a} - {b} = {r['psnr_y_gain']:+.3f} dB PSNR_Y (class pixels, all images)"
            detail = (
                f"{int(r['pixels'])} px in {r['images']} images; this image {gains.get(image_index, math.nan):+.3f} dB"
            )
            picks.append((title, detail, image_index, int(r["class_id"]), str(r["class"])))
        return picks
    if per_image_diff is not None and compare is not None:
        order = [int(i) for i in np.argsort(-np.nan_to_num(per_image_diff, nan=-np.inf))]
        n_top = (n + 1) // 2
        indices = order[:n_top] + [i for i in order[::-1][: n - n_top] if i not in order[:n_top]]
        for i in indices:
            picks.append(
                (
                    f"image {ids[i]}: {compare[0]} - {compare[1]} = {per_image_diff[i]:+.3f} dB PSNR_Y",
                    "centre crop",
                    i,
                    None,
                    ids[i],
                )
            )
        return picks
    return [(f"image {ids[i]}", "centre crop", i, None, ids[i]) for i in range(min(n, len(ids)))]


def _gain_key(row: dict[str, Any]) -> float:
    """Sort key: largest PSNR_Y gain first, classes without a finite gain last."""
    gain = row.get("psnr_y_gain", math.nan)
    return -gain if isinstance(gain, float) and math.isfinite(gain) else math.inf


def _summary_markdown(
    result: dict[str, Any],
    methods: Sequence[str],
    metric_names: Sequence[str],
    class_rows: list[dict[str, Any]],
    compare: tuple[str, str] | None,
    files: Sequence[str],
) -> str:
    """``summary.md``: the settings, then one section per table (methods, differences, seeds, classes)."""
    seeds = result.get("seeds")
    lines = _summary_header(result["meta"])
    lines.append(report.markdown_table(*_methods_table(result, methods, metric_names)))
    if result["diff"]:
        lines += _diff_section(result["diff"], metric_names)
    if seeds:
        lines += _seeds_section(seeds, metric_names)
    if class_rows and compare is not None:
        lines += _class_section(class_rows, result["per_class"].get("pair") or compare, bool(seeds))
    lines += ["## Files", ""] + [f"- [{name}]({name})" for name in files]
    return "\n".join(lines) + "\n"


def _summary_header(meta: dict[str, Any]) -> list[str]:
    return [
        "# Evaluation summary",
        "",
        f"- images: {meta['images']} ({meta['input']}"
        + (f", split `{meta['split']}`, class map `{meta['class_map']}`" if meta["split"] else "")
        + f"), scale x{meta['scale']}, border {meta['crop_border']} px",
        *(
            [
                f"- report part only: the {len(meta['excluded_ids'])} selection images training chose its weights "
                f"on are excluded ({', '.join(str(i) for i in meta['excluded_ids'])})"
            ]
            if meta.get("excluded_ids")
            else []
        ),
        f"- LPIPS: {meta['lpips']}",
        f"- NIQE: {meta['niqe']}",
        f"- CIs: {int(meta['confidence'] * 100)}%; means and paired differences: Student t over images; per-class "
        f"gains: BCa bootstrap over images ({meta['bootstrap']} resamples, seed {meta['seed']}); fewer than 3 images: "
        "n/a",
        "",
        "## Methods",
        "",
    ]


def _methods_table(
    result: dict[str, Any], methods: Sequence[str], metric_names: Sequence[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows and columns of the methods table: each metric with its CI, and mIoU / pixel accuracy if measured."""
    meta = result["meta"]
    rows = []
    for m in methods:
        row: dict[str, Any] = {"method": m, "model": meta["methods"][m]}
        for k in metric_names:
            v = result[m].get(k)
            ci = result[m].get(f"{k}_ci")
            row[k] = v if not isinstance(v, (int, float)) or ci is None else f"{report.format_value(v)} {_ci_text(ci)}"
        for k in ("miou", "pixel_acc"):
            if k in result[m]:
                row[k] = result[m][k]
        rows.append(row)
    cols = ["method", "model", *metric_names] + [k for k in ("miou", "pixel_acc") if any(k in r for r in rows)]
    return rows, cols


def _diff_section(diff: dict[str, Any], metric_names: Sequence[str]) -> list[str]:
    lines = [
        "## Paired differences (a - b, per image)",
        "",
        "Worst image: the smallest a - b (the largest for LPIPS/NIQE, where lower is better).",
        "",
    ]
    drows = []
    for pair, d in diff.items():
        for k in metric_names:
            if k in d:
                drows.append(
                    {
                        "pair": pair,
                        "metric": k,
                        "mean": d[k],
                        "ci": _ci_text(d.get(f"{k}_ci")),
                        "improved": d.get(f"{k}_improved"),
                        "worst": d.get(f"{k}_worst"),
                    }
                )
    lines.append(
        report.markdown_table(
            drows,
            ["pair", "metric", "mean", "ci", "improved", "worst"],
            ["pair", "metric", "mean diff", "95% CI", "fraction of images improved", "worst image"],
        )
    )
    return lines


def _seeds_section(seeds: dict[str, Any], metric_names: Sequence[str]) -> list[str]:
    lines = [
        "## Over training seeds",
        "",
        "Each method's models over the seeds of `train.seeds`; differences pair the seeds (the same seed trains "
        "both arms). Mean over seeds of the per-seed means over images; the CI resamples seeds, then images "
        "(two-way bootstrap), or covers images only when there is one seed (column *CI covers*).",
        "",
    ]
    srows = []
    for kind, table in (("method", seeds["methods"]), ("difference", seeds["diff"])):
        for name, entry in table.items():
            for k in metric_names:
                if isinstance(entry.get(k), (int, float)):
                    srows.append(
                        {
                            "what": f"{kind} {name}",
                            "metric": k,
                            "mean": entry[k],
                            "ci": _ci_text(entry.get(f"{k}_ci")),
                            "per_seed": " ".join(report.format_value(v) for v in entry.get(f"{k}_per_seed", [])),
                            "seeds": entry.get("seeds"),
                            "images": entry.get("images"),
                            "covers": entry.get("ci_covers"),
                        }
                    )
    lines.append(
        report.markdown_table(
            srows,
            ["what", "metric", "mean", "ci", "per_seed", "seeds", "images", "covers"],
            ["", "metric", "mean", "95% CI", "per seed", "seeds", "images", "CI covers"],
        )
    )
    return lines


def _class_section(class_rows: list[dict[str, Any]], pair: Sequence[str], seeded: bool) -> list[str]:
    ranked = sorted(
        (r for r in class_rows if math.isfinite(r.get("psnr_y_gain", math.nan))),
        key=lambda r: r["psnr_y_gain"],
        reverse=True,
    )
    cols = ["class", "pixels", "images", "psnr_y_gain", "psnr_y_gain_ci_lo", "psnr_y_gain_ci_hi"]
    cols += ["seeds", "ci_covers"] if seeded else ["ssim_y_gain"]
    a, b = (report.md_escape(m) for m in pair)
    lines = [f"## Per-class PSNR_Y gain of {a} over {b}: top 10", "", report.markdown_table(ranked[:10], cols)]
    lines += ["## Bottom 10", "", report.markdown_table(ranked[::-1][:10], cols)]
    return lines


def _ci_text(ci: Sequence[float | None] | None) -> str:
    """``[lo, hi]``, or ``n/a`` when there is no interval (fewer than 3 images, or not computed)."""
    if not ci or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in ci):
        return "n/a"
    return f"[{report.format_value(ci[0])}, {report.format_value(ci[1])}]"


def _mlflow_log(
    uri: str,
    run_id: str | None,
    experiment: str,
    result: dict[str, Any],
    output_dir: Path,
    extra_tags: Mapping[str, str] | None = None,
) -> str:
    """Log flattened numeric metrics, settings as tags and the output folder into ``run_id`` (or a
    new ``evaluate`` run, closed FAILED when logging fails); returns the run id."""
    from srseg import tracking

    meta = result["meta"]
    tags = {f"evaluate.method.{k}": str(v)[:5000] for k, v in meta["methods"].items()}
    tags.update(
        {
            f"evaluate.{k}": str(meta[k])[:5000]
            for k in ("split", "scale", "class_map", "images", "lpips", "niqe", "bootstrap", "seed")
        }
    )
    tags.update({k: str(v)[:5000] for k, v in (extra_tags or {}).items()})
    client = tracking.make_client(uri)
    with tracking.standalone_run(client, experiment, "evaluate", run_id=run_id, tags={"stage": "evaluate"}) as run:
        run_id = str(run.info.run_id)
        tracking.log_metrics(client, run_id, tracking.flatten_metrics({k: v for k, v in result.items() if k != "meta"}))
        tracking.set_tags(client, run_id, {tracking.metric_key(key): value for key, value in tags.items()})
        tracking.log_files(client, run_id, [output_dir], artifact_path="evaluate")
    return run_id


@dataclass
class _Scores:
    """Everything the per-image pass keeps: numbers, not images."""

    ids: list[str]
    values: dict[str, dict[str, list[float]]]  # method -> metric -> per-image values
    rows: list[dict[str, Any]]  # per_image.csv rows
    classes: PerClassAccumulator | None
    confusion: np.ndarray | None


def _score_images(
    source: _Source,
    loaded: dict[str, Method],
    seg_model: str | None,
    lpips_model: Any,
    niqe_model: Any,
    measured: list[str],
    border: int,
    device: torch.device,
) -> _Scores:
    """One pass over the images: SR by every method, metrics, class sums, segmentation confusion."""
    from srseg.evaluate.niqe import niqe

    names = list(loaded)
    num_classes = len(source.class_names)
    scores = _Scores(
        ids=[],
        values={m: {k: [] for k in measured} for m in names},
        rows=[],
        classes=PerClassAccumulator(source.class_names, names) if source.labelled else None,
        confusion=np.zeros((num_classes, num_classes), dtype=np.int64) if seg_model is not None else None,
    )
    logger.info("evaluating %d image(s) x%d with %s on %s", len(source), source.scale, ", ".join(names), device)
    for index, image in enumerate(source):
        scores.ids.append(image.id)
        lr_t = to_tensor(image.lr, device)
        hr_cropped = crop(image.hr, border)
        hr_embedding = None
        if lpips_model is not None:
            with torch.inference_mode():
                hr_embedding = lpips_model.embed(to_tensor(hr_cropped, device))
        class_stats = {}
        for name, method in loaded.items():
            if name == seg_model:
                sr_t, logits = method.super_resolve_and_segment(lr_t)
                assert image.label is not None and scores.confusion is not None
                pred = logits[0].argmax(dim=0).cpu().numpy()
                valid = image.label != 255
                pairs = image.label[valid].astype(np.int64) * num_classes + pred[valid]
                scores.confusion += np.bincount(pairs, minlength=num_classes * num_classes).reshape(
                    num_classes, num_classes
                )
            else:
                sr_t = method.super_resolve(lr_t)
            sr = to_uint8(sr_t)
            if sr.shape != image.hr.shape:
                raise EvaluateError(
                    f"method {name!r} made {sr.shape[1]}x{sr.shape[0]} from image {image.id}, HR is "
                    f"{image.hr.shape[1]}x{image.hr.shape[0]}"
                )
            row: dict[str, Any] = {"image": image.id, "method": name, **image_metrics(sr, image.hr, border)}
            lpips_map = None
            if lpips_model is not None:
                with torch.inference_mode():
                    embedding = lpips_model.embed(to_tensor(crop(sr, border), device))
                    dist, spatial = lpips_model.compare(embedding, hr_embedding, hr_cropped.shape[:2])
                row["lpips"] = float(dist[0])
                lpips_map = spatial[0, 0].cpu().numpy()
            if niqe_model is not None:
                row["niqe"] = niqe(sr, niqe_model, border)
            for k in measured:
                scores.values[name][k].append(float(row[k]))
            scores.rows.append(row)
            if scores.classes is not None and image.label is not None:
                class_stats[name] = image_class_stats(sr, image.hr, image.label, num_classes, border, lpips_map)
        if scores.classes is not None and class_stats:
            scores.classes.add(index, class_stats)
        if (index + 1) % 50 == 0 or index + 1 == len(source):
            logger.info("evaluated %d/%d images", index + 1, len(source))
    return scores


def _summaries(
    scores: _Scores, measured: list[str], compare: tuple[str, str] | None, bootstrap: int, seed: int, confidence: float
) -> dict[str, Any]:
    """Per-method means with CIs and the paired differences (metrics.json minus meta/per_class)."""
    result: dict[str, Any] = {}
    names = list(scores.values)
    for name in names:
        out: dict[str, Any] = {"images": len(scores.ids)}
        for k in measured:
            s = summarize(scores.values[name][k], bootstrap, seed, confidence)
            out[k], out[f"{k}_ci"] = s.mean, list(s.ci)
        result[name] = out
    result["diff"] = {}
    for a, b in _diff_pairs(names, compare):
        d: dict[str, Any] = {}
        for k in measured:
            pd = paired_difference(
                scores.values[a][k], scores.values[b][k], bootstrap, seed, confidence, HIGHER_IS_BETTER[k]
            )
            d[k], d[f"{k}_ci"], d[f"{k}_improved"], d[f"{k}_worst"] = pd.mean, list(pd.ci), pd.frac_improved, pd.worst
        d["images"] = len(scores.ids)
        result["diff"][f"{a}-{b}"] = d
    return result


def _check_seed_groups(groups: Mapping[str, Sequence[str]], methods: Mapping[str, str]) -> dict[str, list[str]]:
    """``{method: [model names in seed order]}`` covering every evaluated model exactly once."""
    listed = [m for models in groups.values() for m in models]
    if sorted(listed) != sorted(methods) or any(not models for models in groups.values()):
        raise EvaluateError(f"seed_groups {dict(groups)} must list every method of {sorted(methods)} exactly once")
    return {str(k): list(v) for k, v in groups.items()}


def _group_of(model: str, groups: Mapping[str, Sequence[str]]) -> str:
    return next(name for name, models in groups.items() if model in models)


def _seed_pairs(groups: Mapping[str, Sequence[str]], compare: tuple[str, str] | None) -> list[tuple[str, str]]:
    """Method pairs reported over seeds: the comparison (as methods) and every method - bicubic."""
    pairs = [(_group_of(compare[0], groups), _group_of(compare[1], groups))] if compare is not None else []
    if "bicubic" in groups:
        pairs += [(m, "bicubic") for m in groups if m != "bicubic" and (m, "bicubic") not in pairs]
    return pairs


def _paired_models(a: Sequence[str], b: Sequence[str]) -> list[tuple[str, str]]:
    """Models of two methods paired seed by seed; a one-model method pairs with every seed."""
    n = max(len(a), len(b))
    if min(len(a), len(b)) not in (1, n):
        raise EvaluateError(f"methods with {len(a)} and {len(b)} seeds cannot be paired: {list(a)} vs {list(b)}")
    return list(zip(list(a) * (n if len(a) == 1 else 1), list(b) * (n if len(b) == 1 else 1)))


def _seed_entry(
    rows: dict[str, list[list[float]]], models: list[str], bootstrap: int, seed: int, confidence: float
) -> dict[str, Any]:
    """``rows``: metric -> one list of per-image values per seed."""
    found: dict[str, Any] = {"models": models}
    for metric, values in rows.items():
        summary = seed_summary(values, bootstrap, seed, confidence)
        found[metric], found[f"{metric}_ci"], found[f"{metric}_per_seed"] = (
            summary.mean,
            list(summary.ci),
            list(summary.per_seed),
        )
        found.update(seeds=summary.n_seeds, images=summary.n_images, ci_covers=summary.covers)
    return found


def _seed_summaries(
    scores: _Scores,
    measured: list[str],
    groups: Mapping[str, Sequence[str]],
    compare: tuple[str, str] | None,
    bootstrap: int,
    seed: int,
    confidence: float,
) -> dict[str, Any]:
    """metrics.json's ``seeds`` section: per method and per method pair, the mean over seeds of the
    per-seed means, with the CI over seeds and images (:func:`srseg.evaluate.stats.seed_summary`)."""
    values = scores.values
    out: dict[str, Any] = {"methods": {}, "diff": {}}
    for name, models in groups.items():
        rows = {k: [values[m][k] for m in models] for k in measured}
        out["methods"][name] = _seed_entry(rows, list(models), bootstrap, seed, confidence)
    for a, b in _seed_pairs(groups, compare):
        pairs = _paired_models(groups[a], groups[b])
        rows = {k: [list(np.asarray(values[x][k]) - np.asarray(values[y][k])) for x, y in pairs] for k in measured}
        out["diff"][f"{a}-{b}"] = _seed_entry(rows, [f"{x}-{y}" for x, y in pairs], bootstrap, seed, confidence)
    return out


def _write_class_outputs(
    output_dir: Path,
    acc: PerClassAccumulator,
    names: list[str],
    compare: tuple[str, str] | None,
    class_map: str,
    min_pixels: int,
    bootstrap: int,
    seed: int,
    confidence: float,
    groups: Mapping[str, Sequence[str]] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """per_class.csv/.md and, with a comparison, plots/per_class_gain.csv/.png; (rows, files written).

    With ``groups`` (models per method over seeds) the gains compare the two methods over all
    their seeds (:func:`srseg.evaluate.perclass.seed_gain_rows`); otherwise the two models.
    """
    rows = acc.table(compare, bootstrap, seed, confidence)
    present = set(rows[0]) if rows else set()
    metric_cols = [f"{m}.{k}" for m in names for k in ("psnr_y", "ssim_y", "lpips") if f"{m}.{k}" in present]
    gain_cols = [
        c
        for c in ("psnr_y_gain", "psnr_y_gain_ci_lo", "psnr_y_gain_ci_hi", "ssim_y_gain", "lpips_gain")
        if c in present
    ]
    columns = ["class_id", "class", "pixels", "images", *metric_cols, *gain_cols]
    report.write_csv(output_dir / "per_class.csv", rows, columns)
    title = f"# Per-class metrics ({class_map}, {len(rows)} classes seen, pooled over pixels)\n\n"
    if compare is not None:
        title += (
            f"Gains are {report.md_escape(compare[0])} minus {report.md_escape(compare[1])}; sorted by PSNR_Y gain.\n\n"
        )
    ranked = sorted(rows, key=_gain_key) if compare is not None else rows
    write_text_atomic(output_dir / "per_class.md", title + report.markdown_table(ranked, columns))
    files = ["per_class.csv", "per_class.md"]
    if compare is not None:
        gain_rows: list[dict[str, Any]] = rows
        pair = compare
        if groups is not None:
            pair = (_group_of(compare[0], groups), _group_of(compare[1], groups))
            gain_rows = seed_gain_rows(acc, groups[pair[0]], groups[pair[1]], bootstrap, seed, confidence)
            gain_cols = [
                "seeds",
                "psnr_y_gain",
                "psnr_y_gain_ci_lo",
                "psnr_y_gain_ci_hi",
                "ci_covers",
                "psnr_y_gain_per_seed",
            ]
        report.write_csv(
            output_dir / "plots" / "per_class_gain.csv", gain_rows, ["class", "pixels", "images", *gain_cols]
        )
        files.append("plots/per_class_gain.csv")
        title = f"PSNR_Y gain per class: {pair[0]} - {pair[1]} (dB)"
        if report.plot_class_gains(
            output_dir / "plots" / "per_class_gain.png", gain_rows, "psnr_y_gain", title, min_pixels=min_pixels
        ):
            files.append("plots/per_class_gain.png")
        if groups is not None:
            return gain_rows, files
    return rows, files


@dataclass(frozen=True)
class EvaluationSettings:
    """How an evaluation scores: the data, the metrics and their statistics, the gallery.

    Built from the ``evaluate`` params section by :func:`srseg.stages.evaluate.evaluation_settings`.
    ``lpips_weights``: ``auto`` | ``none`` | a directory (see :mod:`srseg.evaluate.lpips`); missing
    weights make LPIPS the string ``"unavailable: no weights"`` (reason logged). ``niqe_params``:
    an ``.npz`` pristine model; None reports ``"unavailable: no parameter file"``; a given path
    that does not exist is an error. ``exclude_ids`` leaves those images out (the selection images).
    """

    split: str
    scale: int
    class_map: str
    lr_root: Path | None = None
    seg_model: str | None = None
    lpips_weights: str = "auto"
    lpips_net: str = "alex"
    niqe_params: Path | None = None
    bootstrap: int = 1000
    seed: int = 0
    confidence: float = 0.95
    gallery_crops: int = 4
    crop_size: int = 96
    device: str = "auto"
    max_images: int | None = None
    compare: tuple[str, str] | None = DEFAULT_COMPARE
    exclude_ids: Collection[int] = ()


@dataclass(frozen=True)
class EvaluationTracking:
    """Where MLflow is: ``uri`` resolves ``models:/`` methods and, with ``log``, receives the
    results as a run (``run_id``, else a new ``evaluate`` run in ``experiment``) tagged ``tags``
    (lineage: the training runs of the methods, the KFP run). ``log=False``: the promotion gate's
    own evaluations, which resolve models but log no run."""

    uri: str | None = None
    run_id: str | None = None
    experiment: str = "srseg"
    tags: Mapping[str, str] = field(default_factory=dict)
    log: bool = True


NO_TRACKING = EvaluationTracking()


@dataclass
class _Measures:
    """The models and metric models an evaluation scores with."""

    source: _Source
    loaded: dict[str, Method]
    lpips_model: Any
    lpips_reason: str | None
    niqe_model: Any
    measured: list[str]
    device: torch.device


def evaluate(
    methods: dict[str, str],
    hr_root: Path,
    output_dir: Path,
    settings: EvaluationSettings,
    tracking: EvaluationTracking = NO_TRACKING,
    *,
    train_dirs: Sequence[Path] | None = None,
    seed_groups: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Evaluate ``methods`` ({name: model string}, see :mod:`srseg.evaluate.methods`) and write reports.

    Returns the content of ``metrics.json`` (plus ``meta.mlflow_run_id`` when logged)::

        {"<method>": {"psnr_y": float, "psnr_y_ci": [lo, hi], "ssim_y": ..., "ssim_y_ci": ...,
                      "psnr_rgb": ..., "psnr_rgb_ci": ...,
                      "lpips": float | "unavailable: no weights", "lpips_ci": [lo, hi] (if a float),
                      "lpips_random_weights": true (only with lpips_weights="none"),
                      "niqe": float | "unavailable: no parameter file", "niqe_ci": [lo, hi] (if a float),
                      "miou": float, "pixel_acc": float, "seg_classes_present": int (seg_model only),
                      "images": int},
         "diff": {"<a>-<b>": {"<metric>": mean of a - b, "<metric>_ci": [lo, hi],
                              "<metric>_improved": fraction of images where a is better,
                              "<metric>_worst": the worst image's a - b, "images": int}},
         "per_class": {"compare": "<a>-<b>" | null, "classes": int, "psnr_y_gain_positive": fraction},
         "seeds": {"methods": {"<method>": {"models": [...], "<metric>": mean over seeds, "<metric>_ci": [lo, hi],
                                            "<metric>_per_seed": [...], "seeds", "images", "ci_covers"}},
                   "diff": {"<a>-<b>": the same for the seed-paired differences}}  (only with seed_groups),
         "meta": {"images", "input", "split", "scale", "crop_border", "class_map", "methods",
                  "seg_model", "lpips", "lpips_net", "lpips_random_weights", "niqe", "bootstrap",
                  "seed", "confidence", "compare"}}

    Non-finite numbers (PSNR of identical images, an empty CI) are written as null. Differences
    are ``compare[0] - compare[1]`` and every non-bicubic method minus ``bicubic`` when present.
    ``settings`` says how to score (:class:`EvaluationSettings`), ``tracking`` where MLflow is
    (:class:`EvaluationTracking`; default: no MLflow). ``train_dirs``: training stage folders whose
    curves are plotted; ``seed_groups``: which models are seeds of one method.
    """
    started = time.perf_counter()
    methods = {str(k): str(v) for k, v in methods.items()} if isinstance(methods, dict) else methods
    s = settings
    _check_args(methods, s.scale, s.seg_model, s.bootstrap, s.gallery_crops, s.crop_size, s.max_images)
    if tracking.run_id is not None and tracking.uri is None:
        raise EvaluateError(f"mlflow_run_id {tracking.run_id!r} given without mlflow_uri")
    compare = _resolve_compare(s.compare, methods)
    groups = _check_seed_groups(seed_groups, methods) if seed_groups is not None else None
    output_dir = Path(output_dir)
    measures = _load_measures(methods, Path(hr_root), s, tracking.uri)
    m = measures
    scores = _score_images(m.source, m.loaded, s.seg_model, m.lpips_model, m.niqe_model, m.measured, s.scale, m.device)
    result = _score_summaries(scores, measures, s, compare, groups)
    output_dir.mkdir(parents=True, exist_ok=True)
    report.write_csv(output_dir / "per_image.csv", scores.rows, ["image", "method", *measures.measured])
    class_rows, files = _class_outputs(result, scores, output_dir, list(measures.loaded), s, compare, groups)
    for train_dir in train_dirs or []:
        files += [
            png.relative_to(output_dir).as_posix()
            for png in report.plot_training_curves(Path(train_dir), output_dir / "plots")
        ]
    if s.gallery_crops > 0:
        _write_gallery(output_dir, measures, scores, class_rows, s, compare)
        files.append("gallery.html")
    result["meta"] = _meta(methods, Path(hr_root), measures, s, compare, len(scores.ids))
    result = _clean(result)
    names = list(measures.loaded)
    summary = _summary_markdown(
        result, names, [*BASE_METRICS, "lpips", "niqe"], class_rows, compare, [*files, "summary.md"]
    )
    write_text_atomic(output_dir / "summary.md", summary)
    write_json_atomic(output_dir / "metrics.json", result)
    logger.info(
        "evaluation of %d images written to %s in %.1f s", len(scores.ids), output_dir, time.perf_counter() - started
    )
    _track(result, output_dir, tracking)
    return result


def _track(result: dict[str, Any], output_dir: Path, tracking: EvaluationTracking) -> None:
    """Log the evaluation to MLflow (when asked) and record the run in ``output_dir``."""
    (output_dir / RUN_RECORD).unlink(missing_ok=True)  # never point at an earlier evaluation's run
    if tracking.uri is not None and tracking.log:
        result["meta"]["mlflow_run_id"] = _mlflow_log(
            tracking.uri, tracking.run_id, tracking.experiment, result, output_dir, tracking.tags
        )
        # the run this evaluation logged to, for later stages that add to it (srseg report)
        write_json_atomic(output_dir / RUN_RECORD, {"run_id": result["meta"]["mlflow_run_id"]})


def _load_measures(
    methods: dict[str, str], hr_root: Path, s: EvaluationSettings, tracking_uri: str | None
) -> _Measures:
    """The images, the methods' models and the metric models (LPIPS, NIQE), checked against each other."""
    dev = resolve_device(s.device)
    source = _Source(hr_root, s.split, s.scale, s.class_map, s.lr_root, s.max_images, s.exclude_ids)
    if s.seg_model is not None and not source.labelled:
        raise EvaluateError(
            f"seg_model {s.seg_model!r} needs labels, but {hr_root} is an image folder without a manifest"
        )
    niqe_model = None
    if s.niqe_params is not None:
        from srseg.evaluate.niqe import load_niqe_params

        niqe_model = load_niqe_params(s.niqe_params)
    else:
        logger.info("NIQE not computed (%s): set niqe_params to a pristine model .npz", NIQE_UNAVAILABLE)
    loaded = {name: load_method(name, spec, s.scale, dev, tracking_uri=tracking_uri) for name, spec in methods.items()}
    if s.seg_model is not None:
        seg = loaded[s.seg_model]
        if seg.network is None or not seg.can_segment:
            raise EvaluateError(
                f"seg_model {s.seg_model!r} ({methods[s.seg_model]}) is not a generator weights file with a "
                "segmentation head"
            )
        if seg.network.num_classes != len(source.class_names):
            raise EvaluateError(
                f"seg_model {s.seg_model!r} predicts {seg.network.num_classes} classes, class map {s.class_map!r} has "
                f"{len(source.class_names)}"
            )
    lpips_model, lpips_reason = _load_lpips(s.lpips_weights, s.lpips_net, dev)
    measured = (
        list(BASE_METRICS)
        + (["lpips"] if lpips_model is not None else [])
        + (["niqe"] if niqe_model is not None else [])
    )
    return _Measures(source, loaded, lpips_model, lpips_reason, niqe_model, measured, dev)


def _score_summaries(
    scores: _Scores,
    measures: _Measures,
    s: EvaluationSettings,
    compare: tuple[str, str] | None,
    groups: dict[str, list[str]] | None,
) -> dict[str, Any]:
    """Per-method summaries, differences and seed summaries, with the metrics that were not measured named."""
    result = _summaries(scores, measures.measured, compare, s.bootstrap, s.seed, s.confidence)
    if groups is not None:
        result["seeds"] = _seed_summaries(scores, measures.measured, groups, compare, s.bootstrap, s.seed, s.confidence)
    lpips_random = bool(measures.lpips_model is not None and measures.lpips_model.random_weights)
    for name in measures.loaded:
        if measures.lpips_model is None:
            result[name]["lpips"] = LPIPS_UNAVAILABLE
        elif lpips_random:
            result[name]["lpips_random_weights"] = True
        if measures.niqe_model is None:
            result[name]["niqe"] = NIQE_UNAVAILABLE
    if scores.confusion is not None and s.seg_model is not None:
        result[s.seg_model].update(_seg_scores(scores.confusion))
    return result


def _class_outputs(
    result: dict[str, Any],
    scores: _Scores,
    output_dir: Path,
    names: list[str],
    s: EvaluationSettings,
    compare: tuple[str, str] | None,
    groups: dict[str, list[str]] | None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Write the per-class files and set ``result["per_class"]``; returns the class rows and the files written."""
    files = ["metrics.json", "per_image.csv"]
    class_rows: list[dict[str, Any]] = []
    if scores.classes is not None:
        class_rows, written = _write_class_outputs(
            output_dir,
            scores.classes,
            names,
            compare,
            s.class_map,
            _min_class_pixels(s.crop_size),
            s.bootstrap,
            s.seed,
            s.confidence,
            groups,
        )
        files += written
    positive = [r["psnr_y_gain"] > 0 for r in class_rows if math.isfinite(r.get("psnr_y_gain", math.nan))]
    class_pair = (
        compare if compare is None or groups is None else (_group_of(compare[0], groups), _group_of(compare[1], groups))
    )
    result["per_class"] = {
        "compare": f"{class_pair[0]}-{class_pair[1]}"
        if class_pair is not None and scores.classes is not None
        else None,
        "pair": list(class_pair) if class_pair is not None and scores.classes is not None else None,
        "classes": len(class_rows),
        "psnr_y_gain_positive": float(np.mean(positive)) if positive else None,
    }
    return class_rows, files


def _write_gallery(
    output_dir: Path,
    measures: _Measures,
    scores: _Scores,
    class_rows: list[dict[str, Any]],
    s: EvaluationSettings,
    compare: tuple[str, str] | None,
) -> None:
    """``gallery.html``: crops where ``compare[0]`` beats ``compare[1]`` most and least."""
    per_image_diff = None
    if compare is not None:
        per_image_diff = np.asarray(scores.values[compare[0]]["psnr_y"]) - np.asarray(
            scores.values[compare[1]]["psnr_y"]
        )
    picks = _gallery_picks(
        class_rows, scores.classes, per_image_diff, scores.ids, compare, s.gallery_crops, s.crop_size
    )
    loaded = measures.loaded
    bicubic = next((m for m in loaded.values() if m.kind == "bicubic"), None) or load_method(
        "bicubic", "bicubic", s.scale, measures.device
    )
    by_class = compare is not None and scores.classes is not None
    intro = (
        f"Crops of about {s.crop_size} HR px, x{s.scale}. "
        + (
            f"Rows: the classes where {compare[0]} beats {compare[1]} most and least in PSNR_Y on the class's pixels, "
            "each crop centred on that class in the image where it covers most pixels. "
            if by_class and compare
            else ""
        )
        + "LR is shown nearest-upscaled; captions give PSNR_Y on the crop's class pixels (or the whole crop)."
    )
    _gallery(output_dir, measures.source, loaded, bicubic, picks, s.scale, s.crop_size, intro, measures.device)


def _meta(
    methods: dict[str, str],
    hr_root: Path,
    measures: _Measures,
    s: EvaluationSettings,
    compare: tuple[str, str] | None,
    images: int,
) -> dict[str, Any]:
    """``metrics.json``'s ``meta``: what was evaluated and how."""
    source = measures.source
    return {
        "images": images,
        "input": "manifest" if source.labelled else "image folder",
        "hr_root": str(hr_root),
        "lr_root": str(s.lr_root) if s.lr_root is not None else None,
        "split": s.split if source.labelled else None,
        "excluded_ids": source.excluded,
        "scale": s.scale,
        "crop_border": s.scale,
        "class_map": s.class_map if source.labelled else None,
        "methods": dict(methods),
        "seg_model": s.seg_model,
        "lpips": _lpips_description(measures.lpips_model, measures.lpips_reason),
        "lpips_net": s.lpips_net,
        "lpips_random_weights": bool(measures.lpips_model is not None and measures.lpips_model.random_weights),
        "niqe": str(s.niqe_params) if s.niqe_params is not None else NIQE_UNAVAILABLE,
        "bootstrap": s.bootstrap,
        "seed": s.seed,
        "confidence": s.confidence,
        "compare": list(compare) if compare else None,
    }
