"""Training and validation datasets over a prepared HR root (and optionally its LR root).

Conventions (see ``srseg/data/manifest.py`` for the on-disk layout):

- HR images and labels are modcropped (top-left kept) to a multiple of ``scale``, the same
  modcrop `degrade` applies before synthesising LR, so the LR image is exactly (H/s, W/s).
- Crops are chosen on the LR grid and multiplied by ``scale``, so the LR patch is exactly the
  region that the HR patch was downscaled from.
- Augmentation applies the same horizontal flip, vertical flip and 90-degree rotation (in that
  order) to LR, HR and label. Labels are only ever indexed (cropped, flipped, transposed), never
  interpolated; the class map's lut turns stuffthingmaps values into training ids.
- Without ``lr_root`` the sample has no ``"lr"`` key (LR is synthesised on the GPU in the training
  step); a missing key rather than None keeps torch's default collate working.
- Images smaller than the patch are reflect-padded at the bottom/right (HR and LR alike) and the
  label is padded with 255, so padding never contributes to the segmentation loss.
- A sample without a label (image-only dataset) gets an all-255 label.
- Randomness is a ``numpy.random.Generator`` seeded from (seed, epoch, index), so any worker
  count, worker order or resume point gives the same patches. Call ``set_epoch`` before each
  epoch's DataLoader iterator is created; with ``persistent_workers=True`` workers keep their own
  copy of the dataset and would not see the new epoch.
- EXIF orientation is ignored on purpose: COCO labels are aligned with the stored pixels.
- ``hr_scales`` adds downscaled copies of every training image (MATLAB bicubic for the image,
  nearest-pixel indexing for the label): a standard SR augmentation (FSRCNN trains on copies at
  0.6-0.9) that multiplies the distinct edge scales a small dataset holds and, on JPEG sources
  such as COCO, makes HR targets with weaker compression artifacts. Index ``i`` of the dataset is
  image ``i % n`` at factor ``hr_scales[i // n]``. Needs LR made in the step (no ``lr_root``).
- ``cache_images=True`` keeps every decoded image (HR, LR, label) in memory after its first use:
  decoding a JPEG costs more than a training step of a small network, and a few dozen images fit
  easily. Each DataLoader worker holds its own copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from srseg.data.classmap import IGNORE_INDEX, ClassMap, get_class_map
from srseg.data.manifest import Manifest, ManifestError, Sample
from srseg.degrade.bicubic import imresize, output_length


@dataclass(frozen=True)
class CropPlan:
    """Where a patch comes from and how it is transformed; a pure function of (seed, epoch, index).

    ``top``/``left`` are HR pixels (multiples of the scale) in the modcropped, padded image.
    Transforms apply in order: hflip, vflip, then rot90 (``np.rot90`` with k=1, counter-clockwise).
    """

    top: int
    left: int
    hflip: bool
    vflip: bool
    rot90: bool


def _load_rgb(path: Path) -> np.ndarray:
    """HWC uint8 RGB; grayscale, palette and CMYK files are converted."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from exc


