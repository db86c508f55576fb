"""Synthesise the LR images next to the dataset (``srseg.stages.run_degrade``)."""

from kfp.dsl import Artifact, Dataset, Input, Output


def degrade(params: Input[Artifact], dataset: Input[Dataset], lr_dataset: Output[Dataset]):
    """LR images for every split into paths.lr_root; the artifact is the LR manifest.

    ``dataset`` is not read here (the HR files are on the volume) but ties this step to the
    download that produced them, for ordering and lineage.
    """
    from srseg.pipeline import steps
    from srseg.stages import run_degrade

    resolved = steps.read_params(params.path)
    report = run_degrade(resolved)
    lr_dataset.metadata.update(steps.record_dataset(resolved.paths.lr_root, lr_dataset.path))
    lr_dataset.metadata.update({"hr_manifest_sha256": dataset.metadata.get("manifest_sha256", ""),
                                "written": report.get("written", 0), "skipped": len(report.get("skipped", []))})
