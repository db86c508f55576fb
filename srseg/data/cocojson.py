"""Rasterise COCO JSON annotations (``instances_*.json`` + ``stuff_*.json``) into label maps in
the stuffthingmaps encoding, for images whose official PNG is not at hand.

Encoding: pixel = category_id - 1 (0..181), 255 = unlabeled. Stuff category 183 "other" stands
for "some thing is here" and is not a class: its pixels are left to the thing annotations, and
stay 255 where no thing covers them.

Paint order (later paint wins): stuff first, then things over it, crowd regions included. Within
each group annotations are painted in decreasing mask area (ties by annotation id), so a small
object lying on a large one stays visible. COCO-Stuff's stuff annotations do not overlap, so
their order only matters for malformed input; it is fixed anyway so output is deterministic.

Real annotation files hold 100k+ images: build a :class:`CocoIndex` once with
:func:`build_index` and pass it to :func:`rasterize_labels` per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from pycocotools import mask as mask_utils

from srseg.data.classmap import IGNORE_INDEX, NUM_IDS

STUFF_OTHER_ID = 183  # "other" in stuff_*.json: all things merged; not a class
FIRST_STUFF_ID = 92


@dataclass(frozen=True)
class CocoIndex:
    """Per-image view of one COCO JSON file, built once so per-image lookups are O(1)."""

    images: Mapping[int, tuple[int, int]]  # image id -> (height, width)
    annotations: Mapping[int, tuple[dict[str, Any], ...]]  # image id -> its annotations
    category_ids: frozenset[int]
    source: str  # for error messages: the file's description or "<dict>"

    def image_ids(self) -> list[int]:
        return sorted(self.images)


def build_index(data: Mapping[str, Any] | Any, source: str | None = None) -> CocoIndex:
    """Index a loaded COCO JSON dict (or a pycocotools ``COCO`` object, via its ``dataset``)."""
    if not isinstance(data, Mapping) and hasattr(data, "dataset"):
        data = data.dataset
    if not isinstance(data, Mapping):
        raise TypeError(f"expected a COCO JSON dict or pycocotools COCO object, got {type(data).__name__}")
    if source is None:
        source = str(data.get("info", {}).get("description", "<dict>"))
    try:
        images = {int(img["id"]): (int(img["height"]), int(img["width"])) for img in data["images"]}
        grouped: dict[int, list[dict[str, Any]]] = {}
        for ann in data.get("annotations", []):
            image_id = int(ann["image_id"])
            if image_id not in images:
                raise ValueError(
                    f"{source}: annotation {ann.get('id')} refers to image {image_id}, "
                    "which is not in 'images'"
                )
            grouped.setdefault(image_id, []).append(ann)
        category_ids = frozenset(int(cat["id"]) for cat in data.get("categories", []))
    except KeyError as exc:
        raise ValueError(f"{source}: not a COCO annotation file (missing key {exc})") from exc
    return CocoIndex(
        images=images,
        annotations={k: tuple(v) for k, v in grouped.items()},
        category_ids=category_ids,
        source=source,
    )


def annotation_rle(ann: Mapping[str, Any], height: int, width: int) -> dict[str, Any]:
    """One compressed RLE for an annotation's polygon / uncompressed RLE / compressed RLE."""
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        # Polygons of < 3 points have no area; pycocotools would also misread a 4-number
        # polygon as a bounding box, so drop them before encoding.
        polygons = [[float(x) for x in poly] for poly in seg if len(poly) >= 6]
        if not polygons:
            return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(seg, Mapping) and "counts" in seg and "size" in seg:
        size = [int(s) for s in seg["size"]]
        if size != [height, width]:
            raise ValueError(
                f"annotation {ann.get('id')} (image {ann.get('image_id')}): RLE size {size} "
                f"!= image size {[height, width]}"
            )
        counts = seg["counts"]
        if isinstance(counts, list):  # uncompressed RLE (crowd annotations)
            return mask_utils.frPyObjects(dict(seg), height, width)
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        return {"size": size, "counts": counts}
    raise ValueError(f"annotation {ann.get('id')} (image {ann.get('image_id')}): unsupported segmentation")


def _paint(label: np.ndarray, index: CocoIndex, image_id: int, *, stuff: bool) -> None:
    height, width = label.shape
    to_paint: list[tuple[int, int, int, dict[str, Any]]] = []  # (-area, ann id, value, rle)
    for ann in index.annotations.get(image_id, ()):
        category_id = int(ann["category_id"])
        if stuff and category_id == STUFF_OTHER_ID:
            continue
        is_stuff_id = FIRST_STUFF_ID <= category_id <= NUM_IDS
        is_thing_id = 1 <= category_id < FIRST_STUFF_ID
        if (stuff and not is_stuff_id) or (not stuff and not is_thing_id):
            kind = "stuff (92..183)" if stuff else "thing (1..91)"
            raise ValueError(
                f"{index.source}: annotation {ann.get('id')} of image {image_id} has category_id "
                f"{category_id}, not a {kind} id; are the things/stuff files swapped?"
            )
        rle = annotation_rle(ann, height, width)
        area = int(mask_utils.area(rle))
        to_paint.append((-area, int(ann.get("id", 0)), category_id - 1, rle))
    to_paint.sort(key=lambda item: (item[0], item[1]))
    for _, _, value, rle in to_paint:
        label[mask_utils.decode(rle).astype(bool)] = value


def _as_index(obj: CocoIndex | Mapping[str, Any] | Any | None) -> CocoIndex | None:
    if obj is None or isinstance(obj, CocoIndex):
        return obj
    return build_index(obj)


def rasterize_labels(
    things: CocoIndex | Mapping[str, Any] | Any | None,
    stuff: CocoIndex | Mapping[str, Any] | Any | None,
    image_id: int,
) -> np.ndarray:
    """Label map (H, W) uint8 of one image in the stuffthingmaps encoding.

    ``things``/``stuff`` are loaded ``instances_*.json`` / ``stuff_*.json`` dicts, pycocotools
    ``COCO`` objects, or :class:`CocoIndex` objects (the fast path: dicts and COCO objects are
    re-indexed on every call). Either may be None.
    """
    things_index, stuff_index = _as_index(things), _as_index(stuff)
    if things_index is None and stuff_index is None:
        raise ValueError("rasterize_labels: give at least one of things / stuff annotations")
    sizes = [
        (role, idx.source, idx.images[image_id])
        for role, idx in (("stuff", stuff_index), ("things", things_index))
        if idx is not None and image_id in idx.images
    ]
    if not sizes:
        raise ValueError(f"image {image_id} is in neither annotation file")
    if len({size for _, _, size in sizes}) > 1:
        detail = ", ".join(f"{role} ({src}): {h}x{w}" for role, src, (h, w) in sizes)
        raise ValueError(f"image {image_id}: height x width differs between the annotation files ({detail})")
    height, width = sizes[0][2]
    label = np.full((height, width), IGNORE_INDEX, dtype=np.uint8)
    if stuff_index is not None:
        _paint(label, stuff_index, image_id, stuff=True)
    if things_index is not None:
        _paint(label, things_index, image_id, stuff=False)
    return label
