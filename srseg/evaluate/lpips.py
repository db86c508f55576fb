"""LPIPS (Zhang et al., CVPR 2018): a learned perceptual distance, implemented here from the paper.

Why LPIPS: the paper's claim is about perceived texture, which PSNR/SSIM do not measure; LPIPS
is the standard full-reference perceptual metric in SR tables (lower is better).

Definition (version 0.1): both images (RGB in [0, 1]) are mapped to [-1, 1], shifted and scaled
per channel, and passed through a frozen backbone (AlexNet or VGG16 conv features). At each of
five ReLU taps the features are divided by their L2 norm over channels ("channel-unit
normalised"), the squared difference is weighted per channel by learned non-negative 1x1 weights,
summed over channels and averaged over space; the five layer values are added. The *spatial map*
used for per-class analysis upsamples each layer's map to the input size (bilinear) before adding,
so averaging it over a mask gives that region's share of the distance.

Weights come from explicit sources only and are never downloaded (as in ``srseg.models.vgg``):

- ``"auto"``: the backbone is torchvision's ImageNet file, only if it is already in torch hub's
  cache (``torch.hub.get_dir()/checkpoints/<file>``); the linear weights are the files bundled
  with the ``lpips`` PyPI package (``lpips/weights/v0.1/<net>.pth``), located without importing
  it. Either missing -> :class:`MissingWeightsError` saying what is missing and where to put it.
- a directory: ``<dir>/<torchvision file name>`` (e.g. ``alexnet-owt-7be5be79.pth``) and
  ``<dir>/<net>.pth`` (LPIPS v0.1 linear weights: ``lin{i}.model.1.weight`` of shape (1, C, 1, 1)).
- ``"none"``: a randomly initialised backbone (seeded, so repeatable) and uniform linear weights,
  logged as a WARNING and flagged by ``random_weights``; the numbers mean nothing outside tests.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srseg.models.vgg import MissingWeightsError

logger = logging.getLogger(__name__)

NETS: tuple[str, ...] = ("alex", "vgg")
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10
_RANDOM_SEED = 0

# Conv feature layouts matching torchvision's ``alexnet().features`` / ``vgg16().features`` indices,
# so their checkpoints load by key. Entries: ("conv", in, out, kernel, stride, padding) | ("relu",) | ("pool", k, s).
_ALEX_LAYERS: tuple[tuple, ...] = (
    ("conv", 3, 64, 11, 4, 2),
    ("relu",),
    ("pool", 3, 2),
    ("conv", 64, 192, 5, 1, 2),
    ("relu",),
    ("pool", 3, 2),
    ("conv", 192, 384, 3, 1, 1),
    ("relu",),
    ("conv", 384, 256, 3, 1, 1),
    ("relu",),
    ("conv", 256, 256, 3, 1, 1),
    ("relu",),
)
_ALEX_TAPS = (1, 4, 7, 9, 11)  # relu1 .. relu5
_VGG_WIDTHS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_VGG_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3


def _vgg_layers() -> tuple[tuple, ...]:
    layers: list[tuple] = []
    channels = 3
    for width in _VGG_WIDTHS:
        if width == "M":
            layers.append(("pool", 2, 2))
        else:
            layers += [("conv", channels, width, 3, 1, 1), ("relu",)]
            channels = int(width)
    return tuple(layers)


def _layout(net: str) -> tuple[tuple[tuple, ...], tuple[int, ...]]:
    if net == "alex":
        return _ALEX_LAYERS, _ALEX_TAPS
    if net == "vgg":
        return _vgg_layers(), _VGG_TAPS
    raise ValueError(f"LPIPS net must be one of {NETS}, got {net!r}")


def _build(layers: tuple[tuple, ...], upto: int) -> nn.Sequential:
    modules: list[nn.Module] = []
    for spec in layers[: upto + 1]:
        if spec[0] == "conv":
            _, cin, cout, k, s, p = spec
            modules.append(nn.Conv2d(cin, cout, k, stride=s, padding=p))
        elif spec[0] == "relu":
            modules.append(nn.ReLU(inplace=False))
        else:
            modules.append(nn.MaxPool2d(spec[1], spec[2]))
    return nn.Sequential(*modules)


def _tap_channels(layers: tuple[tuple, ...], taps: tuple[int, ...]) -> list[int]:
    channels, out = 3, []
    for index, spec in enumerate(layers):
        if spec[0] == "conv":
            channels = spec[2]
        if index in taps:
            out.append(channels)
    return out


def torchvision_weights_file(net: str) -> tuple[str, str]:
    """(file name, URL) of torchvision's ImageNet weights for the LPIPS backbone ``net``."""
    from torchvision.models import AlexNet_Weights, VGG16_Weights  # deferred: only for weight lookup

    _layout(net)  # validates the name
    url = (AlexNet_Weights if net == "alex" else VGG16_Weights).IMAGENET1K_V1.url
    return os.path.basename(url), url


def bundled_linear_weights(net: str) -> Path | None:
    """``lpips/weights/v0.1/<net>.pth`` of an installed ``lpips`` package, found without importing it."""
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "weights" / "v0.1" / f"{net}.pth"
    return path if path.is_file() else None


