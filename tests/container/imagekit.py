"""Shared by the image tests: the checkout and the build tooling in ``container/``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "container"))

import build as image_build  # noqa: E402  (container/build.py)
import engine as engines  # noqa: E402  (container/engine.py)

TAG = os.environ.get("SRSEG_TEST_IMAGE", image_build.DEFAULT_TAG)

__all__ = ["REPO", "TAG", "engines", "image_build"]
