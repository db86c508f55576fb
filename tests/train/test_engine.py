"""Training engine: overfitting real patches, the lambda_seg = 0 ablation, GAN initialisation,
precomputed LR, validation metrics and the stage outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from trainkit import tiny_params

from srseg.data.classmap import get_class_map
from srseg.data.dataset import FullImageDataset, PairedPatchDataset
from srseg.data.manifest import LR_FORMAT, Manifest, Sample
from srseg.degrade.bicubic import bicubic_downscale
from srseg.fileio import sha256_file
from srseg.models.io import load_generator, load_state_dict_file
from srseg.stages.train import run_train
from srseg.train.checkpoint import CheckpointError
from srseg.train.engine import Trainer, TrainHooks
from srseg.train.validation import confusion_matrix, segmentation_scores, synthesize_lr


def _trainer(params, root: Path, stage: str = "psnr", out: Path | None = None, **kwargs) -> Trainer:
    cfg = params.train
    cmap = get_class_map(cfg.class_map)
    lr_root = Path(params.paths.lr_root) if cfg.lr_source == "precomputed" else None
    train_set = PairedPatchDataset(
        root, cfg.train_split, cfg.scale, cfg.patch_size, cmap, lr_root=lr_root, augment=cfg.augment, seed=cfg.seed
    )
    val_set = FullImageDataset(root, cfg.val_split, cfg.scale, cmap, lr_root=lr_root)
    return Trainer(
        cfg, stage, out or Path(cfg.output_dir) / stage, train_set, val_set, num_classes=cmap.num_classes, **kwargs
    )


def _run_steps(trainer: Trainer, steps: int) -> list[dict[str, float]]:
    loader = iter(trainer.make_loader())
    return [{k: float(v) for k, v in trainer.train_step(next(loader)).items()} for _ in range(steps)]


def test_overfits_fixed_real_patches(patch_root: Path, tmp_path: Path) -> None:
    """60 steps on the same four real 32x32 patches (augment off): pixel L1 falls below half of
    its initial value (seeds 0-2 reach 0.26-0.33x) and the segmentation CE below 0.8x (0.57-0.6x)."""
    params = tiny_params(
        patch_root,
        tmp_path,
        {
            "train": {  # learning from scratch: the paper's layout
                "augment": False,
                "psnr_stage": {"iterations": 100, "lr": 2e-3},
                "deterministic": False,
                "generator": {"global_residual": "none"},
            }
        },
    )
    trainer = _trainer(params, patch_root)
    history = _run_steps(trainer, 60)
    first = np.mean([h["pixel"] for h in history[:5]])
    last = np.mean([h["pixel"] for h in history[-5:]])
    assert last < 0.5 * first, (first, last)
    ce_first = np.mean([h["seg_ce"] for h in history[:5]])
    ce_last = np.mean([h["seg_ce"] for h in history[-5:]])
    assert ce_last < 0.8 * ce_first, (ce_first, ce_last)


def test_lambda_seg_zero_is_the_sr_only_ablation(prepared_root: Path, tmp_path: Path) -> None:
    """lambda_seg = 0: the seg head never moves, the SR path still trains, and the random number
    streams are consumed exactly as in the multitask run."""
    states = {}
    for lam in (0.0, 0.1):
        params = tiny_params(prepared_root, tmp_path / str(lam), {"train": {"loss": {"lambda_seg": lam}}})
        trainer = _trainer(params, prepared_root)
        seg0 = {k: v.clone() for k, v in trainer.generator.seg_head.state_dict().items()}
        sr0 = trainer.generator.sr_head.weight.detach().clone()
        history = _run_steps(trainer, 4)
        seg_moved = any(not torch.equal(v, trainer.generator.seg_head.state_dict()[k]) for k, v in seg0.items())
        assert seg_moved == (lam > 0)
        assert not torch.equal(sr0, trainer.generator.sr_head.weight)
        assert all(np.isfinite(h["seg_ce"]) and h["seg_ce"] > 0 for h in history)  # still computed and logged
        states[lam] = (torch.get_rng_state(), np.random.get_state()[1].copy())
    assert torch.equal(states[0.0][0], states[0.1][0])
    assert np.array_equal(states[0.0][1], states[0.1][1])


def test_gan_stage_starts_from_psnr_selected_weights(prepared_root: Path, tmp_path: Path) -> None:
    params = tiny_params(prepared_root, tmp_path, {"train": {"psnr_stage": {"iterations": 4, "val_every": 2}}})
    psnr = run_train(params, "psnr")
    best, sidecar = load_state_dict_file(tmp_path / "psnr" / "selected.safetensors")
    assert sidecar["metadata"]["iteration"] == str(psnr["best_iteration"]) and sidecar["metadata"]["stage"] == "psnr"
    assert sidecar["metadata"]["selection_rule"] == "max_psnr_y" == psnr["selection_rule"]

    seen = {}

    def capture(trainer: Trainer) -> None:
        seen["g"] = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
        seen["ema"] = {k: v.clone() for k, v in trainer.ema.module.state_dict().items()}
        seen["iteration"] = trainer.iteration

    run_train(params, "gan", max_iterations=2, hooks=TrainHooks(before_train=capture))
    assert seen["iteration"] == 0
    for key, value in best.items():
        assert torch.equal(seen["g"][key], value), key
        assert torch.equal(seen["ema"][key], value), key


def test_gan_stage_requires_psnr_weights(prepared_root: Path, tmp_path: Path) -> None:
    params = tiny_params(prepared_root, tmp_path)
    with pytest.raises(FileNotFoundError, match="run --stage psnr first"):
        run_train(params, "gan")


def test_stage_outputs_for_dvc(prepared_root: Path, tmp_path: Path) -> None:
    params = tiny_params(
        prepared_root, tmp_path, {"train": {"psnr_stage": {"iterations": 6, "val_every": 3, "checkpoint_every": 2}}}
    )
    summary = run_train(params, "psnr")
    stage = tmp_path / "psnr"
    assert summary["finished"] and summary["iteration"] == 6
    assert [p.name for p in sorted((stage / "checkpoints").glob("*.pt"))] == ["iter_00000004.pt", "iter_00000006.pt"]
    for name in (
        "selected.safetensors",
        "selected.safetensors.json",
        "final.safetensors",
        "metrics.json",
        "config.yaml",
        "plots/val.csv",
        "plots/train_loss.csv",
        "samples/iter_00000003.png",
        "samples/iter_00000006.png",
    ):
        assert (stage / name).is_file(), name
    final = load_generator(stage / "final.safetensors")  # the format evaluate/export read
    assert final.has_seg_head and final.config["num_features"] == 8
    metrics = json.loads((stage / "metrics.json").read_text())
    assert metrics["iteration"] == 6 and metrics["finished"] is True
    assert set(metrics["val"]) == {"psnr_y", "ssim_y", "miou", "pixel_acc"}
    val_rows = (stage / "plots/val.csv").read_text().splitlines()
    assert val_rows[0] == "iteration,psnr_y,ssim_y,miou,pixel_acc" and len(val_rows) == 3
    assert len((stage / "plots/train_loss.csv").read_text().splitlines()) == 1 + 3  # log_every = 2
    with Image.open(stage / "samples/iter_00000006.png") as grid:
        assert grid.mode == "RGB" and grid.width > 4 * grid.height  # five tiles side by side

    # A second call finds the finished stage and does no work, leaving the same metrics.
    again = run_train(params, "psnr")
    assert again["iteration"] == 6 and again["val"] == summary["val"]

    # resume=False starts over: the old run's outputs go, so its checkpoints cannot shadow the new ones.
    fresh = run_train(params, "psnr", resume=False, max_iterations=2)
    assert fresh["iteration"] == 2 and not fresh["finished"]
    assert [p.name for p in (stage / "checkpoints").glob("*.pt")] == ["iter_00000002.pt"]
    assert not (stage / "final.safetensors").exists() and not (stage / "selected.safetensors").exists()
    assert json.loads((stage / "metrics.json").read_text())["finished"] is False

    # Resuming under another objective is refused, naming the setting; schedule changes are fine.
    overrides = {"train": {"psnr_stage": {"iterations": 9, "val_every": 4, "checkpoint_every": 2}}}
    longer = tiny_params(prepared_root, tmp_path, overrides)
    assert run_train(longer, "psnr", max_iterations=2)["iteration"] == 2
    overrides["train"]["loss"] = {"lambda_seg": 0.5}
    with pytest.raises(CheckpointError, match=r"train\.loss\.lambda_seg: 0\.1 -> 0\.5"):
        run_train(tiny_params(prepared_root, tmp_path, overrides), "psnr")


def _write_lr_root(hr_root: Path, lr_root: Path, scale: int) -> None:
    """LR images the way the degrade stage makes them: MATLAB bicubic of the modcropped HR."""
    hr = Manifest.load(hr_root)
    splits = {}
    for split, samples in hr.splits.items():
        (lr_root / split).mkdir(parents=True, exist_ok=True)
        out = []
        for s in samples:
            with Image.open(hr_root / s.image) as img:
                arr = np.array(img.convert("RGB"))
            arr = arr[: arr.shape[0] // scale * scale, : arr.shape[1] // scale * scale]
            lr = bicubic_downscale(torch.from_numpy(arr).permute(2, 0, 1).contiguous(), scale)
            rel = f"{split}/{s.id:012d}.png"
            Image.fromarray(lr.permute(1, 2, 0).numpy()).save(lr_root / rel)
            out.append(
                Sample(
                    id=s.id, image=rel, width=lr.shape[2], height=lr.shape[1], image_sha256=sha256_file(lr_root / rel)
                )
            )
        splits[split] = out
    Manifest(kind="lr", format=LR_FORMAT, splits=splits, meta={"scale": scale}).save(lr_root)


def test_precomputed_lr_matches_device_synthesis(prepared_root: Path, tmp_path: Path) -> None:
    """lr_source=precomputed trains on the degrade stage's LR; on a patch interior that LR equals
    the LR the trainer synthesises on the device (same MATLAB bicubic, same uint8 rounding)."""
    lr_root = tmp_path / "lr"
    _write_lr_root(prepared_root, lr_root, 4)
    params = tiny_params(
        prepared_root,
        tmp_path / "out",
        {
            "paths": {"lr_root": str(lr_root)},
            "train": {"lr_source": "precomputed", "psnr_stage": {"iterations": 2, "val_every": 2}},
        },
    )
    summary = run_train(params, "psnr")
    assert summary["finished"] and np.isfinite(summary["val"]["psnr_y"])

    cmap = get_class_map("coarse8")
    ds = PairedPatchDataset(prepared_root, "train2017", 4, 64, cmap, lr_root=lr_root, augment=False)
    item = ds[0]
    synth = synthesize_lr(item["hr"][None], 4)[0]
    inner = (slice(None), slice(3, -3), slice(3, -3))  # beyond the bicubic support of the border
    assert torch.equal(synth[inner], item["lr"][inner])


def test_segmentation_scores_by_hand() -> None:
    label = torch.tensor([[0, 0, 1, 255], [1, 1, 2, 2]])
    pred = torch.tensor([[0, 1, 1, 0], [1, 1, 2, 0]])
    conf = confusion_matrix(pred, label, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 3, 0], [1, 0, 1]]
    scores = segmentation_scores(conf)
    # IoU: class0 1/(2+2-1)=1/3, class1 3/(3+4-3)=3/4, class2 1/(2+1-1)=1/2
    assert scores["miou"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert scores["pixel_acc"] == pytest.approx(5 / 7)


def test_class_weighted_ce_counts_labels_once(prepared_root: Path, tmp_path: Path) -> None:
    params = tiny_params(
        prepared_root,
        tmp_path,
        {"train": {"loss": {"seg_class_weights": "inverse_sqrt"}, "psnr_stage": {"iterations": 2, "val_every": 2}}},
    )
    seen = {}
    run_train(params, "psnr", hooks=TrainHooks(before_train=lambda t: seen.update(w=t.seg_loss.class_weights)))
    cache = json.loads((tmp_path / "class_counts.json").read_text())
    counts = np.array(cache["counts"])
    assert cache["class_map"] == "coarse8" and counts.shape == (8,) and counts.sum() > 0
    weights = seen["w"]
    present = counts > 0
    assert weights.shape == (8,) and torch.all(weights[torch.from_numpy(~present)] == 0)
    assert float(weights[torch.from_numpy(present)].mean()) == pytest.approx(1.0, rel=1e-5)
    # rarer classes weigh more
    order = np.argsort(counts[present])
    assert weights[torch.from_numpy(present)][order[0]] >= weights[torch.from_numpy(present)][order[-1]]


# ------------------------------------------------------------------- which weights a stage ships


def _spoil_at(iteration: int):
    """After-step hook that ruins the EMA's SR output at ``iteration`` (before that validation)."""

    def spoil(trainer: Trainer) -> None:
        def after(step: int, _ids: list[int]) -> None:
            if step == iteration:
                with torch.no_grad():
                    trainer.ema.module.sr_head.bias.add_(0.3)  # +0.3 on every pixel: a large PSNR drop

        trainer.hooks.after_step = after

    return spoil


