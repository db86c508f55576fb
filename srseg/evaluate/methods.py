"""Resolve an evaluation *method* string to something that super-resolves an LR batch.

Method strings (the values of ``evaluate(methods=...)``):

- ``bicubic``: MATLAB-compatible bicubic upscaling of the LR image (the field's baseline), on float
  values, rounded to 8 bits once at the end like every other method's output.
- a generator weights file (``.safetensors`` with its JSON sidecar, :mod:`srseg.models.io`): the
  network's ``super_resolve``; if it has a segmentation head it can also segment (``seg_model``).
- an MLflow model URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/ID/PATH``) or any
  other file ``srseg upscale`` accepts (export folder, TorchScript, ONNX): loaded through
  :func:`srseg.inference.upscale.load_sr_model`, so evaluation scores exactly what deployment runs.

Every method maps a (1, 3, h, w) float batch in [0, 1] to (1, 3, s h, s w) clamped to [0, 1].
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from srseg.degrade.bicubic import imresize
from srseg.errors import SrsegError
from srseg.models.generator import MultiTaskSRNet

logger = logging.getLogger(__name__)

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


class MethodError(SrsegError, ValueError):
    """A method string cannot be resolved or its model does not fit the evaluation."""


@dataclass
class Method:
    """A named, loaded SR method. ``network`` is set for generator weights files."""

    name: str
    spec: str
    kind: str  # "bicubic" | "generator" | "model"
    fn: Callable[[Tensor], Tensor]
    network: MultiTaskSRNet | None = None

    @property
    def can_segment(self) -> bool:
        return self.network is not None and self.network.has_seg_head

    def super_resolve(self, lr: Tensor) -> Tensor:
        """(1, 3, h, w) in [0, 1] -> clamped SR batch."""
        with torch.inference_mode():
            return self.fn(lr).float().clamp_(0.0, 1.0)

    def super_resolve_and_segment(self, lr: Tensor) -> tuple[Tensor, Tensor]:
        """(clamped SR, segmentation logits) from one shared forward pass."""
        if not self.can_segment:
            raise MethodError(f"method {self.name!r} ({self.spec}) has no segmentation head")
        assert self.network is not None
        with torch.inference_mode():
            sr, logits = self.network.forward_multitask(lr)
            return sr.float().clamp_(0.0, 1.0), logits


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device in ("cpu", "cuda") or device.startswith("cuda:"):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise MethodError(f"device {device!r} requested but CUDA is not available")
        return torch.device(device)
    raise MethodError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def _bicubic(scale: int) -> Callable[[Tensor], Tensor]:
    def fn(lr: Tensor) -> Tensor:
        return imresize(lr.float(), scale=float(scale))

    return fn


def load_method(
    name: str,
    spec: str,
    scale: int,
    device: torch.device,
    tracking_uri: str | None = None,
) -> Method:
    """Load method ``name`` from its string ``spec`` (see the module docstring)."""
    spec = str(spec)
    if not spec.strip():
        raise MethodError(f"method {name!r}: empty model string")
    if spec == "bicubic":
        return Method(name, spec, "bicubic", _bicubic(scale))
    path = Path(spec)
    if not spec.startswith(MLFLOW_SCHEMES) and path.suffix == ".safetensors":
        from srseg.models.io import WeightsFileError, load_generator

        try:
            net = load_generator(path, map_location=device)
        except (WeightsFileError, OSError) as exc:
            raise MethodError(f"method {name!r}: {exc}") from exc
        if net.scale != scale:
            raise MethodError(f"method {name!r}: {path} is a x{net.scale} generator, evaluation scale is x{scale}")
        return Method(name, spec, "generator", net.super_resolve, net)
    if not spec.startswith(MLFLOW_SCHEMES) and not path.exists():
        raise MethodError(
            f"method {name!r}: {spec!r} is not 'bicubic', an existing weights file/folder, or an MLflow URI "
            f"({', '.join(s + '...' for s in MLFLOW_SCHEMES)})"
        )
    from srseg.inference.upscale import load_sr_model

    try:
        model = load_sr_model(spec, scale=scale, device=str(device.type), tracking_uri=tracking_uri)
    except ValueError as exc:  # UpscaleError is a ValueError
        raise MethodError(f"method {name!r}: {exc}") from exc
    return Method(name, spec, "model", model.fn)


def to_tensor(image: np.ndarray, device: torch.device) -> Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float in [0, 1] on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device).float().div_(255.0)


def to_uint8(batch: Tensor) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded half up as the SR field does."""
    return batch[0].clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
