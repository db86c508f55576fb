"""Training stage entry: ``run_train(params, "psnr" | "gan")``, called by ``srseg train`` and DVC.

Multi-GPU: launch the same command under torchrun, e.g.
``torchrun --nproc_per_node=8 -m srseg train --stage psnr`` (add ``--nnodes``/``--node_rank``/
``--master_addr`` for several nodes); ``train.batch_size`` stays the global batch.

Output layout (``<output_dir>`` = ``train.output_dir`` unless overridden)::

    <output_dir>/mlflow_parent.json            parent MLflow run shared by both stages
    <output_dir>/class_counts.json             cached label pixel counts (class-weighted CE only)
    <output_dir>/<stage>/                      stage = psnr | gan
        checkpoints/iter_XXXXXXXX.pt (+.sha256)  full training state, newest keep_checkpoints kept
        selected.safetensors (+.json)          the EMA generator this stage ships, chosen by its
                                               select rule on the selection images (rule in the
                                               sidecar metadata and metrics.json)
        final.safetensors (+.json)             EMA generator after the last iteration
        metrics.json                           DVC metrics: best/last validation, last losses
        plots/train_loss.csv, plots/val.csv    DVC plots (one row per log / validation)
        samples/iter_XXXXXXXX.png              LR | SR | HR | predicted seg | true seg grids
        config.yaml                            the resolved parameters of this run
        class_map.json                         training ids -> COCO-Stuff classes of the seg head
        mlflow_run.json                        this stage's (nested) MLflow run id

Validation runs on the *selection* part of ``train.val_split`` only (``srseg.data.holdout``,
``train.selection_images``); the other images are left for ``srseg evaluate`` to report on.

The GAN stage starts from ``<output_dir>/psnr/selected.safetensors`` (or ``init_from``), which is
its DVC dependency. Weight files are ``srseg.generator/1`` (``srseg.models.io``: safetensors plus a
JSON sidecar with the network config, digest and metadata such as stage, iteration and val
metrics); ``srseg.models.io.load_generator`` rebuilds the full multitask net from them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from srseg.config import Params
from srseg.fileio import read_json, write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    from srseg.train.engine import TrainHooks

logger = logging.getLogger(__name__)


def class_pixel_counts(hr_root: str | Path, split: str, class_map: Any, cache: Path) -> list[int]:
    """Labelled pixels per training class over a split, cached by manifest checksum."""
    from PIL import Image

    from srseg.data.manifest import Manifest, manifest_checksum

    checksum = manifest_checksum(hr_root)
    key = {"manifest_sha256": checksum, "split": split, "class_map": class_map.name}
    if cache.is_file():
        cached = read_json(cache)
        if isinstance(cached, dict) and all(cached.get(k) == v for k, v in key.items()):
            return [int(c) for c in cached["counts"]]
    manifest = Manifest.load(hr_root)
    counts = np.zeros(256, dtype=np.int64)
    for sample in manifest.splits[split]:
        if sample.label is None:
            continue
        with Image.open(Path(hr_root) / sample.label) as img:
            label = np.asarray(img, dtype=np.uint8)
        counts += np.bincount(class_map.apply(label).ravel(), minlength=256)
    result = [int(c) for c in counts[: class_map.num_classes]]
    write_json_atomic(cache, {**key, "counts": result})
    return result


def _check_init(sidecar: dict[str, Any], architecture: str, expected: dict[str, Any], path: Path) -> None:
    found = (sidecar.get("architecture"), sidecar.get("config"))
    if found != (architecture, expected):
        raise ValueError(
            f"{path}: generator {found[0]} {found[1]} does not match the train.generator settings "
            f"{architecture} {expected}; retrain the PSNR stage or restore the parameters"
        )


def selection_subset(val_set: Any, count: int) -> Any:
    """The selection part of a ``FullImageDataset`` (see :mod:`srseg.data.holdout`) as a ``Subset``."""
    import torch

    from srseg.data.holdout import split_validation

    ids = [sample.id for sample in val_set.source.samples]
    chosen, report = split_validation(ids, count)
    wanted = set(chosen)
    logger.info(
        "validation on %d selection images of %d (ids %s); %d left for the report",
        len(chosen),
        len(ids),
        chosen,
        len(report),
    )
    return torch.utils.data.Subset(val_set, [i for i, image_id in enumerate(ids) if image_id in wanted])


def run_train(
    params: Params,
    stage: Literal["psnr", "gan"],
    *,
    output_dir: str | Path | None = None,
    init_from: str | Path | None = None,
    parent_run_id: str | None = None,
    resume: bool = True,
    max_iterations: int | None = None,
    hooks: TrainHooks | None = None,
    report_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train one stage and return a summary (also written to ``<stage>/metrics.json``).

    ``output_dir`` overrides ``train.output_dir``. ``init_from`` is the GAN stage's starting
    weights (default ``<output_dir>/psnr/selected.safetensors``; ignored by the PSNR stage).
    ``parent_run_id`` forces the MLflow parent run (default: the one recorded in ``output_dir``,
    or a new one). ``resume=True`` continues from the newest valid checkpoint (refused if the
    objective's settings changed); ``resume=False`` deletes this stage's previous outputs and
    starts over. ``max_iterations`` stops after that iteration with a checkpoint (smoke runs).
    ``hooks`` is a ``srseg.train.engine.TrainHooks``. ``report_dir``: rank 0 also copies
    ``metrics.json`` and the plot CSVs there (``srseg.stages.reports``; DVC keeps them in git).
    Runs as one rank of a DDP job when launched by torchrun; the process group is created from
    torchrun's environment and destroyed at the end.
    """
    from srseg.data.classmap import get_class_map
    from srseg.train.distributed import barrier, cleanup_distributed, init_distributed, per_rank_batch
    from srseg.train.engine import STAGES, DeterminismState, Trainer
    from srseg.train.tracking import NullTracker
    from srseg.weights import check_weights

    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    # both stages: the PSNR stage refuses to start when the GAN stage's VGG19 is not there
    check_weights(params, scope="train")
    cfg = params.train
    out_root = Path(output_dir if output_dir is not None else cfg.output_dir)
    stage_dir = out_root / stage
    determinism = DeterminismState()
    dist_info = init_distributed(cfg.device)
    tracker: Any = NullTracker()
    try:
        per_rank_batch(cfg.batch_size, dist_info.world_size)
        class_map = get_class_map(cfg.class_map)
        train_set, val_set = _datasets(params, class_map)
        class_weights = _class_weights(params, class_map, out_root, dist_info)
        init_weights = _gan_init_weights(params, class_map, out_root, init_from) if stage == "gan" else None
        if dist_info.is_main:
            _prepare_stage_dir(params, class_map, stage_dir, resume)
            if params.mlflow.enabled:
                tracker = _open_tracker(params, stage, out_root, parent_run_id, resume, dist_info)
        barrier(dist_info)

        trainer = Trainer(
            cfg,
            stage,
            stage_dir,
            train_set,
            val_set,
            num_classes=class_map.num_classes,
            dist_info=dist_info,
            tracker=tracker,
            init_weights=init_weights,
            class_weights=class_weights,
            hooks=hooks,
        )
        if resume:
            trainer.resume()
        result = trainer.train(until=max_iterations)
        summary = _summary(stage, stage_dir, result, trainer, tracker)
        if dist_info.is_main:
            _close_stage(params, stage, stage_dir, result, trainer, tracker, report_dir)
        return summary
    except BaseException as exc:
        tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        cleanup_distributed(dist_info)
        determinism.restore()


