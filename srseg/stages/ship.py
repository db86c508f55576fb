"""Shipping stages: export the SR head, register it as ``@challenger``, promote it by a gate."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from srseg.config import Params
from srseg.fileio import read_json
from srseg.stages.evaluate import run_evaluate, selection_ids, tracking_uri

log = logging.getLogger(__name__)

EVAL_METRIC_KEYS = ("psnr_y", "ssim_y", "psnr_rgb", "lpips", "niqe")


def _evaluated_metrics(params: Params) -> dict[str, Any]:
    """Metrics (with CIs) of the exported method from the evaluate stage, when it ran."""
    path = Path(params.evaluate.output_dir) / "metrics.json"
    if not path.is_file():
        log.warning("%s not found: the model card and registry tags will say 'not evaluated'", path)
        return {}
    from srseg.seeds import expand_methods

    # the exported model is the first seed's (export.weights): its own numbers, not the seeds' mean
    method = expand_methods(params.evaluate.methods, params.train.seeds).first(params.evaluate.compare[0])
    numbers = read_json(path).get(method, {})
    metrics: dict[str, Any] = {}
    for key in EVAL_METRIC_KEYS:
        value = numbers.get(key)
        if isinstance(value, (int, float)):
            ci = numbers.get(f"{key}_ci")
            metrics[key] = {"value": value, "ci": ci} if ci else value
    return metrics


def run_export(params: Params, weights: Path | None = None, output_dir: Path | None = None) -> dict[str, Any]:
    """SR-only network from the trained generator: TorchScript, ONNX, safetensors, model card
    (``export.json`` records the training runs behind the weights, for the registry's lineage)."""
    from srseg.data.manifest import manifest_checksum
    from srseg.export import export_sr_head
    from srseg.lineage import training_runs

    cfg = params.export
    source = Path(weights or cfg.weights)
    report = export_sr_head(
        source,
        Path(output_dir or cfg.output_dir),
        opset=cfg.opset,
        data_version=manifest_checksum(params.paths.data_root),
        metrics=_evaluated_metrics(params),
        model_name=params.registry.model_name,
        lineage={f"train_{key}": run_id for key, run_id in training_runs(source).items()},
        science_report=science_report_link(params),
    )
    return report.to_dict()


def promotion_dir(params: Params) -> Path:
    """Where the gate writes its evaluation: beside the evaluate stage's folder, not inside it,
    so that promoting after `dvc repro` leaves the evaluate stage's outputs as DVC recorded them."""
    return Path(params.evaluate.output_dir).parent / "promotion"


def registry_uri(params: Params, operation: str) -> str:
    """The tracking URI for a registry operation; a one-line refusal when MLflow is disabled."""
    uri = tracking_uri(params)
    if uri is None:
        raise ValueError(
            f"mlflow.enabled is false: {operation} works on the MLflow model registry and does nothing "
            "without it (set mlflow.enabled: true and mlflow.tracking_uri)"
        )
    return uri


def science_report_link(params: Params) -> str:
    """Where the report of this model's comparison is: the report stage's page, and the MLflow
    run of the evaluation, which the report stage logs it into (``report/report.html``)."""
    from srseg.evaluate import RUN_RECORD

    link = f"`{Path(params.report.output_dir) / 'report.html'}` (`srseg report`)"
    record = Path(params.evaluate.output_dir) / RUN_RECORD
    if params.mlflow.enabled and record.is_file():
        link += f"; in MLflow: artifact `report/report.html` of the evaluation run `{read_json(record)['run_id']}`"
    return link


def run_register(params: Params, export_dir: Path | None = None, evaluation_run_id: str = "") -> dict[str, Any]:
    """Log the exported SR head to MLflow and register a new version with alias ``challenger``.

    Idempotent: an SR head that is already a version of ``registry.model_name`` (same weights
    SHA-256) is not registered again (``"registered": false`` in the result); ``@challenger`` is
    pointed at that version if it is not there, so promotion judges this head and no other.
    A new version carries the lineage tags of :func:`srseg.registry.version_lineage.version_lineage`
    (``evaluation_run_id``: the evaluate run that scored the weights; found by its tags if empty).
    """
    from srseg.registry import find_registered, log_and_register, nominate_challenger
    from srseg.registry.connection import registry_session
    from srseg.registry.version_lineage import version_lineage

    folder = Path(export_dir or params.export.output_dir)
    uri = registry_uri(params, "register")
    with registry_session(uri):
        existing = find_registered(params.registry.model_name, folder / "sr_head.safetensors", tracking_uri=uri)
        if existing is not None:
            existing = nominate_challenger(existing.name, existing.version, tracking_uri=uri)
            log.info(
                "%s: already registered as %s (aliases: %s); no new version",
                folder / "sr_head.safetensors",
                existing.model_uri,
                ", ".join(existing.aliases),
            )
            return {
                "name": existing.name,
                "version": existing.version,
                "run_id": existing.run_id,
                "model_uri": existing.model_uri,
                "aliases": list(existing.aliases),
                "registered": False,
            }
        tags = version_lineage(params, folder, uri, evaluation_run_id=evaluation_run_id)
        metrics = {k: (v["value"] if isinstance(v, dict) else v) for k, v in _evaluated_metrics(params).items()}
        info = log_and_register(
            folder / "sr_head.safetensors",
            params.registry.model_name,
            tracking_uri=uri,
            tags=tags,
            metrics=metrics,
            model_card=folder / "MODEL_CARD.md",
            experiment_name=params.mlflow.experiment,
        )
    return {
        "name": info.name,
        "version": info.version,
        "run_id": info.run_id,
        "model_uri": info.model_uri,
        "aliases": list(info.aliases),
        "registered": True,
        "lineage": tags,
    }


def read_per_image(path: Path, methods: list[str]) -> tuple[list[str], dict[str, dict[str, list[float]]]]:
    """``per_image.csv`` of an evaluation: (image ids in file order, ``{method: {metric: [value per image]}}``)."""
    import csv

    out: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    ids: list[str] = []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            method = row["method"]
            if method not in out:
                continue
            if method == methods[0]:
                ids.append(row["image"])
            for key in EVAL_METRIC_KEYS:
                if row.get(key) not in (None, ""):
                    out[method].setdefault(key, []).append(float(row[key]))
    return ids, out


def gate_evaluation(params: Params, output_dir: Path, client: Any):
    """The gate's evaluation: models missing from the store are scored together on the report
    images (one pass, values paired image by image) and stored; the rest are read back
    (:class:`srseg.registry.evalcache.CachedEvaluation`)."""
    from srseg.lineage import kfp_tags
    from srseg.registry.evalcache import CachedEvaluation, EvaluationStore, evaluation_set

    cfg = params.evaluate
    evaluation = evaluation_set(
        params.paths.data_root,
        cfg.split,
        params.train.scale,
        lr_root=params.paths.lr_root if params.train.lr_source == "precomputed" else None,
        exclude_ids=selection_ids(params, cfg.split),
        max_images=cfg.max_images,
        lpips_weights=cfg.lpips_weights,
        niqe_params=cfg.niqe_params,
    )

    def score(specs: Mapping[str, str]) -> tuple[list[str], dict[str, dict[str, list[float]]]]:
        run_evaluate(params, output_dir=output_dir, methods=dict(specs), gallery=False, log_to_mlflow=False)
        return read_per_image(output_dir / "per_image.csv", list(specs))

    return CachedEvaluation(score, EvaluationStore(client, params.mlflow.experiment), evaluation, tags=kfp_tags())


def gate_study_dir(params: Params) -> Path:
    """Where the promotion gate's user study lives: bundle, votes (beside it) and analysis."""
    return Path(params.study.output_dir) / "gate"


def read_study_preference(params: Params):
    """The analysed gate study (``<study.output_dir>/gate/analysis/gate.json``), or None."""
    from srseg.registry import StudyPreference

    path = gate_study_dir(params) / "analysis" / "gate.json"
    if not path.is_file():
        log.warning("%s not found: the study criterion fails closed until a gate study is analysed", path)
        return None
    return StudyPreference.from_dict(read_json(path))


def _gate(params: Params) -> Any:
    from srseg.registry import Gate

    cfg = params.promote
    return Gate(
        min_gain_over_bicubic_db=cfg.min_gain_over_bicubic_db,
        max_psnr_drop_db=cfg.max_psnr_drop_db,
        perceptual=cfg.perceptual,
        min_lpips_gain=cfg.min_lpips_gain,
        min_study_preference=cfg.min_study_preference,
    )


def run_promote(params: Params, dry_run: bool = False, output_dir: Path | None = None) -> dict[str, Any]:
    """Gate ``@challenger`` on the report images against bicubic and ``@champion``; move
    ``champion`` if every criterion passes (the first promotion included). Each model is scored
    once per evaluation set (stored in MLflow, see :mod:`srseg.registry.evalcache`); the move is
    a compare-and-set under the model's lock. ``dry_run`` (the pipeline's gate) changes no alias."""
    from srseg.registry import promote
    from srseg.registry.connection import registry_session
    from srseg.tracking import make_client

    uri = registry_uri(params, "promote")
    with registry_session(uri):
        evaluation = gate_evaluation(params, Path(output_dir or promotion_dir(params)), make_client(uri))
        study = read_study_preference(params) if params.promote.perceptual == "study" else None
        decision = promote(params.registry.model_name, uri, evaluation, _gate(params), dry_run=dry_run, study=study)
    return decision.to_dict()


def run_apply_decision(params: Params, decision: Mapping[str, Any]) -> dict[str, Any]:
    """Carry out a decision of ``run_promote(dry_run=True)`` (the pipeline's promote step, after its
    gate): no evaluation, and only if the aliases are still those the gate judged."""
    from srseg.registry.connection import registry_session
    from srseg.registry.promote import Decision, apply

    uri = registry_uri(params, "promote")
    judged = Decision.from_dict(decision)
    if judged.model_name != params.registry.model_name:
        raise ValueError(
            f"the decision is about model {judged.model_name!r}, registry.model_name is {params.registry.model_name!r}"
        )
    with registry_session(uri):
        return apply(judged, uri).to_dict()


def run_rollback(params: Params, dry_run: bool = False) -> dict[str, Any]:
    from srseg.registry import rollback
    from srseg.registry.connection import registry_session

    uri = registry_uri(params, "rollback")
    with registry_session(uri):
        decision = rollback(params.registry.model_name, tracking_uri=uri, dry_run=dry_run)
    return decision.to_dict()
