"""PNGStreamWriter: band-by-band PNG that Pillow decodes to exactly the rows written."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srseg.inference.png_stream import PNGStreamWriter


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_rows_written_in_bands_decode_exactly(set5: Path, channels: int) -> None:
    with Image.open(set5 / "HR" / "bird.png") as image:
        rgb = np.asarray(image.convert("RGB"))
    planes = (
        np.dstack([rgb, rgb[:, :, :1] // 2])[:, :, :channels]
        if channels != 2
        else np.dstack([rgb[:, :, 0], rgb[:, :, 1]])
    )
    height, width = planes.shape[:2]
    buffer = io.BytesIO()
    writer = PNGStreamWriter(buffer, width, height, channels)
    for start in range(0, height, 37):  # bands of uneven height
        writer.write_rows(planes[start : start + 37])
    writer.close()
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        assert decoded.mode == {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
        assert np.array_equal(np.asarray(decoded).reshape(height, width, channels), planes)


def test_incomplete_or_wrong_rows_are_refused() -> None:
    writer = PNGStreamWriter(io.BytesIO(), 5, 4, 3)
    with pytest.raises(ValueError, match=r"shape \(h, 5, 3\)"):
        writer.write_rows(np.zeros((2, 6, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        writer.write_rows(np.zeros((2, 5, 3), np.float32))
    writer.write_rows(np.zeros((3, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="stopped after 3 of 4 rows"):
        writer.close()
    with pytest.raises(ValueError, match="more rows"):
        writer.write_rows(np.zeros((2, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="1-4 channels"):
        PNGStreamWriter(io.BytesIO(), 5, 4, 5)
