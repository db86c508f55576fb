"""The seed sweep the training fans out over (``train.seeds``)."""

from kfp.dsl import Artifact, Input


def seeds(params: Input[Artifact], request: str) -> list[dict]:
    """One item per seed of ``train.seeds`` of the resolved params: ``{"seed", "request"}``, the
    training request passed through unchanged. Each arm is trained once per item (``dsl.ParallelFor``).

    A step of its own with a single output: kfp.local iterates over a task's ``Output`` only. The
    request rides in the items because kfp.local (2.17) replaces every task-output parameter that
    enters a ParallelFor with the loop item; the items are the one task output a loop may take.
    """
    from srseg.pipeline import steps

    return steps.seed_sweep(params.path, request)
