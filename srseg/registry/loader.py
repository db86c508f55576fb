"""Load a logged SR head back: from an MLflow model directory or a ``models:/`` / ``runs:/`` URI.

A logged SR head (see :mod:`srseg.registry.log_model`) is an MLflow "model from code": its
``MLmodel`` carries ``metadata.srseg_format = "srseg.sr_head/1"`` and
``metadata.srseg_weights``, the model-relative path of ``sr_head.safetensors`` (next to its JSON
sidecar). :func:`load_sr_head_dir` rebuilds the network from those two files with
:func:`srseg.models.io.load_generator`, so loading runs no code and unpickles nothing from the
artifact store: this is the loader ``srseg upscale`` should use for registry URIs.
:class:`SRHeadPyfunc` is the same model behind MLflow's generic ``pyfunc`` interface (serving,
``mlflow.pyfunc.load_model``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.pyfunc.model import PythonModel

from srseg.export import WEIGHTS_FILE
from srseg.fileio import sha256_file
from srseg.models.generator import MultiTaskSRNet
from srseg.models.io import load_generator

logger = logging.getLogger(__name__)

SR_HEAD_FORMAT = "srseg.sr_head/1"
ARTIFACT_KEY = "sr_head"  # pyfunc artifact name: the folder holding weights, sidecar, model card
FORMAT_KEY = "srseg_format"
WEIGHTS_KEY = "srseg_weights"
SHA256_KEY = "srseg_weights_sha256"


class SRHeadLoadError(ValueError):
    """A model directory or URI does not hold a loadable srseg SR head; the message names it."""


def read_metadata(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``metadata`` mapping of ``<model_dir>/MLmodel`` (empty when there is none)."""
    from mlflow.models import Model

    path = Path(model_dir) / "MLmodel"
    if not path.is_file():
        raise SRHeadLoadError(f"{model_dir}: no MLmodel file (not an MLflow model directory)")
    try:
        model = Model.load(str(path))
    except Exception as exc:  # MLflow raises several types for a malformed file
        raise SRHeadLoadError(f"{path}: unreadable MLmodel ({type(exc).__name__}: {exc})") from exc
    return dict(model.metadata or {})


def is_sr_head_model(model_dir: str | os.PathLike[str]) -> bool:
    """True when ``model_dir`` is an MLflow model logged by :func:`srseg.registry.log_and_register`."""
    try:
        return read_metadata(model_dir).get(FORMAT_KEY) == SR_HEAD_FORMAT
    except SRHeadLoadError:
        return False


