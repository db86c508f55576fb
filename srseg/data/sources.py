"""Where COCO 2017 / COCO-Stuff files live: official URLs, the one mirror layout, known checksums.

A mirror is a base URL (``http(s)://``, ``file://`` or ``s3://bucket/prefix``) that replaces every
official host with this relative layout::

    zips/train2017.zip                           COCO 2017 train images (zip of train2017/*.jpg)
    zips/val2017.zip                             COCO 2017 val images
    train2017/<012d id>.jpg, val2017/<012d id>.jpg   single images (subset mode)
    annotations/annotations_trainval2017.zip     COCO instances JSON (things)
    cocostuff/stuffthingmaps_trainval2017.zip    COCO-Stuff PNG label maps (train2017/*.png, val2017/*.png)
    cocostuff/stuff_trainval2017.zip             COCO-Stuff stuff JSON (stuff_<split>.json)
    SHA256SUMS                                   optional: "<sha256>  <relative path>" lines

A mirror that holds byte-identical copies of the official archives needs no ``SHA256SUMS``: the
official values in ``KNOWN_ARCHIVES`` apply. A mirror that repackages (e.g. the sample mirror built
by ``srseg.data.mirror``) lists its own digests in ``SHA256SUMS``; those then replace the official
ones for the files it lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

SPLITS: tuple[str, ...] = ("train2017", "val2017")
SHA256SUMS_NAME = "SHA256SUMS"


@dataclass(frozen=True)
class ArchiveSpec:
    """One official archive: its file name, official URL and path inside a mirror."""

    name: str
    official_url: str
    mirror_path: str


@dataclass(frozen=True)
class KnownChecksum:
    """Published size/digest of an official archive and where the value was found."""

    size: int | None
    md5: str | None
    source: str


_COCO = "http://images.cocodataset.org"
_COCOSTUFF = "http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset"

ARCHIVES: dict[str, ArchiveSpec] = {
    spec.name: spec
    for spec in (
        ArchiveSpec("train2017.zip", f"{_COCO}/zips/train2017.zip", "zips/train2017.zip"),
        ArchiveSpec("val2017.zip", f"{_COCO}/zips/val2017.zip", "zips/val2017.zip"),
        ArchiveSpec(
            "annotations_trainval2017.zip",
            f"{_COCO}/annotations/annotations_trainval2017.zip",
            "annotations/annotations_trainval2017.zip",
        ),
        ArchiveSpec(
            "stuffthingmaps_trainval2017.zip",
            f"{_COCOSTUFF}/stuffthingmaps_trainval2017.zip",
            "cocostuff/stuffthingmaps_trainval2017.zip",
        ),
        ArchiveSpec(
            "stuff_trainval2017.zip",
            f"{_COCOSTUFF}/stuff_trainval2017.zip",
            "cocostuff/stuff_trainval2017.zip",
        ),
    )
}

# Published values for the official files. Only values with a public source are recorded.
# - md5: cocodataset.org's download page gives none; these three are cited verbatim and
#   consistently across public download scripts, e.g. intel/neural-compressor
#   examples/pytorch/fx/object_detection/maskrcnn/download_dataset.sh ("md5sum *.zip" listing),
#   plus several dataset loaders (R torch datasets, PyTorch/TF COCO loaders).
# - size in bytes: found in at least five independent public download scripts/notes that check the
#   byte count after `wget -c` (train 19336861798, val 815585330, annotations 252907541); one
#   verification record pairs each val/annotations size with the md5 above. (Found by code
#   search; the hosting repositories were not all identifiable, so treat the sizes as
#   corroborated, the md5s as the primary check.)
# - COCO-Stuff archives: nightrome/cocostuff README.md (Downloads table) publishes only rounded
#   sizes ("659 MB" stuffthingmaps, "543 MB" stuff) and no digest; no exact public value was
#   found, so none is recorded. Those archives are checked by their zip CRC-32s instead.
KNOWN_ARCHIVES: dict[str, KnownChecksum] = {
    "train2017.zip": KnownChecksum(
        size=19336861798, md5="cced6f7f71b7629ddf16f17bbcfab6b2", source="public COCO md5 list + byte sizes"
    ),
    "val2017.zip": KnownChecksum(
        size=815585330, md5="442b8da7639aecaf257c1dceb8ba8c80", source="public COCO md5 list + byte sizes"
    ),
    "annotations_trainval2017.zip": KnownChecksum(
        size=252907541, md5="f4bbac642086de4f52a3fdda2de5fa2c", source="public COCO md5 list + byte sizes"
    ),
    "stuffthingmaps_trainval2017.zip": KnownChecksum(
        size=None, md5=None, source="nightrome/cocostuff README: ~659 MB, no digest published"
    ),
    "stuff_trainval2017.zip": KnownChecksum(
        size=None, md5=None, source="nightrome/cocostuff README: ~543 MB, no digest published"
    ),
}


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


def check_mirror(mirror: str) -> str:
    """Validate a mirror base URL; returns it without a trailing slash."""
    scheme = urlsplit(mirror).scheme
    if scheme not in ("http", "https", "file", "s3"):
        raise ValueError(
            f"mirror {mirror!r}: unsupported scheme {scheme!r}; use http(s)://, file:// or s3://bucket/prefix"
        )
    if scheme == "s3" and not urlsplit(mirror).netloc:
        raise ValueError(f"mirror {mirror!r}: s3 mirror needs a bucket (s3://bucket/prefix)")
    return mirror.rstrip("/")


def mirror_join(mirror: str, relative: str) -> str:
    return f"{check_mirror(mirror)}/{relative}"


def image_archive_name(split: str) -> str:
    return f"{check_split(split)}.zip"


def archive_url(name: str, mirror: str | None = None) -> str:
    """URL of an archive, official or under the mirror."""
    try:
        spec = ARCHIVES[name]
    except KeyError:
        raise ValueError(f"unknown archive {name!r}; known: {', '.join(ARCHIVES)}") from None
    return mirror_join(mirror, spec.mirror_path) if mirror else spec.official_url


def image_relpath(split: str, image_id: int) -> str:
    return f"{check_split(split)}/{image_id:012d}.jpg"


def image_url(split: str, image_id: int, mirror: str | None = None) -> str:
    """URL of one COCO image, e.g. http://images.cocodataset.org/val2017/000000000139.jpg."""
    rel = image_relpath(split, image_id)
    return mirror_join(mirror, rel) if mirror else f"{_COCO}/{rel}"


def image_member(split: str, image_id: int) -> str:
    """Member name inside ``<split>.zip``."""
    return image_relpath(split, image_id)


def label_member(split: str, image_id: int) -> str:
    """Member name inside ``stuffthingmaps_trainval2017.zip``."""
    return f"{check_split(split)}/{image_id:012d}.png"


def instances_member(split: str) -> str:
    """Member name inside ``annotations_trainval2017.zip``."""
    return f"annotations/instances_{check_split(split)}.json"


def stuff_member(split: str) -> str:
    """Member name inside ``stuff_trainval2017.zip``."""
    return f"stuff_{check_split(split)}.json"


def redact_url(url: str) -> str:
    """Drop any user:password@ from a URL before it is logged or recorded."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def parse_sha256sums(text: str, source: str) -> dict[str, str]:
    """Parse ``sha256sum`` output ("<hex>  <path>", optional '*' binary marker)."""
    sums: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, _, path = line.partition(" ")
        path = path.strip().lstrip("*")
        if len(digest) != 64 or not path or any(c not in "0123456789abcdefABCDEF" for c in digest):
            raise ValueError(f"{source}:{lineno}: not a sha256sum line: {line!r}")
        sums[path] = digest.lower()
    return sums