def _datasets(params: Params, class_map: Any) -> tuple[Any, Any]:
    """(training patches, validation images of the selection part, or None without a val split)."""
    from srseg.data.dataset import FullImageDataset, PairedPatchDataset
    from srseg.data.manifest import Manifest

    cfg = params.train
    hr_root = Path(params.paths.data_root)
    lr_root = Path(params.paths.lr_root) if cfg.lr_source == "precomputed" else None
    train_set = PairedPatchDataset(
        hr_root,
        cfg.train_split,
        cfg.scale,
        cfg.patch_size,
        class_map,
        lr_root=lr_root,
        augment=cfg.augment,
        seed=cfg.seed,
        cache_images=cfg.cache_images,
        hr_scales=cfg.hr_scales,
    )
    if len(train_set) == 0:
        raise ValueError(f"{hr_root}: split {cfg.train_split!r} has no images")
    if cfg.val_split not in Manifest.load(hr_root).splits:
        logger.warning(
            "%s has no split %r: training without validation (ships the final weights)", hr_root, cfg.val_split
        )
        return train_set, None
    full = FullImageDataset(hr_root, cfg.val_split, cfg.scale, class_map, lr_root=lr_root)
    return train_set, selection_subset(full, cfg.selection_images)


def _class_weights(params: Params, class_map: Any, out_root: Path, dist_info: Any) -> Any:
    """Per-class CE weights from the training labels (counted on rank 0), or None."""
    from srseg.models.losses import class_frequency_weights
    from srseg.train.distributed import broadcast_object

    cfg = params.train
    if cfg.loss.seg_class_weights == "none":
        return None
    counts = None
    if dist_info.is_main:
        counts = class_pixel_counts(params.paths.data_root, cfg.train_split, class_map, out_root / "class_counts.json")
    counts = broadcast_object(counts, dist_info)
    return class_frequency_weights(counts, cfg.loss.seg_class_weights)


