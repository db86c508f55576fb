"""Frozen VGG19 feature extractor for the perceptual loss, with explicit weight provenance.

The layer layout and parameter names match ``torchvision.models.vgg19().features`` (keys
``features.<index>.weight``), so torchvision's ImageNet checkpoint loads directly. Weights come
from exactly one of three explicit sources and are never downloaded:

- ``"auto"``: torchvision's ``VGG19_Weights.IMAGENET1K_V1`` file, only if it is already in torch
  hub's cache (``torch.hub.get_dir()/checkpoints/<file>``); otherwise ``MissingWeightsError``
  says where to put it and where to get it.
- a local path: a torchvision-format VGG19 state dict, read with ``torch.load(weights_only=True)``
  (the classifier may be absent; only the needed ``features.*`` entries are used).
- ``"random"``: random initialisation, logged as a WARNING (for tests and smoke runs only; the
  training stage tags such a run, see ``train.loss.vgg_weights``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

# torchvision's vgg19 "E" configuration: conv widths per block, a max-pool after each block.
_BLOCKS: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_WEIGHTS_WARNING = "perceptual loss uses random VGG19 weights: results are not comparable"


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights were requested but are not on disk (nothing is downloaded)."""


def vgg19_layer_names() -> list[str]:
    """Names of ``vgg19().features`` layers in order: conv1_1, relu1_1, ..., pool5."""
    names: list[str] = []
    for block, (_, n_convs) in enumerate(_BLOCKS, start=1):
        for i in range(1, n_convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


def imagenet_vgg19_weights_location() -> tuple[Path, str]:
    """(cache path, URL) of torchvision's VGG19 IMAGENET1K_V1 file under torch hub's cache dir."""
    from torchvision.models import VGG19_Weights  # deferred: only needed for the "auto" source

    url = VGG19_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def _resolve_weights_path(weights: str | os.PathLike[str]) -> Path | None:
    """The file to load for a weights setting, None for ``"random"``; raises if it is absent."""
    if isinstance(weights, str) and weights == "random":
        return None
    if isinstance(weights, str) and weights == "auto":
        path, url = imagenet_vgg19_weights_location()
        if not path.is_file():
            raise MissingWeightsError(
                f"VGG19 weights (torchvision IMAGENET1K_V1) not found at {path}. Download {url} and "
                f"place it at exactly that path (torch hub dir = {torch.hub.get_dir()}, set by "
                "TORCH_HOME), or configure a local weights path (train.loss.vgg_weights), 'none' to train without "
                "a perceptual loss, or 'random' for random weights."
            )
        return path
    path = Path(weights)
    if not path.is_file():
        raise MissingWeightsError(f"VGG19 weights file not found: {path}")
    return path


def _build_features(num_layers: int) -> nn.Sequential:
    """The first ``num_layers`` layers of vgg19().features, with non-inplace ReLUs so that
    intermediate outputs returned to the caller are never overwritten by a later layer."""
    layers: list[nn.Module] = []
    in_ch = 3
    for width, n_convs in _BLOCKS:
        for _ in range(n_convs):
            layers += [nn.Conv2d(in_ch, width, 3, padding=1), nn.ReLU(inplace=False)]
            in_ch = width
        layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers[:num_layers])


class VGG19Features(nn.Module):
    """Frozen VGG19 truncated after the deepest requested layer; returns {layer name: features}.

    Inputs are RGB images in [0, 1]; with ``use_input_norm`` they are normalised with ImageNet
    mean/std first, as the pretrained weights expect. Parameters never require grad and the module
    stays in eval mode even if a parent calls ``.train()``.
    """

    mean: Tensor  # ImageNet statistics, non-persistent buffers
    std: Tensor

    def __init__(
        self,
        layers: Sequence[str] | str = ("conv5_4",),
        weights: str | os.PathLike[str] = "auto",
        use_input_norm: bool = True,
    ) -> None:
        super().__init__()
        requested = [layers] if isinstance(layers, str) else list(layers)
        names = vgg19_layer_names()
        if not requested:
            raise ValueError("layers must name at least one VGG19 layer")
        unknown = [name for name in requested if name not in names]
        if unknown:
            raise ValueError(f"unknown VGG19 layer(s) {unknown}; valid names: {names}")
        self.layers = requested
        self._index = {name: names.index(name) for name in requested}
        path = _resolve_weights_path(weights)  # fail fast, before building the network
        self.features = _build_features(max(self._index.values()) + 1)
        self.use_input_norm = use_input_norm
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if path is None:
            logger.warning(RANDOM_WEIGHTS_WARNING)
            self.weights_source = "random"
        else:
            self._load_weights(path)
            self.weights_source = str(path)
        for param in self.parameters():
            param.requires_grad_(False)
        self.eval()

    def _load_weights(self, path: Path) -> None:
        """Fill ``self.features`` from a torchvision-format VGG19 state dict file."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
        wanted = self.features.state_dict()
        missing = [f"features.{k}" for k in wanted if f"features.{k}" not in state]
        if missing:
            raise ValueError(f"{path} is not a torchvision VGG19 state dict: missing {missing[:4]}")
        self.features.load_state_dict({k: state[f"features.{k}"] for k in wanted}, strict=True)
        logger.info("perceptual loss VGG19 weights loaded from %s", path)

    def train(self, mode: bool = True) -> VGG19Features:
        """Always stays in eval mode: the extractor is a fixed measuring instrument."""
        return super().train(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an (N, 3, H, W) RGB batch, got shape {tuple(x.shape)}")
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        wanted = {index: name for name, index in self._index.items()}
        out: dict[str, Tensor] = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in wanted:
                out[wanted[index]] = x
        return out
