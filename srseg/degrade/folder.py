"""The `degrade` stage: HR images -> LR PNGs plus a manifest that records how they were made.

Two entry points:

- :func:`degrade_folder`: any folder of images (e.g. a benchmark's HR/), mirrored as PNGs.
- :func:`degrade_dataset`: a prepared HR root (``Manifest`` kind "hr") -> ``<lr_root>/<split>/<012d id>.png``
  with an LR manifest that points back at the HR manifest by checksum.

Each HR image is modcropped to a multiple of ``scale`` first, so HR size == scale * LR size.
Randomness (high-order method only) is seeded per image from (seed, HR relative path), so the
output of an image does not depend on the order or the set of images processed.

A run removes the old manifest first, writes every file atomically, records each finished one in
a journal (``.srseg-degrade.jsonl``, see :mod:`srseg.journal`) and writes the new manifest last,
so an interrupted run never leaves a manifest describing a partial set. If an input fails, the
error names it and how many outputs are complete; re-running the same command keeps those (same
settings, unchanged files) and does the rest. The journal is removed once the manifest is written.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from srseg.data.manifest import (
    LR_FORMAT,
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    Sample,
    manifest_checksum,
)
from srseg.degrade.bicubic import bicubic_downscale, modcrop
from srseg.degrade.highorder import HighOrderParams, degrade_high_order
from srseg.errors import SrsegError
from srseg.fileio import remove_stale_temp_files, sha256_file
from srseg.imageio import ImageReadError, list_images, load_rgb, save_png_atomic
from srseg.journal import Journal

METHODS = ("bicubic", "highorder")
FOLDER_SPLIT = "images"
JOURNAL_NAME = ".srseg-degrade.jsonl"
JOURNAL_KIND = "srseg-degrade/1"

_log = logging.getLogger(__name__)


class DegradeError(SrsegError):
    """A degrade run stopped at one input; the message names it and what is already complete."""


@dataclass
class DegradeReport:
    """What a degrade run did: files written, and files skipped with the reason.

    Plain str/int/list fields so ``dataclasses.asdict(report)`` is JSON-serialisable (the CLI
    prints it).
    """

    output_dir: str
    manifest_path: str
    written: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path": input file, "reason": ...}

    @property
    def skipped_count(self) -> int:
        return len(self.skipped)


def image_seed(seed: int, relative_path: str) -> int:
    """A 63-bit seed from the run seed and an image's relative path (order independent)."""
    digest = hashlib.sha256(f"{int(seed)}\0{relative_path}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _check_args(scale: int, method: str, high_order: HighOrderParams | None) -> HighOrderParams | None:
    if int(scale) != scale or scale < 1:
        raise ValueError(f"degrade: scale must be a positive integer, got {scale!r}")
    if method not in METHODS:
        raise ValueError(f"degrade: method must be one of {METHODS}, got {method!r}")
    if method == "highorder":
        return high_order or HighOrderParams()
    if high_order is not None:
        raise ValueError("degrade: high_order parameters were given but method is 'bicubic'")
    return None


def _degrade_one(hr: np.ndarray, scale: int, method: str, params: HighOrderParams | None, seed: int) -> np.ndarray:
    """(H, W, 3) uint8 HR, already modcropped -> (H/scale, W/scale, 3) uint8 LR."""
    tensor = torch.from_numpy(np.ascontiguousarray(hr)).permute(2, 0, 1).unsqueeze(0)
    if method == "bicubic":
        lr = bicubic_downscale(tensor, scale)
    else:
        generator = torch.Generator().manual_seed(seed)
        out = degrade_high_order(tensor.float() / 255.0, scale, params, generator)
        lr = torch.round(out * 255.0).clamp(0, 255).to(torch.uint8)
    return lr[0].permute(1, 2, 0).contiguous().numpy()


def _load_hr(path: Path, scale: int) -> np.ndarray:
    image = modcrop(load_rgb(path), scale)
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageReadError(path, f"smaller than the scale {scale}")
    return image


def _meta(scale: int, method: str, seed: int, params: HighOrderParams | None) -> dict[str, Any]:
    return {
        "scale": int(scale),
        "method": method,
        "seed": int(seed),
        "params": params.to_dict() if params is not None else None,
    }


def _start_clean(output_dir: Path) -> Path:
    manifest_path = output_dir / MANIFEST_NAME
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)
    return manifest_path


