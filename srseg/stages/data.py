"""Data stages: ``download`` and ``degrade`` driven by validated params."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from srseg.config import HighOrderConfig, Params
from srseg.data.manifest import Manifest

log = logging.getLogger(__name__)


def resolve_mirror(mirror: str | None) -> str | None:
    """A plain folder path in params becomes a ``file://`` URL (relative to the working dir)."""
    if mirror is None or "://" in mirror:
        return mirror
    folder = Path(mirror).expanduser().resolve()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"download.mirror: folder {folder} does not exist (build it with `make mirror` or set mirror: null)"
        )
    return folder.as_uri()


def _mirror_name(mirror: str | None) -> str | None:
    """A folder mirror is recorded as configured (e.g. ``data/mirror``), not as the absolute
    ``file://`` URL it is fetched from, so the manifest is the same in every checkout."""
    if mirror is None or "://" in mirror:
        return None
    return Path(mirror).as_posix()


def run_download(params: Params, mirror: str | None = None, output: Path | None = None) -> Manifest:
    """Fetch COCO-Stuff per ``params.download`` and record the class map in the manifest."""
    from srseg.data.classmap import get_class_map
    from srseg.data.download import download_cocostuff
    from srseg.data.s3 import upload_tree

    cfg = params.download
    root = Path(output or params.paths.data_root)
    source = resolve_mirror(mirror if mirror is not None else cfg.mirror)
    log.info(
        "download: %s mode, %s, labels from %s, source %s",
        cfg.mode,
        list(cfg.splits),
        cfg.label_source,
        source or "official hosts",
    )
    manifest = download_cocostuff(
        output=root,
        splits=list(cfg.splits),
        mode=cfg.mode,
        subset_size=cfg.subset_size,
        seed=cfg.seed,
        label_source=cfg.label_source,
        mirror=source,
        retries=cfg.retries,
        backoff_s=cfg.backoff_s,
        timeout_s=cfg.timeout_s,
        s3_endpoint_url=cfg.upload.endpoint_url,
        mirror_name=_mirror_name(mirror if mirror is not None else cfg.mirror),
    )
    class_map = get_class_map(cfg.class_map).to_json()
    if manifest.meta.get("class_map") != class_map:
        manifest.meta["class_map"] = class_map
        manifest.save(root)
    if cfg.upload.bucket:
        keys = upload_tree(root, cfg.upload.bucket, cfg.upload.prefix, endpoint_url=cfg.upload.endpoint_url)
        log.info("uploaded %d files to s3://%s/%s", len(keys), cfg.upload.bucket, cfg.upload.prefix)
    return manifest


def _high_order_params(cfg: HighOrderConfig) -> Any:
    from srseg.degrade.highorder import HighOrderParams

    return HighOrderParams.from_config(cfg)


def run_degrade(params: Params, scale: int | None = None, skip_corrupt: bool | None = None) -> dict[str, Any]:
    """LR images for every split of the downloaded dataset."""
    from srseg.degrade.folder import degrade_dataset

    cfg = params.degrade
    report = degrade_dataset(
        hr_root=Path(params.paths.data_root),
        lr_root=Path(params.paths.lr_root),
        scale=scale or cfg.scale,
        method=cfg.method,
        high_order=_high_order_params(cfg.high_order) if cfg.method == "highorder" else None,
        seed=cfg.seed,
        skip_corrupt=cfg.skip_corrupt if skip_corrupt is None else skip_corrupt,
    )
    return asdict(report)


def run_degrade_folder(
    params: Params, input_dir: Path, output_dir: Path, scale: int | None = None, skip_corrupt: bool | None = None
) -> dict[str, Any]:
    """LR images for any folder of images (users' own benchmarks)."""
    from srseg.degrade.folder import degrade_folder

    cfg = params.degrade
    report = degrade_folder(
        input_dir,
        output_dir,
        scale=scale or cfg.scale,
        method=cfg.method,
        high_order=_high_order_params(cfg.high_order) if cfg.method == "highorder" else None,
        seed=cfg.seed,
        skip_corrupt=cfg.skip_corrupt if skip_corrupt is None else skip_corrupt,
    )
    return asdict(report)
