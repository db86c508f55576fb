"""The promotion gate's per-image scores, stored in MLflow once per model and evaluation set, and reused.

Why: the gate scores the challenger, bicubic and the champion image by image on the report images.
Without a store every gate (and the promote step after it) scored all three again: hours per
promotion in paper mode, for numbers that cannot have changed. A model's scores depend only on
its weights and on the evaluation, so they are computed once and looked up after that: the
champion was scored when it was the challenger, bicubic once per evaluation set.

The key (:class:`EvaluationSet`) is a SHA-256 over everything the per-image values depend on:

- the evaluation set: split and scale, and for every report image in evaluation order its id,
  the HR file's SHA-256 and, with precomputed LR images, the LR file's SHA-256 (from the manifests);
- the method settings: crop border, LPIPS (backbone and linear weight files by name and digest,
  ``random`` for ``lpips_weights: none``, ``unavailable`` when the files are missing), NIQE (the
  parameter file's digest or ``none``);
- the scoring code: a digest of the modules that compute the values (:data:`SCORING_CODE`), so a
  fix in a metric never reuses numbers of the old code.

A model is identified by content: ``sha256:<digest>`` of a registered version's SR-head weights
(its ``sr_head_sha256`` tag, checked against the file whenever it is loaded), or ``bicubic``. A
version without that tag is scored every time.

Storage (:class:`EvaluationStore`): one finished MLflow run per (key, model) in the experiment,
named ``gate-evaluation``, tagged ``srseg.kind=gate_evaluation``, ``srseg.eval.key``,
``srseg.eval.model`` and the model URI, with the per-image values as the artifact
``gate_scores.json`` (image ids + ``{metric: [value per image]}``) and their means as metrics.
Two processes that miss at the same time both score and both store; either entry is valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, RunStatus, RunTag
from mlflow.exceptions import MlflowException

from srseg.fileio import sha256_file
from srseg.registry.log_model import RegistryError
from srseg.registry.promote import BICUBIC, Evaluated, Scores

logger = logging.getLogger(__name__)

FORMAT = "srseg.gate_scores/1"
SCORES_FILE = "gate_scores.json"
RUN_NAME = "gate-evaluation"
KIND_TAG, KEY_TAG, MODEL_TAG, URI_TAG = "srseg.kind", "srseg.eval.key", "srseg.eval.model", "srseg.eval.model_uri"
KIND = "gate_evaluation"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# Modules whose code decides the per-image values (decoding, LR synthesis, model loading and
# inference, metrics), relative to the package; a test checks that this covers the import closure
# of the scoring functions, less the modules that cannot change a value (errors, file helpers,
# constants, per-class sums and bootstrap statistics).
SCORING_CODE: tuple[str, ...] = (
    "metrics.py",
    "imageio.py",
    "data/classmap.py",
    "data/dataset.py",
    "data/manifest.py",
    "degrade/bicubic.py",
    "evaluate/run.py",
    "evaluate/methods.py",
    "evaluate/lpips.py",
    "evaluate/niqe.py",
    "inference",
    "models/generator.py",
    "models/io.py",
    "models/registry.py",
    "models/upsample.py",
    "models/vgg.py",
    "registry/loader.py",
)

Score = Callable[[Mapping[str, str]], tuple[Sequence[str], Scores]]
"""``{role: model spec} -> (image ids, per-role scores)``: one evaluation of the given roles."""


def scoring_code_digest(root: Path = PACKAGE_ROOT) -> str:
    """SHA-256 over the :data:`SCORING_CODE` files (relative path + content)."""
    files: list[Path] = []
    for entry in SCORING_CODE:
        path = root / entry
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        elif path.is_file():
            files.append(path)
        else:
            raise RegistryError(f"scoring code {path} is missing (SCORING_CODE is out of date)")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class EvaluationSet:
    """What the gate's per-image scores depend on, besides the model: ``description`` (JSON-able,
    shown as tags) and the image ids in evaluation order; ``key`` digests both."""

    description: Mapping[str, Any]
    image_ids: tuple[str, ...]

    @property
    def key(self) -> str:
        body = json.dumps({"description": self.description, "images": list(self.image_ids)}, sort_keys=True)
        return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _lpips_identity(weights: str, net: str) -> str:
    from srseg.evaluate.lpips import resolve_weight_files
    from srseg.models.vgg import MissingWeightsError

    try:
        files = resolve_weight_files(weights, net)
    except MissingWeightsError:
        return "unavailable"
    if files is None:
        return "random"
    backbone, linear = files  # torchvision's file name carries its digest prefix; the linear file is small
    return f"{net}:{backbone.name}:{sha256_file(linear)}"


def evaluation_set(
    hr_root: str | Path,
    split: str,
    scale: int,
    *,
    lr_root: str | Path | None = None,
    exclude_ids: Collection[int] = (),
    max_images: int | None = None,
    lpips_weights: str = "auto",
    lpips_net: str = "alex",
    niqe_params: str | Path | None = None,
) -> EvaluationSet:
    """The evaluation set of ``srseg.evaluate.evaluate`` with these arguments (a manifest root)."""
    from srseg.data.manifest import Manifest, ManifestError

    hr = Manifest.load(hr_root)
    if split not in hr.splits:
        raise ManifestError(f"{hr_root}: no split {split!r} in manifest (has: {', '.join(sorted(hr.splits))})")
    drop = {int(i) for i in exclude_ids}
    samples = [s for s in hr.splits[split] if s.id not in drop]
    if max_images is not None:
        samples = samples[:max_images]
    lr_files: dict[int, str] = {}
    if lr_root is not None:
        lr_files = {s.id: s.image_sha256 for s in Manifest.load(lr_root).splits.get(split, [])}
        missing = [s.id for s in samples if s.id not in lr_files]
        if missing:
            raise ManifestError(f"{lr_root}: split {split!r} lacks LR images for ids {missing[:5]}; re-run degrade")
    images = [[f"{s.id:012d}", s.image_sha256, lr_files.get(s.id, "bicubic")] for s in samples]
    description = {
        "format": FORMAT,
        "split": split,
        "scale": scale,
        "crop_border": scale,
        "lr": "precomputed" if lr_root is not None else "matlab-bicubic",
        "images_sha256": hashlib.sha256(json.dumps(images).encode("utf-8")).hexdigest(),
        "n_images": len(images),
        "lpips": _lpips_identity(lpips_weights, lpips_net),
        "niqe": sha256_file(niqe_params) if niqe_params else "none",
        "scoring_code": scoring_code_digest(),
    }
    return EvaluationSet(description, tuple(image_id for image_id, _, _ in images))


def model_identity(client: MlflowClient, spec: str) -> str | None:
    """``bicubic``, ``sha256:<weights digest>`` of a ``models:/NAME/VERSION`` spec, or None (not cacheable)."""
    if spec == BICUBIC:
        return BICUBIC
    if not spec.startswith("models:/"):
        return None
    name, _, version = spec[len("models:/") :].rpartition("/")
    if not name or not version.isdigit():
        return None
    digest = (client.get_model_version(name, version).tags or {}).get("sr_head_sha256", "")
    return f"sha256:{digest}" if len(digest) == 64 else None


@dataclass(frozen=True)
class StoredScores:
    """One model's per-image scores on one evaluation set, and the MLflow run that holds them."""

    run_id: str
    model: str
    image_ids: tuple[str, ...]
    scores: Mapping[str, list[float | None]]


