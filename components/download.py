"""Download COCO-Stuff onto the dataset volume (``srseg.stages.run_download``)."""

from kfp.dsl import Artifact, Dataset, Input, Output


def download(params: Input[Artifact], dataset: Output[Dataset]):
    """Fetch images and label maps into paths.data_root on the volume.

    The images stay on the volume; the Dataset artifact is the manifest (every file's SHA-256),
    with the data's location and checksum as metadata.
    """
    from srseg.pipeline import steps
    from srseg.stages import run_download

    resolved = steps.read_params(params.path)
    run_download(resolved)
    dataset.metadata.update(steps.record_dataset(resolved.paths.data_root, dataset.path))
