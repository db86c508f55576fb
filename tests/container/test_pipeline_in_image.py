"""The pipeline runs in the image: the demo pipeline, compiled for the project image, runs under
``kfp.local.DockerRunner`` with every step in its own container (host network, the data folder
mounted at the same path, the image's own user), against a real MLflow server whose artifacts live
in SeaweedFS S3 on loopback, and ends with a registered model version promoted to champion, whose
``git_commit`` tag is the commit the image was built from."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from imagekit import REPO, image_build

from srseg.config import deep_merge, load_params
from srseg.data.mirror import build_sample_mirror
from srseg.pipeline import PIPELINE_PACKAGE, commands

pytestmark = pytest.mark.image
IMAGE_UID = 1000

# Tiny CPU settings on top of the demo profile (as tests/pipeline/test_pipeline_local.py).
TINY = {
    "download": {"subset_size": 4},
    "evaluate": {"bootstrap": 100, "gallery_crops": 1, "max_images": 2},
    "study": {"num_images": 3, "bootstrap": 100},
    "train": {
        "class_map": "coarse8",
        "generator": {"num_features": 8, "num_blocks": 1},
        "discriminator": {"num_features": 8},
        "loss": {"vgg_weights": "none", "perceptual_layer": "conv2_2"},
        "psnr_stage": {"iterations": 2, "lr": 1e-3, "val_every": 2, "checkpoint_every": 2},
        "gan_stage": {"iterations": 2, "lr": 1e-4, "val_every": 2, "checkpoint_every": 2},
        "batch_size": 2,
        "patch_size": 32,
        "num_workers": 0,
        "device": "cpu",
        "val_max_images": 1,
        "val_samples": 1,
        "log_every": 1,
    },
}


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder the containers' user can write, mounted at the same path inside every container
    (pytest's own tmp_path lives under a root-only folder)."""
    path = Path(tempfile.mkdtemp(prefix="srseg-image-e2e-"))
    os.chown(path, IMAGE_UID, IMAGE_UID)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def owned_by_image_user(root: Path) -> Iterator[Path]:
    yield from (p for p in root.rglob("*") if p.stat().st_uid == IMAGE_UID)


@pytest.mark.timeout(2400)
def test_demo_pipeline_runs_in_the_image_to_a_promoted_model(
    image: str,
    engine_host: str,
    cocostuff_sample: Path,
    shared_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import docker as docker_sdk
    from kfp import local
    from mlflow import MlflowClient
    from registry.servers import mlflow_on_seaweed

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DOCKER_HOST", engine_host)  # for the docker SDK that DockerRunner uses
    monkeypatch.chdir(tmp_path)
    mirror = build_sample_mirror(cocostuff_sample, shared_dir / "mirror")
    raw = load_params(REPO / "params.yaml", profile="demo").model_dump(mode="json")
    raw = deep_merge(deep_merge(raw, TINY), {"download": {"mirror": str(mirror)}})
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    for sub in ("work", "kfp"):
        (shared_dir / sub).mkdir()
        os.chown(shared_dir / sub, IMAGE_UID, IMAGE_UID)

    with mlflow_on_seaweed(tmp_path / "servers", bucket="srseg") as (server, s3, _):
        runner = local.DockerRunner(
            network_mode="host",  # loopback servers are reachable; no bridge network exists
            mounts=[docker_sdk.types.Mount(target=str(shared_dir), source=str(shared_dir), type="bind")],
            entrypoint=[],  # as on Kubernetes, the step's command replaces the image's srseg entrypoint
            environment={
                "AWS_ACCESS_KEY_ID": s3.access_key,
                "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                "AWS_DEFAULT_REGION": s3.region,
            },
        )
        run = commands.run_local(
            params_file,
            None,
            package=REPO / PIPELINE_PACKAGE,
            work_dir=shared_dir / "work",
            pipeline_root=shared_dir / "kfp",
            runner=runner,
            pod=commands.PodOptions(image=image),
            root=REPO,
            arguments={
                "mlflow_uri": server.tracking_uri,
                "s3_bucket": "srseg",
                "s3_prefix": "cocostuff",
                "s3_endpoint_url": s3.endpoint_url,
            },
        )
        match = re.fullmatch(r"models:/([^/]+)/(\d+)", run.model_uri)
        assert match, run.model_uri
        name, version = match.groups()
        client = MlflowClient(server.tracking_uri)
        registered = client.get_model_version(name, version)
        assert client.get_model_version_by_alias(name, "champion").version == version  # gated promotion passed
        assert registered.tags["git_commit"] == image_build.git_commit()  # the image's commit (no .git inside)
        assert registered.tags["git_commit"] == client.get_run(registered.run_id).data.tags["git_commit"]
        keys = [
            o["Key"]
            for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket="srseg")
            for o in page.get("Contents", [])
        ]
        assert "cocostuff/manifest.json" in keys
        assert any(k.endswith("sr_head.safetensors") for k in keys)

    # every step ran in a container as the image's user: everything they wrote belongs to uid 1000
    written = [
        shared_dir / "work" / "data" / "cocostuff" / "manifest.json",
        shared_dir / "work" / "data" / "lr" / "manifest.json",
    ]
    written += list((shared_dir / "kfp").rglob("executor_output.json"))
    assert len(written) >= 12
    assert {p.stat().st_uid for p in written} == {IMAGE_UID}
    steps = {p.parent.name for p in (shared_dir / "kfp").rglob("executor_output.json")}
    assert {
        "resolve-params",
        "download",
        "degrade",
        "train",
        "train-2",
        "evaluate",
        "export",
        "register",
        "gate",
        "promote",
    } <= steps
