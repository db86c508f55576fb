"""Synthesise the LR images next to the dataset (``srseg.stages.run_degrade``)."""

from kfp.dsl import Dataset, Input, Output


def degrade(request: str, dataset: Input[Dataset], lr_dataset: Output[Dataset]):
    """LR images for every split into paths.lr_root; the artifact is the LR manifest.

    ``request`` holds the paths and degrade sections and the code version (the cache key with
    ``dataset``). ``dataset`` is not read here (the HR files are on the volume) but ties this step
    to the download that produced them, for ordering, caching and lineage.
    """
    from srseg.pipeline import steps
    from srseg.stages import run_degrade

    resolved = steps.request_params(request, "degrade")
    report = run_degrade(resolved)
    lr_dataset.metadata.update(steps.record_dataset(resolved.paths.lr_root, lr_dataset.path))
    lr_dataset.metadata.update(
        {
            "hr_manifest_sha256": dataset.metadata.get("manifest_sha256", ""),
            "written": report.get("written", 0),
            "skipped": len(report.get("skipped", [])),
        }
    )
