"""Build and load a study bundle: the cropped images raters see plus a checksummed manifest.

A bundle is a plain folder, immutable once written (so DVC can cache it and it can be copied to
any web host)::

    <bundle>/study.json        manifest: methods, pairs, sides, attention checks, seed, crop rule
    <bundle>/images/<h>.png    crops, named by content hash so a file name reveals no method

Choices made here, all seeded by ``seed`` so the same inputs give a byte-identical bundle:

- Images: ``num_images`` stems drawn at random among those present in every method folder (and
  the HR folder) and large enough for the crop.
- Crop rule (:data:`CROP_RULE`): one ``crop_size`` square per image, the window with the highest
  mean gradient energy of the luma of the HR image (the per-pixel mean of all methods when no HR is
  given), searched on a grid with stride ``crop_size // 4``. The *same* window is cut from every
  method, so raters compare like with like, and it lands on texture, where SR methods differ.
- Pairs: every sampled image x every method pair; the left/right assignment is balanced per method
  pair (halves, shuffled), and the pair order is shuffled.
- Attention checks: the reference crop (HR, else the first method's crop) against the same crop
  bicubic-downscaled by 8 and upscaled back; the expected answer is the reference.
- ``gate`` (a promotion-gate study, ``srseg study gate-build``): which registered versions the
  two methods are (``challenger``, ``opponent``: a ``models:/NAME/VERSION`` URI or ``bicubic``),
  recorded in the manifest, so its votes can only ever count for those two versions.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from srseg.fileio import sha256_bytes, sha256_file, write_bytes_atomic, write_json_atomic
from srseg.imageio import IMAGE_EXTENSIONS, load_rgb

log = logging.getLogger(__name__)

FORMAT = "srseg-study/1"
MANIFEST = "study.json"
REFERENCE = "@reference"
"""Pseudo-method of attention checks: the undistorted crop (the expected answer)."""
DEGRADED = "@degraded"
"""Pseudo-method of attention checks: the crop bicubic-downscaled by 8 and upscaled back."""
SIDES = ("left", "right")
ATTENTION_FACTOR = 8
MIN_CROP = 16
MAX_SIZE_SLACK = 16
DEFAULT_TITLE = "Which image looks more like a real photo?"
DEFAULT_QUESTION = (
    "You will see two versions of the same picture. Choose the one that looks more like a real, "
    "unprocessed photograph (natural texture and detail). Use the mouse, the Left/Right arrow "
    "keys, or the 1/2 keys."
)
CROP_RULE = (
    "one square window of crop_size per image, the same for every method: the window with the "
    "highest mean gradient energy (dx^2 + dy^2 of BT.601 luma) in the HR image (per-pixel mean of "
    "all methods when no HR is given), searched with stride crop_size // 4 plus the last row and "
    "column; ties go to the top-most, then left-most window; images are first cropped top-left to "
    "the common size when sizes differ by less than 16 px (modcrop)"
)
ATTENTION_RULE = (
    "reference crop (HR, else the first method) vs the same crop bicubic-downscaled by 8 and "
    "upscaled back (Pillow BICUBIC); expected answer: the reference"
)
_PAIR_ID = re.compile(r"^p[0-9]{4,}$")


@dataclass(frozen=True)
class Side:
    method: str
    file: str


@dataclass(frozen=True)
class Pair:
    """One trial: two crops of the same image; ``expected`` is set only for attention checks."""

    id: str
    image: int
    stem: str
    left: Side
    right: Side
    attention_check: bool = False
    expected: str | None = None
    reference: str | None = None

    def method(self, side: str) -> str:
        if side == "left":
            return self.left.method
        if side == "right":
            return self.right.method
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")

    def file(self, side: str) -> str | None:
        """Bundle-relative file shown on ``side`` ('left', 'right' or 'reference')."""
        if side == "reference":
            return self.reference
        return self.left.file if side == "left" else self.right.file if side == "right" else None


@dataclass(frozen=True)
class Study:
    """A loaded bundle. ``study_id`` is the SHA-256 of study.json, binding votes to one bundle."""

    root: Path
    study_id: str
    title: str
    question: str
    seed: int
    methods: tuple[str, ...]
    method_pairs: tuple[tuple[str, str], ...]
    pairs: tuple[Pair, ...]
    show_reference: bool
    manifest: dict = field(repr=False)
    gate: dict | None = None
    by_id: dict[str, Pair] = field(repr=False, default_factory=dict)

    def path(self, relative: str) -> Path:
        """Absolute path of a bundle file named in the manifest (never outside the bundle)."""
        return _inside(self.root, relative)


def _inside(root: Path, relative: str) -> Path:
    parts = Path(relative).parts
    if not relative or Path(relative).is_absolute() or ".." in parts or relative.startswith(("/", "\\")):
        raise ValueError(f"{root / MANIFEST}: file path {relative!r} is not inside the bundle")
    return root / relative


def _check_method_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"method name must be a non-empty string, got {name!r}")
    if len(name) > 100:
        raise ValueError(f"method name longer than 100 characters: {name[:40]!r}...")
    if name.startswith("@"):
        raise ValueError(f"method name {name!r}: names starting with '@' are reserved for attention checks")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise ValueError(f"method name {name!r} contains control characters")


def _index_folder(directory: Path, label: str) -> dict[str, Path]:
    """Map file stem -> image path (top level only); two files with one stem are an error."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{label}: {directory} is not a directory")
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if path.stem in found:
            raise ValueError(f"{label}: two images share the stem {path.stem!r}: {found[path.stem].name}, {path.name}")
        found[path.stem] = path
    if not found:
        raise ValueError(f"{label}: no images in {directory}")
    return found


