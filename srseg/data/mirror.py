"""Build a COCO-layout mirror from the real COCO-Stuff sample, for tests and the README demo.

The mirror has the layout documented in ``srseg.data.sources`` and real bytes: the sample's
COCO images and stuffthingmaps PNGs packed into zips under the official member paths, the same
images as single files, and a ``SHA256SUMS`` (the zips are repackaged, so the official digests
do not apply). ``with_json=True`` also writes COCO-format ``instances_<split>.json`` and
``stuff_<split>.json`` *derived from the sample's label maps* (one RLE region per class; stuff JSON
with the 183 'other' region over things, as in the official stuff files). They are not the
official annotations; they exist so the JSON label path can be tested end to end.

    python -m srseg.data.mirror ../shared/data/cocostuff-sample /tmp/coco-mirror
    srseg download ... --mirror file:///tmp/coco-mirror
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

from srseg.data.sources import ARCHIVES, SHA256SUMS_NAME, SPLITS, image_archive_name
from srseg.fileio import atomic_open, write_text_atomic

logger = logging.getLogger(__name__)

_FIXED_DATE = (2017, 8, 31, 0, 0, 0)  # reproducible zip bytes
_THING_MAX = 90  # pixel values 0..90 are things, 91..181 stuff, 255 unlabeled
_OTHER_ID = 183


def _write_zip(path: Path, members: list[tuple[str, bytes | None, int]]) -> None:
    """Write a zip with fixed timestamps; ``None`` data means a directory entry."""
    with atomic_open(path, "wb") as handle:
        with zipfile.ZipFile(handle, "w") as zf:
            for name, data, method in members:
                info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
                info.compress_type = method
                if data is None:
                    info.external_attr = 0o40755 << 16 | 0x10
                    zf.writestr(info, b"")
                else:
                    info.external_attr = 0o100644 << 16
                    zf.writestr(info, data)


def _sample_ids(sample_dir: Path, split: str) -> list[int]:
    return sorted(int(p.stem) for p in (sample_dir / "images" / split).glob("*.jpg"))


def build_sample_mirror(sample_dir: str | Path, out_dir: str | Path, *, with_json: bool = True) -> Path:
    """Write the mirror under ``out_dir`` (created) from ``sample_dir`` (the cocostuff-sample
    folder: images/<split>/*.jpg, stuffthingmaps/<split>/*.png, labels.txt). Returns out_dir."""
    sample_dir, out_dir = Path(sample_dir), Path(out_dir)
    if not (sample_dir / "images").is_dir() or not (sample_dir / "stuffthingmaps").is_dir():
        raise FileNotFoundError(f"{sample_dir}: not a cocostuff-sample folder (needs images/ and stuffthingmaps/)")
    out_dir.mkdir(parents=True, exist_ok=True)
    label_members: list[tuple[str, bytes | None, int]] = []
    for split in SPLITS:
        ids = _sample_ids(sample_dir, split)
        image_members: list[tuple[str, bytes | None, int]] = [(f"{split}/", None, zipfile.ZIP_STORED)]
        label_members.append((f"{split}/", None, zipfile.ZIP_STORED))
        for image_id in ids:
            data = (sample_dir / "images" / split / f"{image_id:012d}.jpg").read_bytes()
            image_members.append((f"{split}/{image_id:012d}.jpg", data, zipfile.ZIP_STORED))
            single = out_dir / split / f"{image_id:012d}.jpg"
            with atomic_open(single, "wb") as handle:
                handle.write(data)
            label = (sample_dir / "stuffthingmaps" / split / f"{image_id:012d}.png").read_bytes()
            label_members.append((f"{split}/{image_id:012d}.png", label, zipfile.ZIP_DEFLATED))
        _write_zip(out_dir / ARCHIVES[image_archive_name(split)].mirror_path, image_members)
    _write_zip(out_dir / ARCHIVES["stuffthingmaps_trainval2017.zip"].mirror_path, label_members)
    if with_json:
        _write_json_archives(sample_dir, out_dir)
    _write_sha256sums(out_dir)
    logger.info("built sample mirror at %s", out_dir)
    return out_dir


def _label_names(sample_dir: Path) -> dict[int, str]:
    names: dict[int, str] = {}
    for line in (sample_dir / "labels.txt").read_text(encoding="utf-8").splitlines():
        key, _, name = line.partition(":")
        if key.strip().isdigit():
            names[int(key)] = name.strip()
    return names


def _write_json_archives(sample_dir: Path, out_dir: Path) -> None:
    import numpy as np
    from PIL import Image
    from pycocotools import mask as mask_utils

    names = _label_names(sample_dir)
    instances_members: list[tuple[str, bytes | None, int]] = [("annotations/", None, zipfile.ZIP_STORED)]
    stuff_members: list[tuple[str, bytes | None, int]] = []
    for split in SPLITS:
        images: list[dict[str, Any]] = []
        things: list[dict[str, Any]] = []
        stuff: list[dict[str, Any]] = []
        thing_ids: set[int] = set()
        for image_id in _sample_ids(sample_dir, split):
            label = np.asarray(Image.open(sample_dir / "stuffthingmaps" / split / f"{image_id:012d}.png"))
            height, width = label.shape
            images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "width": width, "height": height})
            regions = [(int(v) + 1, label == v) for v in np.unique(label) if v != 255]
            regions.append((_OTHER_ID, label <= _THING_MAX))
            for category_id, mask in regions:
                if not mask.any():
                    continue
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                entry = {
                    "image_id": image_id,
                    "category_id": category_id,
                    "segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(x) for x in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                }
                if category_id <= _THING_MAX + 1:
                    thing_ids.add(category_id)
                    things.append({**entry, "id": len(things) + 1})
                else:
                    stuff.append({**entry, "id": 10_000_000 + len(stuff)})
        info = {"description": f"derived from cocostuff-sample stuffthingmaps ({split}); not official COCO"}
        thing_cats = [{"id": i, "name": names.get(i, str(i)), "supercategory": ""} for i in sorted(thing_ids)]
        stuff_cats = [{"id": i, "name": names.get(i, str(i)), "supercategory": ""} for i in range(92, 183)]
        stuff_cats.append({"id": _OTHER_ID, "name": "other", "supercategory": "other"})
        for members, name, anns, cats in (
            (instances_members, f"annotations/instances_{split}.json", things, thing_cats),
            (stuff_members, f"stuff_{split}.json", stuff, stuff_cats),
        ):
            doc = {"info": info, "images": images, "annotations": anns, "categories": cats, "licenses": []}
            members.append((name, json.dumps(doc, sort_keys=True).encode("utf-8"), zipfile.ZIP_DEFLATED))
    _write_zip(out_dir / ARCHIVES["annotations_trainval2017.zip"].mirror_path, instances_members)
    _write_zip(out_dir / ARCHIVES["stuff_trainval2017.zip"].mirror_path, stuff_members)


def _write_sha256sums(out_dir: Path) -> None:
    lines = []
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file() and p.name != SHA256SUMS_NAME):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(out_dir).as_posix()}")
    write_text_atomic(out_dir / SHA256SUMS_NAME, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=build_sample_mirror.__doc__)
    parser.add_argument("sample_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--no-json", action="store_true", help="skip the derived JSON annotation archives")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = build_sample_mirror(args.sample_dir, args.out_dir, with_json=not args.no_json)
    print(out.resolve().as_uri())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
