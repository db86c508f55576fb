"""check_image: complete decode (corrupt-data warnings are errors) and size against the annotation."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from srseg.data.imagecheck import ImageCheckError, check_image


def test_real_images_pass_in_every_colour_mode(cocostuff_sample: Path, tmp_path: Path) -> None:
    for path in sorted((cocostuff_sample / "images").rglob("*.jpg")):
        with Image.open(path) as image:
            assert check_image(path, image.size) == image.size
    source = next((cocostuff_sample / "images" / "val2017").glob("*.jpg"))
    with Image.open(source) as image:
        for mode in ("L", "CMYK"):
            image.convert(mode).save(tmp_path / f"{mode}.jpg", quality=90)
            assert check_image(tmp_path / f"{mode}.jpg", image.size) == image.size
        image.save(tmp_path / "x.png")
        assert check_image(tmp_path / "x.png", None) == image.size


def test_damage_and_wrong_size_are_named(cocostuff_sample: Path, tmp_path: Path) -> None:
    source = next((cocostuff_sample / "images" / "val2017").glob("*.jpg"))
    data = source.read_bytes()
    size = Image.open(io.BytesIO(data)).size
    cases = {
        "cut.jpg": data[:-2],
        "zeros.jpg": data[: len(data) // 2] + bytes(len(data) - len(data) // 2 - 2) + b"\xff\xd9",
        "flipped.jpg": bytes(b ^ 0x55 if i % 7 == 0 and len(data) // 2 <= i < len(data) // 2 + 200 else b
                             for i, b in enumerate(data)),
    }
    for name, damaged in cases.items():
        (tmp_path / name).write_bytes(damaged)
        with pytest.raises(ImageCheckError, match="damaged JPEG"):
            check_image(tmp_path / name, size)
    (tmp_path / "png.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(ImageCheckError, match="not a decodable image"):
        check_image(tmp_path / "png.png", None)
    with pytest.raises(ImageCheckError, match=rf"decodes to {size[0]}x{size[1]}, but the annotation says 1x2"):
        check_image(source, (1, 2))