def _val_rows(stage: Path) -> list[dict[str, float]]:
    lines = (stage / "plots" / "val.csv").read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, map(float, line.split(",")))) for line in lines[1:]]


def test_gan_stage_ships_its_final_ema_weights_not_its_max_psnr_ones(prepared_root: Path, tmp_path: Path) -> None:
    """Without LPIPS weights the GAN stage ships the final EMA weights, even when its validation
    PSNR peaked earlier (planted here: the EMA output is spoiled right before the last validation)."""
    params = tiny_params(
        prepared_root,
        tmp_path,
        {
            "train": {
                "psnr_stage": {"iterations": 2, "val_every": 2},
                "gan_stage": {"iterations": 4, "val_every": 2, "checkpoint_every": 2},
                "lpips_weights": str(tmp_path / "no-lpips-here"),
            }
        },
    )
    run_train(params, "psnr")
    summary = run_train(params, "gan", hooks=TrainHooks(before_train=_spoil_at(4)))
    stage = tmp_path / "gan"
    rows = _val_rows(stage)
    max_psnr_iteration = max(rows, key=lambda r: r["psnr_y"])["iteration"]
    assert max_psnr_iteration == 2.0 and rows[-1]["iteration"] == 4.0, rows  # the planted peak is earlier
    selected, sidecar = load_state_dict_file(stage / "selected.safetensors")
    final, _ = load_state_dict_file(stage / "final.safetensors")
    assert sidecar["metadata"]["selection_rule"] == "final_ema" == summary["selection_rule"]
    assert sidecar["metadata"]["iteration"] == "4" and summary["best_iteration"] == 2
    assert all(torch.equal(selected[k], final[k]) for k in final)
    assert sidecar["metadata"]["perceptual_loss"].startswith("random-weight VGG19")  # trainkit asks for it
    metrics = json.loads((stage / "metrics.json").read_text())
    assert metrics["selected"]["rule"] == "final_ema" and metrics["selected"]["iteration"] == 4
    assert metrics["best"]["iteration"] == 2  # reported, but not what ships


