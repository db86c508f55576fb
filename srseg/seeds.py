"""The seed sweep: every arm (multitask, SR-only) is trained once per seed of ``train.seeds``.

Why: a multitask-minus-SR-only difference from one training run per arm mixes the effect of the
semantic task with the luck of one initialisation and data order. Training each arm under several
seeds lets evaluation put an interval on the difference that covers both (``srseg.evaluate.stats``,
:func:`~srseg.evaluate.stats.two_way_bootstrap`).

Layout: the run of seed ``K`` writes to ``<output dir>/seed<K>`` (:func:`seed_run_dir`; ``srseg
train --seed K`` and the DVC ``foreach`` stages use it). A method string (``evaluate.methods``,
``benchmark.methods``) may contain the placeholder ``{seed}``: it then names one model per seed,
and :func:`expand_methods` turns ``multitask: outputs/train/seed{seed}/gan/selected.safetensors``
into ``multitask@seed0``, ``multitask@seed1``, ... Strings without the placeholder (``bicubic``, a
registry URI, an exported SR head) name one model. Where a single model is wanted (the study, the
gallery) the first seed's stands for the arm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from srseg.config import SEED_PLACEHOLDER as PLACEHOLDER
from srseg.config import check_method_spec as check_spec


def seed_run_dir(output_dir: str | Path, seed: int) -> Path:
    """Where the run of ``seed`` of a sweep writes: ``<output_dir>/seed<seed>``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return Path(output_dir) / f"seed{seed}"


def seeded_name(base: str, seed: int) -> str:
    """The name of one seed's model of method ``base``: ``multitask@seed1``."""
    return f"{base}@seed{seed}"


def is_seeded(spec: str) -> bool:
    return PLACEHOLDER in spec


def for_seed(spec: str, seed: int) -> str:
    """``spec`` with the placeholder replaced by ``seed`` (unchanged when it has none)."""
    return spec.replace(PLACEHOLDER, str(seed))


@dataclass(frozen=True)
class SeededMethods:
    """Methods expanded over the seeds.

    ``specs``: model name -> model string, every seed's model of a seeded method under its own
    name; ``groups``: method name -> its model names in seed order (one name for an unseeded
    method); ``seeds``: the sweep's seeds.
    """

    specs: dict[str, str]
    groups: dict[str, list[str]]
    seeds: tuple[int, ...]

    def first(self, method: str) -> str:
        """The model name that stands for ``method`` where one model is wanted (the first seed's)."""
        return self.groups[method][0]

    def seeded(self, method: str) -> bool:
        return len(self.groups[method]) > 1 or self.groups[method][0] != method


def expand_methods(methods: Mapping[str, str], seeds: Sequence[int]) -> SeededMethods:
    """Expand ``{seed}`` in ``methods`` over ``seeds`` (see the module docstring)."""
    if not seeds:
        raise ValueError("expand_methods: no seeds")
    specs: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for name, spec in methods.items():
        check_spec(name, str(spec))
        if "@" in name:
            raise ValueError(
                f"method name {name!r}: '@' is reserved for the seeds' model names ({seeded_name(name, 0)})"
            )
        if is_seeded(spec):
            groups[name] = [seeded_name(name, seed) for seed in seeds]
            specs.update({seeded_name(name, seed): for_seed(spec, seed) for seed in seeds})
        else:
            groups[name] = [name]
            specs[name] = spec
    return SeededMethods(specs, groups, tuple(seeds))
