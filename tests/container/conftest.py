"""Fixtures of the image tests (marker ``image``, run by ``make test-image``): a Docker engine
(``$DOCKER_HOST``, or a private one started for the session and stopped by its PID unless it was
already running), and the project image, built by ``container/build.py`` when it is missing or
out of date."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from imagekit import TAG, engines, image_build


@pytest.fixture(scope="session")
def engine_host() -> Iterator[str]:
    """The Docker API endpoint: ``$DOCKER_HOST`` when set, else a private engine for the session."""
    external = os.environ.get("DOCKER_HOST")
    if external:
        yield external
        return
    was_running = engines.running() is not None
    started = engines.start()
    try:
        yield started.host
    finally:
        if not was_running:
            engines.stop(started.root)


@pytest.fixture(scope="session")
def docker(engine_host: str) -> image_build.Docker:
    return image_build.Docker(engine_host)


@pytest.fixture(scope="session")
def image(docker: image_build.Docker) -> str:
    """The project image, up to date with the checkout (built here when needed)."""
    return image_build.build(docker, TAG)