def test_gan_stage_with_lpips_ships_the_lowest_lpips_weights(prepared_root: Path, tmp_path: Path) -> None:
    """With LPIPS configured (a random backbone here: tests ship no weights) the stage keeps the
    EMA weights with the lowest LPIPS on the selection images, and says so."""
    params = tiny_params(
        prepared_root,
        tmp_path,
        {
            "train": {
                "psnr_stage": {"iterations": 2, "val_every": 2},
                "gan_stage": {"iterations": 4, "val_every": 2, "checkpoint_every": 2, "select": "min_lpips"},
                "lpips_weights": "none",
            }
        },
    )
    run_train(params, "psnr")
    summary = run_train(params, "gan", hooks=TrainHooks(before_train=_spoil_at(4)))
    rows = _val_rows(tmp_path / "gan")
    best_lpips = min(rows, key=lambda r: r["lpips"])
    _, sidecar = load_state_dict_file(tmp_path / "gan" / "selected.safetensors")
    assert sidecar["metadata"]["selection_rule"] == "min_lpips" == summary["selection_rule"]
    assert sidecar["metadata"]["iteration"] == str(int(best_lpips["iteration"])) == str(summary["selected_iteration"])
    assert float(sidecar["metadata"]["val.lpips"]) == pytest.approx(best_lpips["lpips"])


def test_min_lpips_without_weights_is_an_error_naming_the_setting(prepared_root: Path, tmp_path: Path) -> None:
    from srseg.models.vgg import MissingWeightsError

    params = tiny_params(
        prepared_root,
        tmp_path,
        {
            "train": {
                "psnr_stage": {"iterations": 2, "val_every": 2},
                "gan_stage": {"select": "min_lpips"},
                "lpips_weights": str(tmp_path / "absent"),
            }
        },
    )
    # refused before the PSNR stage starts, not after it (the check at training start, srseg.weights)
    with pytest.raises(MissingWeightsError, match=r"train\.gan_stage\.select: min_lpips"):
        run_train(params, "psnr")
    assert not (tmp_path / "psnr").exists()
