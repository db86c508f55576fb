"""Resolve the params once per pipeline run into an artifact every other step reads."""

from typing import NamedTuple

from kfp.dsl import Artifact, Output


def resolve_params(
    params: Output[Artifact],
    params_yaml: str = "",
    profile: str = "",
    work_dir: str = "/mnt/srseg",
    data_mode: str = "",
    subset_size: int = 0,
    mirror: str = "",
    scale: int = 0,
    mlflow_uri: str = "",
    s3_bucket: str = "",
    s3_prefix: str = "",
    s3_endpoint_url: str = "",
    code_version: str = "",
) -> NamedTuple("Requests", [("download_request", str), ("degrade_request", str), ("train_request", str)]):
    """Validated params (file content or the image's params.yaml, profile, run-time overrides).

    One resolved copy keeps every step on the same values and records them in KFP's lineage.
    The run-time overrides (``data_mode`` .. ``s3_endpoint_url``) are those of
    ``srseg.pipeline.overrides.RUNTIME_OVERRIDES``; empty strings and zeros mean "as in the params
    file". The returned step requests carry only what the cached data and training steps read,
    plus ``code_version``: their cache keys.
    """
    from srseg.pipeline import steps
    from srseg.pipeline.overrides import OVERRIDE_NAMES, override_strings

    arguments = locals()
    overrides = override_strings(work_dir, {name: arguments[name] for name in OVERRIDE_NAMES})
    resolved = steps.resolve_params(params_yaml, profile, overrides)
    steps.write_params(params.path, resolved)
    params.metadata.update(
        {
            "profile": resolved.profile,
            "sha256": steps.params_digest(resolved),
            "work_dir": work_dir,
            "mlflow_tracking_uri": resolved.mlflow.tracking_uri,
            "code_version": code_version,
        }
    )
    return tuple(steps.step_request(resolved, step, code_version) for step in ("download", "degrade", "train"))
