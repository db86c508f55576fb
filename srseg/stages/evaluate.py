"""Evaluation and user-study stages driven by validated params."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from srseg.config import Params

log = logging.getLogger(__name__)


def tracking_uri(params: Params) -> str | None:
    """The MLflow tracking URI (env MLFLOW_TRACKING_URI wins), or None when MLflow is disabled."""
    from srseg.train.tracking import resolve_tracking_uri

    return resolve_tracking_uri(params.mlflow.tracking_uri) if params.mlflow.enabled else None


def run_evaluate(params: Params, output_dir: Path | None = None, methods: dict[str, str] | None = None) -> dict[str, Any]:
    """Compare the configured methods on the val split (metrics, CIs, per-class, gallery)."""
    from srseg.evaluate import evaluate
    from srseg.lineage import evaluation_tags

    cfg = params.evaluate
    train_root = Path(params.train.output_dir)
    train_dirs = [train_root / stage for stage in ("psnr", "gan") if (train_root / stage).is_dir()]
    lr_root = Path(params.paths.lr_root) if params.train.lr_source == "precomputed" else None
    chosen = dict(methods or cfg.methods)
    return evaluate(
        methods=chosen,
        hr_root=Path(params.paths.data_root),
        split=cfg.split,
        scale=params.train.scale,
        class_map=params.train.class_map,
        output_dir=Path(output_dir or cfg.output_dir),
        lr_root=lr_root,
        seg_model=cfg.seg_model if methods is None else None,
        lpips_weights=cfg.lpips_weights,
        niqe_params=Path(cfg.niqe_params) if cfg.niqe_params else None,
        bootstrap=cfg.bootstrap,
        seed=cfg.seed,
        gallery_crops=cfg.gallery_crops,
        crop_size=cfg.crop_size,
        mlflow_uri=tracking_uri(params),
        device=params.train.device,
        max_images=cfg.max_images,
        compare=tuple(cfg.compare) if methods is None else None,
        train_dirs=train_dirs,
        mlflow_experiment=params.mlflow.experiment,
        mlflow_tags=evaluation_tags(chosen),
    )


def run_study_build(params: Params, output_dir: Path | None = None) -> Path:
    """Super-resolve the val LR images with each study method, then build the study bundle."""
    from srseg.data.manifest import Manifest
    from srseg.inference.upscale import upscale
    from srseg.study.bundle import build_study

    cfg = params.study
    out = Path(output_dir or cfg.output_dir)
    split = params.evaluate.split
    lr_dir = Path(params.paths.lr_root) / split
    if not lr_dir.is_dir() or not Manifest.load(params.paths.lr_root).splits.get(split):
        raise FileNotFoundError(f"{lr_dir}: no LR images for split {split!r}; run `srseg degrade` first")
    folders: dict[str, Path] = {}
    for method in cfg.methods:
        if method not in params.evaluate.methods:
            raise ValueError(f"study.methods: {method!r} is not one of evaluate.methods ({', '.join(params.evaluate.methods)})")
        folder = out / "sr" / method
        upscale([lr_dir], folder, model=params.evaluate.methods[method], scale=params.train.scale,
                device=params.train.device, progress=True, tracking_uri=tracking_uri(params))
        folders[method] = folder
    hr_dir = Path(params.paths.data_root) / "images" / split
    bundle = build_study(
        methods=folders,
        output=out / "bundle",
        hr_dir=hr_dir,
        num_images=cfg.num_images,
        crop_size=cfg.crop_size,
        attention_checks=cfg.attention_checks,
        seed=cfg.seed,
        show_reference=cfg.show_reference,
    )
    log.info("study bundle at %s; invite raters with `srseg study invite --bundle %s --count N`", bundle, bundle)
    return bundle


def run_study_analyze(params: Params, bundle: Path | None = None, output_dir: Path | None = None) -> dict[str, Any]:
    """Win rates, Bradley-Terry scores and rater agreement from the stored votes."""
    from srseg.study.analyze import analyze_study

    cfg = params.study
    bundle_dir = Path(bundle or Path(cfg.output_dir) / "bundle")
    return analyze_study(
        bundle_dir,
        Path(output_dir or Path(cfg.output_dir) / "analysis"),
        attention_threshold=cfg.attention_threshold,
        bootstrap=cfg.bootstrap,
        seed=cfg.seed,
        mlflow_tracking_uri=tracking_uri(params),
        mlflow_experiment=params.mlflow.experiment,
    )
