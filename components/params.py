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
    Empty strings and zeros mean "as in the params file". The returned step requests carry only
    what the cached data and training steps read, plus ``code_version``: their cache keys.
    """
    from srseg.pipeline import steps

    overrides = steps.pipeline_overrides(
        work_dir=work_dir, data_mode=data_mode, subset_size=subset_size, mirror=mirror, scale=scale,
        mlflow_uri=mlflow_uri, s3_bucket=s3_bucket, s3_prefix=s3_prefix, s3_endpoint_url=s3_endpoint_url,
    )
    resolved = steps.resolve_params(params_yaml, profile, overrides)
    steps.write_params(params.path, resolved)
    params.metadata.update({
        "profile": resolved.profile,
        "sha256": steps.params_digest(resolved),
        "work_dir": work_dir,
        "mlflow_tracking_uri": resolved.mlflow.tracking_uri,
        "code_version": code_version,
    })
    return tuple(steps.step_request(resolved, step, code_version) for step in ("download", "degrade", "train"))
