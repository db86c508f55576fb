"""Log an exported SR head to MLflow and register it as a new version with the alias ``challenger``.

Model flavour: a ``pyfunc`` "model from code" (:mod:`srseg.registry.pyfunc_model`) whose only
artifact is the export's ``sr_head.safetensors`` + JSON sidecar (+ ``MODEL_CARD.md``). Why not
``mlflow.pytorch``:

- ``serialization_format="pickle"`` stores ``torch.save(module)``: loading it unpickles, i.e. may
  run arbitrary code from the artifact store, and ties the file to the class layout at save time.
- ``"pt2"`` (torch.export, MLflow's default) keeps any batch and size only when every signature
  dim is ``-1`` and the example batch is >= 2 (a batch-1 example pins N; checked with MLflow
  3.17 / torch 2.14). But ``torch.export.load`` unpickles the archive's weights, and MLflow only
  screens them when ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` (default true); the graph
  cannot move between devices; and the network's config (receptive field, scale), which tiled
  upscaling needs, is lost.
- safetensors + config sidecar is the project's weights format: no code on load, digest-checked,
  and srseg's own loader (:func:`srseg.registry.loader.load_sr_head`, used by ``srseg upscale``
  and ``evaluate``) rebuilds the network with the installed package, running nothing from the store.

Self-contained for everyone else: the model ships a copy of the ``srseg`` package as MLflow
``code_paths`` and pins the third-party requirements of that code, so ``mlflow.pyfunc.load_model``,
``mlflow models serve`` or ``build-docker`` work where srseg is not installed (MLflow's generic
loading runs the model's code, as for any model from code). ``MLmodel`` keeps no absolute path of
the machine that logged it.

Logged with an explicit signature (float32 (-1, 3, -1, -1) in and out) and a batch-2 input
example; the model accepts any batch and size. Everything goes through an ``MlflowClient`` bound
to ``tracking_uri`` (no ``mlflow.set_tracking_uri`` / active-run global state).
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import safetensors
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.types import Schema, TensorSpec

from srseg import tracking
from srseg.export import CARD_FILE, WEIGHTS_FILE, normalize_metrics
from srseg.fileio import sha256_file
from srseg.models.io import load_generator, sidecar_path
from srseg.registry.aliases import CHALLENGER, CHAMPION, make_client  # noqa: F401 - re-exported for callers
from srseg.registry.loader import ARTIFACT_KEY, FORMAT_KEY, SHA256_KEY, SR_HEAD_FORMAT, WEIGHTS_KEY

logger = logging.getLogger(__name__)

MODEL_ARTIFACT_PATH = "sr_head"  # run-relative folder of the MLflow model
CODE_FILE = Path(__file__).with_name("pyfunc_model.py")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the srseg package, shipped with every model
EXAMPLE_SHAPE = (2, 3, 24, 20)  # batch >= 2 and h != w, so nothing downstream can pin a dim
UNAVAILABLE = "unavailable"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,255}$")
_DESCRIPTION_LIMIT = 5000  # MLflow's SQL stores cap model-version descriptions


class RegistryError(ValueError):
    """A registry request that cannot be carried out as asked; the message names the bad value."""


@dataclass(frozen=True)
class ModelVersionInfo:
    """A registered version: ``model_uri`` (``models:/NAME/VERSION``) is stable, aliases move."""

    name: str
    version: str
    run_id: str
    model_uri: str
    source: str
    aliases: tuple[str, ...] = ()


def check_name(kind: str, value: str) -> str:
    """Registered-model names and aliases: printable, no slashes or '@' (they are URI separators)."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise RegistryError(f"{kind} must be 1-256 letters, digits, '_', '.', '-' or spaces, got {value!r}")
    return value


def sr_signature() -> ModelSignature:
    """float32 (N, 3, h, w) -> float32 (N, 3, s*h, s*w), every size free."""

    def spec() -> TensorSpec:
        return TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))

    return ModelSignature(inputs=Schema([spec()]), outputs=Schema([spec()]))


def input_example() -> np.ndarray:
    """A fixed random batch of two LR images in [0, 1] (small, so the logged JSON stays small)."""
    return np.random.default_rng(0).random(EXAMPLE_SHAPE, dtype=np.float32)


def pip_requirements() -> list[str]:
    """Pinned runtime requirements of the pyfunc: the third-party imports of its code (``srseg``
    itself ships inside the model, see :func:`_stage_code`)."""
    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"safetensors=={safetensors.__version__}",
        f"numpy=={np.__version__}",
    ]


