"""Full-state training checkpoints: atomic, checksummed, loaded with ``weights_only=True``.

A checkpoint ``iter_XXXXXXXX.pt`` is written to a temp file and renamed into place, then its
SHA-256 goes to a sidecar ``iter_XXXXXXXX.pt.sha256`` (also atomic). Loading requires the sidecar
and a matching digest, so a file cut short by a crash or a full disk, or one whose sidecar was
never written (killed between the two renames), is reported and skipped, and resume falls back
to the previous checkpoint. Everything inside is tensors and plain Python values (RNG states
included), so ``torch.load(weights_only=True)`` can read it without executing pickled code.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from srseg.fileio import atomic_open, sha256_file, write_text_atomic

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "srseg.train/1"
_NAME = re.compile(r"^iter_(\d{8,})\.pt$")
_SIDECAR_SUFFIX = ".sha256"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, tampered with or not a srseg checkpoint."""


def checkpoint_name(iteration: int) -> str:
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")
    return f"iter_{iteration:08d}.pt"


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + _SIDECAR_SUFFIX)


def save_file(path: str | Path, obj: dict[str, Any]) -> Path:
    """``torch.save`` ``obj`` atomically, then write its checksum sidecar atomically."""
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
    write_text_atomic(sidecar_path(path), f"{sha256_file(path)}  {path.name}\n")
    return path


def verify_file(path: str | Path) -> None:
    """Raise ``CheckpointError`` unless ``path`` and its sidecar exist and the digests agree."""
    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    if not side.is_file():
        raise CheckpointError(f"{path}: no checksum sidecar {side.name} (write was interrupted)")
    expected = side.read_text(encoding="utf-8").split()[:1]
    actual = sha256_file(path)
    if expected != [actual]:
        raise CheckpointError(f"{path}: SHA-256 {actual} does not match {side.name} ({' '.join(expected)!r})")


def load_file(
    path: str | Path, map_location: str | torch.device = "cpu", expect_format: str | None = None
) -> dict[str, Any]:
    """Verify the checksum, then ``torch.load(weights_only=True)``; every failure is a CheckpointError."""
    path = Path(path)
    verify_file(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # the unpickler raises many unrelated types on bad input
        raise CheckpointError(f"{path}: cannot be loaded ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(obj).__name__}")
    if expect_format is not None and obj.get("format") != expect_format:
        raise CheckpointError(f"{path}: format {obj.get('format')!r}, expected {expect_format!r}")
    return obj


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of every ``iter_*.pt`` in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for child in directory.iterdir():
        match = _NAME.match(child.name)
        if match and child.is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def load_latest(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that verifies and loads; bad ones are skipped with a warning."""
    for _, path in reversed(list_checkpoints(directory)):
        try:
            return path, load_file(path, map_location, expect_format=CHECKPOINT_FORMAT)
        except CheckpointError as exc:
            logger.warning("skipping unusable checkpoint: %s", exc)
    return None


def prune_checkpoints(directory: str | Path, keep: int, fresh: str | Path | None = None) -> list[Path]:
    """Keep the newest ``keep`` *usable* checkpoints; delete older ones and unusable ones.

    Usable means the checksum sidecar verifies (``fresh``, the checkpoint just written, is usable
    by construction and never re-read). Counting by validity, not by name, matters after a fresh
    start over unusable checkpoints: a corrupt ``iter_00000900.pt`` must not push every new, good
    checkpoint out, or a run could never be resumed. Files that cannot be read right now (an I/O
    error, not a bad digest) are left alone. Returns the removed paths.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    fresh_path = Path(fresh) if fresh is not None else None
    removed: list[Path] = []
    usable = 0
    for _, path in reversed(list_checkpoints(directory)):
        if usable >= keep:
            reason = None  # older than the newest `keep` usable ones: not worth verifying
        elif path == fresh_path:
            usable += 1
            continue
        else:
            try:
                verify_file(path)
            except CheckpointError as exc:
                reason = str(exc)
            except OSError as exc:
                logger.warning("cannot check %s now (%s); leaving it", path, exc)
                continue
            else:
                usable += 1
                continue
        if reason is not None:
            logger.warning("removing unusable checkpoint: %s", reason)
        for victim in (path, sidecar_path(path)):
            victim.unlink(missing_ok=True)
        removed.append(path)
    return removed


def remove_temp_files(directory: str | Path) -> None:
    """Delete temp files a killed writer left behind (``atomic_open`` names them ``.<name>.*.tmp``)."""
    directory = Path(directory)
    if directory.is_dir():
        for child in directory.glob(".*.tmp"):
            child.unlink(missing_ok=True)


# --- RNG states as plain values (weights_only-loadable) -----------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states as tensors, ints and tuples."""
    version, internal, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": [s.cpu() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_state``; CUDA states are restored when the device count matches."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["kind"],
            npy["keys"].numpy().astype(np.uint32),
            int(npy["pos"]),
            int(npy["has_gauss"]),
            float(npy["gauss"]),
        )
    )
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in cuda_states])
        else:
            logger.warning(
                "checkpoint holds %d CUDA RNG states but %d devices are visible; CUDA RNG not restored",
                len(cuda_states),
                torch.cuda.device_count(),
            )
