"""Which validation images choose checkpoints and which ones are reported.

A number measured on the images that picked the checkpoint is optimistic. So the validation
split is cut in two, by one fixed rule shared by training and evaluation:

- **selection part**: the ``count`` image ids with the smallest SHA-256 of their decimal id.
  Training validates on these only (``train.selection_images``), and the shipped weights are
  chosen on them.
- **report part**: every other image of the split. ``srseg evaluate`` and the promotion gate
  score only these.

The rule depends on nothing but the ids: not on their order in the manifest, not on a training
seed (runs with different seeds report on the same images), and adding images to a split keeps
an id's side unless it displaces one from the ``count`` smallest digests.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

SELECTION_RULE = "the train.selection_images ids with the smallest sha256(decimal id); the rest are the report part"


def _digest(image_id: int) -> str:
    return hashlib.sha256(str(int(image_id)).encode("ascii")).hexdigest()


def selection_ids(ids: Iterable[int], count: int) -> set[int]:
    """The ``count`` ids of the selection part (all of them when there are fewer)."""
    if count < 0:
        raise ValueError(f"selection count must be >= 0, got {count}")
    unique = sorted({int(i) for i in ids}, key=_digest)
    return set(unique[:count])


def split_validation(ids: Iterable[int], count: int) -> tuple[list[int], list[int]]:
    """(selection ids, report ids), each in the order given."""
    ordered = [int(i) for i in ids]
    chosen = selection_ids(ordered, count)
    return [i for i in ordered if i in chosen], [i for i in ordered if i not in chosen]
