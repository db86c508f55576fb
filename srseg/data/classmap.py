"""The COCO-Stuff class map: how stuffthingmaps pixel values become training ids.

COCO-Stuff uses a 182-id scheme (ids 1..91 things, 92..182 stuff; id 0 = unlabeled). The
stuffthingmaps PNGs store ``pixel = id - 1`` with 255 = unlabeled. Eleven thing ids are defined
but never annotated, so 171 classes are used. Training needs contiguous ids, so ``fine171`` gives
each used pixel value its rank among the used values (the mapping mmsegmentation's COCO-Stuff-164k
converter uses); unused values and 255 map to the ignore index 255.

``coarse8`` groups the 171 classes into the outdoor texture categories of SFTGAN's OST set
(sky, water, grass, mountain, building, plant, animal, other), because texture-level semantics is
what helps SR; the member lists are in ``COARSE8_GROUPS`` and every class not named there is
``other``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

IGNORE_INDEX = 255
NUM_IDS = 182  # ids 1..182; pixel values 0..181

# COCO-Stuff names indexed by 1-based id (index 0 = unlabeled); from nightrome/cocostuff labels.txt.
COCOSTUFF_NAMES: tuple[str, ...] = (
    "unlabeled", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train",  # 0-7
    "truck", "boat", "traffic light", "fire hydrant", "street sign", "stop sign",  # 8-13
    "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",  # 14-22
    "bear", "zebra", "giraffe", "hat", "backpack", "umbrella", "shoe", "eye glasses",  # 23-30
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",  # 31-38
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",  # 39-44
    "plate", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",  # 45-53
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",  # 54-61
    "chair", "couch", "potted plant", "bed", "mirror", "dining table", "window", "desk",  # 62-69
    "toilet", "door", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",  # 70-77
    "microwave", "oven", "toaster", "sink", "refrigerator", "blender", "book", "clock",  # 78-85
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush", "hair brush", "banner",  # 86-92
    "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",  # 93-99
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds",  # 100-106
    "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence",  # 107-113
    "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower",  # 114-119
    "fog", "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other",  # 120-126
    "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain",  # 127-135
    "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic",  # 136-143
    "platform", "playingfield", "railing", "railroad", "river", "road", "rock", "roof",  # 144-151
    "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow",  # 152-159
    "solid-other", "stairs", "stone", "straw", "structural-other", "table", "tent",  # 160-166
    "textile-other", "towel", "tree", "vegetable", "wall-brick", "wall-concrete",  # 167-172
    "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other",  # 173-178
    "waterdrops", "window-blind", "window-other", "wood",  # 179-182
)

# Pixel values (id - 1) of the 11 thing ids that COCO-Stuff defines but never annotates:
# street sign, hat, shoe, eye glasses, plate, mirror, window, desk, door, blender, hair brush.
UNUSED_VALUES: frozenset[int] = frozenset({11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90})

# The 171 used pixel values in increasing order; a value's position is its fine171 training id.
USED_VALUES: tuple[int, ...] = tuple(v for v in range(NUM_IDS) if v not in UNUSED_VALUES)

# coarse8: group name -> fine class names (COCO-Stuff names). Rule: a class joins a group only if
# its texture is that group's texture in most images; anything ambiguous (person, food plants,
# rock, snow, walls, waterdrops, playingfield, ...) stays "other".
#   sky: the sky and what fills it.  water: bodies of open water.  grass: low ground-covering
#   vegetation.  mountain: landforms rising above the ground.  building: building exteriors and
#   bridges.  plant: non-food plants above the ground (incl. the potted plant thing).
#   animal: the ten COCO "animal" supercategory things (not teddy bear).
COARSE8_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sky", ("sky-other", "clouds", "fog")),
    ("water", ("sea", "river", "water-other")),
    ("grass", ("grass", "moss")),
    ("mountain", ("mountain", "hill")),
    ("building", ("building-other", "house", "skyscraper", "roof", "bridge")),
    ("plant", ("tree", "bush", "branch", "leaves", "flower", "plant-other", "potted plant")),
    (
        "animal",
        ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"),
    ),
    ("other", ()),  # every used class not listed above
)

CLASS_MAP_NAMES: tuple[str, ...] = ("fine171", "coarse8")


def value_name(value: int) -> str:
    """COCO-Stuff name of a stuffthingmaps pixel value (255 -> 'unlabeled')."""
    if value == IGNORE_INDEX:
        return COCOSTUFF_NAMES[0]
    if not 0 <= value < NUM_IDS:
        raise ValueError(f"pixel value {value} is not a COCO-Stuff value (0..181 or 255)")
    return COCOSTUFF_NAMES[value + 1]


@dataclass(frozen=True, eq=False)
class ClassMap:
    """Training classes plus the lookup table from stuffthingmaps pixel values to training ids."""

    name: str
    names: tuple[str, ...]
    lut: np.ndarray  # (256,) uint8: pixel value -> training id, 255 = ignore

    def __post_init__(self) -> None:
        lut = np.asarray(self.lut)
        if lut.shape != (256,) or lut.dtype != np.uint8:
            raise ValueError(
                f"class map {self.name!r}: lut must be (256,) uint8, got {lut.shape} {lut.dtype}"
            )
        bad = lut[(lut >= len(self.names)) & (lut != IGNORE_INDEX)]
        if bad.size:
            raise ValueError(
                f"class map {self.name!r}: lut holds ids {sorted(set(bad.tolist()))} "
                f">= num_classes {len(self.names)}"
            )
        if lut[IGNORE_INDEX] != IGNORE_INDEX:
            raise ValueError(f"class map {self.name!r}: pixel value 255 must map to ignore (255)")
        lut = lut.copy()
        lut.setflags(write=False)  # shared across DataLoader workers; nobody may edit it
        object.__setattr__(self, "lut", lut)
        object.__setattr__(self, "names", tuple(self.names))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def ignore_index(self) -> int:
        return IGNORE_INDEX

    def apply(self, label: np.ndarray) -> np.ndarray:
        """Map a uint8 stuffthingmaps label array to training ids (same shape, uint8)."""
        if label.dtype != np.uint8:
            raise ValueError(f"class map {self.name!r}: label must be uint8, got {label.dtype}")
        return self.lut[label]

    def to_json(self) -> dict[str, Any]:
        """Self-describing record for run metadata: names plus the pixel values behind each id."""
        members = [[int(v) for v in np.flatnonzero(self.lut == i) if v != IGNORE_INDEX]
                   for i in range(self.num_classes)]
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "ignore_index": IGNORE_INDEX,
            "encoding": "cocostuff-stuffthingmaps (pixel = id - 1, 255 unlabeled)",
            "names": list(self.names),
            "source_values": members,
            "lut": [int(x) for x in self.lut],
        }


def _fine171() -> ClassMap:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for train_id, value in enumerate(USED_VALUES):
        lut[value] = train_id
    return ClassMap("fine171", tuple(COCOSTUFF_NAMES[v + 1] for v in USED_VALUES), lut)


def _coarse8() -> ClassMap:
    value_of = {COCOSTUFF_NAMES[v + 1]: v for v in USED_VALUES}
    group_names = tuple(group for group, _ in COARSE8_GROUPS)
    other = group_names.index("other")
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[list(USED_VALUES)] = other
    for group_id, (group, members) in enumerate(COARSE8_GROUPS):
        for member in members:
            if member not in value_of:
                raise ValueError(f"coarse8 group {group!r}: {member!r} is not a used COCO-Stuff class")
            lut[value_of[member]] = group_id
    return ClassMap("coarse8", group_names, lut)


def get_class_map(name: str) -> ClassMap:
    """Build the class map called ``name`` (a params.yaml value)."""
    if name == "fine171":
        return _fine171()
    if name == "coarse8":
        return _coarse8()
    raise ValueError(f"unknown class map {name!r}; allowed: {', '.join(CLASS_MAP_NAMES)}")
