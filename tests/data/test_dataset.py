"""Training/validation datasets on a tiny prepared root built from the real COCO-Stuff sample."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from srseg.data.classmap import IGNORE_INDEX, get_class_map
from srseg.data.dataset import CropPlan, FullImageDataset, PairedPatchDataset
from srseg.data.manifest import HR_FORMAT, LR_FORMAT, Manifest, ManifestError, Sample, image_name, label_name
from srseg.fileio import sha256_file

SCALE = 4
PATCH = 48
REAL = [("train2017", 17914), ("train2017", 284465), ("val2017", 1503)]  # 500x375, 640x427, 320x240
GRAY, CMYK, SMALL = 900000001, 900000002, 900000003
FINE = get_class_map("fine171")


def _hr_sample(root: Path, split: str, image_id: int) -> Sample:
    image = f"images/{split}/{image_name(image_id)}"
    label = f"labels/{split}/{label_name(image_id)}"
    with Image.open(root / image) as img:
        width, height = img.size
    return Sample(id=image_id, image=image, width=width, height=height,
                  image_sha256=sha256_file(root / image), label=label,
                  label_sha256=sha256_file(root / label))


def _write_lr(hr_root: Path, lr_root: Path, split: str, samples: list[Sample], scale: int) -> list[Sample]:
    """LR = Pillow bicubic of the modcropped HR (the tests' stand-in for the degrade stage)."""
    out = []
    for s in samples:
        with Image.open(hr_root / s.image) as img:
            hr = img.convert("RGB")
        w, h = s.width - s.width % scale, s.height - s.height % scale
        lr = hr.crop((0, 0, w, h)).resize((w // scale, h // scale), Image.BICUBIC)
        rel = f"{split}/{s.id:012d}.png"
        (lr_root / split).mkdir(parents=True, exist_ok=True)
        lr.save(lr_root / rel)
        out.append(Sample(id=s.id, image=rel, width=lr.width, height=lr.height,
                          image_sha256=sha256_file(lr_root / rel)))
    return out


@pytest.fixture(scope="module")
def roots(cocostuff_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("prepared")
    hr_root, lr_root = base / "hr", base / "lr"
    for sub in ("images/train", "labels/train", "images/val", "labels/val"):
        (hr_root / sub).mkdir(parents=True)
    for src_split, image_id in REAL:
        shutil.copyfile(cocostuff_sample / "images" / src_split / image_name(image_id),
                        hr_root / "images/train" / image_name(image_id))
        shutil.copyfile(cocostuff_sample / "stuffthingmaps" / src_split / label_name(image_id),
                        hr_root / "labels/train" / label_name(image_id))
    src_1503 = hr_root / "images/train" / image_name(1503)
    label_1503 = hr_root / "labels/train" / label_name(1503)
    with Image.open(src_1503) as img:
        img.convert("L").save(hr_root / "images/train" / image_name(GRAY), quality=95)
        img.crop((0, 0, 30, 21)).save(hr_root / "images/train" / image_name(SMALL), quality=95)
    shutil.copyfile(label_1503, hr_root / "labels/train" / label_name(GRAY))
    with Image.open(label_1503) as lab:
        lab.crop((0, 0, 30, 21)).save(hr_root / "labels/train" / label_name(SMALL))
    with Image.open(hr_root / "images/train" / image_name(17914)) as img:
        img.convert("CMYK").save(hr_root / "images/train" / image_name(CMYK), quality=95)
    shutil.copyfile(hr_root / "labels/train" / label_name(17914), hr_root / "labels/train" / label_name(CMYK))
    shutil.copyfile(src_1503, hr_root / "images/val" / image_name(1503))
    shutil.copyfile(label_1503, hr_root / "labels/val" / label_name(1503))

    ids = [image_id for _, image_id in REAL] + [GRAY, CMYK, SMALL]
    splits = {
        "train": [_hr_sample(hr_root, "train", i) for i in ids],
        "val": [_hr_sample(hr_root, "val", 1503)],
    }
    Manifest(kind="hr", format=HR_FORMAT, splits=splits).save(hr_root)
    lr_splits = {name: _write_lr(hr_root, lr_root, name, samples, SCALE) for name, samples in splits.items()}
    Manifest(kind="lr", format=LR_FORMAT, splits=lr_splits, meta={"scale": SCALE}).save(lr_root)
    return hr_root, lr_root


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _source(hr_root: Path, lr_root: Path, sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Modcropped HR, LR and raw label of a sample, padded to at least one patch as documented."""
    hr = _rgb(hr_root / sample.image)
    with Image.open(hr_root / sample.label) as lab:  # type: ignore[operator]
        label = np.asarray(lab)
    lr = _rgb(lr_root / f"train/{sample.id:012d}.png")
    h, w = sample.height - sample.height % SCALE, sample.width - sample.width % SCALE
    hr, label = hr[:h, :w], label[:h, :w]
    ph, pw = max(0, PATCH - h), max(0, PATCH - w)
    hr = np.pad(hr, ((0, ph), (0, pw), (0, 0)), mode="reflect")
    lr = np.pad(lr, ((0, ph // SCALE), (0, pw // SCALE), (0, 0)), mode="reflect")
    label = np.pad(label, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
    return hr, lr, label


def _undo(patch: np.ndarray, plan: CropPlan) -> np.ndarray:
    """Inverse of the documented order hflip -> vflip -> rot90 (counter-clockwise)."""
    if plan.rot90:
        patch = np.rot90(patch, k=-1, axes=(0, 1))
    if plan.vflip:
        patch = patch[::-1]
    if plan.hflip:
        patch = patch[:, ::-1]
    return patch


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)


def test_shapes_and_types(roots: tuple[Path, Path]) -> None:
    hr_root, lr_root = roots
    ds = PairedPatchDataset(hr_root, "train", SCALE, PATCH, FINE, lr_root=lr_root)
    assert len(ds) == 6
    for i in range(len(ds)):
        item = ds[i]
        assert item["hr"].shape == (3, PATCH, PATCH) and item["hr"].dtype == torch.float32
        assert item["lr"].shape == (3, PATCH // SCALE, PATCH // SCALE) and item["lr"].dtype == torch.float32
        assert item["label"].shape == (PATCH, PATCH) and item["label"].dtype == torch.int64
        assert 0.0 <= float(item["hr"].min()) and float(item["hr"].max()) <= 1.0
        labels = item["label"]
        assert (((labels >= 0) & (labels < 171)) | (labels == IGNORE_INDEX)).all()
        assert item["id"] == ds.source.samples[i].id


def test_patches_align_with_source_under_all_transforms(roots: tuple[Path, Path]) -> None:
    hr_root, lr_root = roots
    ds = PairedPatchDataset(hr_root, "train", SCALE, PATCH, FINE, lr_root=lr_root, seed=3)
    seen: set[tuple[bool, bool, bool]] = set()
    lr_size = PATCH // SCALE
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i, sample in enumerate(ds.source.samples):
            plan = ds.plan(i)
            seen.add((plan.hflip, plan.vflip, plan.rot90))
            assert plan.top % SCALE == 0 and plan.left % SCALE == 0
            item = ds[i]
            hr, lr, label = _source(hr_root, lr_root, sample)
            t, l = plan.top, plan.left
            np.testing.assert_array_equal(
                _undo(_to_uint8(item["hr"]), plan), hr[t : t + PATCH, l : l + PATCH]
            )
            np.testing.assert_array_equal(
                _undo(item["label"].numpy(), plan), FINE.lut[label[t : t + PATCH, l : l + PATCH]]
            )
            lt, ll = t // SCALE, l // SCALE
            np.testing.assert_array_equal(
                _undo(_to_uint8(item["lr"]), plan), lr[lt : lt + lr_size, ll : ll + lr_size]
            )
    assert len(seen) >= 6  # the flips and the rotation were all exercised, in most combinations


def test_lr_patch_is_the_downscaled_hr_patch(roots: tuple[Path, Path]) -> None:
    """Plan-free check: bicubic(HR patch) matches the LR patch, and not a one-pixel shift of it."""
    hr_root, lr_root = roots
    ds = PairedPatchDataset(hr_root, "train", SCALE, PATCH, FINE, lr_root=lr_root, seed=1)
    aligned, shifted = [], []
    for i in range(3):  # the real photographs
        item = ds[i]
        hr = Image.fromarray(_to_uint8(item["hr"]))
        down = np.asarray(hr.resize((PATCH // SCALE,) * 2, Image.BICUBIC), dtype=np.float64)[2:-2, 2:-2]
        lr = _to_uint8(item["lr"]).astype(np.float64)
        aligned.append(np.abs(down - lr[2:-2, 2:-2]).mean())
        shifted.append(np.abs(down - lr[3:-1, 2:-2]).mean())
    assert max(aligned) < 3.0
    assert np.mean(aligned) < 0.5 * np.mean(shifted)


def test_deterministic_per_seed_epoch_index(roots: tuple[Path, Path]) -> None:
    hr_root, lr_root = roots
    a = PairedPatchDataset(hr_root, "train", SCALE, PATCH, FINE, lr_root=lr_root, seed=7)
    b = PairedPatchDataset(hr_root, "train", SCALE, PATCH, FINE, lr_root=lr_root, seed=7)
    b.set_epoch(2)
    b.set_epoch(0)  # resume: only (seed, epoch, index) matter, not history
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert all(torch.equal(x[k], y[k]) for k in ("hr", "lr", "label"))
    plans0 = [a.plan(i) for i in range(len(a))]
    a.set_epoch(1)
    plans1 = [a.plan(i) for i in range(len(a))]
    assert plans0 != plans1
    assert any(not torch.equal(a[i]["hr"], b[i]["hr"]) for i in range(3))
    c = PairedPatchDataset(hr_root, "train", SCALE, PATCH, FINE, lr_root=lr_root, seed=8)
    assert [c.plan(i) for i in range(len(c))] != plans0


def test_dataloader_workers_match_direct_indexing(roots: tuple[Path, Path]) -> None:
    hr_root, lr_root = roots
    ds = PairedPatchDataset(hr_root, "train", SCALE, PATCH, "coarse8", lr_root=lr_root, seed=5)
    ds.set_epoch(4)
    batches = list(DataLoader(ds, batch_size=3, num_workers=2, shuffle=False))
    direct = [ds[i] for i in range(len(ds))]
    assert torch.equal(torch.cat([b["hr"] for b in batches]), torch.stack([d["hr"] for d in direct]))
    assert torch.equal(torch.cat([b["label"] for b in batches]), torch.stack([d["label"] for d in direct]))
    assert torch.cat([b["id"] for b in batches]).tolist() == [d["id"] for d in direct]
    labels = torch.cat([b["label"] for b in batches])
    assert (((labels >= 0) & (labels < 8)) | (labels == IGNORE_INDEX)).all()


def test_hr_only_has_no_lr_key(roots: tuple[Path, Path]) -> None:
    hr_root, _ = roots
    ds = PairedPatchDataset(hr_root, "train", SCALE, PATCH, FINE, augment=False)
    item = ds[0]
    assert "lr" not in item
    plan = ds.plan(0)
    assert not (plan.hflip or plan.vflip or plan.rot90)
    sample = ds.source.samples[0]
    hr = _rgb(hr_root / sample.image)
    np.testing.assert_array_equal(
        _to_uint8(item["hr"]), hr[plan.top : plan.top + PATCH, plan.left : plan.left + PATCH]
    )


def test_multiscale_copies_are_matlab_downscales_with_indexed_labels(roots: tuple[Path, Path]) -> None:
    from srseg.degrade.bicubic import imresize

    hr_root, _ = roots
    ds = PairedPatchDataset(hr_root, "train", SCALE, PATCH, FINE, augment=False, hr_scales=(1.0, 0.5))
    count = len(ds.source.samples)
    assert len(ds) == 2 * count
    index = [s.id for s in ds.source.samples].index(17914)  # 500x375
    sample, hr, lr, label = ds.source.load(count + index)
    assert sample.id == 17914 and lr is None
    full = _rgb(hr_root / sample.image)
    expected = imresize(torch.from_numpy(full.copy()).permute(2, 0, 1), scale=0.5).permute(1, 2, 0).numpy()
    assert hr.shape == (188, 248, 3) == ds.source.entry_size(count + index) + (3,)  # 250x188 modcropped
    np.testing.assert_array_equal(hr, expected[:188, :248])
    with Image.open(hr_root / sample.label) as lab:  # type: ignore[operator]
        raw = np.asarray(lab)
    rows = np.minimum(np.arange(188) * 2 + 1, 374)  # pixel centres of a 2x reduction, the last one clamped
    np.testing.assert_array_equal(label, raw[rows][:, 1:497:2])
    assert set(np.unique(label)) <= set(np.unique(raw))
    plan = ds.plan(count + index)
    item = ds[count + index]
    np.testing.assert_array_equal(
        _to_uint8(item["hr"]), hr[plan.top : plan.top + PATCH, plan.left : plan.left + PATCH]
    )
    assert ds.source.load(index)[1].shape == (372, 500, 3)  # factor 1.0 is the image itself


def test_multiscale_needs_lr_made_in_the_step(roots: tuple[Path, Path]) -> None:
    hr_root, lr_root = roots
    with pytest.raises(ValueError, match="lr_source gpu"):
        PairedPatchDataset(hr_root, "train", SCALE, PATCH, FINE, lr_root=lr_root, hr_scales=(1.0, 0.5))
    with pytest.raises(ValueError, match="hr_scales"):
        PairedPatchDataset(hr_root, "train", SCALE, PATCH, FINE, hr_scales=(1.0, 1.5))


def test_small_image_is_padded_with_ignore_labels(roots: tuple[Path, Path]) -> None:
    hr_root, lr_root = roots
    ds = PairedPatchDataset(hr_root, "train", SCALE, PATCH, FINE, lr_root=lr_root, augment=False)
    index = [s.id for s in ds.source.samples].index(SMALL)
    assert ds.plan(index) == CropPlan(top=0, left=0, hflip=False, vflip=False, rot90=False)
    label = ds[index]["label"].numpy()
    # 30x21 modcrops to 28x20; everything beyond is padding
    assert (label[20:, :] == IGNORE_INDEX).all() and (label[:, 28:] == IGNORE_INDEX).all()
    assert (label[:20, :28] != IGNORE_INDEX).any()


def test_grayscale_and_cmyk_images_load_as_rgb(roots: tuple[Path, Path]) -> None:
    hr_root, lr_root = roots
    ds = FullImageDataset(hr_root, "train", SCALE, FINE, lr_root=lr_root)
    by_id = {s.id: i for i, s in enumerate(ds.source.samples)}
    gray = ds[by_id[GRAY]]["hr"]
    assert gray.shape == (3, 240, 320)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    cmyk, rgb = ds[by_id[CMYK]]["hr"], ds[by_id[17914]]["hr"]
    assert cmyk.shape == rgb.shape == (3, 372, 500)
    assert float((cmyk - rgb).abs().mean()) < 0.1  # the same picture, through a CMYK round trip


def test_full_image_dataset(roots: tuple[Path, Path]) -> None:
    hr_root, lr_root = roots
    ds = FullImageDataset(hr_root, "train", SCALE, "fine171", lr_root=lr_root)
    for i, sample in enumerate(ds.source.samples):
        item = ds[i]
        h, w = sample.height - sample.height % SCALE, sample.width - sample.width % SCALE
        assert item["hr"].shape == (3, h, w) and item["lr"].shape == (3, h // SCALE, w // SCALE)
        with Image.open(hr_root / sample.label) as lab:  # type: ignore[operator]
            raw = np.asarray(lab)[:h, :w]
        np.testing.assert_array_equal(item["label"].numpy(), FINE.lut[raw])
    val = FullImageDataset(hr_root, "val", SCALE, FINE)
    assert len(val) == 1 and "lr" not in val[0] and val[0]["hr"].shape == (3, 240, 320)


def test_errors_name_the_problem(roots: tuple[Path, Path], tmp_path: Path) -> None:
    hr_root, lr_root = roots
    with pytest.raises(ValueError, match="multiple of scale"):
        PairedPatchDataset(hr_root, "train", SCALE, 50, FINE)
    with pytest.raises(ManifestError, match="'test'"):
        PairedPatchDataset(hr_root, "test", SCALE, PATCH, FINE)
    with pytest.raises(ValueError, match="coarse8"):
        FullImageDataset(hr_root, "train", SCALE, "fine999")
    with pytest.raises(ManifestError, match="scale 2"):
        FullImageDataset(hr_root, "train", 2, FINE, lr_root=lr_root)

    lr = Manifest.load(lr_root)
    partial = tmp_path / "partial"
    shutil.copytree(lr_root, partial)
    truncated = {"train": lr.splits["train"][1:]}
    Manifest(kind="lr", format=LR_FORMAT, splits=truncated, meta=lr.meta).save(partial)
    with pytest.raises(ManifestError, match=str(REAL[0][1])):
        FullImageDataset(hr_root, "train", SCALE, FINE, lr_root=partial)

    wrong = tmp_path / "wrong"
    shutil.copytree(lr_root, wrong)
    first = lr.splits["train"][0]
    Image.new("RGB", (7, 5)).save(wrong / first.image)
    ds = FullImageDataset(hr_root, "train", SCALE, FINE, lr_root=wrong)
    with pytest.raises(ValueError, match=first.image.split("/")[-1]):
        ds[0]
    with pytest.raises(ManifestError, match="expected 'hr'"):
        FullImageDataset(lr_root, "train", SCALE, FINE)
