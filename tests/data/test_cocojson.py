"""Rasterising COCO JSON into stuffthingmaps-encoded label maps: hand-made and real annotations."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from srseg.data.cocojson import build_index, rasterize_labels

H, W = 6, 8
U = 255


def _compressed(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _box(top: int, left: int, bottom: int, right: int) -> np.ndarray:
    """Boolean H x W mask of rows top..bottom-1, columns left..right-1."""
    mask = np.zeros((H, W), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def _ann(ann_id: int, category_id: int, segmentation: Any, iscrowd: int = 0) -> dict[str, Any]:
    return {"id": ann_id, "image_id": 1, "category_id": category_id, "iscrowd": iscrowd,
            "segmentation": segmentation, "area": 0.0, "bbox": [0, 0, 0, 0]}


def _hand_made() -> tuple[dict[str, Any], dict[str, Any]]:
    images = [{"id": 1, "height": H, "width": W, "file_name": "000000000001.jpg"}]
    stuff = {
        "info": {"description": "hand-made stuff"},
        "images": copy.deepcopy(images),
        "categories": [{"id": 124, "name": "grass"}, {"id": 157, "name": "sky-other"},
                       {"id": 183, "name": "other"}],
        "annotations": [
            # sky: rows 0-1, compressed RLE
            _ann(10, 157, _compressed(_box(0, 0, 2, W))),
            # grass: rows 3-5, columns 0-3, uncompressed RLE written by hand (column-major runs:
            # 3 off, 3 on per column for 4 columns, then 4 columns x 6 off)
            _ann(11, 124, {"size": [H, W], "counts": [3, 3, 3, 3, 3, 3, 3, 3, 24]}),
            # "other" (things merged): row 2 (no thing there -> stays 255) and rows 3-5 cols 4-7
            _ann(12, 183, _compressed(_box(2, 0, 3, W) | _box(3, 4, 6, W))),
        ],
    }
    things = {
        "info": {"description": "hand-made things"},
        "images": copy.deepcopy(images),
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"},
                       {"id": 18, "name": "dog"}, {"id": 62, "name": "chair"}],
        # listed smallest first, so painting in file order would bury the small objects
        "annotations": [
            # dog: the single pixel (row 0, col 0), compressed RLE, over the sky
            _ann(20, 18, _compressed(_box(0, 0, 1, 1))),
            # car (crowd): rows 3-5, columns 6-7, uncompressed RLE: 36 off, 3 on, 3 off, 3 on, 3 off
            _ann(21, 3, {"size": [H, W], "counts": [39, 3, 3, 3]}, iscrowd=1),
            # person: polygon; COCO pixel (x, y) is the square [x, x+1) x [y, y+1), so corners
            # (4, 3)..(8, 6) enclose exactly rows 3-5, columns 4-7
            _ann(22, 1, [[4, 3, 8, 3, 8, 6, 4, 6]]),
            # chair: rows 3-5, columns 2-7, plus a degenerate 2-point polygon that adds nothing
            _ann(23, 62, [[2, 3, 8, 3, 8, 6, 2, 6], [0, 0, 1, 1]]),
        ],
    }
    return things, stuff


EXPECTED = np.array(
    [
        [17, 156, 156, 156, 156, 156, 156, 156],
        [156, 156, 156, 156, 156, 156, 156, 156],
        [U, U, U, U, U, U, U, U],
        [123, 123, 61, 61, 0, 0, 2, 2],
        [123, 123, 61, 61, 0, 0, 2, 2],
        [123, 123, 61, 61, 0, 0, 2, 2],
    ],
    dtype=np.uint8,
)


def test_hand_made_pixels_exact() -> None:
    things, stuff = _hand_made()
    label = rasterize_labels(things, stuff, 1)
    assert label.dtype == np.uint8 and label.shape == (H, W)
    np.testing.assert_array_equal(label, EXPECTED)


def test_index_and_coco_objects_give_the_same_map() -> None:
    things, stuff = _hand_made()
    via_index = rasterize_labels(build_index(things), build_index(stuff), 1)
    coco_things, coco_stuff = COCO(), COCO()
    coco_things.dataset, coco_stuff.dataset = things, stuff
    via_coco = rasterize_labels(coco_things, coco_stuff, 1)
    np.testing.assert_array_equal(via_index, EXPECTED)
    np.testing.assert_array_equal(via_coco, EXPECTED)


def test_only_one_file() -> None:
    things, stuff = _hand_made()
    stuff_only = rasterize_labels(None, stuff, 1)
    expected = EXPECTED.copy()
    expected[0, 0] = 156
    expected[3:, 2:4] = 123  # grass, no longer under the chair
    expected[3:, 4:] = U  # 'other' is not a class
    np.testing.assert_array_equal(stuff_only, expected)
    things_only = rasterize_labels(things, None, 1)
    assert (things_only[:3] == np.array([[17] + [U] * 7, [U] * 8, [U] * 8])).all()


def test_size_mismatch_names_the_image() -> None:
    things, stuff = _hand_made()
    things["images"][0]["height"] = H + 1
    with pytest.raises(ValueError, match="image 1"):
        rasterize_labels(things, stuff, 1)


def test_errors() -> None:
    things, stuff = _hand_made()
    with pytest.raises(ValueError, match="swapped"):
        rasterize_labels(stuff, things, 1)
    with pytest.raises(ValueError, match="image 7"):
        rasterize_labels(things, stuff, 7)
    with pytest.raises(ValueError, match="at least one"):
        rasterize_labels(None, None, 1)
    bad = copy.deepcopy(stuff)
    bad["annotations"][0]["segmentation"]["size"] = [H, W + 1]
    with pytest.raises(ValueError, match="annotation 10"):
        rasterize_labels(None, bad, 1)
    orphan = copy.deepcopy(things)
    orphan["annotations"][0]["image_id"] = 99
    with pytest.raises(ValueError, match="annotation 20 refers to image 99"):
        build_index(orphan)


def test_real_stuff_examples(cocostuff_sample: Path) -> None:
    path = cocostuff_sample / "stuff-json-example" / "stuff_examples.json"
    stuff = json.loads(path.read_text())
    index = build_index(stuff)
    assert index.image_ids() == [934, 13715]
    for image in stuff["images"]:
        image_id = image["id"]
        label = rasterize_labels(None, index, image_id)
        assert label.shape == (image["height"], image["width"])
        anns = [a for a in stuff["annotations"] if a["image_id"] == image_id]
        masks = {a["id"]: mask_utils.decode(a["segmentation"]).astype(bool) for a in anns}
        # the claim the paint order relies on: stuff annotations do not overlap
        coverage = np.sum([m.astype(np.int32) for m in masks.values()], axis=0)
        assert coverage.max() == 1
        for ann in anns:
            area = int(mask_utils.area(ann["segmentation"]))
            assert area == ann["area"]  # the file's own area field agrees with pycocotools
            if ann["category_id"] == 183:
                assert (label[masks[ann["id"]]] == U).all()
            else:
                assert int((label == ann["category_id"] - 1).sum()) == area
                assert (label[masks[ann["id"]]] == ann["category_id"] - 1).all()
        assert (label[coverage == 0] == U).all()
        values = set(np.unique(label).tolist())
        assert values <= set(range(91, 182)) | {U}
        assert len(values - {U}) == sum(1 for a in anns if a["category_id"] != 183)
