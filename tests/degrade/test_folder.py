"""The degrade stage on folders and on prepared HR datasets: outputs, manifests, corrupt files."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srseg.data.manifest import LR_FORMAT, Manifest, ManifestError, Sample, manifest_checksum
from srseg.degrade.folder import DegradeError, degrade_dataset, degrade_folder, image_seed
from srseg.degrade.highorder import HighOrderParams
from srseg.fileio import sha256_file
from srseg.imageio import load_rgb, save_png_atomic

SET5 = ("baby", "bird", "butterfly", "head", "woman")
FAST_HIGH_ORDER = HighOrderParams(kernel_range=(7, 11))


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _make_inputs(root: Path) -> None:
    save_png_atomic(root / "a.png", _image(34, 41, 0))
    (root / "nested").mkdir(parents=True)
    Image.fromarray(_image(20, 24, 1)).save(root / "nested" / "b.jpg")
    Image.fromarray(_image(16, 18, 2)[:, :, 0]).save(root / "nested" / "gray.bmp")


def test_degrade_folder_writes_lr_pngs_and_manifest(tmp_path: Path) -> None:
    src, out = tmp_path / "hr", tmp_path / "lr"
    _make_inputs(src)
    report = degrade_folder(src, out, scale=4, progress=False)
    assert report.written == 3 and report.skipped_count == 0
    json.dumps(asdict(report))  # the CLI prints it

    manifest = Manifest.load(out)
    assert manifest.kind == "lr" and manifest.format == LR_FORMAT
    samples = manifest.splits["images"]
    assert [s.image for s in samples] == ["a.png", "nested/b.png", "nested/gray.png"]
    assert [(s.width, s.height) for s in samples] == [(10, 8), (6, 5), (4, 4)]
    for s in samples:
        assert sha256_file(out / s.image) == s.image_sha256
        assert load_rgb(out / s.image).shape == (s.height, s.width, 3)
    assert manifest.meta["scale"] == 4 and manifest.meta["method"] == "bicubic"
    assert manifest.meta["seed"] == 0 and manifest.meta["params"] is None
    assert manifest.meta["sources"] == ["a.png", "nested/b.jpg", "nested/gray.bmp"]


def test_degrade_folder_reproduces_set5_lr(set5: Path, tmp_path: Path) -> None:
    report = degrade_folder(set5 / "HR", tmp_path / "lr", scale=4, progress=False)
    assert report.written == 5
    for name in SET5:
        ours = load_rgb(tmp_path / "lr" / f"{name}.png").astype(np.int16)
        shipped = load_rgb(set5 / "LR_bicubic" / "X4" / f"{name}x4.png").astype(np.int16)
        assert np.abs(ours - shipped).max() <= 1, name


def test_corrupt_file_raises_naming_it_or_is_skipped_and_counted(tmp_path: Path) -> None:
    src = tmp_path / "hr"
    _make_inputs(src)
    (src / "nested" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(
        DegradeError, match=r"broken.png: cannot read image .* stopped there: 2 of 4 outputs are complete"
    ):
        degrade_folder(src, tmp_path / "lr", scale=4, progress=False)
    assert not (tmp_path / "lr" / "manifest.json").exists()

    report = degrade_folder(src, tmp_path / "lr", scale=4, skip_corrupt=True, progress=False)
    assert report.written == 3 and report.skipped_count == 1
    assert report.skipped[0]["path"].endswith("broken.png")
    manifest = Manifest.load(tmp_path / "lr")
    assert len(manifest.splits["images"]) == 3
    assert manifest.meta["skipped"][0]["image"] == "nested/broken.png"


def test_image_smaller_than_scale_is_an_error(tmp_path: Path) -> None:
    save_png_atomic(tmp_path / "hr" / "tiny.png", _image(3, 9, 0))
    with pytest.raises(DegradeError, match="tiny.png: cannot read image .*smaller than the scale 4"):
        degrade_folder(tmp_path / "hr", tmp_path / "lr", scale=4, progress=False)


def test_high_order_seeded_per_image_independent_of_other_files(tmp_path: Path) -> None:
    src = tmp_path / "hr"
    _make_inputs(src)
    only_a = tmp_path / "only_a"
    save_png_atomic(only_a / "a.png", load_rgb(src / "a.png"))
    kwargs = dict(scale=2, method="highorder", high_order=FAST_HIGH_ORDER, progress=False)
    degrade_folder(src, tmp_path / "run1", seed=5, **kwargs)
    degrade_folder(only_a, tmp_path / "run2", seed=5, **kwargs)
    degrade_folder(src, tmp_path / "run3", seed=6, **kwargs)
    first = (tmp_path / "run1" / "a.png").read_bytes()
    assert first == (tmp_path / "run2" / "a.png").read_bytes()
    assert first != (tmp_path / "run3" / "a.png").read_bytes()
    meta = Manifest.load(tmp_path / "run1").meta
    assert meta["method"] == "highorder" and meta["params"]["kernel_range"] == [7, 11]
    assert image_seed(5, "a.png") != image_seed(5, "b.png") != image_seed(6, "a.png")


def test_argument_errors(tmp_path: Path) -> None:
    src = tmp_path / "hr"
    _make_inputs(src)
    with pytest.raises(ValueError, match="inside the input"):
        degrade_folder(src, src / "lr", scale=4, progress=False)
    with pytest.raises(ValueError, match="method"):
        degrade_folder(src, tmp_path / "lr", scale=4, method="nearest", progress=False)
    with pytest.raises(ValueError, match="high_order"):
        degrade_folder(src, tmp_path / "lr", scale=4, high_order=HighOrderParams(), progress=False)
    Image.fromarray(_image(8, 8, 3)).save(src / "a.jpg")
    with pytest.raises(ValueError, match="a.png"):
        degrade_folder(src, tmp_path / "lr", scale=4, progress=False)


def _hr_root(cocostuff_sample: Path, root: Path, per_split: int = 2) -> Path:
    splits: dict[str, list[Sample]] = {}
    for split in ("train2017", "val2017"):
        images = sorted((cocostuff_sample / "images" / split).glob("*.jpg"))[:per_split]
        samples = []
        for path in images:
            rel = f"images/{split}/{path.name}"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, root / rel)
            with Image.open(path) as im:
                width, height = im.size
            samples.append(
                Sample(id=int(path.stem), image=rel, width=width, height=height, image_sha256=sha256_file(path))
            )
        splits[split] = samples
    Manifest(kind="hr", format="srseg.cocostuff/1", splits=splits).save(root)
    return root


def test_degrade_dataset_writes_split_layout_and_links_hr_manifest(cocostuff_sample: Path, tmp_path: Path) -> None:
    hr = _hr_root(cocostuff_sample, tmp_path / "hr")
    report = degrade_dataset(hr, tmp_path / "lr", scale=4, progress=False)
    assert report.written == 4 and report.skipped_count == 0
    lr = Manifest.load(tmp_path / "lr")
    hr_manifest = Manifest.load(hr)
    assert lr.kind == "lr" and lr.format == LR_FORMAT
    assert lr.meta["hr_manifest_sha256"] == manifest_checksum(hr)
    assert lr.meta["scale"] == 4 and lr.meta["method"] == "bicubic" and lr.meta["params"] is None
    for split, samples in hr_manifest.splits.items():
        for hr_sample, lr_sample in zip(samples, lr.splits[split], strict=True):
            assert lr_sample.id == hr_sample.id
            assert lr_sample.image == f"{split}/{hr_sample.id:012d}.png"
            assert (lr_sample.width, lr_sample.height) == (hr_sample.width // 4, hr_sample.height // 4)
            assert sha256_file(tmp_path / "lr" / lr_sample.image) == lr_sample.image_sha256

    first = (tmp_path / "lr" / "manifest.json").read_bytes()
    degrade_dataset(hr, tmp_path / "lr", scale=4, progress=False)  # re-run: a clean, identical redo
    assert (tmp_path / "lr" / "manifest.json").read_bytes() == first


def test_degrade_dataset_checks_hr_manifest(cocostuff_sample: Path, tmp_path: Path) -> None:
    hr = _hr_root(cocostuff_sample, tmp_path / "hr", per_split=1)
    sample = Manifest.load(hr).splits["train2017"][0]
    (hr / sample.image).write_bytes(b"corrupted")
    with pytest.raises(DegradeError, match=sample.image.split("/")[-1] + ": SHA-256 differs"):
        degrade_dataset(hr, tmp_path / "lr", scale=4, progress=False)

    lr_manifest = tmp_path / "lr"
    degrade_folder(cocostuff_sample / "images" / "val2017", lr_manifest, scale=4, progress=False)
    with pytest.raises(ManifestError, match="kind 'hr'"):
        degrade_dataset(lr_manifest, tmp_path / "lr2", scale=4, progress=False)


def test_degrade_dataset_skip_corrupt(cocostuff_sample: Path, tmp_path: Path) -> None:
    hr = _hr_root(cocostuff_sample, tmp_path / "hr", per_split=1)
    sample = Manifest.load(hr).splits["val2017"][0]
    (hr / sample.image).unlink()
    with pytest.raises(DegradeError, match=sample.image.split("/")[-1]):
        degrade_dataset(hr, tmp_path / "lr", scale=4, progress=False)
    report = degrade_dataset(hr, tmp_path / "lr", scale=4, skip_corrupt=True, progress=False)
    assert report.written == 1 and report.skipped_count == 1
    lr = Manifest.load(tmp_path / "lr")
    assert lr.splits["val2017"] == [] and lr.meta["skipped"][0]["image"] == sample.image