def _clean(values: Sequence[Any]) -> list[float | None]:
    """Per-image values as floats, NaN as None (``inf``, the PSNR of an exact reconstruction, stays)."""
    return [
        None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value) for value in values
    ]


class EvaluationStore:
    """Gate scores as MLflow runs in ``experiment`` (created if missing)."""

    def __init__(self, client: MlflowClient, experiment: str) -> None:
        self.client = client
        self.experiment = experiment
        self._experiment_id: str | None = None

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                try:
                    self._experiment_id = self.client.create_experiment(self.experiment)
                except MlflowException:  # created concurrently
                    found = self.client.get_experiment_by_name(self.experiment)
                    if found is None:
                        raise
            if found is not None:
                self._experiment_id = found.experiment_id
        assert self._experiment_id is not None
        return self._experiment_id

    def find(self, evaluation: EvaluationSet, model: str) -> StoredScores | None:
        """The newest readable entry for (evaluation set, model), or None."""
        key = evaluation.key
        runs = self.client.search_runs(
            [self.experiment_id()],
            filter_string=(
                f"tags.`{KIND_TAG}` = '{KIND}' and tags.`{KEY_TAG}` = '{key}' and "
                f"tags.`{MODEL_TAG}` = '{model}' and attributes.status = 'FINISHED'"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=3,
        )
        for run in runs:
            stored = self._read(run.info.run_id, key, model)
            if stored is not None and stored.image_ids == evaluation.image_ids:
                return stored
            logger.warning("gate evaluation run %s does not hold usable scores for %s; ignored", run.info.run_id, model)
        return None

    def _read(self, run_id: str, key: str, model: str) -> StoredScores | None:
        with tempfile.TemporaryDirectory(prefix="srseg-gate-scores-") as tmp:
            try:
                path = Path(self.client.download_artifacts(run_id, SCORES_FILE, tmp))
                data = json.loads(path.read_text(encoding="utf-8"))
            except (MlflowException, OSError, ValueError) as exc:
                logger.warning("cannot read %s of run %s (%s)", SCORES_FILE, run_id, exc)
                return None
        try:
            if data["format"] != FORMAT or data["key"] != key or data["model"] != model:
                return None
            ids = tuple(str(i) for i in data["images"])
            scores = {str(k): list(v) for k, v in data["scores"].items()}
        except (KeyError, TypeError, AttributeError):
            return None
        if any(len(v) != len(ids) for v in scores.values()):
            return None
        return StoredScores(run_id, model, ids, scores)

    def save(
        self,
        evaluation: EvaluationSet,
        model: str,
        model_uri: str,
        image_ids: Sequence[str],
        scores: Mapping[str, Sequence[Any]],
        tags: Mapping[str, str] | None = None,
    ) -> StoredScores:
        """Store one model's scores as a finished run; returns the entry."""
        ids = tuple(str(i) for i in image_ids)
        clean = {str(k): _clean(v) for k, v in scores.items() if v is not None}
        body = {
            "format": FORMAT,
            "key": evaluation.key,
            "model": model,
            "model_uri": model_uri,
            "images": list(ids),
            "scores": clean,
            "evaluation": dict(evaluation.description),
        }
        run_tags = {
            KIND_TAG: KIND,
            KEY_TAG: evaluation.key,
            MODEL_TAG: model,
            URI_TAG: model_uri,
            "stage": RUN_NAME,
            **{f"srseg.eval.{k}": str(v) for k, v in evaluation.description.items()},
            **(tags or {}),
        }
        run = self.client.create_run(self.experiment_id(), run_name=RUN_NAME, tags=run_tags)
        rid = run.info.run_id
        try:
            self.client.log_text(rid, json.dumps(body, sort_keys=True), SCORES_FILE)
            now = int(time.time() * 1000)
            means = {
                f"mean.{k}": sum(x for x in v if x is not None) / len(v)
                for k, v in clean.items()
                if v and all(x is not None and math.isfinite(x) for x in v)
            }
            self.client.log_batch(
                rid,
                metrics=[Metric(k, v, now, 0) for k, v in means.items()],
                tags=[RunTag("srseg.eval.n_images", str(len(ids)))],
            )
        except BaseException:
            self.client.set_terminated(rid, RunStatus.to_string(RunStatus.FAILED))
            raise
        self.client.set_terminated(rid)
        return StoredScores(rid, model, ids, clean)


@dataclass
class CachedEvaluation:
    """The gate's evaluation (``{role: spec} -> Evaluated``) that scores only what the store lacks.

    ``score`` evaluates the given roles together (one pass, values paired by image); ``evaluations``
    counts its calls and ``scored`` lists the specs it scored, for the decision record and tests.
    """

    score: Score
    store: EvaluationStore
    evaluation: EvaluationSet
    tags: Mapping[str, str] = field(default_factory=dict)
    evaluations: int = 0
    scored: list[dict[str, str]] = field(default_factory=list)

    def __call__(self, specs: Mapping[str, str]) -> Evaluated:
        client = self.store.client
        identities = {role: model_identity(client, spec) for role, spec in specs.items()}
        found: dict[str, StoredScores] = {}
        for role, identity in identities.items():
            stored = self.store.find(self.evaluation, identity) if identity is not None else None
            if stored is not None:
                found[role] = stored
        missing = {role: spec for role, spec in specs.items() if role not in found}
        fresh: dict[str, Mapping[str, list[float | None]]] = {}
        if missing:
            self.evaluations += 1
            self.scored.append(dict(missing))
            ids, scores = self.score(missing)
            if tuple(ids) != self.evaluation.image_ids:
                raise RegistryError(
                    f"the gate evaluation scored images {list(ids)[:3]}... but the evaluation set lists "
                    f"{list(self.evaluation.image_ids)[:3]}... ({len(ids)} vs {len(self.evaluation.image_ids)}): "
                    "the data changed during the evaluation; run it again"
                )
            for role, spec in missing.items():
                identity = identities[role]
                if identity is None:
                    fresh[role] = {k: _clean(v) for k, v in scores[role].items() if v is not None}
                    continue
                found[role] = self.store.save(self.evaluation, identity, spec, ids, scores[role], self.tags)
        result = {role: dict(found[role].scores) if role in found else dict(fresh[role]) for role in specs}
        sources = {
            role: {
                "model": identities[role] or specs[role],
                "spec": specs[role],
                "cached": role not in missing,
                "run_id": found[role].run_id if role in found else "",
            }
            for role in specs
        }
        logger.info(
            "gate evaluation %s: %s",
            self.evaluation.key[:12],
            ", ".join(f"{r} {'cached' if s['cached'] else 'scored'}" for r, s in sources.items()),
        )
        return Evaluated(result, sources, self.evaluation.key)