def resolve_weight_files(weights: str | os.PathLike[str], net: str = "alex") -> tuple[Path, Path] | None:
    """(backbone file, linear weights file) for a weights setting; None for ``"none"``.

    Raises :class:`MissingWeightsError` naming every missing file and where it should go.
    """
    _layout(net)
    if isinstance(weights, str) and weights == "none":
        return None
    name, url = torchvision_weights_file(net)
    if isinstance(weights, str) and weights == "auto":
        backbone = Path(torch.hub.get_dir()) / "checkpoints" / name
        linear = bundled_linear_weights(net)
        problems = []
        if not backbone.is_file():
            problems.append(
                f"backbone weights not in the torch hub cache: download {url} to {backbone} "
                f"(hub dir {torch.hub.get_dir()}, set by TORCH_HOME)"
            )
        if linear is None:
            problems.append(
                f"LPIPS linear weights not found: install the 'lpips' package (it bundles weights/v0.1/{net}.pth)"
            )
        if problems:
            raise MissingWeightsError(
                "LPIPS weights missing: " + "; ".join(problems) + "; or configure a weights directory"
            )
        assert linear is not None
        return backbone, linear
    folder = Path(weights)
    if not folder.is_dir():
        raise MissingWeightsError(f"LPIPS weights directory not found: {folder}")
    backbone, linear = folder / name, folder / f"{net}.pth"
    missing = [str(p) for p in (backbone, linear) if not p.is_file()]
    if missing:
        raise MissingWeightsError(
            f"LPIPS weights missing in {folder}: {missing} (expected torchvision's {name} and the LPIPS v0.1 {net}.pth)"
        )
    return backbone, linear


def _load_state(path: Path) -> dict[str, Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


class LPIPS(nn.Module):
    """Frozen LPIPS distance; build it with :func:`load_lpips`.

    ``forward(x, y)`` takes (N, 3, H, W) RGB batches in [0, 1] and returns ``(distance (N,),
    spatial map (N, 1, H, W))``.
    """

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        layers, taps = _layout(net)
        self.net = net
        self.taps = taps
        self.features = _build(layers, max(taps))
        self.linear = nn.ParameterList([nn.Parameter(torch.ones(1, c, 1, 1)) for c in _tap_channels(layers, taps)])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.random_weights = True
        self.weights_source = "none"

    def load_backbone(self, path: Path) -> None:
        """Fill the conv layers from a torchvision-format state dict (``features.<i>.*`` keys)."""
        state = _load_state(path)
        wanted = self.features.state_dict()
        missing = [f"features.{k}" for k in wanted if f"features.{k}" not in state]
        if missing:
            raise ValueError(f"{path}: not a torchvision {self.net} state dict (missing {missing[:4]})")
        self.features.load_state_dict({k: state[f"features.{k}"] for k in wanted}, strict=True)

    def load_linear(self, path: Path) -> None:
        """Fill the per-layer channel weights from an LPIPS v0.1 file (``lin{i}.model.1.weight``)."""
        state = _load_state(path)
        for i, param in enumerate(self.linear):
            key = f"lin{i}.model.1.weight"
            if key not in state or tuple(state[key].shape) != tuple(param.shape):
                found = tuple(state[key].shape) if key in state else "absent"
                raise ValueError(
                    f"{path}: LPIPS {self.net} linear weight {key} must be {tuple(param.shape)}, found {found}"
                )
            param.data.copy_(state[key])

    def embed(self, x: Tensor) -> list[Tensor]:
        """Channel-unit-normalised features of an (N, 3, H, W) batch in [0, 1] at the five taps.

        Computing a reference's embedding once and comparing several images to it halves the
        work when many methods are scored against the same HR image.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS: expected an (N, 3, H, W) RGB batch, got shape {tuple(x.shape)}")
        h = (x * 2.0 - 1.0 - self.shift) / self.scale
        out: list[Tensor] = []
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in self.taps:
                out.append(h / (h.pow(2).sum(dim=1, keepdim=True).sqrt() + _EPS))
        return out

    def compare(self, fx: list[Tensor], fy: list[Tensor], size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """(distance (N,), spatial map (N, 1, *size)) between two embeddings of ``size`` images."""
        n = fx[0].shape[0]
        distance = fx[0].new_zeros(n)
        spatial = fx[0].new_zeros(n, 1, *size)
        for weight, a, b in zip(self.linear, fx, fy):
            layer_map = ((a - b).pow(2) * weight).sum(dim=1, keepdim=True)
            distance = distance + layer_map.mean(dim=(1, 2, 3))
            spatial = spatial + F.interpolate(layer_map, size=size, mode="bilinear", align_corners=False)
        return distance, spatial

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape != y.shape:
            raise ValueError(
                f"LPIPS: expected two equal (N, 3, H, W) batches, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        return self.compare(self.embed(x), self.embed(y), (int(x.shape[-2]), int(x.shape[-1])))

    def train(self, mode: bool = True) -> LPIPS:
        """Always eval mode: a measuring instrument."""
        return super().train(False)


def load_lpips(weights: str | os.PathLike[str] = "auto", net: str = "alex") -> LPIPS:
    """An LPIPS module (CPU, eval, no grad) with weights from ``weights`` (see module docstring)."""
    files = resolve_weight_files(weights, net)
    with torch.random.fork_rng(devices=[]):  # seeded random init without touching the global RNG
        torch.manual_seed(_RANDOM_SEED)
        model = LPIPS(net)
    if files is None:
        logger.warning("LPIPS uses a random %s backbone and uniform linear weights: values are not comparable", net)
    else:
        backbone, linear = files
        model.load_backbone(backbone)
        model.load_linear(linear)
        model.random_weights = False
        model.weights_source = f"{backbone} + {linear}"
        logger.info("LPIPS (%s) weights: backbone %s, linear %s", net, backbone, linear)
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()
