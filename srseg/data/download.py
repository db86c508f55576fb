"""``srseg download``: COCO 2017 images + COCO-Stuff labels into a prepared dataset root.

Output (see ``srseg.data.manifest``)::

    <output>/images/<split>/<012d id>.jpg    COCO image, bytes as published
    <output>/labels/<split>/<012d id>.png    stuffthingmaps encoding (class id - 1, 255 unlabeled)
    <output>/manifest.json                   kind "hr", ids, sizes, sha256s, sources, settings
    <output>/.cache/                         archives/JSON while running; removed after success

Modes:
- ``subset``: N ids per split (ids listed from the label source, sorted, ``random.Random(seed)
  .sample(ids, N)``, sorted again). Only what those ids need is fetched: single images by URL, label
  PNGs (or the two JSON members) out of the remote zips by byte ranges. If a server refuses ranges
  the whole archive is downloaded instead, with a warning.
- ``full``: every id of the split; whole archives are downloaded (resumable), verified and
  extracted safely.

A re-run with the same settings over complete outputs verifies the checksums and does nothing
else; a re-run after an interruption keeps every file already written (files only appear at their
final names once complete) and fetches the rest.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from srseg.data.archive import check_zip_crcs, safe_extract
from srseg.data.imagecheck import ImageCheckError, check_image
from srseg.data.manifest import (
    HR_FORMAT,
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    Sample,
    image_name,
    label_name,
)
from srseg.data.remotezip import RemoteZip, ZipFormatError, open_local, open_remote
from srseg.data.sources import (
    ARCHIVES,
    KNOWN_ARCHIVES,
    SHA256SUMS_NAME,
    SPLITS,
    archive_url,
    check_mirror,
    check_split,
    image_archive_name,
    image_member,
    image_relpath,
    image_url,
    instances_member,
    label_member,
    mirror_join,
    parse_sha256sums,
    redact_url,
    stuff_member,
)
from srseg.data.transfer import Expected, Fetcher, IntegrityError, NotFoundError, RangeNotSupported, verify_file
from srseg.errors import SrsegError
from srseg.fileio import sha256_file, write_bytes_atomic

logger = logging.getLogger(__name__)

MODES = ("subset", "full")
LABEL_SOURCES = ("stuffthingmaps", "json")
LABEL_ENCODING = "stuffthingmaps-182"
CACHE_DIR = ".cache"
SELECTION_RULE = "sorted(ids of split in label source) -> random.Random(seed).sample(ids, N) -> sorted"
_STUFFTHINGMAPS = "stuffthingmaps_trainval2017.zip"
_ANNOTATIONS = "annotations_trainval2017.zip"
_STUFF = "stuff_trainval2017.zip"
_ID_FILE = re.compile(r"^(\d{12})\.(jpg|png)$")


class DownloadError(SrsegError, RuntimeError):
    """The dataset could not be assembled (missing ids, undecodable files, bad archives)."""


def select_ids(ids: Sequence[int], subset_size: int | None, seed: int) -> list[int]:
    """The documented subset rule; ``subset_size=None`` (full mode) keeps every id."""
    ordered = sorted(set(ids))
    if subset_size is None or subset_size >= len(ordered):
        return ordered
    return sorted(random.Random(seed).sample(ordered, subset_size))


def download_cocostuff(
    output: str | Path,
    splits: Sequence[str] = SPLITS,
    mode: str = "subset",
    subset_size: int = 100,
    seed: int = 0,
    label_source: str = "stuffthingmaps",
    mirror: str | None = None,
    retries: int = 4,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    progress: bool = True,
    s3_endpoint_url: str | None = None,
    keep_cache: bool = False,
    mirror_name: str | None = None,
) -> Manifest:
    """Download COCO-Stuff into ``output`` and return its manifest (see module docstring).

    ``splits``: COCO split names ("train2017", "val2017"). ``retries``: retries per request after
    the first attempt, waiting ``backoff_s * 2**k``. ``mirror``: base URL replacing the official
    hosts (``srseg.data.sources`` documents the layout). ``s3_endpoint_url``: for an ``s3://``
    mirror, else ``AWS_ENDPOINT_URL``. ``keep_cache``: keep downloaded archives in
    ``output/.cache`` after success. ``mirror_name``: how the manifest records the mirror
    (default: its URL without credentials); the download stage passes the folder as configured,
    so the checkout's location does not end up in the manifest (and in ``dvc.lock``)."""
    output = Path(output)
    split_list = [check_split(s) for s in splits]
    _check_request(split_list, splits, mode, label_source, subset_size)
    if mirror is not None:
        mirror = check_mirror(mirror)
    settings: dict[str, Any] = {
        "splits": split_list,
        "mode": mode,
        "subset_size": subset_size if mode == "subset" else None,
        "seed": seed,
        "label_source": label_source,
        "mirror": (mirror_name or redact_url(mirror)) if mirror else None,
    }
    existing = _reusable_manifest(output, settings)
    if existing is not None:
        return existing

    with Fetcher(
        retries=retries,
        backoff_s=backoff_s,
        timeout_s=timeout_s,
        progress=progress,
        s3_endpoint_url=s3_endpoint_url,
    ) as fetcher:
        job = _Job(output, mode, label_source, mirror, fetcher, progress, mirror_name)
        try:
            samples = {split: job.run_split(split, settings["subset_size"], seed) for split in split_list}
        except (SrsegError, ValueError, OSError):
            logger.warning(
                "download stopped: %d image/label pairs are complete in %s (no manifest yet, so it is not a "
                "dataset); the same command resumes and fetches only the rest",
                job.completed,
                output,
            )
            raise
        received = fetcher.bytes_received

    manifest = Manifest(kind="hr", format=HR_FORMAT, splits=samples, meta=_manifest_meta(settings, job))
    _prune(output, manifest)
    manifest.save(output)
    if not keep_cache:
        shutil.rmtree(output / CACHE_DIR, ignore_errors=True)
    counts = ", ".join(f"{split}: {len(items)}" for split, items in samples.items())
    logger.info("%s: wrote %s (%d bytes received)", output, counts, received)
    return manifest


