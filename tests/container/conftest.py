"""Fixtures of the image tests (marker ``image``, run by ``make test-image``): a private Docker
engine started for the session and stopped by its PID (unless one was already running), and the
project image, built by ``container/build.py`` when it is missing or out of date."""

from __future__ import annotations

import os
from typing import Iterator

import pytest
from imagekit import TAG, engines, image_build


@pytest.fixture(scope="session")
def engine() -> Iterator[engines.Engine]:
    if os.environ.get("DOCKER_HOST"):
        pytest.skip("DOCKER_HOST is set: the image tests start their own engine; unset it")
    was_running = engines.running() is not None
    started = engines.start()
    try:
        yield started
    finally:
        if not was_running:
            engines.stop(started.root)


@pytest.fixture(scope="session")
def docker(engine: engines.Engine) -> image_build.Docker:
    return image_build.Docker(engine.host)


@pytest.fixture(scope="session")
def image(docker: image_build.Docker) -> str:
    """The project image, up to date with the checkout (built here when needed)."""
    return image_build.build(docker, TAG)
