"""srseg.imageio: every on-disk flavour comes back as (H, W, 3) uint8 RGB, errors name the file."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srseg.errors import SrsegError
from srseg.fileio import sha256_file
from srseg.imageio import ImageReadError, list_images, load_rgb, save_png_atomic


def _rgb(h: int = 5, w: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png16(values: np.ndarray) -> bytes:
    """A minimal 16-bit truecolour PNG (filter 0), since Pillow cannot write one."""
    h, w, c = values.shape
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _round257(v: np.ndarray) -> np.ndarray:
    return np.floor(v.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)


def test_rgb_png_roundtrip_and_checksum(tmp_path: Path) -> None:
    rgb = _rgb()
    digest = save_png_atomic(tmp_path / "sub" / "a.png", rgb)
    out = load_rgb(tmp_path / "sub" / "a.png")
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, rgb)
    assert digest == sha256_file(tmp_path / "sub" / "a.png")
    assert out.flags.writeable
    assert not [p for p in (tmp_path / "sub").iterdir() if p.name.startswith(".")], "temp file left behind"


def test_save_png_rejects_bad_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        save_png_atomic(tmp_path / "f.png", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        save_png_atomic(tmp_path / "f.png", np.zeros((4, 4, 4), np.uint8))
    assert not (tmp_path / "f.png").exists()


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grayscale_replicated(tmp_path: Path, mode: str) -> None:
    gray = _rgb()[:, :, 0]
    Image.fromarray(gray).convert(mode).save(tmp_path / "g.png")
    out = load_rgb(tmp_path / "g.png")
    expected = np.asarray(Image.fromarray(gray).convert(mode).convert("L"))
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], expected)


def test_la_and_rgba_drop_alpha(tmp_path: Path) -> None:
    rgb = _rgb()
    alpha = np.zeros(rgb.shape[:2], np.uint8)  # fully transparent: colour must survive anyway
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "rgba.png"), rgb)
    Image.fromarray(np.dstack([rgb[:, :, 0], alpha]), "LA").save(tmp_path / "la.png")
    out = load_rgb(tmp_path / "la.png")
    np.testing.assert_array_equal(out, np.repeat(rgb[:, :, :1], 3, axis=2))


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    image = Image.fromarray(_rgb()).convert("P")
    image.save(tmp_path / "p.png")
    expected = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(load_rgb(tmp_path / "p.png"), expected)
    image.info["transparency"] = 0
    image.save(tmp_path / "pt.png", transparency=0)
    np.testing.assert_array_equal(load_rgb(tmp_path / "pt.png"), expected)


def test_cmyk_converted(tmp_path: Path) -> None:
    cmyk = np.random.default_rng(1).integers(0, 256, (4, 6, 4), dtype=np.uint8)
    image = Image.fromarray(cmyk, "CMYK")
    image.save(tmp_path / "c.tif")
    np.testing.assert_array_equal(load_rgb(tmp_path / "c.tif"), np.asarray(image.convert("RGB")))


def test_16bit_gray_png_and_big_endian_tiff(tmp_path: Path) -> None:
    values = np.array([[0, 128, 129, 385], [386, 65406, 65407, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as check:
        assert check.mode == "I;16"
    out = load_rgb(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[:, :, 0], _round257(values))
    np.testing.assert_array_equal(out[:, :, 0], [[0, 0, 1, 1], [2, 254, 255, 255]])
    assert (out[:, :, 0] == out[:, :, 2]).all()

    Image.frombytes("I;16B", (4, 2), values.astype(">u2").tobytes()).save(tmp_path / "b16.tif")
    with Image.open(tmp_path / "b16.tif") as check:
        assert check.mode == "I;16B"
    np.testing.assert_array_equal(load_rgb(tmp_path / "b16.tif")[:, :, 1], _round257(values))


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_rgb_png_rounds_instead_of_truncating(tmp_path: Path, channels: int) -> None:
    values = np.random.default_rng(2).integers(0, 65536, (3, 5, channels)).astype(np.uint16)
    values[0, 0, :3] = [128, 129, 65535]  # 128/257 rounds down, 129/257 rounds up
    (tmp_path / "c16.png").write_bytes(_png16(values))
    out = load_rgb(tmp_path / "c16.png")
    np.testing.assert_array_equal(out, _round257(values[:, :, :3]))
    assert list(out[0, 0]) == [0, 1, 255]


def test_exif_orientation_applied(tmp_path: Path) -> None:
    rgb = _rgb(2, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    Image.fromarray(rgb).save(tmp_path / "o.png", exif=exif)
    out = load_rgb(tmp_path / "o.png")
    assert out.shape == (3, 2, 3)
    np.testing.assert_array_equal(out, np.rot90(rgb, k=-1))


def _with_exif_chunk(png: bytes, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    raw = exif.tobytes()
    chunk = struct.pack(">I", len(raw)) + b"eXIf" + raw + struct.pack(">I", zlib.crc32(b"eXIf" + raw) & 0xFFFFFFFF)
    iend = png.rindex(b"IEND") - 4
    return png[:iend] + chunk + png[iend:]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_same_for_16bit_and_8bit_paths(tmp_path: Path, orientation: int) -> None:
    """The 16-bit RGB path orients with its own table; it must agree with Pillow's exif_transpose."""
    values = np.random.default_rng(3).integers(0, 65536, (2, 3, 3)).astype(np.uint16)
    (tmp_path / "o16.png").write_bytes(_with_exif_chunk(_png16(values), orientation))
    eight = tmp_path / "o8.png"
    Image.fromarray(_round257(values)).save(eight)
    eight.write_bytes(_with_exif_chunk(eight.read_bytes(), orientation))
    from_16 = load_rgb(tmp_path / "o16.png")
    np.testing.assert_array_equal(from_16, load_rgb(eight))
    if orientation == 3:
        np.testing.assert_array_equal(from_16, _round257(values)[::-1, ::-1])


def test_corrupt_truncated_and_missing_files_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(ImageReadError) as info:
        load_rgb(bad)
    assert str(bad) in str(info.value) and info.value.path == str(bad)
    assert isinstance(info.value, SrsegError)

    save_png_atomic(tmp_path / "full.png", _rgb(64, 64))
    data = (tmp_path / "full.png").read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated.png"):
        load_rgb(truncated)

    with pytest.raises(ImageReadError, match="missing.jpg"):
        load_rgb(tmp_path / "missing.jpg")


def test_list_images_recursive_sorted_filtered(tmp_path: Path) -> None:
    for rel in [
        "b.png",
        "a/c.JPG",
        "a/d.jpeg",
        "z.webp",
        "x.bmp",
        "y.tif",
        "w.TIFF",
        "notes.txt",
        ".hidden.png",
        ".cache/e.png",
        "a/.f.png.tmp",
    ]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert list_images(tmp_path) == ["a/c.JPG", "a/d.jpeg", "b.png", "w.TIFF", "x.bmp", "y.tif", "z.webp"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")
