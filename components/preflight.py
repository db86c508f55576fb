"""Check, before anything is downloaded or trained, what would make the cluster run fail later."""

from kfp.dsl import Artifact, Input, Output


def preflight(params: Input[Artifact], code_version: str, work_dir: str, checks: Output[Artifact]):
    """Tracking server usable from every pod (not a local or sqlite store, and answering), the
    pretrained weights the params need (VGG19, LPIPS) present and intact in this image or on the
    volume, the dataset volume writable by this user, and this image holding the submitted code.

    Never cached: it checks the cluster as it is now. Fails with a message that says what to change.
    """
    import json
    from pathlib import Path

    from srseg.pipeline import preflight as checks_module
    from srseg.pipeline import steps

    report = checks_module.run_preflight(steps.read_params(params.path), work_dir, code_version)
    Path(checks.path).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    checks.metadata.update(report.to_dict())
