"""Shipping stages: export the SR head, register it as ``@challenger``, promote it by a gate."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from srseg.config import Params
from srseg.fileio import read_json
from srseg.stages.evaluate import run_evaluate, tracking_uri

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
    """SR-only network from the trained generator: TorchScript, ONNX, safetensors, model card."""
    from srseg.data.manifest import manifest_checksum
    from srseg.export import export_sr_head

    cfg = params.export
    report = export_sr_head(
        Path(weights or cfg.weights),
        Path(output_dir or cfg.output_dir),
        opset=cfg.opset,
        data_version=manifest_checksum(params.paths.data_root),
        metrics=_evaluated_metrics(params),
        model_name=params.registry.model_name,
        science_report=science_report_link(params),
    )
    return report.to_dict()


def science_report_link(params: Params) -> str:
    """Where the report of this model's comparison is: the report stage's page, and the MLflow
    run of the evaluation, which the report stage logs it into (``report/report.html``)."""
    from srseg.evaluate import RUN_RECORD

    link = f"`{Path(params.report.output_dir) / 'report.html'}` (`srseg report`)"
    record = Path(params.evaluate.output_dir) / RUN_RECORD
    if params.mlflow.enabled and record.is_file():
        link += f"; in MLflow: artifact `report/report.html` of the evaluation run `{read_json(record)['run_id']}`"
    return link


def run_register(params: Params, export_dir: Path | None = None) -> dict[str, Any]:
    """Log the exported SR head to MLflow and register a new version with alias ``challenger``.

    Idempotent: an SR head that is already a version of ``registry.model_name`` (same weights
    SHA-256) is not registered again (``"registered": false`` in the result); ``@challenger`` is
    pointed at that version if it is not there, so promotion judges this head and no other.
    """
    from srseg.data.manifest import manifest_checksum
    from srseg.registry import find_registered, log_and_register, nominate_challenger
    from srseg.train.tracking import git_commit

    folder = Path(export_dir or params.export.output_dir)
    uri = tracking_uri(params)
    if uri is None:
        raise ValueError("mlflow.enabled is false: registering a model needs an MLflow tracking URI")
    existing = find_registered(params.registry.model_name, folder / "sr_head.safetensors", tracking_uri=uri)
    if existing is not None:
        existing = nominate_challenger(existing.name, existing.version, tracking_uri=uri)
        log.info("%s: already registered as %s (aliases: %s); no new version", folder / "sr_head.safetensors",
                 existing.model_uri, ", ".join(existing.aliases))
        return {"name": existing.name, "version": existing.version, "run_id": existing.run_id,
                "model_uri": existing.model_uri, "aliases": list(existing.aliases), "registered": False}
    tags = {"data_manifest_sha256": manifest_checksum(params.paths.data_root)}
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
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
    return {"name": info.name, "version": info.version, "run_id": info.run_id, "model_uri": info.model_uri,
            "aliases": list(info.aliases), "registered": True}


def read_per_image(path: Path, methods: list[str]) -> dict[str, dict[str, list[float]]]:
    """``per_image.csv`` of an evaluation as ``{method: {metric: [value per image]}}`` (file order)."""
    import csv

    out: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            method = row["method"]
            if method not in out:
                continue
            for key in EVAL_METRIC_KEYS:
                if row.get(key) not in (None, ""):
                    out[method].setdefault(key, []).append(float(row[key]))
    return out


def registry_evaluator(params: Params, output_dir: Path):
    """``{role: model spec} -> per-image scores``: one evaluation of all roles together on the
    report images (the same pass for every model, so the values pair up image by image)."""

    def evaluate_specs(specs: dict[str, str]) -> dict[str, dict[str, list[float]]]:
        run_evaluate(params, output_dir=output_dir, methods=dict(specs), gallery=False, log_to_mlflow=False)
        return read_per_image(output_dir / "per_image.csv", list(specs))

    return evaluate_specs


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


def run_promote(params: Params, dry_run: bool = False) -> dict[str, Any]:
    """Gate ``@challenger`` on the report images against bicubic and ``@champion``; move
    ``champion`` if every criterion passes (the first promotion included)."""
    from srseg.registry import Gate, promote

    cfg = params.promote
    gate = Gate(
        min_gain_over_bicubic_db=cfg.min_gain_over_bicubic_db,
        max_psnr_drop_db=cfg.max_psnr_drop_db,
        perceptual=cfg.perceptual,
        min_lpips_gain=cfg.min_lpips_gain,
        min_study_preference=cfg.min_study_preference,
    )
    decision = promote(
        params.registry.model_name,
        tracking_uri=tracking_uri(params),
        evaluation=registry_evaluator(params, Path(params.evaluate.output_dir) / "promotion"),
        gate=gate,
        dry_run=dry_run,
        study=read_study_preference(params) if cfg.perceptual == "study" else None,
    )
    return decision.to_dict()


def run_rollback(params: Params, dry_run: bool = False) -> dict[str, Any]:
    from srseg.registry import rollback

    decision = rollback(params.registry.model_name, tracking_uri=tracking_uri(params), dry_run=dry_run)
    return decision.to_dict()
