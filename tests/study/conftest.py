"""Study fixtures: method folders made from the real COCO-Stuff sample images, and a bundle.

"hr" is the image modcropped to a multiple of 4; the "methods" are cheap stand-ins for SR outputs
with visibly different texture (bicubic down/up, plus two sharpened variants, and a blur).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageFilter

from srseg.study.bundle import build_study


def make_method_folders(source: Path, out: Path) -> dict[str, Path]:
    folders = {name: out / name for name in ("hr", "bicubic", "sr_only", "multitask", "blurry")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.jpg")):
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        width, height = rgb.width - rgb.width % 4, rgb.height - rgb.height % 4
        hr = rgb.crop((0, 0, width, height))
        bicubic = hr.resize((width // 4, height // 4), Image.Resampling.BICUBIC).resize(
            (width, height), Image.Resampling.BICUBIC
        )
        variants = {
            "hr": hr,
            "bicubic": bicubic,
            "sr_only": bicubic.filter(ImageFilter.UnsharpMask(radius=2, percent=80, threshold=2)),
            "multitask": bicubic.filter(ImageFilter.UnsharpMask(radius=2, percent=200, threshold=1)),
            "blurry": hr.filter(ImageFilter.GaussianBlur(2)),
        }
        for name, image in variants.items():
            image.save(folders[name] / f"{path.stem}.png", compress_level=1)
    return folders


@pytest.fixture(scope="session")
def method_folders(cocostuff_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_method_folders(cocostuff_sample / "images" / "val2017", tmp_path_factory.mktemp("methods"))


@pytest.fixture(scope="session")
def study_bundle(method_folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bicubic / sr_only / multitask on 6 images, 64 px crops, 4 attention checks: 22 pairs."""
    methods = {name: method_folders[name] for name in ("bicubic", "sr_only", "multitask")}
    return build_study(
        methods,
        tmp_path_factory.mktemp("bundle") / "study",
        hr_dir=method_folders["hr"],
        num_images=6,
        crop_size=64,
        attention_checks=4,
        seed=0,
        show_reference=False,
    )


@contextlib.contextmanager
def werkzeug_server(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Run ``app`` on werkzeug's threaded server, bound to 127.0.0.1 port 0 (tests only)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="study-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture()
def serve_app():  # type: ignore[no-untyped-def]
    """``with serve_app(app) as base_url:`` runs the app on a free loopback port."""
    return werkzeug_server