def _gan_init_weights(params: Params, class_map: Any, out_root: Path, init_from: str | Path | None) -> Any:
    """The GAN stage's starting weights (the PSNR stage's selected generator by default), checked
    against the configured generator."""
    from srseg.models.io import load_state_dict_file
    from srseg.train.engine import SELECTED_WEIGHTS, build_generator

    cfg = params.train
    init_path = Path(init_from) if init_from is not None else out_root / "psnr" / SELECTED_WEIGHTS
    if not init_path.is_file():
        raise FileNotFoundError(f"GAN stage needs the PSNR stage's weights at {init_path}; run --stage psnr first")
    init_weights, sidecar = load_state_dict_file(init_path)
    _check_init(sidecar, cfg.generator.architecture, build_generator(cfg, class_map.num_classes).config, init_path)
    logger.info("GAN stage starts from %s (%s)", init_path, sidecar.get("metadata", {}))
    return init_weights


def _prepare_stage_dir(params: Params, class_map: Any, stage_dir: Path, resume: bool) -> None:
    """Rank 0: clear the stage folder when not resuming; write config.yaml and class_map.json."""
    import yaml

    from srseg.train.engine import clear_stage_outputs

    if not resume:
        for path in clear_stage_outputs(stage_dir):
            logger.warning("resume=False: removed previous output %s", path)
    stage_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(stage_dir / "config.yaml", yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    write_json_atomic(stage_dir / "class_map.json", class_map.to_json())


def _open_tracker(
    params: Params, stage: str, out_root: Path, parent_run_id: str | None, resume: bool, dist_info: Any
) -> Any:
    """Rank 0: the stage's MLflow run nested under the training's parent, with params, tags and
    the stage folder's config files logged."""
    from srseg.lineage import branch_of, kfp_tags
    from srseg.tracking import flatten_params, resolve_tracking_uri
    from srseg.train.tracking import MlflowTracker

    flat = flatten_params(params.model_dump(mode="json"))
    lineage = {"branch": branch_of(params), **kfp_tags()}
    tracker = MlflowTracker.open(
        resolve_tracking_uri(params.mlflow.tracking_uri),
        params.mlflow.experiment,
        out_root,
        stage,
        parent_run_id=parent_run_id,
        resume=resume,
        parent_params=flat,
        parent_name=f"train-{lineage['branch']}-{lineage.get('kfp.run_id') or time.strftime('%Y%m%d-%H%M%S')}",
        parent_tags=lineage,
    )
    tracker.log_params(flat)
    tracker.set_tags({**lineage, **_run_tags(params, stage, dist_info)})
    tracker.log_artifact(out_root / stage / "config.yaml")
    tracker.log_artifact(out_root / stage / "class_map.json")
    return tracker


def _run_tags(params: Params, stage: str, dist_info: Any) -> dict[str, str]:
    """Data checksums, code commit, machine and DVC experiment of a stage run."""
    import torch

    from srseg.data.manifest import manifest_checksum
    from srseg.tracking import dvc_experiment_tags, git_commit, system_info

    cfg = params.train
    device_name = torch.cuda.get_device_name(dist_info.device) if dist_info.device.type == "cuda" else "cpu"
    tags = {
        "stage": stage,
        "data.manifest_sha256": manifest_checksum(params.paths.data_root),
        "data.lr_source": cfg.lr_source,
        **system_info(device_name, dist_info.world_size),
        **dvc_experiment_tags(),
    }
    if cfg.lr_source == "precomputed":
        tags["data.lr_manifest_sha256"] = manifest_checksum(params.paths.lr_root)
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    return tags


def _summary(stage: str, stage_dir: Path, result: Any, trainer: Any, tracker: Any) -> dict[str, Any]:
    return {
        "stage": stage,
        "stage_dir": str(stage_dir),
        "iteration": result.iteration,
        "finished": result.finished,
        "best_psnr_y": result.best_psnr_y,
        "best_iteration": result.best_iteration,
        "selection_rule": trainer.selection_rule,
        "selected_iteration": trainer.selected_iteration,
        "val": result.last_val,
        "samples_per_s": result.samples_per_s,
        "data_wait_share": result.data_wait_share,
        "run_id": tracker.run_id,
        "parent_run_id": tracker.parent_run_id,
    }


def _close_stage(
    params: Params, stage: str, stage_dir: Path, result: Any, trainer: Any, tracker: Any, report_dir: str | Path | None
) -> None:
    """Rank 0: tag and log the stage's outcome, publish its report files, close the run."""
    from srseg.stages.reports import TRAIN_REPORT, publish_report

    tracker.set_tags(
        {
            "train.selection_rule": trainer.selection_rule,
            "train.perceptual_loss": trainer.perceptual_description,
            "train.random_vgg_weights": str(stage == "gan" and params.train.loss.vgg_weights == "random").lower(),
        }
    )
    if result.best_iteration:
        tracker.log_metrics({"best/psnr_y": result.best_psnr_y}, step=result.iteration)
    for name in ("metrics.json", "plots/train_loss.csv", "plots/val.csv"):
        if (stage_dir / name).is_file():
            tracker.log_artifact(stage_dir / name, str(Path(name).parent) if "/" in name else None)
    if report_dir is not None:
        publish_report(stage_dir, report_dir, TRAIN_REPORT)
    tracker.finish("FINISHED")
