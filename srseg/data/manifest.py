"""The dataset manifest: the contract between `download`, `degrade` and training.

Layout of a prepared dataset root (all paths in the manifest are relative to the root)::

    <root>/images/<split>/<012d id>.jpg      COCO image, bytes as downloaded
    <root>/labels/<split>/<012d id>.png      8-bit label map, stuffthingmaps encoding
                                             (pixel = COCO-Stuff class id - 1, 255 = unlabeled)
    <root>/manifest.json                     this file

An LR root written by `degrade` has ``<lr_root>/<split>/<012d id>.png`` and its own
``manifest.json`` with ``kind = "lr"`` pointing back at the HR manifest by checksum.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from srseg.fileio import read_json, sha256_file, write_json_atomic

MANIFEST_NAME = "manifest.json"
HR_FORMAT = "srseg.cocostuff/1"
LR_FORMAT = "srseg.lr/1"


class ManifestError(ValueError):
    """A manifest is missing, malformed, or does not match the files on disk."""


@dataclass(frozen=True)
class Sample:
    """One image of a split. ``label`` is None for image-only datasets."""

    id: int
    image: str
    width: int
    height: int
    image_sha256: str
    label: str | None = None
    label_sha256: str | None = None


@dataclass
class Manifest:
    kind: str  # "hr" or "lr"
    format: str
    splits: dict[str, list[Sample]]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "format": self.format,
            "meta": self.meta,
            "splits": {name: [asdict(s) for s in samples] for name, samples in self.splits.items()},
        }

    def save(self, root: str | Path) -> Path:
        path = Path(root) / MANIFEST_NAME
        write_json_atomic(path, self.to_json())
        return path

    @classmethod
    def load(cls, root: str | Path) -> "Manifest":
        path = Path(root) / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(f"{path}: no manifest; run the stage that writes it first")
        try:
            raw = read_json(path)
            splits = {
                name: [Sample(**entry) for entry in entries]
                for name, entries in raw["splits"].items()
            }
            return cls(kind=raw["kind"], format=raw["format"], splits=splits, meta=raw.get("meta", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{path}: malformed manifest ({exc})") from exc


def manifest_checksum(root: str | Path) -> str:
    """SHA-256 of a root's manifest file: the data version recorded by later stages."""
    return sha256_file(Path(root) / MANIFEST_NAME)


def label_name(image_id: int) -> str:
    return f"{image_id:012d}.png"


def image_name(image_id: int) -> str:
    return f"{image_id:012d}.jpg"
