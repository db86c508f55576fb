"""Generators by name: the one place where a network class is chosen.

Training builds its generator from ``train.generator.architecture``; the name is written into
every weights sidecar (:mod:`srseg.models.io`), and evaluation, export, tiled upscaling and the
MLflow registry loader rebuild the network from that name and the recorded constructor config.
No stage refers to a generator class directly, so a new architecture is one entry here.

A registered class takes its whole configuration as constructor keyword arguments and exposes:
``config`` (those arguments), ``scale``, ``num_classes``, ``has_seg_head``, ``forward`` (the SR
image only), ``forward_multitask`` (SR image and segmentation logits), ``super_resolve``,
``sr_state_dict``, ``num_parameters`` and the static ``receptive_field_radius(config)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from srseg.models.generator import MultiTaskSRNet

GENERATORS: dict[str, type[MultiTaskSRNet]] = {
    # SRResNet trunk, shared decoder, SR and segmentation output layers (Rad et al.); the
    # ``global_residual`` option adds MATLAB-bicubic(LR) to the SR output.
    "multitask_srresnet": MultiTaskSRNet,
}
DEFAULT_ARCHITECTURE = "multitask_srresnet"


def generator_class(name: str) -> type[MultiTaskSRNet]:
    """The class registered as ``name``; an unknown name is an error listing the known ones."""
    try:
        return GENERATORS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown generator architecture {name!r} (known: {', '.join(sorted(GENERATORS))})") from None


def build_generator(name: str, config: Mapping[str, Any]) -> MultiTaskSRNet:
    """``generator_class(name)(**config)``."""
    return generator_class(name)(**dict(config))


def architecture_of(model: nn.Module) -> str:
    """The registered name of ``model``'s class (exact class match: a subclass is not the same net)."""
    for name, cls in GENERATORS.items():
        if type(model) is cls:
            return name
    raise TypeError(f"{type(model).__name__} is not a registered generator ({', '.join(sorted(GENERATORS))})")


def receptive_field_radius(name: str, config: Mapping[str, Any]) -> int:
    """Receptive-field radius in LR pixels of the SR output of generator ``name`` with ``config``."""
    return int(generator_class(name).receptive_field_radius(dict(config)))
