"""Class map: the 182-id scheme, the 171 used classes, the coarse grouping, on real label maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srseg.data.classmap import (
    CLASS_MAP_NAMES,
    COARSE8_GROUPS,
    COCOSTUFF_NAMES,
    IGNORE_INDEX,
    UNUSED_VALUES,
    USED_VALUES,
    get_class_map,
    value_name,
)

UNUSED = [11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90]


def test_names_match_labels_txt(cocostuff_sample: Path) -> None:
    lines = (cocostuff_sample / "labels.txt").read_text().splitlines()
    table = {int(k): v for k, v in (line.split(": ", 1) for line in lines if line.strip())}
    assert table == dict(enumerate(COCOSTUFF_NAMES))
    assert len(COCOSTUFF_NAMES) == 183


def test_value_names() -> None:
    assert value_name(0) == "person"
    assert value_name(61) == "chair"
    assert value_name(91) == "banner"
    assert value_name(181) == "wood"
    assert value_name(255) == "unlabeled"
    with pytest.raises(ValueError, match="200"):
        value_name(200)


def test_fine171() -> None:
    cm = get_class_map("fine171")
    assert cm.num_classes == 171 and len(cm.names) == 171
    assert sorted(UNUSED_VALUES) == UNUSED
    assert len(USED_VALUES) == 171
    assert cm.lut.shape == (256,) and cm.lut.dtype == np.uint8
    for v in UNUSED:
        assert cm.lut[v] == IGNORE_INDEX
    assert (cm.lut[182:] == IGNORE_INDEX).all()
    # used values get their rank: contiguous 0..170 in increasing pixel-value order
    assert cm.lut[list(USED_VALUES)].tolist() == list(range(171))
    assert cm.names[0] == "person" and cm.lut[0] == 0
    # chair = pixel 61; five unused values (11, 25, 28, 29, 44) lie below it -> rank 56
    assert cm.lut[61] == 56 and cm.names[56] == "chair"
    assert cm.lut[91] == 80 and cm.names[80] == "banner"  # first stuff class after the 80 things
    assert cm.lut[181] == 170 and cm.names[170] == "wood"
    assert "mirror" not in cm.names and "mirror-stuff" in cm.names


def test_lut_is_read_only() -> None:
    cm = get_class_map("fine171")
    with pytest.raises(ValueError):
        cm.lut[0] = 3


def test_coarse8_covers_all_classes() -> None:
    cm = get_class_map("coarse8")
    assert cm.num_classes == 8
    assert cm.names == ("sky", "water", "grass", "mountain", "building", "plant", "animal", "other")
    used = cm.lut[list(USED_VALUES)]
    assert (used < 8).all()  # every one of the 171 classes is in a group
    assert set(used.tolist()) == set(range(8))  # and no group is empty
    for v in UNUSED:
        assert cm.lut[v] == IGNORE_INDEX
    assert cm.lut[255] == IGNORE_INDEX
    by_name = {COCOSTUFF_NAMES[v + 1]: cm.names[cm.lut[v]] for v in USED_VALUES}
    assert by_name["sky-other"] == "sky" and by_name["clouds"] == "sky"
    assert by_name["sea"] == "water" and by_name["grass"] == "grass"
    assert by_name["mountain"] == "mountain" and by_name["skyscraper"] == "building"
    assert by_name["tree"] == "plant" and by_name["potted plant"] == "plant"
    assert by_name["giraffe"] == "animal" and by_name["teddy bear"] == "other"
    assert by_name["person"] == "other" and by_name["wall-brick"] == "other"
    listed = [m for _, members in COARSE8_GROUPS for m in members]
    assert len(listed) == len(set(listed))  # no class in two groups


def test_unknown_name_lists_allowed() -> None:
    with pytest.raises(ValueError, match="fine171.*coarse8"):
        get_class_map("fine182")
    assert CLASS_MAP_NAMES == ("fine171", "coarse8")


@pytest.mark.parametrize("name", ["fine171", "coarse8"])
def test_to_json(name: str) -> None:
    cm = get_class_map(name)
    record = json.loads(json.dumps(cm.to_json()))
    assert record["name"] == name and record["num_classes"] == cm.num_classes
    assert record["names"] == list(cm.names)
    assert record["lut"] == cm.lut.tolist()
    members = sorted(v for group in record["source_values"] for v in group)
    assert members == list(USED_VALUES)


@pytest.mark.parametrize("name", ["fine171", "coarse8"])
def test_real_label_maps(cocostuff_sample: Path, name: str) -> None:
    cm = get_class_map(name)
    pngs = sorted((cocostuff_sample / "stuffthingmaps").glob("*/*.png"))
    assert len(pngs) == 21
    for png in pngs:
        raw = np.asarray(Image.open(png), dtype=np.uint8)
        mapped = cm.apply(raw)
        valid = (mapped < cm.num_classes) | (mapped == IGNORE_INDEX)
        assert valid.all(), png
        # a pixel is ignored exactly where the source is unlabeled (no unused ids in real data)
        assert ((mapped == IGNORE_INDEX) == (raw == IGNORE_INDEX)).all(), png
