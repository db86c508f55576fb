"""``srseg upscale`` under bad input and faults, through the real CLI in child processes: inputs
are never written, memory is bounded by the tile size (not the image size), every failure is one
line naming the file, and a batch that stops says how far it got and resumes (also after kill -9)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from srseg.export import save_torchscript, trace_torchscript
from srseg.inference.upscale import JOURNAL_NAME, UpscaleError, read_image, upscale

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SET5 = ("baby", "bird", "butterfly")


class _Nearest(nn.Module):
    """x4 nearest-neighbour upscaling: a real (TorchScript) model file that costs almost nothing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=4.0, mode="nearest")


@pytest.fixture(scope="module")
def nearest(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("model") / "nearest.pt"
    save_torchscript(trace_torchscript(_Nearest(), torch.rand(1, 3, 8, 8)), path)
    return str(path)


@pytest.fixture()
def photos(set5: Path, tmp_path: Path) -> Path:
    """Three 64x64 crops of real images."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in SET5:
        with Image.open(set5 / "HR" / f"{name}.png") as image:
            image.convert("RGB").crop((100, 100, 164, 164)).save(folder / f"{name}.png")
    return folder


def _cli(argv: list[str], timeout: float = 300, preexec=None, **spec: object) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(HERE / "upscale_child.py"), json.dumps({"argv": argv, **spec})],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec,
    )


def _one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("srseg upscale: error: "), line
    for needle in needles:
        assert needle in line, line
    return line


def _snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


def test_output_folder_equal_to_the_input_folder_is_refused(photos: Path) -> None:
    before = _snapshot(photos)
    proc = _cli(["upscale", str(photos), "--model", "bicubic", "--output", str(photos)])
    _one_line_error(proc, f"output folder '{photos}' is the input folder", "inputs are never overwritten")
    assert _snapshot(photos) == before


def test_outputs_inside_around_or_onto_inputs_are_refused(photos: Path, tmp_path: Path) -> None:
    before = _snapshot(photos)
    (tmp_path / "link").symlink_to(photos)
    cases = [
        ([photos], photos / "sr", "lies inside the input folder"),
        ([photos], tmp_path / "link", "is the input folder"),
        ([photos], tmp_path, "contains the input folder"),
        ([photos / "baby.png"], photos, "is the input file"),
    ]
    for inputs, output, message in cases:
        with pytest.raises(UpscaleError, match=message):
            upscale(inputs, output, "bicubic", progress=False)
    assert _snapshot(photos) == before


def test_unreadable_image_error_names_the_file(photos: Path, tmp_path: Path) -> None:
    bad = photos / "notes.png"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match=f"{bad}: cannot read image .not a recognised image format.") as info:
        read_image(bad)
    assert "BytesIO" not in str(info.value)


def test_memory_is_bounded_by_the_tile_not_the_image(nearest: str, tmp_path: Path) -> None:
    # 2000x2000 x4: the 8-bit output alone is 183 MiB; before, upscale held it about three
    # times over (tensor, its HWC copy, Pillow's RGBX copy). Now the peak grows by the decoded
    # input, a few bands and allocator slack (40-100 MiB measured), less than one output copy.
    y, x = np.mgrid[0:2000, 0:2000]
    image = np.stack([(x * 255 // 1999), (y * 255 // 1999), ((x + y) % 256)], axis=2).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "big.png", compress_level=1)
    Image.fromarray(image[:300, :300]).save(tmp_path / "warmup.png")
    common = ["--model", nearest, "--tile", "64", "--device", "cpu"]
    proc = _cli(
        ["upscale", str(tmp_path / "big.png"), *common, "--output", str(tmp_path / "out")],
        warmup_argv=["upscale", str(tmp_path / "warmup.png"), *common, "--output", str(tmp_path / "warm")],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    peak = json.loads(proc.stdout.strip().splitlines()[-1])
    output_mib = 8000 * 8000 * 3 / 2**20
    assert peak["peak_mb"] - peak["base_mb"] < output_mib, (peak, output_mib)
    with Image.open(tmp_path / "out" / "big.png") as out:
        assert out.size == (8000, 8000) and out.mode == "RGB"
        got = np.asarray(out)
    assert np.array_equal(got[::4, ::4], image) and np.array_equal(got[3::4, 3::4], image)


def _limit_address_space(limit: int):  # type: ignore[no-untyped-def]
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


@pytest.mark.parametrize("preflight", [True, False], ids=["preflight", "allocation-fails"])
def test_image_that_cannot_fit_is_a_one_line_error(nearest: str, tmp_path: Path, preflight: bool) -> None:
    # untiled, a 3000x3000 x4 image needs > 10 GiB; under an 8 GiB address-space limit (ulimit -v)
    # the pre-flight check refuses it before decoding, and were the estimate wrong, the failed
    # allocation is still one line naming the file
    Image.fromarray(np.full((3000, 3000, 3), 90, dtype=np.uint8)).save(tmp_path / "huge.png")
    argv = [
        "upscale",
        str(tmp_path / "huge.png"),
        "--model",
        nearest,
        "--tile",
        "0",
        "--device",
        "cpu",
        "--output",
        str(tmp_path / "out"),
    ]
    proc = _cli(argv, no_preflight=not preflight, preexec=_limit_address_space(8 << 30))
    if preflight:
        _one_line_error(proc, f"{tmp_path / 'huge.png'}: 3000x3000 x4 needs about", "GiB is available; use --tile")
    else:
        _one_line_error(proc, f"{tmp_path / 'huge.png'}: out of memory while upscaling")
    assert not (tmp_path / "out" / "huge.png").exists()
    assert not [p for p in (tmp_path / "out").glob(".*.tmp")]


def test_a_bad_image_stops_the_batch_naming_it_and_the_rerun_resumes(photos: Path, tmp_path: Path) -> None:
    (photos / "bird.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # good, bad, good (sorted)
    out = tmp_path / "out"
    argv = ["upscale", str(photos), "--model", "bicubic", "--output", str(out)]
    proc = _cli(argv)
    _one_line_error(
        proc,
        f"{photos / 'bird.png'}: cannot read image",
        "1 of 3 outputs are complete",
        JOURNAL_NAME,
        "the same command resumes",
    )
    assert sorted(p.name for p in out.iterdir()) == [JOURNAL_NAME, "baby.png"]
    first = _snapshot(out)["baby.png"]

    with Image.open(photos / "baby.png") as image:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "bird.png")
    # the same command again (in this process, to spare a second interpreter start)
    assert len(upscale([photos], out, "bicubic", progress=False)) == 3
    assert _snapshot(out)["baby.png"] == first, "the finished output was kept, not redone"
    assert sorted(p.name for p in out.glob("*.png")) == ["baby.png", "bird.png", "butterfly.png"]
    done = _snapshot(out)
    upscale([photos], out, "bicubic", progress=False)
    assert _snapshot(out) == {**done, JOURNAL_NAME: _snapshot(out)[JOURNAL_NAME]}, "a finished batch is a no-op"


def test_kill_9_mid_batch_then_rerun_gives_the_clean_result(set5: Path, nearest: str, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    with Image.open(set5 / "HR" / "baby.png") as image:
        rgb = image.convert("RGB")
        for i in range(8):
            rgb.crop((20 * i, 20 * i, 20 * i + 200, 20 * i + 200)).save(photos / f"p{i}.png")
    out, clean = tmp_path / "out", tmp_path / "clean"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = ["upscale", str(photos), "--model", nearest, "--tile", "64", "--output"]
    child = subprocess.Popen(
        [sys.executable, str(HERE / "upscale_child.py"), json.dumps({"argv": argv + [str(out)]})],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = out / JOURNAL_NAME
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if journal.exists() and journal.read_text().count('"key"') >= 2:
                break
            time.sleep(0.02)
        assert child.poll() is None, "the batch finished before it could be killed"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    kept = {json.loads(line)["key"] for line in journal.read_text().splitlines() if '"key"' in line}
    assert 2 <= len(kept) < 8
    before = {name: _snapshot(out)[name] for name in kept}
    upscale([photos], out, nearest, tile=64, progress=False)  # the same command again
    upscale([photos], clean, nearest, tile=64, progress=False)
    after = _snapshot(out)
    assert {name: after[name] for name in kept} == before, "outputs finished before the kill were kept"
    assert {n: v[2] for n, v in after.items() if n.endswith(".png")} == {
        n: v[2] for n, v in _snapshot(clean).items() if n.endswith(".png")
    }
    assert not list(out.glob(".*.tmp"))
