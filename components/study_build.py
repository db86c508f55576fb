"""Build the 2AFC user-study bundle from the trained models (``srseg.stages.run_study_build``)."""

from kfp.dsl import Artifact, Input, Model, Output


def study_build(params: Input[Artifact], multitask: Input[Model], sr_only: Input[Model], bundle: Output[Artifact]):
    """Super-resolve the val LR images with study.methods and pack the seeded pair bundle.

    ``bundle`` holds the SR images (``sr/<method>``) and the bundle (``bundle/``) that
    ``srseg study serve`` shows to raters.
    """
    from pathlib import Path

    from srseg.pipeline import steps
    from srseg.stages import run_study_build

    resolved = steps.stage_params(params.path, models={"multitask": multitask.path, "sr_only": sr_only.path})
    built = run_study_build(resolved, output_dir=Path(bundle.path))
    bundle.metadata["bundle"] = str(Path(built).relative_to(bundle.path))
