"""The pretrained weight files the chosen params need, checked before anything trains.

VGG19 (the GAN stage's perceptual loss, ``train.loss.vgg_weights``) and the LPIPS AlexNet backbone
plus its linear layers (``evaluate.lpips_weights``, needed when ``promote.perceptual: lpips``
gates promotion) are never downloaded at run time. Without this check a missing VGG19 file
surfaces when the GAN stage starts, after the whole PSNR stage; a missing LPIPS backbone makes the
gate fail closed, so nothing is ever promoted.

- :func:`check_weights` lists every needed file that is missing (or whose content does not match
  the hash in its torchvision file name) in one :class:`MissingWeightsError` that says where each
  file goes and where to get it. ``scope="train"``: what ``srseg train`` needs (both stages,
  so the PSNR stage refuses to start without the GAN stage's VGG19); ``scope="pipeline"``: that
  plus the metrics of evaluation and the promotion gate (the pipeline's preflight step).
- :func:`stage_weights` copies the files (hash-checked) into one folder, which either goes into
  the container image's torch hub cache (``make image WEIGHTS=<folder>``) or onto the dataset
  volume, with the params pointing at it (README, "Pretrained weights").
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from srseg.models.vgg import MissingWeightsError

if TYPE_CHECKING:
    from srseg.config import Params

Scope = Literal["train", "pipeline"]
LPIPS_NET = "alex"  # the backbone srseg's evaluation uses
_TORCHVISION_HASH = re.compile(r"-([0-9a-f]{8,64})\.pth$")  # torchvision names files <name>-<sha256 prefix>.pth
STAGING_HINT = (
    "stage them once: into the container image with `make image WEIGHTS=<folder>` (the torch hub cache of "
    "the image), or onto the dataset volume with `srseg weights stage` and params pointing there "
    "(README, 'Pretrained weights'); nothing is downloaded at run time"
)


@dataclass(frozen=True)
class WeightFile:
    """One file the params need: what for, where it must be, where to get it."""

    purpose: str
    path: Path
    source: str  # download URL or the package that ships it

    @property
    def expected_sha256_prefix(self) -> str | None:
        match = _TORCHVISION_HASH.search(self.path.name)
        return match.group(1) if match else None


def _hub_checkpoints() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _vgg_file(params: Params) -> WeightFile | None:
    from srseg.models.vgg import imagenet_vgg19_weights_location

    loss = params.train.loss
    if loss.perceptual_weight <= 0 or loss.vgg_weights in ("none", "random"):
        return None  # no perceptual loss, or a random-weight VGG19 asked for explicitly (tagged by training)
    purpose = "VGG19 for the GAN stage's perceptual loss (train.loss.vgg_weights)"
    path, url = imagenet_vgg19_weights_location()
    if loss.vgg_weights == "auto":
        return WeightFile(f"{purpose}, torchvision IMAGENET1K_V1 in the torch hub cache", path, url)
    return WeightFile(purpose, Path(loss.vgg_weights), url)


def _lpips_files(weights: str, purpose: str) -> list[WeightFile]:
    """The LPIPS AlexNet backbone and linear layers for the setting ``weights`` (auto | folder;
    ``none`` is a random-weight LPIPS asked for explicitly and flagged, so it needs no file)."""
    from srseg.evaluate.lpips import bundled_linear_weights, torchvision_weights_file

    if weights == "none":
        return []

    name, url = torchvision_weights_file(LPIPS_NET)
    if weights == "auto":
        linear = bundled_linear_weights(LPIPS_NET)
        return [
            WeightFile(f"{purpose}: AlexNet backbone in the torch hub cache", _hub_checkpoints() / name, url),
            WeightFile(
                f"{purpose}: linear layers bundled with the lpips package",
                linear or Path(f"<lpips package>/weights/v0.1/{LPIPS_NET}.pth"),
                "pip install lpips==0.1.4",
            ),
        ]
    folder = Path(weights)
    return [
        WeightFile(f"{purpose}: AlexNet backbone", folder / name, url),
        WeightFile(
            f"{purpose}: linear layers", folder / f"{LPIPS_NET}.pth", "the lpips package's weights/v0.1/alex.pth"
        ),
    ]


def _selection_lpips_files(params: Params) -> list[WeightFile]:
    """LPIPS for a training stage that chooses its weights by ``select: min_lpips`` (``auto`` falls
    back to the final EMA weights without LPIPS, so it needs nothing)."""
    train = params.train
    stages = [
        name for name, stage in (("psnr", train.psnr_stage), ("gan", train.gan_stage)) if stage.select == "min_lpips"
    ]
    if not stages:
        return []
    keys = ", ".join(f"train.{name}_stage.select" for name in stages)
    return _lpips_files(train.lpips_weights, f"LPIPS for checkpoint choice ({keys}: min_lpips, train.lpips_weights)")


def _gate_lpips_files(params: Params) -> list[WeightFile]:
    if params.promote.perceptual != "lpips":
        return []
    return _lpips_files(
        params.evaluate.lpips_weights,
        "LPIPS for evaluation and the promotion gate (promote.perceptual: lpips, evaluate.lpips_weights)",
    )


def required_weights(params: Params, scope: Scope = "pipeline") -> list[WeightFile]:
    """The files ``params`` need: for training (``train``) or for the whole pipeline (``pipeline``)."""
    if scope not in ("train", "pipeline"):
        raise ValueError(f"scope must be 'train' or 'pipeline', got {scope!r}")
    files = [f for f in [_vgg_file(params)] if f is not None] + _selection_lpips_files(params)
    if scope == "pipeline":
        files += _gate_lpips_files(params)
    return files


def sha256_matches(path: Path, prefix: str) -> bool:
    """Whether ``path``'s SHA-256 starts with ``prefix`` (torchvision's file-name check)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest().startswith(prefix)


