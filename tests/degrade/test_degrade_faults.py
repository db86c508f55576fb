"""``srseg degrade`` on a folder under bad input and kill -9, through the real CLI: one line naming
the failing input and how much is complete, no manifest for a partial set, resume on re-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from srseg.data.manifest import MANIFEST_NAME, Manifest
from srseg.degrade.folder import JOURNAL_NAME, degrade_folder

REPO = Path(__file__).resolve().parents[2]


def _degrade(source: Path, output: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "srseg",
        "--params",
        str(REPO / "params.yaml"),
        "degrade",
        "--input",
        str(source),
        "--output",
        str(output),
        "--scale",
        "4",
    ]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300
    )


def _pngs(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.glob("*.png"))}


def test_bad_image_names_it_writes_no_manifest_and_rerun_resumes(set5: Path, tmp_path: Path) -> None:
    source = tmp_path / "hr"
    source.mkdir()
    for name in ("baby", "bird", "butterfly"):  # good, bad, good
        (source / f"{name}.png").write_bytes((set5 / "HR" / f"{name}.png").read_bytes())
    (source / "bird.png").write_bytes((set5 / "HR" / "bird.png").read_bytes()[:3000])  # cut short
    out = tmp_path / "lr"
    proc = _run(_degrade(source, out))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"srseg degrade: error: {source / 'bird.png'}: cannot read image"), line
    assert "1 of 3 outputs are complete" in line and "no manifest" in line and "the same command resumes" in line
    assert not (out / MANIFEST_NAME).exists() and list(_pngs(out)) == ["baby.png"]
    first = _pngs(out)["baby.png"]

    (source / "bird.png").write_bytes((set5 / "HR" / "bird.png").read_bytes())
    degrade_folder(source, out, scale=4, progress=False)  # what the same command runs, in this process
    assert _pngs(out)["baby.png"] == first, "the finished output was kept"
    manifest = Manifest.load(out)
    assert [s.image for s in manifest.splits["images"]] == ["baby.png", "bird.png", "butterfly.png"]
    assert not (out / JOURNAL_NAME).exists()


def test_output_that_contains_the_input_is_refused(set5: Path, tmp_path: Path) -> None:
    proc = _run(_degrade(tmp_path / "data" / "hr", tmp_path / "data"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .endswith(
            f"output {tmp_path / 'data'} contains the input {tmp_path / 'data' / 'hr'}; choose a folder outside it"
        )
    )


def test_kill_9_mid_folder_then_rerun_equals_a_clean_run(cocostuff_sample: Path, tmp_path: Path) -> None:
    source = tmp_path / "hr"
    source.mkdir()
    for path in sorted((cocostuff_sample / "images" / "train2017").glob("*.jpg"))[:10]:
        with Image.open(path) as image:
            image.save(source / f"{path.stem}.png")
    out, clean = tmp_path / "lr", tmp_path / "clean"
    child = subprocess.Popen(
        _degrade(source, out),
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = out / JOURNAL_NAME
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if journal.exists() and journal.read_text().count('"key"') >= 2:
                break
            time.sleep(0.01)
        assert child.poll() is None, "degrade finished before it could be killed"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert not (out / MANIFEST_NAME).exists()
    kept = {json.loads(line)["key"] for line in journal.read_text().splitlines() if '"key"' in line}
    before = {name: _pngs(out)[name] for name in kept}
    assert _run(_degrade(source, out)).returncode == 0
    degrade_folder(source, clean, scale=4, progress=False)
    after = _pngs(out)
    assert {name: after[name] for name in kept} == before, "outputs finished before the kill were kept"
    assert {n: v[1] for n, v in after.items()} == {n: v[1] for n, v in _pngs(clean).items()}
    assert Manifest.load(out).splits == Manifest.load(clean).splits
    assert not list(out.glob(".*"))  # no journal, no temp files
