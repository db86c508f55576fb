"""Evaluation and user-study stages driven by validated params."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from srseg.config import Params

log = logging.getLogger(__name__)


def tracking_uri(params: Params) -> str | None:
    """The MLflow tracking URI (env MLFLOW_TRACKING_URI wins), or None when MLflow is disabled."""
    from srseg.tracking import resolve_tracking_uri

    return resolve_tracking_uri(params.mlflow.tracking_uri) if params.mlflow.enabled else None


def selection_ids(params: Params, split: str) -> set[int]:
    """Images of ``split`` that training chose its weights on (none when ``split`` is not the
    training's validation split), so evaluation can leave them out (:mod:`srseg.data.holdout`)."""
    from srseg.data.holdout import selection_ids as choose
    from srseg.data.manifest import Manifest

    root = Path(params.paths.data_root)
    if split != params.train.val_split or not (root / "manifest.json").is_file():
        return set()
    samples = Manifest.load(root).splits.get(split, [])
    return choose([sample.id for sample in samples], params.train.selection_images)


def run_evaluate(
    params: Params,
    output_dir: Path | None = None,
    methods: dict[str, str] | None = None,
    *,
    gallery: bool = True,
    log_to_mlflow: bool = True,
    train_run: Path | None = None,
) -> dict[str, Any]:
    """Compare the configured methods on the report part of the val split (metrics, CIs,
    per-class, gallery): the selection images training validated on are left out.

    Methods with ``{seed}`` are scored once per seed of ``train.seeds`` (:mod:`srseg.seeds`): the
    comparison, the per-class gains and the differences to bicubic are then reported over seeds
    and images, and the first seed's models stand for their arm in the gallery and segmentation.
    ``train_run`` is the training run whose curves are plotted (default: the first seed's
    multitask run, ``<train.output_dir>/seed<K>``).
    """
    from srseg.evaluate.run import EvaluationTracking, evaluate
    from srseg.lineage import evaluation_tags
    from srseg.seeds import expand_methods, seed_run_dir

    cfg = params.evaluate
    seeded = expand_methods(dict(methods or cfg.methods), params.train.seeds)
    first_run = (
        Path(train_run) if train_run is not None else seed_run_dir(params.train.output_dir, params.train.seeds[0])
    )
    train_dirs = [first_run / stage for stage in ("psnr", "gan") if (first_run / stage).is_dir()]
    chosen = seeded.specs
    compare = None if methods is not None else (seeded.first(cfg.compare[0]), seeded.first(cfg.compare[1]))
    seg_model = seeded.first(cfg.seg_model) if methods is None and cfg.seg_model else None
    settings = evaluation_settings(params, compare=compare, seg_model=seg_model, gallery=gallery)
    tracking = EvaluationTracking(
        uri=tracking_uri(params),  # also resolves models:/ methods
        experiment=params.mlflow.experiment,
        tags=evaluation_tags(chosen),
        log=log_to_mlflow,
    )
    return evaluate(
        chosen,
        Path(params.paths.data_root),
        Path(output_dir or cfg.output_dir),
        settings,
        tracking,
        train_dirs=train_dirs,
        seed_groups=seeded.groups,
    )


def evaluation_settings(
    params: Params, *, compare: tuple[str, str] | None, seg_model: str | None, gallery: bool = True
) -> Any:
    """:class:`~srseg.evaluate.run.EvaluationSettings` from the ``evaluate`` section (and the
    training's scale, class map, device and LR source); the selection images are left out."""
    from srseg.evaluate.run import EvaluationSettings

    cfg = params.evaluate
    return EvaluationSettings(
        split=cfg.split,
        scale=params.train.scale,
        class_map=params.train.class_map,
        lr_root=Path(params.paths.lr_root) if params.train.lr_source == "precomputed" else None,
        seg_model=seg_model,
        lpips_weights=cfg.lpips_weights,
        niqe_params=Path(cfg.niqe_params) if cfg.niqe_params else None,
        bootstrap=cfg.bootstrap,
        seed=cfg.seed,
        gallery_crops=cfg.gallery_crops if gallery else 0,
        crop_size=cfg.crop_size,
        device=params.train.device,
        max_images=cfg.max_images,
        compare=compare,
        exclude_ids=selection_ids(params, cfg.split),
    )


def _report_lr_files(params: Params) -> list[Path]:
    """LR images of the report part of ``evaluate.split`` (selection images left out)."""
    from srseg.data.manifest import Manifest

    split = params.evaluate.split
    lr_root = Path(params.paths.lr_root)
    samples = Manifest.load(lr_root).splits.get(split) if (lr_root / "manifest.json").is_file() else None
    if not samples:
        raise FileNotFoundError(f"{lr_root / split}: no LR images for split {split!r}; run `srseg degrade` first")
    excluded = selection_ids(params, split)
    return [lr_root / sample.image for sample in samples if sample.id not in excluded]


def _build_bundle(params: Params, models: dict[str, str], out: Path, gate: dict[str, str] | None = None) -> Path:
    """Super-resolve the report LR images with each model, then write the bundle to ``out/bundle``."""
    from srseg.inference.upscale import upscale
    from srseg.study.bundle import build_study

    cfg = params.study
    inputs = _report_lr_files(params)
    folders: dict[str, Path] = {}
    for method, model in models.items():
        folder = out / "sr" / method
        upscale(
            inputs,
            folder,
            model=model,
            scale=params.train.scale,
            device=params.train.device,
            progress=True,
            tracking_uri=tracking_uri(params),
        )
        folders[method] = folder
    bundle = build_study(
        methods=folders,
        output=out / "bundle",
        hr_dir=Path(params.paths.data_root) / "images" / params.evaluate.split,
        num_images=min(cfg.num_images, len(inputs)),
        crop_size=cfg.crop_size,
        attention_checks=cfg.attention_checks,
        seed=cfg.seed,
        show_reference=cfg.show_reference,
        gate=gate,
    )
    log.info("study bundle at %s; invite raters with `srseg study invite --bundle %s --count N`", bundle, bundle)
    return bundle


def run_study_build(params: Params, output_dir: Path | None = None) -> Path:
    """The research study: ``study.methods`` on the report images of the val split."""
    from srseg.seeds import for_seed

    cfg = params.study
    for method in cfg.methods:
        if method not in params.evaluate.methods:
            raise ValueError(
                f"study.methods: {method!r} is not one of evaluate.methods ({', '.join(params.evaluate.methods)})"
            )
    # raters judge one model per arm: the first seed's
    models = {method: for_seed(params.evaluate.methods[method], params.train.seeds[0]) for method in cfg.methods}
    return _build_bundle(params, models, Path(output_dir or cfg.output_dir))


def run_study_gate_build(params: Params, output_dir: Path | None = None) -> Path:
    """The promotion gate's study: ``@challenger`` against ``@champion`` (against bicubic when
    there is no champion yet), as the registered versions they point to now; the bundle records
    both, and ``srseg promote`` only counts its votes for exactly those versions."""
    from srseg.registry.aliases import CHALLENGER, CHAMPION
    from srseg.tracking import make_client

    uri = tracking_uri(params)
    if uri is None:
        raise ValueError("mlflow.enabled is false: a gate study compares registered versions and needs MLflow")
    name = params.registry.model_name
    client = make_client(uri)
    aliases = client.get_registered_model(name).aliases or {}
    if CHALLENGER not in aliases:
        raise ValueError(f"registered model {name!r} has no {CHALLENGER!r} alias: run `srseg register` first")
    challenger = f"models:/{name}/{aliases[CHALLENGER]}"
    champion = aliases.get(CHAMPION)
    if champion is not None and str(champion) == str(aliases[CHALLENGER]):
        raise ValueError(f"{challenger} already is the {CHAMPION}: register a new version before building a gate study")
    opponent, opponent_method = (
        (f"models:/{name}/{champion}", "champion") if champion is not None else ("bicubic", "bicubic")
    )
    gate = {
        "challenger": challenger,
        "opponent": opponent,
        "challenger_method": "challenger",
        "opponent_method": opponent_method,
        "model_name": name,
    }
    out = Path(output_dir or Path(params.study.output_dir) / "gate")
    bundle = _build_bundle(params, {"challenger": challenger, opponent_method: opponent}, out, gate)
    _archive_foreign_votes(bundle)
    return bundle


def _archive_foreign_votes(bundle: Path) -> None:
    """A gate bundle is rebuilt for every new comparison; votes cast on an earlier one must not
    count for it (the store refuses them anyway), so they are moved aside, never deleted."""
    import time

    from srseg.study.bundle import load_study
    from srseg.study.store import default_state_dir, open_store

    state = default_state_dir(bundle)
    if not state.exists():
        return
    try:
        open_store(load_study(bundle, verify=False).study_id, state)
    except (ValueError, FileNotFoundError):
        archived = state.with_name(f"{state.name}.{time.strftime('%Y%m%dT%H%M%S')}")
        state.rename(archived)
        log.warning("votes of an earlier gate study moved to %s (they were cast on other versions)", archived)


def run_study_analyze(params: Params, bundle: Path | None = None, output_dir: Path | None = None) -> dict[str, Any]:
    """Win rates, Bradley-Terry scores and rater agreement from the stored votes."""
    from srseg.study.analyze import analyze_study

    cfg = params.study
    bundle_dir = Path(bundle or Path(cfg.output_dir) / "bundle")
    return analyze_study(
        bundle_dir,
        Path(output_dir or bundle_dir.parent / "analysis"),
        attention_threshold=cfg.attention_threshold,
        bootstrap=cfg.bootstrap,
        seed=cfg.seed,
        mlflow_tracking_uri=tracking_uri(params),
        mlflow_experiment=params.mlflow.experiment,
    )
