"""Build the 2AFC user-study bundle from the trained models (``srseg.stages.run_study_build``)."""

from kfp.dsl import Artifact, Input, Model, Output


def study_build(
    params: Input[Artifact], multitask: Input[list[Model]], sr_only: Input[list[Model]], bundle: Output[Artifact]
):
    """Super-resolve the val LR images with study.methods (each arm's first-seed model) and pack the
    seeded pair bundle.

    ``bundle`` holds the SR images (``sr/<method>``) and the bundle (``bundle/``) that
    ``srseg study serve`` shows to raters.
    """
    import tempfile
    from pathlib import Path

    from srseg.pipeline import steps
    from srseg.stages import run_study_build

    with tempfile.TemporaryDirectory() as links:
        folders = steps.link_seed_models(
            {"multitask": steps.seed_models(multitask), "sr_only": steps.seed_models(sr_only)},
            links,
            steps.sweep_seeds(params.path),
        )
        resolved = steps.stage_params(params.path, models=folders)
        built = run_study_build(resolved, output_dir=Path(bundle.path))
    bundle.metadata["bundle"] = str(Path(built).relative_to(bundle.path))