def flatten_metrics(metrics: Mapping[str, Any] | None) -> tuple[dict[str, float], dict[str, str]]:
    """(run metrics, version tags) from ``{name: number | None | "unavailable" | {"value", "ci_low", ...}}``.

    A metric that could not be computed (None, NaN or ``"unavailable"``, e.g. LPIPS without its
    backbone weights) becomes the version tag ``metric.NAME=unavailable`` and no run metric, so a
    gate reading the tags sees it as missing rather than as a number.
    """
    run_metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    usable: dict[str, Any] = {}
    for name, entry in (metrics or {}).items():
        check_name("metric name", str(name))
        missing = entry is None or entry == UNAVAILABLE or (isinstance(entry, float) and math.isnan(entry))
        if missing:
            tags[f"metric.{name}"] = UNAVAILABLE
        else:
            usable[str(name)] = entry
    for name, norm in (normalize_metrics(usable) or {}).items():
        run_metrics[name] = norm["value"]
        tags[f"metric.{name}"] = repr(norm["value"])
        for bound in ("ci_low", "ci_high"):
            if norm[bound] is not None:
                run_metrics[f"{name}_{bound}"] = norm[bound]
                tags[f"metric.{name}.{bound}"] = repr(norm[bound])
    return run_metrics, tags


def _stage_code(work: Path) -> Path:
    """A copy of the installed ``srseg`` package (sources and package data, no caches) to ship as
    the model's ``code_paths``: the pyfunc then loads where srseg is not installed, and rebuilds
    whatever architecture the weights' sidecar names with the code it was logged with."""
    target = work / "code" / PACKAGE_DIR.name
    shutil.copytree(PACKAGE_DIR, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def _relativize(model_dir: Path) -> None:
    """Drop the logging machine's paths from ``MLmodel``: MLflow records the model code file and
    the artifact sources with absolute local paths, although loading uses only their names."""
    import yaml

    path = model_dir / "MLmodel"
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    pyfunc = spec["flavors"]["python_function"]
    if pyfunc.get("model_code_path"):
        pyfunc["model_code_path"] = Path(pyfunc["model_code_path"]).name
    for artifact in (pyfunc.get("artifacts") or {}).values():
        if "uri" in artifact:
            artifact["uri"] = artifact["path"]
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")


def _stage_model(sr_weights: Path, model_card: Path | None, work: Path, sha256: str) -> Path:
    """Write the self-contained MLflow model folder for ``sr_weights`` under ``work``; returns it."""
    bundle = work / ARTIFACT_KEY
    bundle.mkdir()
    shutil.copyfile(sr_weights, bundle / WEIGHTS_FILE)
    shutil.copyfile(sidecar_path(sr_weights), sidecar_path(bundle / WEIGHTS_FILE))
    if model_card is not None:
        shutil.copyfile(model_card, bundle / CARD_FILE)
    model_dir = work / "model"
    mlflow.pyfunc.save_model(
        path=str(model_dir),
        python_model=str(CODE_FILE),
        artifacts={ARTIFACT_KEY: str(bundle)},
        signature=sr_signature(),
        input_example=input_example(),
        pip_requirements=pip_requirements(),
        code_paths=[str(_stage_code(work))],
        metadata={
            FORMAT_KEY: SR_HEAD_FORMAT,
            WEIGHTS_KEY: f"artifacts/{ARTIFACT_KEY}/{WEIGHTS_FILE}",
            SHA256_KEY: sha256,
        },
    )
    _relativize(model_dir)
    return model_dir


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(
            name, description="srseg SR head (x-scale super-resolution, no segmentation head)"
        )
        logger.info("created registered model %r", name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise


def _description(model_card: Path | None) -> str | None:
    if model_card is None:
        return None
    text = model_card.read_text(encoding="utf-8")
    if len(text) <= _DESCRIPTION_LIMIT:
        return text
    return f"Model card too long for the description; see {MODEL_ARTIFACT_PATH}/artifacts/{ARTIFACT_KEY}/{CARD_FILE}"


def log_and_register(
    sr_weights: Path,
    model_name: str,
    tracking_uri: str | None = None,
    run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    model_card: Path | None = None,
    *,
    experiment_name: str = "srseg",
    artifact_location: str | None = None,
    alias: str = CHALLENGER,
) -> ModelVersionInfo:
    """Log the exported SR head ``sr_weights`` and register it as a new version of ``model_name``.

    ``run_id``: log into that existing run (e.g. the training run); None creates a run in
    ``experiment_name`` (created with ``artifact_location`` if missing) and closes it. ``tags``
    (e.g. ``git_commit``, ``data_manifest_sha256``) go on the run and the version; ``metrics``
    (see :func:`flatten_metrics`) are logged to the run and copied to the version as
    ``metric.NAME`` tags. ``model_card`` ships inside the model and becomes the version
    description. The new version gets ``alias`` (``challenger``); ``champion`` is only moved by
    :func:`srseg.registry.promote.promote`.
    """
    check_name("model_name", model_name)
    check_name("alias", alias)
    if alias == CHAMPION:
        raise RegistryError("alias 'champion' is set by promote() after the gate, not at registration")
    sr_weights = Path(sr_weights)
    model_card = Path(model_card) if model_card is not None else None
    net = _checked_sr_head(sr_weights, model_card)
    user_tags = {check_name("tag key", str(k)): str(v) for k, v in (tags or {}).items()}
    run_metrics, metric_tags = flatten_metrics(metrics)
    sha256 = sha256_file(sr_weights)
    version_tags = {
        **user_tags,
        **metric_tags,
        "srseg.format": SR_HEAD_FORMAT,
        "sr_head_sha256": sha256,
        "scale": str(net.scale),
        "num_parameters": str(net.num_parameters()),
    }
    for key in ("git_commit", "data_manifest_sha256"):
        if key not in user_tags:
            logger.warning("registering %s without a %r tag: the version cannot be traced back to it", model_name, key)

    client = make_client(tracking_uri)
    with tracking.standalone_run(
        client, experiment_name, f"register-{model_name}", run_id=run_id, artifact_location=artifact_location
    ) as run:
        rid = run.info.run_id
        with tempfile.TemporaryDirectory(prefix="srseg-register-") as tmp:
            model_dir = _stage_model(sr_weights, model_card, Path(tmp), sha256)
            tracking.log_metrics(client, rid, run_metrics)
            tracking.set_tags(client, rid, {**user_tags, "srseg.registered_model": model_name})
            client.log_artifacts(rid, str(model_dir), MODEL_ARTIFACT_PATH)
        source = f"{run.info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT_PATH}"
        _ensure_registered_model(client, model_name)
        version = client.create_model_version(
            model_name, source=source, run_id=rid, tags=version_tags, description=_description(model_card)
        )
        client.set_registered_model_alias(model_name, alias, version.version)
    info = ModelVersionInfo(
        model_name, str(version.version), rid, f"models:/{model_name}/{version.version}", source, (alias,)
    )
    logger.info("registered %s version %s (run %s) as @%s from %s", model_name, info.version, rid, alias, sr_weights)
    return info


def _checked_sr_head(sr_weights: Path, model_card: Path | None) -> Any:
    """The exported SR head at ``sr_weights``, validated before anything is logged."""
    if not sr_weights.is_file():
        raise RegistryError(f"sr_weights {str(sr_weights)!r}: no such file (expected the export's {WEIGHTS_FILE})")
    if model_card is not None and not model_card.is_file():
        raise RegistryError(f"model_card {str(model_card)!r}: no such file")
    net = load_generator(sr_weights)  # validates sidecar, digest and keys
    if net.has_seg_head:
        raise RegistryError(
            f"sr_weights {str(sr_weights)!r} still has a segmentation head (num_classes={net.num_classes}); "
            "register the SR head written by `srseg export` (export_sr_head)"
        )
    return net


def find_registered(
    model_name: str, sr_weights: str | Path, tracking_uri: str | None = None
) -> ModelVersionInfo | None:
    """The version of ``model_name`` that holds exactly these SR-head weights (same SHA-256), if any.

    Registering is a change to a shared registry, so ``srseg register`` asks this first: the
    same exported head registered twice would only add a version and move ``@challenger``.
    """
    name = check_name("model_name", model_name)
    if not Path(sr_weights).is_file():
        raise RegistryError(f"sr_weights {str(sr_weights)!r}: no such file (expected the export's {WEIGHTS_FILE})")
    sha256 = sha256_file(sr_weights)
    client = make_client(tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    matches = [mv for mv in versions if (mv.tags or {}).get("sr_head_sha256") == sha256]
    if not matches:
        return None
    oldest = min(matches, key=lambda mv: int(mv.version))
    return version_info(client, name, str(oldest.version))


def nominate_challenger(model_name: str, version: str, tracking_uri: str | None = None) -> ModelVersionInfo:
    """Point ``@challenger`` at an existing version (a no-op when it is there already)."""
    client = make_client(tracking_uri)
    info = version_info(client, model_name, version)
    if CHALLENGER not in info.aliases:
        client.set_registered_model_alias(model_name, CHALLENGER, str(version))
        logger.info("%s: @%s now points to version %s", model_name, CHALLENGER, version)
        info = version_info(client, model_name, version)
    return info


def version_info(client: MlflowClient, name: str, version: str) -> ModelVersionInfo:
    """:class:`ModelVersionInfo` of an existing version, aliases as the registry has them now."""
    mv = client.get_model_version(name, str(version))
    return ModelVersionInfo(
        name, str(mv.version), mv.run_id or "", f"models:/{name}/{mv.version}", mv.source or "", tuple(mv.aliases or ())
    )