def _display_size(path: Path) -> tuple[int, int]:
    """(width, height) after EXIF orientation, read from the header only."""
    with Image.open(path) as image:
        width, height = image.size
        try:
            orientation = int(image.getexif().get(0x0112, 1))
        except Exception:  # unreadable EXIF: load_rgb ignores it the same way
            orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _common_size(sizes: Mapping[str, tuple[int, int]], stem: str) -> tuple[int, int]:
    width = min(w for w, _ in sizes.values())
    height = min(h for _, h in sizes.values())
    for w, h in sizes.values():
        if w - width >= MAX_SIZE_SLACK or h - height >= MAX_SIZE_SLACK:
            listing = ", ".join(f"{k}={a}x{b}" for k, (a, b) in sizes.items())
            raise ValueError(f"image {stem!r}: sizes differ by more than a modcrop ({listing})")
    return width, height


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def texture_window(luma: np.ndarray, crop_size: int) -> tuple[int, int, float]:
    """(x, y, score) of the crop_size window with the highest mean gradient energy (see CROP_RULE)."""
    height, width = luma.shape
    if crop_size > height or crop_size > width:
        raise ValueError(f"crop_size {crop_size} is larger than the image ({width}x{height})")
    energy = np.zeros((height, width), dtype=np.float64)
    energy[:, :-1] += np.diff(luma, axis=1) ** 2
    energy[:-1, :] += np.diff(luma, axis=0) ** 2
    integral = np.zeros((height + 1, width + 1), dtype=np.float64)
    integral[1:, 1:] = energy.cumsum(0).cumsum(1)
    stride = max(1, crop_size // 4)
    ys = sorted(set(range(0, height - crop_size + 1, stride)) | {height - crop_size})
    xs = sorted(set(range(0, width - crop_size + 1, stride)) | {width - crop_size})
    y0 = np.array(ys)[:, None]
    x0 = np.array(xs)[None, :]
    sums = (
        integral[y0 + crop_size, x0 + crop_size]
        - integral[y0, x0 + crop_size]
        - integral[y0 + crop_size, x0]
        + integral[y0, x0]
    )
    best = int(np.argmax(sums))  # first maximum in raster order: top-most, then left-most
    iy, ix = divmod(best, len(xs))
    return xs[ix], ys[iy], float(sums[iy, ix] / crop_size**2)


def _degrade(crop: np.ndarray) -> np.ndarray:
    size = crop.shape[0]
    small = max(2, size // ATTENTION_FACTOR)
    image = Image.fromarray(crop).resize((small, small), Image.Resampling.BICUBIC)
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def _balanced_flips(count: int, rng: random.Random) -> list[bool]:
    flips = [i % 2 == 1 for i in range(count)]
    rng.shuffle(flips)
    return flips


def _prepare_output(output: Path) -> Path:
    """Temp folder beside ``output``; refuses to later replace a folder that is not a bundle."""
    if output.exists():
        if not output.is_dir():
            raise FileExistsError(f"{output}: exists and is not a directory")
        if any(output.iterdir()) and not (output / MANIFEST).is_file():
            raise FileExistsError(f"{output}: not empty and not a study bundle (no {MANIFEST}); refusing to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))


def _swap_into_place(tmp: Path, output: Path) -> None:
    old = None
    if output.exists():
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        os.replace(output, old)
    os.replace(tmp, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _check_study_settings(
    names: list[str], num_images: int, crop_size: int, attention_checks: int, show_reference: bool, hr_dir: Path | None
) -> None:
    for name in names:
        _check_method_name(name)
    if len(names) < 2:
        raise ValueError(f"need at least two methods to compare, got {names}")
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if crop_size < MIN_CROP:
        raise ValueError(f"crop_size must be >= {MIN_CROP}, got {crop_size}")
    if attention_checks < 0:
        raise ValueError(f"attention_checks must be >= 0, got {attention_checks}")
    if show_reference and hr_dir is None:
        raise ValueError("show_reference=True needs hr_dir (the reference is the HR crop)")


def _method_pairs(names: list[str], pairs: Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """The compared method pairs: every unordered pair by default, else ``pairs`` checked."""
    if pairs is None:
        return list(itertools.combinations(names, 2))
    method_pairs = [(str(a), str(b)) for a, b in pairs]
    for a, b in method_pairs:
        for name in (a, b):
            if name not in names:
                raise ValueError(f"pair ({a!r}, {b!r}): unknown method {name!r}; methods are {names}")
        if a == b:
            raise ValueError(f"pair ({a!r}, {b!r}) compares a method with itself")
    if len({frozenset(p) for p in method_pairs}) != len(method_pairs):
        raise ValueError(f"pairs contain a duplicate: {method_pairs}")
    if not method_pairs:
        raise ValueError("pairs is empty")
    return method_pairs


def _check_gate(gate: Mapping[str, str], names: list[str]) -> None:
    for key in ("challenger", "opponent", "challenger_method", "opponent_method"):
        if not isinstance(gate.get(key), str) or not gate[key]:
            raise ValueError(f"gate: {key!r} must be a non-empty string, got {gate.get(key)!r}")
    for key in ("challenger_method", "opponent_method"):
        if gate[key] not in names:
            raise ValueError(f"gate: {key}={gate[key]!r} is not a method of the study ({names})")


def _eligible_stems(sources: dict[str, dict[str, Path]], crop_size: int) -> tuple[list[str], int]:
    """(sorted stems present in every folder and at least ``crop_size`` square, number of shared stems)."""
    common = set.intersection(*(set(index) for index in sources.values()))
    for label, index in sources.items():
        missing = sorted(set(index) - common)
        if missing:
            log.warning(
                "%s: %d stem(s) not present in every folder are ignored (e.g. %s)", label, len(missing), missing[:3]
            )
    eligible = []
    for stem in sorted(common):
        sizes = {label: _display_size(index[stem]) for label, index in sources.items()}
        width, height = _common_size(sizes, stem)
        if min(width, height) >= crop_size:
            eligible.append(stem)
    return eligible, len(common)


def build_study(
    methods: Mapping[str, Path],
    output: Path,
    hr_dir: Path | None = None,
    num_images: int = 20,
    pairs: Sequence[tuple[str, str]] | None = None,
    crop_size: int = 128,
    attention_checks: int = 4,
    seed: int = 0,
    show_reference: bool = False,
    *,
    title: str = DEFAULT_TITLE,
    question: str = DEFAULT_QUESTION,
    gate: Mapping[str, str] | None = None,
) -> Path:
    """Write a study bundle to ``output`` (replacing an older bundle there) and return its path.

    ``methods`` maps a method name to a folder of SR outputs with the same file stems across
    methods. ``pairs`` defaults to every unordered pair of methods, in the order given. ``gate``
    (``{"challenger", "opponent", "challenger_method", "opponent_method"}``) marks a promotion-gate
    study; its two method names must be methods of the study.
    """
    output = Path(output)
    names = list(methods)
    _check_study_settings(names, num_images, crop_size, attention_checks, show_reference, hr_dir)
    method_pairs = _method_pairs(names, pairs)
    if gate is not None:
        _check_gate(gate, names)
    indexes = {name: _index_folder(Path(methods[name]), f"method {name!r}") for name in names}
    hr_index = _index_folder(Path(hr_dir), "hr_dir") if hr_dir is not None else None
    sources = dict(indexes)
    if hr_index is not None:
        sources[REFERENCE] = hr_index
    eligible, shared = _eligible_stems(sources, crop_size)
    if len(eligible) < num_images:
        raise ValueError(
            f"num_images={num_images} but only {len(eligible)} image(s) are present in every folder "
            f"and at least {crop_size}x{crop_size} ({shared} shared stems)"
        )
    rng = random.Random(seed)
    stems = sorted(rng.sample(eligible, num_images))

    tmp = _prepare_output(output)
    try:
        manifest = _write_bundle(
            tmp, names, method_pairs, indexes, hr_index, stems, crop_size, attention_checks, seed, show_reference, rng
        )
        manifest.update(title=str(title), question=str(question))
        if gate is not None:
            manifest["gate"] = {key: str(value) for key, value in gate.items()}
        write_json_atomic(tmp / MANIFEST, manifest)
        _swap_into_place(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("study bundle %s: %d pairs (%d attention checks)", output, len(manifest["pairs"]), attention_checks)
    return output


def _write_bundle(
    root: Path,
    names: list[str],
    method_pairs: list[tuple[str, str]],
    indexes: dict[str, dict[str, Path]],
    hr_index: dict[str, Path] | None,
    stems: list[str],
    crop_size: int,
    attention_checks: int,
    seed: int,
    show_reference: bool,
    rng: random.Random,
) -> dict:
    files: dict[str, str] = {}

    def store(array: np.ndarray) -> str:
        data = _png_bytes(array)
        digest = sha256_bytes(data)
        relative = f"images/{digest[:20]}.png"
        if relative not in files:
            write_bytes_atomic(root / relative, data)
            files[relative] = digest
        return relative

    images = [
        _crop_image(index, stem, names, indexes, hr_index, crop_size, attention_checks, store)
        for index, stem in enumerate(stems)
    ]
    inputs: dict[str, dict[str, dict[str, str]]] = {}
    for stem in stems:
        for label, index in ((name, indexes[name]) for name in names):
            inputs.setdefault(label, {})[stem] = {"file": index[stem].name, "sha256": sha256_file(index[stem])}
        if hr_index is not None:
            inputs.setdefault(REFERENCE, {})[stem] = {
                "file": hr_index[stem].name,
                "sha256": sha256_file(hr_index[stem]),
            }
    trials = _trials(images, method_pairs, attention_checks, rng)
    return {
        "format": FORMAT,
        "seed": seed,
        "methods": names,
        "method_pairs": [list(p) for p in method_pairs],
        "crop_size": crop_size,
        "crop_rule": CROP_RULE,
        "show_reference": show_reference,
        "attention": {"count": attention_checks, "rule": ATTENTION_RULE, "reference": REFERENCE, "degraded": DEGRADED},
        "images": images,
        "pairs": _pair_entries(trials, show_reference),
        "files": dict(sorted(files.items())),
        "inputs": inputs,
    }


def _crop_image(
    index: int,
    stem: str,
    names: list[str],
    indexes: dict[str, dict[str, Path]],
    hr_index: dict[str, Path] | None,
    crop_size: int,
    attention_checks: int,
    store: Callable[[np.ndarray], str],
) -> dict[str, Any]:
    """The most textured common crop of one image in every method (plus reference and degraded
    copies for attention checks), stored as PNGs; the bundle's entry for that image."""
    arrays = {name: load_rgb(indexes[name][stem]) for name in names}
    if hr_index is not None:
        arrays[REFERENCE] = load_rgb(hr_index[stem])
    sizes = {label: (a.shape[1], a.shape[0]) for label, a in arrays.items()}
    width, height = _common_size(sizes, stem)
    arrays = {label: a[:height, :width] for label, a in arrays.items()}
    if REFERENCE in arrays:
        luma = _luma(arrays[REFERENCE].astype(np.float64))
    else:
        luma = np.mean([_luma(arrays[name].astype(np.float64)) for name in names], axis=0)
    x, y, score = texture_window(luma, crop_size)
    crops = {label: a[y : y + crop_size, x : x + crop_size] for label, a in arrays.items()}
    stored = {label: store(crop) for label, crop in crops.items()}
    if attention_checks:
        stored[DEGRADED] = store(_degrade(crops.get(REFERENCE, crops[names[0]])))
        if REFERENCE not in stored:
            stored[REFERENCE] = stored[names[0]]
    return {
        "index": index,
        "stem": stem,
        "crop": [x, y, crop_size, crop_size],
        "size": [width, height],
        "texture_energy": round(score, 6),
        "files": stored,
    }


def _trials(
    images: list[dict[str, Any]], method_pairs: list[tuple[str, str]], attention_checks: int, rng: random.Random
) -> list[dict[str, Any]]:
    """Every method pair on every image (sides balanced) plus the attention checks, shuffled."""
    trials = []
    for a, b in method_pairs:
        for image, flip in zip(images, _balanced_flips(len(images), rng)):
            left, right = (b, a) if flip else (a, b)
            trials.append({"image": image, "left": left, "right": right, "attention_check": False, "expected": None})
    check_images = [
        images[i % len(images)] for i in rng.sample(range(max(len(images), attention_checks)), attention_checks)
    ]
    for image, flip in zip(check_images, _balanced_flips(attention_checks, rng)):
        left, right = (DEGRADED, REFERENCE) if flip else (REFERENCE, DEGRADED)
        trials.append({"image": image, "left": left, "right": right, "attention_check": True, "expected": REFERENCE})
    rng.shuffle(trials)
    return trials


def _pair_entries(trials: list[dict[str, Any]], show_reference: bool) -> list[dict[str, Any]]:
    """The bundle's pairs: numbered ids (``p0000``...) in trial order, files by side."""
    pairs = []
    width = max(4, len(str(len(trials))))
    for number, trial in enumerate(trials):
        image = trial["image"]
        pairs.append(
            {
                "id": f"p{number:0{width}d}",
                "image": image["index"],
                "stem": image["stem"],
                "left": {"method": trial["left"], "file": image["files"][trial["left"]]},
                "right": {"method": trial["right"], "file": image["files"][trial["right"]]},
                "attention_check": trial["attention_check"],
                "expected": trial["expected"],
                "reference": image["files"][REFERENCE] if show_reference else None,
            }
        )
    return pairs


def load_study(bundle: Path, verify: bool = True) -> Study:
    """Read and validate study.json; with ``verify`` also check every file's SHA-256."""
    root = Path(bundle)
    manifest_path = root / MANIFEST
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{root}: not a study bundle (no {MANIFEST})") from exc
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{manifest_path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ValueError(f"{manifest_path}: format is {found!r}, expected {FORMAT!r}")
    try:
        return _parse_manifest(root, manifest_path, manifest, raw, verify)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{manifest_path}: malformed manifest ({type(exc).__name__}: {exc})") from exc


def _parse_manifest(root: Path, manifest_path: Path, manifest: dict, raw: bytes, verify: bool) -> Study:
    methods = tuple(manifest["methods"])
    allowed = set(methods) | {REFERENCE, DEGRADED}
    files = manifest["files"]
    pairs = []
    for entry in manifest["pairs"]:
        pair = Pair(
            id=entry["id"],
            image=int(entry["image"]),
            stem=str(entry["stem"]),
            left=Side(entry["left"]["method"], entry["left"]["file"]),
            right=Side(entry["right"]["method"], entry["right"]["file"]),
            attention_check=bool(entry["attention_check"]),
            expected=entry.get("expected"),
            reference=entry.get("reference"),
        )
        if not _PAIR_ID.match(pair.id):
            raise ValueError(f"{manifest_path}: bad pair id {pair.id!r}")
        for side in (pair.left, pair.right):
            if side.method not in allowed:
                raise ValueError(f"{manifest_path}: pair {pair.id}: unknown method {side.method!r}")
        for relative in filter(None, (pair.left.file, pair.right.file, pair.reference)):
            if relative not in files:
                raise ValueError(f"{manifest_path}: pair {pair.id}: file {relative!r} is not listed in 'files'")
            _inside(root, relative)
        pairs.append(pair)
    by_id = {pair.id: pair for pair in pairs}
    if len(by_id) != len(pairs):
        raise ValueError(f"{manifest_path}: duplicate pair ids")
    if verify:
        for relative, digest in files.items():
            actual = sha256_file(_inside(root, relative))
            if actual != digest:
                raise ValueError(f"{root / relative}: sha256 {actual} does not match the manifest ({digest})")
    return Study(
        root=root,
        study_id=sha256_bytes(raw),
        title=str(manifest.get("title", DEFAULT_TITLE)),
        question=str(manifest.get("question", DEFAULT_QUESTION)),
        seed=int(manifest["seed"]),
        methods=methods,
        method_pairs=tuple((a, b) for a, b in manifest["method_pairs"]),
        pairs=tuple(pairs),
        show_reference=bool(manifest.get("show_reference", False)),
        manifest=manifest,
        by_id=by_id,
        gate=dict(manifest["gate"]) if isinstance(manifest.get("gate"), dict) else None,
    )
