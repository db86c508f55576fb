"""The seeds the training fans out over (``train.seeds``)."""

from typing import List

from kfp.dsl import Artifact, Input


def seeds(params: Input[Artifact]) -> List[int]:
    """``train.seeds`` of the resolved params: each arm is trained once per seed (``dsl.ParallelFor``).

    A step of its own with a single output: kfp.local iterates over a task's ``Output`` only.
    """
    from srseg.pipeline import steps

    return steps.sweep_seeds(params.path)