def _stopped(exc: Exception, done: int, total: int, output_dir: Path, journal: Journal) -> DegradeError:
    return DegradeError(
        f"{exc} -- stopped there: {done} of {total} outputs are complete in {output_dir} (listed in "
        f"{journal.path.name}; no manifest, so it is not a dataset yet); the same command resumes"
    )


def _refuse_overlap(source: Path, target: Path) -> None:
    """Inputs are never written: the output must be neither the input, inside it, nor around it."""
    src, out = source.resolve(), target.resolve()
    if out == src or src in out.parents or out in src.parents:
        relation = "is" if out == src else ("lies inside" if src in out.parents else "contains")
        raise ValueError(f"degrade: output {target} {relation} the input {source}; choose a folder outside it")


def _progress(items: list[Any], progress: bool, desc: str) -> Iterable[Any]:
    return tqdm(items, desc=desc, unit="img", disable=not progress)


def degrade_folder(
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    scale: int,
    method: str = "bicubic",
    high_order: HighOrderParams | None = None,
    seed: int = 0,
    skip_corrupt: bool = False,
    progress: bool = True,
) -> DegradeReport:
    """Degrade every image under ``input_dir`` (recursive) to ``<output_dir>/<relative path>.png``.

    An unreadable image (or one smaller than ``scale``) raises :class:`ImageReadError` naming it,
    unless ``skip_corrupt``: then it is logged, counted in the report and left out of the manifest.
    """
    params = _check_args(scale, method, high_order)
    scale = int(scale)
    source, target = Path(input_dir), Path(output_dir)
    _refuse_overlap(source, target)
    files = list_images(source)
    outputs: dict[str, str] = {}
    for rel in files:
        out_rel = Path(rel).with_suffix(".png").as_posix()
        if out_rel in outputs:
            raise ValueError(
                f"degrade: {source / outputs[out_rel]} and {source / rel} would both write {target / out_rel}"
            )
        outputs[out_rel] = rel

    manifest_path = _start_clean(target)
    journal = Journal(
        target / JOURNAL_NAME, JOURNAL_KIND, {**_meta(scale, method, seed, params), "input": str(source.resolve())}
    )
    report = DegradeReport(output_dir=str(target), manifest_path=str(manifest_path))
    samples: list[Sample] = []
    sources: list[str] = []
    skipped_meta: list[dict[str, str]] = []
    for out_rel, rel in _progress(list(outputs.items()), progress, f"degrade x{scale} {method}"):
        entry = journal.done(out_rel, source / rel, target / out_rel)
        if entry is None:
            try:
                hr = _load_hr(source / rel, scale)
            except ImageReadError as exc:
                if not skip_corrupt:
                    raise _stopped(exc, report.written, len(outputs), target, journal) from exc
                _log.warning("skipping %s", exc)
                report.skipped.append({"path": str(source / rel), "reason": exc.reason})
                skipped_meta.append({"image": rel, "reason": exc.reason})
                continue
            try:
                lr = _degrade_one(hr, scale, method, params, image_seed(seed, rel))
                remove_stale_temp_files(target / out_rel)  # left by a killed run
                digest = save_png_atomic(target / out_rel, lr)
            except OSError as exc:  # a full disk, a read-only folder
                raise _stopped(exc, report.written, len(outputs), target, journal) from exc
            entry = {"width": lr.shape[1], "height": lr.shape[0], "sha256": digest}
            journal.record(out_rel, source / rel, target / out_rel, **entry)
        samples.append(
            Sample(
                id=len(samples),
                image=out_rel,
                width=entry["width"],
                height=entry["height"],
                image_sha256=entry["sha256"],
            )
        )
        sources.append(rel)
        report.written += 1

    meta = _meta(scale, method, seed, params)
    meta["sources"] = sources
    meta["skipped"] = skipped_meta
    Manifest(kind="lr", format=LR_FORMAT, splits={FOLDER_SPLIT: samples}, meta=meta).save(target)
    journal.path.unlink()
    return report