def _load_label(path: Path) -> np.ndarray:
    """HW uint8 label values exactly as stored (no conversion that could change a value)."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P"):
                raise ValueError(f"{path}: label must be an 8-bit single-channel PNG, got mode {img.mode}")
            return np.asarray(img, dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read label ({exc})") from exc


def _to_image_tensor(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1))).float().div_(255.0)


def _to_label_tensor(hw: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(hw).astype(np.int64))


def _apply_plan(arr: np.ndarray, plan: CropPlan) -> np.ndarray:
    if plan.hflip:
        arr = arr[:, ::-1]
    if plan.vflip:
        arr = arr[::-1, :]
    if plan.rot90:
        arr = np.rot90(arr, k=1, axes=(0, 1))
    return arr


def _pad_bottom_right(arr: np.ndarray, height: int, width: int, *, label: bool) -> np.ndarray:
    pad_h, pad_w = max(0, height - arr.shape[0]), max(0, width - arr.shape[1])
    if pad_h == 0 and pad_w == 0:
        return arr
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (arr.ndim - 2)
    if label:
        return np.pad(arr, widths, mode="constant", constant_values=IGNORE_INDEX)
    # numpy's "reflect" needs at least 2 pixels along an axis; "symmetric" works with 1.
    mode = "reflect" if min(arr.shape[:2]) > 1 else "symmetric"
    return np.pad(arr, widths, mode=mode)


def _nearest_indices(in_len: int, out_len: int, factor: float) -> np.ndarray:
    """Source pixel of each output pixel when resizing by ``factor`` (pixel centres, clamped)."""
    centres = (np.arange(out_len) + 0.5) / factor
    return np.minimum(centres.astype(np.int64), in_len - 1)


class _PairedSource:
    """Reads one split of an HR root (and its LR root) and returns modcropped uint8 arrays."""

    def __init__(
        self,
        hr_root: str | Path,
        split: str,
        scale: int,
        class_map: ClassMap | str,
        lr_root: str | Path | None,
        cache_images: bool = False,
        hr_scales: tuple[float, ...] = (1.0,),
    ) -> None:
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale!r}")
        if not hr_scales or any(not 0.0 < f <= 1.0 for f in hr_scales):
            raise ValueError(f"hr_scales must be factors in (0, 1], got {list(hr_scales)!r}")
        if lr_root is not None and tuple(hr_scales) != (1.0,):
            raise ValueError(
                f"hr_scales {list(hr_scales)} needs LR made in the training step (lr_source gpu): "
                f"{lr_root} holds LR of the full-size images only"
            )
        self.hr_scales = tuple(float(f) for f in hr_scales)
        self._cache: dict[int, tuple[Sample, np.ndarray, np.ndarray | None, np.ndarray]] | None = (
            {} if cache_images else None
        )
        self.hr_root = Path(hr_root)
        self.lr_root = Path(lr_root) if lr_root is not None else None
        self.split = split
        self.scale = scale
        self.class_map = get_class_map(class_map) if isinstance(class_map, str) else class_map
        hr = Manifest.load(self.hr_root)
        if hr.kind != "hr":
            raise ManifestError(f"{self.hr_root}: manifest kind is {hr.kind!r}, expected 'hr'")
        self.samples: list[Sample] = self._split_of(hr, self.hr_root)
        self.lr_samples: dict[int, Sample] | None = None
        if self.lr_root is not None:
            lr = Manifest.load(self.lr_root)
            if lr.kind != "lr":
                raise ManifestError(f"{self.lr_root}: manifest kind is {lr.kind!r}, expected 'lr'")
            lr_scale = lr.meta.get("scale")
            if lr_scale is not None and int(lr_scale) != scale:
                raise ManifestError(
                    f"{self.lr_root}: LR scale is {lr_scale}, dataset asked for scale {scale}"
                )
            self.lr_samples = {s.id: s for s in self._split_of(lr, self.lr_root)}
            missing = [s.id for s in self.samples if s.id not in self.lr_samples]
            if missing:
                raise ManifestError(
                    f"{self.lr_root}: split {split!r} lacks LR images for {len(missing)} HR ids "
                    f"(first: {missing[:5]}); re-run degrade"
                )
        for s in self.samples:
            if s.height < scale or s.width < scale:
                raise ValueError(
                    f"{self.hr_root / s.image}: {s.width}x{s.height} is smaller than scale {scale}"
                )

    def _split_of(self, manifest: Manifest, root: Path) -> list[Sample]:
        if self.split not in manifest.splits:
            raise ManifestError(
                f"{root}: no split {self.split!r} in manifest (has: {', '.join(sorted(manifest.splits))})"
            )
        return list(manifest.splits[self.split])

    def modcropped_size(self, sample: Sample, factor: float = 1.0) -> tuple[int, int]:
        height, width = sample.height, sample.width
        if factor != 1.0:
            height, width = output_length(height, factor), output_length(width, factor)
        return height - height % self.scale, width - width % self.scale

    def __len__(self) -> int:
        """Entries: every image at every factor of ``hr_scales``."""
        return len(self.samples) * len(self.hr_scales)

    def entry(self, index: int) -> tuple[Sample, float]:
        """The image and the downscale factor of entry ``index``."""
        count = len(self.samples)
        return self.samples[index % count], self.hr_scales[index // count]

    def entry_size(self, index: int) -> tuple[int, int]:
        """Modcropped (height, width) of entry ``index``, without reading it."""
        return self.modcropped_size(*self.entry(index))

    def load(self, index: int) -> tuple[Sample, np.ndarray, np.ndarray | None, np.ndarray]:
        """(sample, HR HWC, LR HWC or None, raw label HW) of entry ``index`` (an image at one of
        ``hr_scales``), all modcropped and size-checked."""
        if self._cache is None:
            return self._read_entry(index)
        if index not in self._cache:
            self._cache[index] = self._read_entry(index)
        return self._cache[index]

    def _read_entry(self, index: int) -> tuple[Sample, np.ndarray, np.ndarray | None, np.ndarray]:
        count = len(self.samples)
        sample, factor = self.entry(index)
        if factor == 1.0:
            return self._read(index % count)
        sample, hr, _, label = self._read(index % count, modcrop=False)
        small = imresize(torch.from_numpy(np.array(hr)).permute(2, 0, 1), scale=factor)
        rows = _nearest_indices(label.shape[0], small.shape[1], factor)
        cols = _nearest_indices(label.shape[1], small.shape[2], factor)
        height, width = self.modcropped_size(sample, factor)
        hr_small = small.permute(1, 2, 0).numpy()[:height, :width]
        return sample, np.ascontiguousarray(hr_small), None, label[rows][:, cols][:height, :width]

    def _read(self, index: int, modcrop: bool = True) -> tuple[Sample, np.ndarray, np.ndarray | None, np.ndarray]:
        sample = self.samples[index]
        hr_path = self.hr_root / sample.image
        hr = _load_rgb(hr_path)
        if hr.shape[:2] != (sample.height, sample.width):
            raise ValueError(
                f"{hr_path}: image is {hr.shape[1]}x{hr.shape[0]}, "
                f"manifest says {sample.width}x{sample.height}"
            )
        if sample.label is not None:
            label_path = self.hr_root / sample.label
            label = _load_label(label_path)
            if label.shape != hr.shape[:2]:
                raise ValueError(
                    f"{label_path}: label is {label.shape[1]}x{label.shape[0]}, "
                    f"image is {hr.shape[1]}x{hr.shape[0]}"
                )
        else:
            label = np.full(hr.shape[:2], IGNORE_INDEX, dtype=np.uint8)
        if not modcrop:
            return sample, hr, None, label
        height, width = self.modcropped_size(sample)
        hr, label = hr[:height, :width], label[:height, :width]
        lr = None
        if self.lr_samples is not None:
            assert self.lr_root is not None
            lr_path = self.lr_root / self.lr_samples[sample.id].image
            lr = _load_rgb(lr_path)
            expected = (height // self.scale, width // self.scale)
            if lr.shape[:2] != expected:
                raise ValueError(
                    f"{lr_path}: LR is {lr.shape[1]}x{lr.shape[0]}, expected {expected[1]}x{expected[0]} "
                    f"(HR {sample.width}x{sample.height} modcropped to {width}x{height}, scale {self.scale})"
                )
        return sample, hr, lr, label


class PairedPatchDataset(Dataset):
    """Random aligned (LR, HR, label) patches for training; see the module docstring."""

    def __init__(
        self,
        hr_root: str | Path,
        split: str,
        scale: int,
        patch_size: int,
        class_map: ClassMap | str,
        lr_root: str | Path | None = None,
        augment: bool = True,
        seed: int = 0,
        cache_images: bool = False,
        hr_scales: tuple[float, ...] = (1.0,),
    ) -> None:
        if not isinstance(patch_size, int) or patch_size < 1 or patch_size % scale:
            raise ValueError(
                f"patch_size (HR px) must be a positive multiple of scale {scale}, got {patch_size!r}"
            )
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.source = _PairedSource(hr_root, split, scale, class_map, lr_root, cache_images, hr_scales)
        self.scale = scale
        self.patch_size = patch_size
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    @property
    def class_map(self) -> ClassMap:
        return self.source.class_map

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose patches ``__getitem__`` returns (resume = set the same epoch)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def plan(self, index: int) -> CropPlan:
        """The crop and transforms for ``index`` in the current epoch (needs no image I/O)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        height, width = self.source.entry_size(index)
        lr_patch = self.patch_size // self.scale
        lr_h = max(height, self.patch_size) // self.scale
        lr_w = max(width, self.patch_size) // self.scale
        top = int(rng.integers(0, lr_h - lr_patch + 1)) * self.scale
        left = int(rng.integers(0, lr_w - lr_patch + 1)) * self.scale
        hflip, vflip, rot90 = (bool(x) for x in rng.random(3) < 0.5)
        if not self.augment:
            hflip = vflip = rot90 = False
        return CropPlan(top=top, left=left, hflip=hflip, vflip=vflip, rot90=rot90)

    def __getitem__(self, index: int) -> dict[str, Any]:
        plan = self.plan(index)
        sample, hr, lr, label = self.source.load(index)
        size, s = self.patch_size, self.scale
        hr = _pad_bottom_right(hr, size, size, label=False)
        label = _pad_bottom_right(label, size, size, label=True)
        hr_patch = _apply_plan(hr[plan.top : plan.top + size, plan.left : plan.left + size], plan)
        label_patch = _apply_plan(label[plan.top : plan.top + size, plan.left : plan.left + size], plan)
        out: dict[str, Any] = {
            "hr": _to_image_tensor(hr_patch),
            "label": _to_label_tensor(self.class_map.apply(label_patch)),
            "id": sample.id,
        }
        if lr is not None:
            lr = _pad_bottom_right(lr, size // s, size // s, label=False)
            top, left, lr_size = plan.top // s, plan.left // s, size // s
            out["lr"] = _to_image_tensor(_apply_plan(lr[top : top + lr_size, left : left + lr_size], plan))
        return out


class FullImageDataset(Dataset):
    """Whole modcropped images for validation (variable size: use batch_size=1)."""

    def __init__(
        self,
        hr_root: str | Path,
        split: str,
        scale: int,
        class_map: ClassMap | str,
        lr_root: str | Path | None = None,
    ) -> None:
        self.source = _PairedSource(hr_root, split, scale, class_map, lr_root)
        self.scale = scale

    @property
    def class_map(self) -> ClassMap:
        return self.source.class_map

    def __len__(self) -> int:
        return len(self.source.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample, hr, lr, label = self.source.load(index)
        out: dict[str, Any] = {
            "hr": _to_image_tensor(hr),
            "label": _to_label_tensor(self.class_map.apply(label)),
            "id": sample.id,
        }
        if lr is not None:
            out["lr"] = _to_image_tensor(lr)
        return out
