"""Generator weights files: a safetensors state dict plus a JSON sidecar with the constructor config.

Format ``srseg.generator/1`` (what the trainer writes for its best EMA generator, and what
``srseg export`` and ``srseg upscale`` read)::

    best_ema.safetensors        every entry of ``model.state_dict()`` (CPU, contiguous tensors)
    best_ema.safetensors.json   {"format": "srseg.generator/1",
                                 "architecture": registered generator name (srseg.models.registry),
                                 "config": the generator's constructor keyword arguments,
                                 "sha256": hex digest of the .safetensors file,
                                 "num_parameters": ..., "metadata": {free-form strings}}

A sidecar without ``architecture`` (written before the registry existed) means
``multitask_srresnet``, the only generator of that time; a config without ``global_residual``
means ``"none"`` (the constructor default), so older files load unchanged.

Why two files: safetensors cannot execute code on load (unlike pickled ``.pt`` files), and the
config must travel with the tensors to rebuild the network; keeping it in a readable sidecar lets
people and tools (DVC, MLflow, the model card) see what a file holds without loading it. The
SR-only network is the same format with ``num_classes=0`` in its config.

Loading checks, each with an error naming the file: the sidecar exists and has the format tag;
the digest matches (a weights file replaced without its sidecar); the weights file really is
safetensors (pickle archives are refused, never unpickled); the keys equal those of the network
the config builds (missing and unexpected keys are listed) and every shape matches.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from srseg.fileio import sha256_file, write_bytes_atomic, write_json_atomic
from srseg.models.generator import MultiTaskSRNet
from srseg.models.registry import DEFAULT_ARCHITECTURE, architecture_of, build_generator

logger = logging.getLogger(__name__)

GENERATOR_FORMAT = "srseg.generator/1"
SIDECAR_SUFFIX = ".json"
_MAX_HEADER_BYTES = 100 * 1024 * 1024


class WeightsFileError(ValueError):
    """A generator weights file or its sidecar is missing, malformed, tampered with or unsafe."""


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """``<file>.json`` next to the weights file (the suffix is appended, not substituted)."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def save_generator(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``model``'s state dict as safetensors and its config as the JSON sidecar (both atomic).

    ``model`` is a registered generator (:mod:`srseg.models.registry`; DDP / torch.compile
    wrappers are unwrapped), e.g. the trainer's EMA copy. The weights go first and the sidecar
    (carrying their digest) last, so a crash in between leaves a pair that :func:`load_generator`
    reports instead of mis-loading.
    """
    from srseg.models.ema import unwrap_model

    net: Any = unwrap_model(model)  # a registered generator: has .config and .num_parameters()
    try:
        architecture = architecture_of(net)
    except TypeError as exc:
        raise TypeError(f"save_generator: {exc}") from None
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: generator weights must be saved with the .safetensors suffix")
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    blob = st_save(
        tensors,
        metadata={
            "format": GENERATOR_FORMAT,
            "architecture": architecture,
            "config": json.dumps(net.config, sort_keys=True),
        },
    )
    write_bytes_atomic(path, canonical_safetensors(blob))
    sidecar = {
        "format": GENERATOR_FORMAT,
        "architecture": architecture,
        "config": net.config,
        "sha256": sha256_file(path),
        "num_parameters": net.num_parameters(),
        "metadata": meta,
    }
    write_json_atomic(sidecar_path(path), sidecar)
    logger.info("wrote generator weights %s (%d tensors, config %s)", path, len(tensors), net.config)
    return path


def canonical_safetensors(blob: bytes) -> bytes:
    """``blob`` with its JSON header written with sorted keys, the tensor bytes untouched.

    safetensors writes the ``__metadata__`` map in hash order, which changes from process to
    process, so the same state saved twice gave different files (and DVC saw changes where there
    were none). Tensor offsets are explicit in the header, so reordering its keys is safe; the
    header stays padded with spaces to a multiple of 8 bytes, as safetensors writes it.
    """
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + length :]


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated sidecar of a weights file (format tag and config present)."""
    side = sidecar_path(path)
    if not side.is_file():
        raise WeightsFileError(f"{path}: config sidecar {side} not found (weights files come in pairs)")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsFileError(f"{side}: unreadable sidecar ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != GENERATOR_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise WeightsFileError(f"{side}: format {found!r} is not {GENERATOR_FORMAT!r}")
    if not isinstance(data.get("config"), dict):
        raise WeightsFileError(f"{side}: 'config' must be an object of generator constructor arguments")
    if not isinstance(data.setdefault("architecture", DEFAULT_ARCHITECTURE), str):
        raise WeightsFileError(f"{side}: 'architecture' must be a generator name, got {data['architecture']!r}")
    return data


def _check_safetensors_header(path: Path) -> None:
    """Refuse anything that is not safetensors (pickle, zip-pickle ``.pt``) before parsing it."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError as exc:
        raise WeightsFileError(f"{path}: cannot read weights ({exc.strerror or exc})") from exc
    if len(head) == 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if header_len <= min(_MAX_HEADER_BYTES, size - 8) and head[8:9] == b"{":
            return
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise WeightsFileError(
            f"{path}: this is a pickle/torch.save archive; refusing to unpickle it. "
            "Write generator weights with srseg.models.io.save_generator (safetensors)."
        )
    raise WeightsFileError(f"{path}: not a safetensors file (bad header)")


def load_state_dict_file(
    path: str | os.PathLike[str], *, verify_digest: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(CPU state dict, sidecar) of a weights file, checked but not yet matched to a network."""
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"{path}: generator weights file not found")
    _check_safetensors_header(path)
    sidecar = read_sidecar(path)
    digest = sidecar.get("sha256")
    if verify_digest and digest is not None and sha256_file(path) != digest:
        raise WeightsFileError(
            f"{path}: SHA-256 does not match its sidecar {sidecar_path(path).name} "
            "(weights replaced or truncated without rewriting the sidecar)"
        )
    try:
        state = st_load(path.read_bytes())
    except (SafetensorError, ValueError, OSError) as exc:
        raise WeightsFileError(f"{path}: corrupt safetensors file ({exc})") from exc
    return state, sidecar


def build_from_config(
    config: dict[str, Any], source: str | os.PathLike[str] = "<config>", architecture: str = DEFAULT_ARCHITECTURE
) -> MultiTaskSRNet:
    """The registered generator ``architecture`` built from ``config``, errors naming the source."""
    try:
        return build_generator(architecture, config)
    except (TypeError, ValueError) as exc:
        raise WeightsFileError(f"{source}: config {config} does not build a {architecture} generator ({exc})") from exc


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike[str]) -> None:
    """Raise naming every missing/unexpected key and shape mismatch between ``state`` and ``model``."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs net {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if shapes:
        problems.append(f"shape mismatches {shapes}")
    if problems:
        raise WeightsFileError(f"{source}: weights do not match the network of its config: " + "; ".join(problems))


def load_generator(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    verify_digest: bool = True,
) -> MultiTaskSRNet:
    """Rebuild the network from the sidecar config and load the safetensors weights (eval mode).

    The class comes from the sidecar's ``architecture`` (:mod:`srseg.models.registry`). Works for
    full multitask generators and for SR-only exports (``num_classes=0``).
    """
    state, sidecar = load_state_dict_file(path, verify_digest=verify_digest)
    model = build_from_config(sidecar["config"], path, sidecar["architecture"])
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True)
    model.to(map_location).eval()
    logger.info("loaded generator %s (%d parameters)", path, model.num_parameters())
    return model