def load_sr_head_dir(model_dir: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> MultiTaskSRNet:
    """The SR network (eval mode) of a downloaded SR-head model directory, read from safetensors.

    Checks, each with an error naming the directory: the format tag, that the weights path stays
    inside the directory, the weights digest recorded at logging time, and (by ``load_generator``)
    the sidecar digest, key set and shapes; a network with a segmentation head is refused.
    """
    root = Path(model_dir).resolve()
    meta = read_metadata(root)
    if meta.get(FORMAT_KEY) != SR_HEAD_FORMAT:
        raise SRHeadLoadError(
            f"{model_dir}: MLmodel metadata {FORMAT_KEY}={meta.get(FORMAT_KEY)!r}, expected {SR_HEAD_FORMAT!r} "
            "(log SR heads with srseg.registry.log_and_register)"
        )
    relative = meta.get(WEIGHTS_KEY)
    if not isinstance(relative, str) or not relative:
        raise SRHeadLoadError(f"{model_dir}: MLmodel metadata has no {WEIGHTS_KEY} path")
    weights = (root / relative).resolve()
    if not weights.is_relative_to(root):
        raise SRHeadLoadError(f"{model_dir}: {WEIGHTS_KEY}={relative!r} points outside the model directory")
    if not weights.is_file():
        raise SRHeadLoadError(f"{model_dir}: weights {relative!r} not found in the model directory")
    expected = meta.get(SHA256_KEY)
    if expected is not None and sha256_file(weights) != expected:
        raise SRHeadLoadError(f"{weights}: SHA-256 differs from the {SHA256_KEY} recorded in MLmodel")
    net = load_generator(weights, map_location=map_location)
    if net.has_seg_head:
        raise SRHeadLoadError(f"{weights}: network has a segmentation head; an SR head (num_classes=0) was expected")
    return net


def resolve_artifact_uri(model_uri: str, tracking_uri: str | None = None) -> str:
    """The artifact location behind ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``runs:/RUN/PATH``.

    Resolved with a client bound to ``tracking_uri`` because MLflow's own ``models:/`` resolution
    reads the process-global registry URI and would silently ask another store. Copies made by
    ``copy_model_version`` (source ``models:/...``) are followed to the original.
    """
    from mlflow.exceptions import MlflowException

    from srseg.tracking import make_client

    if model_uri.startswith("models:/"):
        _parse_models_uri(model_uri, model_uri)  # a malformed URI fails before any store is opened
    client = make_client(tracking_uri)
    uri = model_uri
    for _ in range(8):
        if uri.startswith("runs:/"):
            run_id, _, path = uri[len("runs:/") :].partition("/")
            try:
                base = client.get_run(run_id).info.artifact_uri
            except MlflowException as exc:
                raise SRHeadLoadError(f"model {model_uri!r}: run {run_id!r} not found ({exc.message})") from exc
            return f"{base.rstrip('/')}/{path}" if path else base
        if not uri.startswith("models:/"):
            return uri
        name, version = _parse_models_uri(uri, model_uri)
        try:
            if version.startswith("@"):
                version = str(client.get_model_version_by_alias(name, version[1:]).version)
            uri = client.get_model_version_download_uri(name, version)
        except MlflowException as exc:
            raise SRHeadLoadError(f"model {model_uri!r}: {exc.message}") from exc
    raise SRHeadLoadError(f"model {model_uri!r}: too many nested models:/ sources")


def _parse_models_uri(uri: str, original: str) -> tuple[str, str]:
    """(name, version or "@alias") of ``models:/NAME/VERSION`` / ``models:/NAME@ALIAS``."""
    body = uri[len("models:/") :].strip("/")
    if "/" not in body and "@" in body:
        name, _, alias = body.partition("@")
        if name and alias:
            return name, "@" + alias
    name, _, version = body.partition("/")
    if name and version.isdigit():
        return name, version
    raise SRHeadLoadError(
        f"model {original!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION "
        "(stages and sub-paths are not supported; aliases replace stages)"
    )


def load_sr_head(
    model_uri: str,
    tracking_uri: str | None = None,
    map_location: str | torch.device = "cpu",
) -> MultiTaskSRNet:
    """Download ``model_uri`` (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/...``) and load it.

    ``tracking_uri`` is used for both tracking and registry (None: MLflow's own resolution, i.e.
    ``MLFLOW_TRACKING_URI``). The download lives in a temporary folder that is removed afterwards:
    the returned network holds its tensors in memory.
    """
    import mlflow.artifacts

    location = resolve_artifact_uri(model_uri, tracking_uri)
    with tempfile.TemporaryDirectory(prefix="srseg-sr-head-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp, tracking_uri=tracking_uri)
        except Exception as exc:  # MlflowException, botocore errors, HTTP errors
            raise SRHeadLoadError(
                f"model {model_uri!r}: cannot download {location} ({type(exc).__name__}: {exc})"
            ) from exc
        net = load_sr_head_dir(local, map_location=map_location)
    logger.info("loaded SR head %s (x%d, %d parameters)", model_uri, net.scale, net.num_parameters())
    return net


class SRHeadPyfunc(PythonModel):
    """``pyfunc`` wrapper: float32 (N, 3, h, w) in [0, 1] -> float32 (N, 3, s*h, s*w), clamped to [0, 1].

    The network is rebuilt from the logged safetensors in :meth:`load_context`, never unpickled.
    ``model`` is the plain ``MultiTaskSRNet``, for callers that want the torch module
    (``mlflow.pyfunc.load_model(...).unwrap_python_model().model``). Inference runs on CPU unless
    the model config says ``{"device": "cuda"}``.
    """

    model: MultiTaskSRNet
    device: torch.device

    def load_context(self, context: Any) -> None:
        folder = Path(context.artifacts[ARTIFACT_KEY])
        config = getattr(context, "model_config", None) or {}
        self.device = torch.device(config.get("device", "cpu"))
        self.model = load_generator(folder / WEIGHTS_FILE, map_location=self.device)

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        array = np.asarray(model_input)
        if array.ndim != 4 or array.shape[1] != 3:
            raise ValueError(f"SR head expects a float32 (N, 3, h, w) batch, got shape {array.shape}")
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            out = self.model(x).clamp_(0.0, 1.0)
        return out.cpu().numpy()
