"""Download COCO-Stuff onto the dataset volume (``srseg.stages.run_download``)."""

from kfp.dsl import Dataset, Output


def download(request: str, dataset: Output[Dataset]):
    """Fetch images and label maps into paths.data_root on the volume.

    ``request`` (``steps.step_request``) holds the paths and download sections and the code
    version: the step's cache key, so an equal data request reuses the dataset (and keeps the
    later steps' keys stable) while a new source, subset or code downloads again. The images stay
    on the volume; the Dataset artifact is the manifest (every file's SHA-256), with the data's
    location and checksum as metadata.
    """
    from srseg.pipeline import steps
    from srseg.stages import run_download

    resolved = steps.request_params(request, "download")
    run_download(resolved)
    dataset.metadata.update(steps.record_dataset(resolved.paths.data_root, dataset.path))