def _problem(file: WeightFile) -> str | None:
    if not file.path.is_file():
        return f"{file.purpose}: missing, put the file at {file.path} (from {file.source})"
    prefix = file.expected_sha256_prefix
    if prefix and not sha256_matches(file.path, prefix):
        return (
            f"{file.purpose}: {file.path} is corrupt or truncated (its SHA-256 does not start with {prefix}); "
            f"replace it (from {file.source})"
        )
    return None


def check_weights(params: Params, scope: Scope = "pipeline") -> list[WeightFile]:
    """The needed files, all present and intact; otherwise one :class:`MissingWeightsError` naming each problem."""
    files = required_weights(params, scope)
    problems = [p for p in (_problem(f) for f in files) if p]
    if problems:
        raise MissingWeightsError(
            "pretrained weights needed by these params are not usable:\n  - "
            + "\n  - ".join(problems)
            + f"\n{STAGING_HINT}"
        )
    return files


def stage_weights(dest: str | Path, source: str | Path | None = None) -> list[Path]:
    """Copy VGG19, the LPIPS AlexNet backbone (from ``source``, default the torch hub cache) and the
    LPIPS linear layers (from the installed lpips package) into ``dest``, hash-checked.

    ``dest`` then serves both ways: as the image's hub cache (``make image WEIGHTS=dest``) or on the
    volume as ``train.loss.vgg_weights: <dest>/<vgg19 file>`` and ``evaluate.lpips_weights: <dest>``.
    """
    from srseg.evaluate.lpips import bundled_linear_weights, torchvision_weights_file
    from srseg.fileio import atomic_open
    from srseg.models.vgg import imagenet_vgg19_weights_location

    src = Path(source) if source is not None else _hub_checkpoints()
    vgg_name = imagenet_vgg19_weights_location()[0].name
    alex_name, alex_url = torchvision_weights_file(LPIPS_NET)
    linear = bundled_linear_weights(LPIPS_NET)
    wanted = [
        WeightFile("VGG19 (perceptual loss)", src / vgg_name, imagenet_vgg19_weights_location()[1]),
        WeightFile("AlexNet (LPIPS backbone)", src / alex_name, alex_url),
        WeightFile("LPIPS linear layers", linear or src / f"{LPIPS_NET}.pth", "the lpips package"),
    ]
    problems = [p for p in (_problem(f) for f in wanted) if p]
    if problems:
        raise MissingWeightsError(f"cannot stage weights from {src}:\n  - " + "\n  - ".join(problems))
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    staged = []
    for file in wanted:
        target = out / file.path.name
        with file.path.open("rb") as reader, atomic_open(target, "wb") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
        staged.append(target)
    return staged