def degrade_dataset(
    hr_root: str | os.PathLike[str],
    lr_root: str | os.PathLike[str],
    scale: int,
    method: str = "bicubic",
    high_order: HighOrderParams | None = None,
    seed: int = 0,
    skip_corrupt: bool = False,
    progress: bool = True,
) -> DegradeReport:
    """Degrade every sample of the HR manifest at ``hr_root`` to ``<lr_root>/<split>/<012d id>.png``.

    HR files are checked against their manifest checksums (a mismatch raises ``ManifestError``
    naming the file). The LR manifest keeps ids and split names, records LR sizes, and stores
    scale, method, seed, params and the HR manifest's SHA-256 in ``meta``.
    """
    params = _check_args(scale, method, high_order)
    scale = int(scale)
    hr_dir, lr_dir = Path(hr_root), Path(lr_root)
    hr_manifest = Manifest.load(hr_dir)
    if hr_manifest.kind != "hr":
        raise ManifestError(
            f"{hr_dir / MANIFEST_NAME}: expected an HR manifest (kind 'hr'), got kind {hr_manifest.kind!r}"
        )
    hr_checksum = manifest_checksum(hr_dir)

    manifest_path = _start_clean(lr_dir)
    journal = Journal(
        lr_dir / JOURNAL_NAME, JOURNAL_KIND, {**_meta(scale, method, seed, params), "hr_manifest_sha256": hr_checksum}
    )
    report = DegradeReport(output_dir=str(lr_dir), manifest_path=str(manifest_path))
    items = [(split, sample) for split, samples in hr_manifest.splits.items() for sample in samples]
    lr_splits: dict[str, list[Sample]] = {split: [] for split in hr_manifest.splits}
    skipped_meta: list[dict[str, str]] = []
    for split, sample in _progress(items, progress, f"degrade x{scale} {method}"):
        path = hr_dir / sample.image
        out_rel = f"{split}/{sample.id:012d}.png"
        entry = journal.done(out_rel, path, lr_dir / out_rel)
        if entry is None:
            try:
                if path.is_file() and sha256_file(path) != sample.image_sha256:
                    raise ManifestError(f"{path}: SHA-256 differs from {hr_dir / MANIFEST_NAME}; re-run download")
                hr = _load_hr(path, scale)
            except ManifestError as exc:
                raise _stopped(exc, report.written, len(items), lr_dir, journal) from exc
            except ImageReadError as exc:
                if not skip_corrupt:
                    raise _stopped(exc, report.written, len(items), lr_dir, journal) from exc
                _log.warning("skipping %s", exc)
                report.skipped.append({"path": str(path), "reason": exc.reason})
                skipped_meta.append({"split": split, "image": sample.image, "reason": exc.reason})
                continue
            try:
                lr = _degrade_one(hr, scale, method, params, image_seed(seed, sample.image))
                remove_stale_temp_files(lr_dir / out_rel)  # left by a killed run
                digest = save_png_atomic(lr_dir / out_rel, lr)
            except OSError as exc:  # a full disk, a read-only folder
                raise _stopped(exc, report.written, len(items), lr_dir, journal) from exc
            entry = {"width": lr.shape[1], "height": lr.shape[0], "sha256": digest}
            journal.record(out_rel, path, lr_dir / out_rel, **entry)
        lr_splits[split].append(
            Sample(
                id=sample.id, image=out_rel, width=entry["width"], height=entry["height"], image_sha256=entry["sha256"]
            )
        )
        report.written += 1

    meta = _meta(scale, method, seed, params)
    meta["hr_manifest_sha256"] = hr_checksum
    meta["hr_format"] = hr_manifest.format
    meta["skipped"] = skipped_meta
    Manifest(kind="lr", format=LR_FORMAT, splits=lr_splits, meta=meta).save(lr_dir)
    journal.path.unlink()
    return report
