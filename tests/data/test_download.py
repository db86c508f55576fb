"""download_cocostuff end to end against the sample mirror (HTTP on 127.0.0.1 and file://)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mirror import (  # noqa: F401 - fixtures
    MirrorServer,
    archives_total_size,
    mirror_copy,
    mirror_server,
    sample_mirror,
)
from PIL import Image

from srseg.data.download import download_cocostuff, select_ids
from srseg.data.manifest import HR_FORMAT, Manifest
from srseg.data.sources import (
    KNOWN_ARCHIVES,
    SHA256SUMS_NAME,
    archive_url,
    image_url,
    parse_sha256sums,
    redact_url,
)
from srseg.data.transfer import IntegrityError, TransferError

SPLITS = ["train2017", "val2017"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sample_ids(sample: Path, split: str) -> list[int]:
    return sorted(int(p.stem) for p in (sample / "images" / split).glob("*.jpg"))


def _run(output: Path, mirror: str, **kwargs: Any) -> Manifest:
    options: dict[str, Any] = {
        "splits": SPLITS,
        "mode": "subset",
        "subset_size": 3,
        "seed": 7,
        "label_source": "stuffthingmaps",
        "mirror": mirror,
        "retries": 3,
        "backoff_s": 0.001,
        "timeout_s": 5.0,
        "progress": False,
    }
    options.update(kwargs)
    return download_cocostuff(output, **options)


def _assert_matches_sample(output: Path, manifest: Manifest, sample: Path, label_bytes_equal: bool = True) -> None:
    """Every image and label equals the real sample file; the manifest describes them."""
    assert manifest.kind == "hr" and manifest.format == HR_FORMAT
    assert manifest.meta["label_encoding"] == "stuffthingmaps-182"
    for split, samples in manifest.splits.items():
        for s in samples:
            image = output / s.image
            assert s.image == f"images/{split}/{s.id:012d}.jpg"
            assert _sha(image) == s.image_sha256 == _sha(sample / "images" / split / f"{s.id:012d}.jpg")
            assert s.label == f"labels/{split}/{s.id:012d}.png"
            source_label = sample / "stuffthingmaps" / split / f"{s.id:012d}.png"
            assert _sha(output / s.label) == s.label_sha256
            if label_bytes_equal:
                assert s.label_sha256 == _sha(source_label)
            else:
                assert np.array_equal(np.asarray(Image.open(output / s.label)), np.asarray(Image.open(source_label)))
            with Image.open(image) as img:
                assert (s.width, s.height) == img.size
    assert Manifest.load(output).to_json() == manifest.to_json()


def test_subset_over_http_fetches_little_and_exact_files(
    mirror_server: MirrorServer, sample_mirror: Path, cocostuff_sample: Path, tmp_path: Path  # noqa: F811
) -> None:
    out = tmp_path / "hr"
    manifest = _run(out, mirror_server.url)
    for split in SPLITS:
        expected = select_ids(_sample_ids(cocostuff_sample, split), 3, 7)
        assert [s.id for s in manifest.splits[split]] == expected
    _assert_matches_sample(out, manifest, cocostuff_sample)
    sent = mirror_server.state.bytes_sent
    total = archives_total_size(sample_mirror)
    assert sent < total, (sent, total)
    # nothing but range reads from the archives, single images by URL
    zips = [h for h in mirror_server.state.hits if h.path.endswith(".zip")]
    assert zips and all(h.status == 206 for h in zips)
    assert not any(h.path.startswith("zips/") for h in mirror_server.state.hits)
    meta = manifest.meta
    assert meta["mode"] == "subset" and meta["seed"] == 7 and meta["subset_size"] == 3
    assert meta["sources"]["stuffthingmaps_trainval2017.zip"].endswith("/cocostuff/stuffthingmaps_trainval2017.zip")
    assert meta["sources"]["images/val2017"] == f"{mirror_server.url}/val2017/{{id:012d}}.jpg"
    assert not (out / ".cache").exists()

    # second run, same settings: checksums verified, no network at all
    hits_before = len(mirror_server.state.hits)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = _run(out, mirror_server.url)
    assert again.to_json() == manifest.to_json()
    assert len(mirror_server.state.hits) == hits_before
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes


def test_partial_run_resumes_and_changed_settings_redo(
    mirror_server: MirrorServer, cocostuff_sample: Path, tmp_path: Path  # noqa: F811
) -> None:
    out = tmp_path / "hr"
    first = _run(out, mirror_server.url)
    sample = first.splits["val2017"][0]
    # an interrupted run: no manifest, one image cut off mid-transfer, one label missing
    (out / "manifest.json").unlink()
    image = out / sample.image
    image.unlink()
    (out / first.splits["train2017"][1].label).unlink()
    path = f"val2017/{sample.id:012d}.jpg"
    mirror_server.state.drop_once.add(path)
    with pytest.raises(TransferError, match=path):
        _run(out, mirror_server.url, retries=0)
    cut = mirror_server.state.hits_for(path)[-1].sent
    assert (image.parent / (image.name + ".part")).stat().st_size == cut > 0
    mirror_server.state.hits.clear()
    again = _run(out, mirror_server.url)
    assert again.splits == first.splits
    image_hits = [h for h in mirror_server.state.hits if h.path.endswith(".jpg")]
    assert [(h.path, h.range, h.status) for h in image_hits] == [(path, f"bytes={cut}-", 206)]
    _assert_matches_sample(out, again, cocostuff_sample)
    assert not list(out.rglob("*.part*"))

    # other seed: a clean redo, files of ids no longer selected are removed
    other = _run(out, mirror_server.url, seed=8, subset_size=2)
    _assert_matches_sample(out, other, cocostuff_sample)
    listed = {out / s.image for v in other.splits.values() for s in v} | {
        out / s.label for v in other.splits.values() for s in v if s.label
    }
    on_disk = {p for p in (out / "images").rglob("*") if p.is_file()} | {
        p for p in (out / "labels").rglob("*") if p.is_file()
    }
    assert on_disk == listed


def test_dropped_connections_are_resumed(
    mirror_server: MirrorServer, cocostuff_sample: Path, tmp_path: Path  # noqa: F811
) -> None:
    ids = select_ids(_sample_ids(cocostuff_sample, "val2017"), 3, 7)
    image = f"val2017/{ids[1]:012d}.jpg"
    mirror_server.state.drop_once.update({image, "cocostuff/stuffthingmaps_trainval2017.zip"})
    manifest = _run(tmp_path / "hr", mirror_server.url, splits=["val2017"])
    _assert_matches_sample(tmp_path / "hr", manifest, cocostuff_sample)
    first, second = mirror_server.state.hits_for(image)
    assert first.status == 200 and second.status == 206 and second.range == f"bytes={first.sent}-"


def test_full_mode_over_http_survives_drop(
    mirror_server: MirrorServer, sample_mirror: Path, cocostuff_sample: Path, tmp_path: Path  # noqa: F811
) -> None:
    mirror_server.state.drop_once.add("zips/val2017.zip")
    manifest = _run(tmp_path / "hr", mirror_server.url, mode="full", splits=["val2017"])
    assert [s.id for s in manifest.splits["val2017"]] == _sample_ids(cocostuff_sample, "val2017")
    _assert_matches_sample(tmp_path / "hr", manifest, cocostuff_sample)
    hits = mirror_server.state.hits_for("zips/val2017.zip")
    assert [h.status for h in hits] == [200, 206] and hits[1].range == f"bytes={hits[0].sent}-"
    assert manifest.meta["verification"]["val2017.zip"] == "sha256 from mirror SHA256SUMS"
    assert not (tmp_path / "hr" / ".cache").exists()


def test_refused_ranges_fall_back_to_full_download(
    mirror_server: MirrorServer, sample_mirror: Path, cocostuff_sample: Path, tmp_path: Path,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    mirror_server.state.refuse_ranges = True
    with caplog.at_level(logging.WARNING, logger="srseg.data.download"):
        manifest = _run(tmp_path / "hr", mirror_server.url)
    assert "server does not answer byte-range requests; falling back to a full download" in caplog.text
    _assert_matches_sample(tmp_path / "hr", manifest, cocostuff_sample)
    labels_zip = "cocostuff/stuffthingmaps_trainval2017.zip"
    size = (sample_mirror / labels_zip).stat().st_size
    assert any(h.status == 200 and h.sent == size for h in mirror_server.state.hits_for(labels_zip))


def test_file_mirror_subset_and_full(sample_mirror: Path, cocostuff_sample: Path, tmp_path: Path) -> None:  # noqa: F811
    url = sample_mirror.resolve().as_uri()
    subset = _run(tmp_path / "sub", url)
    _assert_matches_sample(tmp_path / "sub", subset, cocostuff_sample)
    full = _run(tmp_path / "full", url, mode="full")
    assert {s: len(v) for s, v in full.splits.items()} == {"train2017": 13, "val2017": 8}
    _assert_matches_sample(tmp_path / "full", full, cocostuff_sample)


def test_json_labels_subset(mirror_server: MirrorServer, cocostuff_sample: Path, tmp_path: Path) -> None:  # noqa: F811
    # The sample mirror's JSON is derived from the same label maps, so rasterising it must give
    # back exactly the stuffthingmaps pixels.
    manifest = _run(tmp_path / "hr", mirror_server.url, label_source="json")
    _assert_matches_sample(tmp_path / "hr", manifest, cocostuff_sample, label_bytes_equal=False)
    assert manifest.meta["label_source"] == "json"
    assert set(manifest.meta["sources"]) >= {"annotations_trainval2017.zip", "stuff_trainval2017.zip"}


def test_truncated_archive_detected_by_checksum(mirror_copy: Path, tmp_path: Path) -> None:  # noqa: F811
    archive = mirror_copy / "zips" / "val2017.zip"
    archive.write_bytes(archive.read_bytes()[:-1000])  # SHA256SUMS still lists the real digest
    with pytest.raises(IntegrityError, match=r"zips/val2017\.zip: sha256 .* != expected .*truncated"):
        _run(tmp_path / "hr", mirror_copy.as_uri(), mode="full", splits=["val2017"])
    assert not (tmp_path / "hr" / "images" / "val2017").exists()
    assert not (tmp_path / "hr" / "manifest.json").exists()


def test_mirror_without_sums_uses_official_checksums(mirror_copy: Path, tmp_path: Path) -> None:  # noqa: F811
    # A mirror without SHA256SUMS claims to hold the official files: the published md5/size
    # apply, and our repackaged val2017.zip does not match them.
    (mirror_copy / SHA256SUMS_NAME).unlink()
    official = KNOWN_ARCHIVES["val2017.zip"]
    with pytest.raises(IntegrityError, match=rf"got \d+ bytes, expected {official.size}"):
        _run(tmp_path / "hr", mirror_copy.as_uri(), mode="full", splits=["val2017"])


def test_bad_arguments_name_the_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'test2017'"):
        download_cocostuff(tmp_path, splits=["test2017"])
    with pytest.raises(ValueError, match="'partial'"):
        download_cocostuff(tmp_path, mode="partial")
    with pytest.raises(ValueError, match="'ftp'"):
        download_cocostuff(tmp_path, mirror="ftp://example.org/coco")
    with pytest.raises(ValueError, match="subset_size"):
        download_cocostuff(tmp_path, subset_size=0)


def test_official_urls_and_mirror_layout() -> None:
    assert archive_url("train2017.zip") == "http://images.cocodataset.org/zips/train2017.zip"
    assert (
        archive_url("stuffthingmaps_trainval2017.zip")
        == "http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/stuffthingmaps_trainval2017.zip"
    )
    assert image_url("val2017", 139) == "http://images.cocodataset.org/val2017/000000000139.jpg"
    assert archive_url("stuff_trainval2017.zip", "s3://b/p/") == "s3://b/p/cocostuff/stuff_trainval2017.zip"
    assert archive_url("annotations_trainval2017.zip", "file:///m") == "file:///m/annotations/annotations_trainval2017.zip"
    assert image_url("train2017", 17914, "http://h:1/x") == "http://h:1/x/train2017/000000017914.jpg"
    assert redact_url("https://user:secret@host/p") == "https://host/p"
    assert parse_sha256sums("a" * 64 + "  zips/x.zip\n", "s") == {"zips/x.zip": "a" * 64}
    assert select_ids([5, 1, 3, 2, 4], 2, 0) == select_ids([1, 2, 3, 4, 5], 2, 0)
    assert select_ids([3, 1], 10, 0) == [1, 3]
    assert KNOWN_ARCHIVES["train2017.zip"].md5 == "cced6f7f71b7629ddf16f17bbcfab6b2"


def test_damaged_output_is_fetched_again(sample_mirror: Path, cocostuff_sample: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "hr"
    manifest = _run(out, sample_mirror.as_uri(), splits=["val2017"])
    first = manifest.splits["val2017"][0]
    (out / first.image).write_bytes(b"not a jpeg")
    (out / first.label).unlink()
    again = _run(out, sample_mirror.as_uri(), splits=["val2017"])
    assert again.to_json() == manifest.to_json()
    _assert_matches_sample(out, again, cocostuff_sample)


def _interrupted(out: Path, server: MirrorServer, sample: Path, split: str = "val2017") -> tuple[Path, str]:
    """Run until one image transfer is cut off: returns (its .part, its mirror path)."""
    ids = select_ids(_sample_ids(sample, split), 3, 7)
    path = f"{split}/{ids[0]:012d}.jpg"
    server.state.drop_once.add(path)
    with pytest.raises(TransferError):
        _run(out, server.url, splits=[split], retries=0)
    part = out / "images" / split / f"{ids[0]:012d}.jpg.part"
    assert part.stat().st_size > 0
    return part, path


def test_leftover_part_with_wrong_bytes_is_not_resumed(
    mirror_server: MirrorServer, cocostuff_sample: Path, tmp_path: Path  # noqa: F811
) -> None:
    # a .part nobody recorded the origin of (another tool, an older run): its bytes cannot be
    # trusted, so the first run must fetch the whole file rather than append to them and fail
    out = tmp_path / "hr"
    ids = select_ids(_sample_ids(cocostuff_sample, "val2017"), 3, 7)
    stale = out / "images" / "val2017" / f"{ids[0]:012d}.jpg.part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\xff\xd8 stale bytes of some other download" * 20)
    manifest = _run(out, mirror_server.url, splits=["val2017"])
    _assert_matches_sample(out, manifest, cocostuff_sample)
    hits = mirror_server.state.hits_for(f"val2017/{ids[0]:012d}.jpg")
    assert [(h.range, h.status) for h in hits] == [(None, 200)]


def test_part_of_a_file_that_changed_on_the_server_is_not_appended_to(
    mirror_copy: Path, cocostuff_sample: Path, tmp_path: Path  # noqa: F811
) -> None:
    server = MirrorServer(mirror_copy).start()
    try:
        out = tmp_path / "hr"
        part, path = _interrupted(out, server, cocostuff_sample)
        record = json.loads(part.with_name(part.name + ".json").read_text())
        assert record["etag"] and record["url"] == f"{server.url}/{path}"
        os.utime(mirror_copy / path, ns=(1, 1))  # same bytes, new ETag: the server's file "changed"
        server.state.hits.clear()
        manifest = _run(out, server.url, splits=["val2017"])
        _assert_matches_sample(out, manifest, cocostuff_sample)
        (hit,) = server.state.hits_for(path)
        assert hit.range is not None and hit.status == 200  # If-Range did not match: whole file
    finally:
        server.stop()


def test_resumed_bytes_that_fail_verification_are_fetched_again(
    mirror_server: MirrorServer, cocostuff_sample: Path, tmp_path: Path  # noqa: F811
) -> None:
    # the recorded validator matches but the .part's bytes are wrong (disk corruption, or a server
    # without validators): the checksum fails after the resume, and one fresh fetch repairs it
    out = tmp_path / "hr"
    part, path = _interrupted(out, mirror_server, cocostuff_sample)
    part.write_bytes(bytes(part.stat().st_size))
    mirror_server.state.hits.clear()
    manifest = _run(out, mirror_server.url, splits=["val2017"])
    _assert_matches_sample(out, manifest, cocostuff_sample)
    assert [(h.range is not None, h.status) for h in mirror_server.state.hits_for(path)] == [(True, 206), (False, 200)]


def _without_sums(mirror: Path) -> Path:
    """The official hosts publish no checksums for single images: a mirror without SHA256SUMS."""
    (mirror / SHA256SUMS_NAME).unlink()
    return mirror


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("zero_tail", "damaged JPEG"),  # a cut-off transfer padded to length: Pillow decodes it silently
        ("overwritten", "damaged JPEG"),  # scan bytes overwritten in place: libjpeg only warns
        ("other_image", "but the annotation says"),  # whole, but not the image the labels describe
    ],
)
def test_damaged_image_without_checksums_is_refused(
    mirror_copy: Path, cocostuff_sample: Path, tmp_path: Path, damage: str, message: str  # noqa: F811
) -> None:
    ids = select_ids(_sample_ids(cocostuff_sample, "val2017"), 3, 7)
    target = _without_sums(mirror_copy) / "val2017" / f"{ids[1]:012d}.jpg"
    data = target.read_bytes()
    if damage == "zero_tail":
        target.write_bytes(data[: len(data) // 2] + bytes(len(data) - len(data) // 2))
    elif damage == "overwritten":
        target.write_bytes(data[: len(data) // 2] + bytes(range(256)) * 4 + data[len(data) // 2 + 1024 :])
    else:
        other = next(p for p in sorted((cocostuff_sample / "images" / "val2017").glob("*.jpg"))
                     if Image.open(p).size != Image.open(target).size)
        target.write_bytes(other.read_bytes())
    server = MirrorServer(mirror_copy).start()
    try:
        with pytest.raises(IntegrityError, match=rf"{server.url}/val2017/{ids[1]:012d}\.jpg: .*{message}"):
            _run(tmp_path / "hr", server.url, splits=["val2017"])
    finally:
        server.stop()
    out = tmp_path / "hr" / "images" / "val2017"
    assert not (out / target.name).exists() and not list(out.glob("*.part*"))


def test_damaged_image_left_by_an_earlier_run_is_fetched_again(
    mirror_copy: Path, cocostuff_sample: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    url = _without_sums(mirror_copy).as_uri()
    out = tmp_path / "hr"
    first = _run(out, url, splits=["val2017"])
    (out / "manifest.json").unlink()  # an interrupted run: no manifest to compare checksums with
    image = out / first.splits["val2017"][0].image
    image.write_bytes(image.read_bytes()[:-3000] + bytes(3000))
    with caplog.at_level(logging.WARNING, logger="srseg.data.download"):
        again = _run(out, url, splits=["val2017"])
    assert "damaged JPEG" in caplog.text and "fetching it again" in caplog.text
    _assert_matches_sample(out, again, cocostuff_sample)
    assert again.meta["verification"]["images/val2017"].startswith("complete decode")