def _check_request(
    split_list: list[str], splits: Sequence[str], mode: str, label_source: str, subset_size: int
) -> None:
    if not split_list or len(set(split_list)) != len(split_list):
        raise ValueError(f"splits must be a non-empty list without repeats, got {list(splits)}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if label_source not in LABEL_SOURCES:
        raise ValueError(f"label_source must be one of {LABEL_SOURCES}, got {label_source!r}")
    if mode == "subset" and subset_size < 1:
        raise ValueError(f"subset_size must be >= 1 in subset mode, got {subset_size}")


def _manifest_meta(settings: dict[str, Any], job: _Job) -> dict[str, Any]:
    mode = settings["mode"]
    return {
        "dataset": "COCO-Stuff (COCO 2017 images, COCO-Stuff 164K labels)",
        "label_encoding": LABEL_ENCODING,
        "settings": settings,
        "mode": mode,
        "seed": settings["seed"],
        "subset_size": settings["subset_size"],
        "label_source": settings["label_source"],
        "selection": SELECTION_RULE if mode == "subset" else "all ids present in both images and labels",
        "sources": job.sources,
        "verification": job.verification,
    }


# -- re-run support --------------------------------------------------------------------------


def _reusable_manifest(output: Path, settings: dict[str, Any]) -> Manifest | None:
    """The manifest already in ``output`` when it is complete and made with ``settings``; else
    None, after deleting its damaged files and the manifest itself (it described other files)."""
    existing = _load_existing(output)
    if existing is None:
        return None
    damaged = _damaged_outputs(output, existing)
    if not damaged and existing.meta.get("settings") == settings:
        logger.info("%s: complete for these settings (checksums verified); nothing to do", output)
        return existing
    if damaged:
        logger.warning("%s: %d files missing or changed since the manifest; fetching them again", output, len(damaged))
    for path in damaged:
        path.unlink(missing_ok=True)
    (output / MANIFEST_NAME).unlink()  # never leave a manifest that describes other files
    return None


def _load_existing(output: Path) -> Manifest | None:
    if not (output / MANIFEST_NAME).is_file():
        return None
    try:
        return Manifest.load(output)
    except ManifestError as exc:
        logger.warning("%s; it will be rewritten", exc)
        (output / MANIFEST_NAME).unlink()
        return None


def _damaged_outputs(root: Path, manifest: Manifest) -> list[Path]:
    """Files the manifest lists that are missing or whose sha256 differs."""
    damaged: list[Path] = []
    for samples in manifest.splits.values():
        for sample in samples:
            for rel, digest in ((sample.image, sample.image_sha256), (sample.label, sample.label_sha256)):
                if rel is None:
                    continue
                path = root / rel
                if not path.is_file() or sha256_file(path) != digest:
                    logger.info("%s: missing or changed", path)
                    damaged.append(path)
    return damaged


def _prune(root: Path, manifest: Manifest) -> None:
    """Remove id-named files (and stale .part files with their records) the new manifest does not list."""
    keep = {root / s.image for items in manifest.splits.values() for s in items}
    keep |= {root / s.label for items in manifest.splits.values() for s in items if s.label}
    for top in ("images", "labels"):
        for path in sorted((root / top).glob("*/*")):
            if (
                path.is_file()
                and path not in keep
                and (_ID_FILE.match(path.name) or path.name.endswith((".part", ".part.json")))
            ):
                logger.info("removing %s (not part of this dataset)", path)
                path.unlink()


# -- checks ----------------------------------------------------------------------------------


def _label_size(data: bytes, source: str) -> tuple[int, int]:
    """(width, height) of a stuffthingmaps label PNG, decoded completely; it must be 8-bit."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode, size = img.mode, img.size
    except Exception as exc:
        raise IntegrityError(f"{source}: not a decodable PNG ({exc})") from exc
    if mode not in ("L", "P"):
        raise IntegrityError(f"{source}: label map has mode {mode}, expected 8-bit L or P")
    return size


def _json_size(index_pair: tuple[Any, Any] | None, image_id: int, source: str) -> tuple[int, int]:
    """(width, height) the COCO JSON gives for ``image_id``."""
    assert index_pair is not None
    for index in index_pair:
        if index is not None and image_id in index.images:
            height, width = index.images[image_id]
            return width, height
    raise DownloadError(f"{source}: image {image_id} is not in the annotation files")


# -- the work --------------------------------------------------------------------------------


class _Job:
    """State of one download run: where things come from and how each was verified."""

    def __init__(
        self,
        output: Path,
        mode: str,
        label_source: str,
        mirror: str | None,
        fetcher: Fetcher,
        progress: bool,
        mirror_name: str | None = None,
    ) -> None:
        self.output = output
        self.cache = output / CACHE_DIR
        self.mode = mode
        self.label_source = label_source
        self.mirror = mirror
        self.mirror_name = mirror_name
        self.fetcher = fetcher
        self.progress = progress
        self.sources: dict[str, str] = {}
        self.verification: dict[str, str] = {}
        self.completed = 0  # image/label pairs finished in this run (for the message when it stops)
        self._zips: dict[str, RemoteZip] = {}
        self._archives: dict[str, Path] = {}
        self._digest_verified: set[str] = set()
        self._mirror_sums: dict[str, str] | None = None
        self._mirror_sums_loaded = False

    def _record(self, url: str) -> str:
        """A source URL as the manifest records it (mirror under its recorded name, no credentials)."""
        if self.mirror and self.mirror_name and url.startswith(self.mirror):
            return self.mirror_name + url[len(self.mirror) :]
        return redact_url(url)

    # checksums -------------------------------------------------------------------------------
    def _sums(self) -> dict[str, str] | None:
        """The mirror's SHA256SUMS, or None (official host, or a mirror of identical copies)."""
        if not self._mirror_sums_loaded:
            self._mirror_sums_loaded = True
            if self.mirror:
                url = mirror_join(self.mirror, SHA256SUMS_NAME)
                try:
                    text = self.fetcher.fetch_bytes(url).decode("utf-8")
                except NotFoundError:
                    logger.info("%s: none; the mirror must hold the official files", redact_url(url))
                else:
                    self._mirror_sums = parse_sha256sums(text, redact_url(url))
                    logger.info(
                        "%s: %d digests; they replace the official ones", redact_url(url), len(self._mirror_sums)
                    )
        return self._mirror_sums

    def _expected_archive(self, name: str) -> tuple[Expected, str]:
        sums = self._sums()
        if sums is not None:
            digest = sums.get(ARCHIVES[name].mirror_path)
            if digest:
                return Expected(sha256=digest), "sha256 from mirror SHA256SUMS"
            return Expected(), "zip CRC-32 (not listed in mirror SHA256SUMS)"
        known = KNOWN_ARCHIVES[name]
        if known.md5 or known.size:
            return Expected(size=known.size, md5=known.md5), f"official size + md5 ({known.source})"
        return Expected(), f"zip CRC-32 ({known.source})"

    # archives --------------------------------------------------------------------------------
    def _archive(self, name: str) -> Path:
        """The whole archive in the cache, verified (downloaded or resumed as needed)."""
        if name in self._archives:
            return self._archives[name]
        url = archive_url(name, self.mirror)
        expected, how = self._expected_archive(name)
        dest = self.cache / name
        self.sources[name] = self._record(url)
        self.verification[name] = how
        if dest.is_file():
            try:
                verify_file(dest, expected, str(dest))
            except IntegrityError as exc:
                logger.warning("%s; downloading it again", exc)
                dest.unlink()
        if not dest.is_file():
            logger.info("downloading %s (%s)", redact_url(url), expected.describe())
            self.fetcher.download(url, dest, expected, desc=name)
        if expected.md5 or expected.sha256:
            self._digest_verified.add(name)
        else:
            check_zip_crcs(dest)
        self._archives[name] = dest
        return dest

    def _zip(self, name: str) -> RemoteZip:
        """Random access to a zip: by ranges in subset mode, else (or on refusal) a local copy."""
        if name in self._zips:
            return self._zips[name]
        url = archive_url(name, self.mirror)
        zip_: RemoteZip | None = None
        if self.mode == "subset":
            try:
                zip_ = open_remote(self.fetcher, url)
                self.sources[name] = self._record(url)
                self.verification[name] = "per-member CRC-32 and size (byte-range reads)"
                logger.info("%s: reading members by byte ranges (%d members)", redact_url(url), len(zip_.members))
            except RangeNotSupported as exc:
                logger.warning("%s; falling back to a full download of the archive", exc)
        if zip_ is None:
            try:
                zip_ = open_local(self._archive(name))
            except ZipFormatError as exc:
                raise DownloadError(str(exc)) from exc
        self._zips[name] = zip_
        return zip_

    # per split -------------------------------------------------------------------------------
    def run_split(self, split: str, subset_size: int | None, seed: int) -> list[Sample]:
        if self.label_source == "stuffthingmaps":
            labels_zip = self._zip(_STUFFTHINGMAPS)
            pattern = re.compile(rf"^{re.escape(split)}/(\d{{12}})\.png$")
            label_ids = [int(m.group(1)) for m in map(pattern.match, labels_zip.names()) if m]
            index_pair = None
        else:
            index_pair = self._json_indexes(split)
            label_ids = index_pair[1].image_ids() if index_pair[1] is not None else index_pair[0].image_ids()
        if not label_ids:
            raise DownloadError(f"no {split} ids found in the {self.label_source} label source")
        if self.mode == "full":
            ids = self._extract_full_images(split, label_ids)
        else:
            ids = select_ids(label_ids, subset_size, seed)
            if subset_size is not None and subset_size > len(ids):
                logger.warning("%s: asked for %d ids, the label source has only %d", split, subset_size, len(ids))
            base = self.mirror or "http://images.cocodataset.org"
            self.sources[f"images/{split}"] = f"{self._record(base)}/{split}/{{id:012d}}.jpg"
            self.verification[f"images/{split}"] = (
                "complete decode (corrupt-data warnings are errors) + size from the annotation"
                + (" + sha256 from mirror SHA256SUMS" if self._sums() else "")
            )
        if self.label_source == "stuffthingmaps" and self.mode == "full":
            self._extract_full_labels(split, ids)
        samples: list[Sample] = []
        for image_id in tqdm(ids, desc=split, unit="img", disable=not self.progress, leave=False):
            samples.append(self._sample(split, image_id, index_pair))
            self.completed += 1
        return samples

    def _sample(self, split: str, image_id: int, index_pair: tuple[Any, Any] | None) -> Sample:
        image_rel = f"images/{split}/{image_name(image_id)}"
        label_rel = f"labels/{split}/{label_name(image_id)}"
        image_path, label_path = self.output / image_rel, self.output / label_rel
        size, label_data = self._annotated_size(split, image_id, index_pair, label_path)
        if self.mode == "subset":
            self._fetch_image(split, image_id, image_path, size)
        elif not image_path.is_file():
            raise DownloadError(f"{image_path}: missing after extracting {image_archive_name(split)}")
        else:
            self._check_extracted(split, image_path, size)
        if not label_path.is_file():
            data = label_data if label_data is not None else self._rasterize(index_pair, image_id, size)
            write_bytes_atomic(label_path, data)
        return Sample(
            id=image_id,
            image=image_rel,
            width=size[0],
            height=size[1],
            image_sha256=sha256_file(image_path),
            label=label_rel,
            label_sha256=sha256_file(label_path),
        )

    def _annotated_size(
        self, split: str, image_id: int, index_pair: tuple[Any, Any] | None, label_path: Path
    ) -> tuple[tuple[int, int], bytes | None]:
        """(width, height) the annotation gives for the image, and label bytes still to be written."""
        if self.label_source == "json":
            return _json_size(index_pair, image_id, f"{_ANNOTATIONS}, {_STUFF}"), None
        if label_path.is_file():
            return _label_size(label_path.read_bytes(), str(label_path)), None
        member = label_member(split, image_id)
        try:
            data = self._zip(_STUFFTHINGMAPS).read(member)
        except (KeyError, ZipFormatError) as exc:
            raise DownloadError(str(exc)) from exc
        return _label_size(data, f"{_STUFFTHINGMAPS}:{member}"), data

    def _fetch_image(self, split: str, image_id: int, dest: Path, size: tuple[int, int]) -> None:
        """Fetch one image unless a verified copy is there; it must decode whole at ``size``."""
        sums = self._sums() or {}
        digest = sums.get(image_relpath(split, image_id))
        if dest.is_file():
            try:
                if digest is not None and sha256_file(dest) != digest:
                    raise ImageCheckError("does not match the mirror's sha256")
                check_image(dest, size)
                return  # written atomically by an earlier run, and still whole
            except ImageCheckError as exc:
                logger.warning("%s: %s; fetching it again", dest, exc)
                dest.unlink()
        url = image_url(split, image_id, self.mirror)
        self.fetcher.download(
            url,
            dest,
            Expected(sha256=digest),
            check=lambda path: check_image(path, size),
            desc=dest.name,
            progress=False,  # one bar per split, not per image
        )

    def _check_extracted(self, split: str, path: Path, size: tuple[int, int]) -> None:
        """Full mode: the size always; a complete decode too when no digest vouched for the archive."""
        archive = image_archive_name(split)
        try:
            if archive in self._digest_verified:
                with Image.open(path) as img:
                    got = img.size
                if got != size:
                    raise ImageCheckError(f"is {got[0]}x{got[1]}, but the annotation says {size[0]}x{size[1]}")
            else:
                check_image(path, size)
        except ImageCheckError as exc:
            raise IntegrityError(f"{path} (from {self.sources.get(archive, archive)}): {exc}") from exc

    # full mode -------------------------------------------------------------------------------
    def _extract_full_images(self, split: str, label_ids: list[int]) -> list[int]:
        archive = self._archive(image_archive_name(split))
        pattern = re.compile(rf"^{re.escape(split)}/(\d{{12}})\.jpg$")
        image_ids = {int(m.group(1)) for m in map(pattern.match, open_local(archive).names()) if m}
        ids = sorted(image_ids & set(label_ids))
        if len(ids) != len(image_ids) or len(ids) != len(label_ids):
            logger.warning(
                "%s: %d images, %d labels, %d in both; keeping those in both",
                split,
                len(image_ids),
                len(label_ids),
                len(ids),
            )
        wanted = {image_member(split, i) for i in ids}
        safe_extract(archive, self.output / "images", select=wanted.__contains__)
        return ids

    def _extract_full_labels(self, split: str, ids: list[int]) -> None:
        wanted = {label_member(split, i) for i in ids}
        safe_extract(self._archive(_STUFFTHINGMAPS), self.output / "labels", select=wanted.__contains__)

    # JSON labels -----------------------------------------------------------------------------
    def _json_member(self, archive: str, member: str) -> Path:
        dest = self.cache / "json" / Path(member).name
        if dest.is_file():
            return dest
        zip_ = self._zip(archive)
        names = zip_.names()
        if member not in names:  # tolerate a leading folder in repackaged archives
            found = [n for n in names if n.rsplit("/", 1)[-1] == Path(member).name]
            if not found:
                raise DownloadError(f"{self.sources.get(archive, archive)}: no member {member!r}")
            member = found[0]
        logger.info("extracting %s from %s", member, archive)
        try:
            return zip_.extract(member, dest)
        except ZipFormatError as exc:
            raise DownloadError(str(exc)) from exc

    def _json_indexes(self, split: str) -> tuple[Any, Any]:
        try:
            from srseg.data.cocojson import build_index
        except ImportError as exc:
            raise DownloadError(f"label_source='json' needs srseg.data.cocojson ({exc})") from exc
        indexes = []
        for archive, member in ((_ANNOTATIONS, instances_member(split)), (_STUFF, stuff_member(split))):
            path = self._json_member(archive, member)
            with open(path, encoding="utf-8") as handle:
                indexes.append(build_index(json.load(handle), source=f"{archive}:{member}"))
        return indexes[0], indexes[1]

    def _rasterize(self, index_pair: tuple[Any, Any] | None, image_id: int, size: tuple[int, int]) -> bytes:
        from srseg.data.cocojson import rasterize_labels

        assert index_pair is not None
        label = rasterize_labels(index_pair[0], index_pair[1], image_id)
        if (label.shape[1], label.shape[0]) != size:
            raise DownloadError(
                f"image {image_id}: annotations say {label.shape[1]}x{label.shape[0]}, image is {size[0]}x{size[1]}"
            )
        buffer = io.BytesIO()
        Image.fromarray(label).save(buffer, format="PNG")
        return buffer.getvalue()
