"""Fixtures for the training tests (helpers live in ``trainkit.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from trainkit import TRAIN_IDS, build_prepared_root


@pytest.fixture(scope="session")
def prepared_root(cocostuff_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six full-size real training images and two validation images."""
    return build_prepared_root(cocostuff_sample, tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="session")
def patch_root(cocostuff_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real 32x32 training patches (one possible crop each) and two validation images."""
    return build_prepared_root(cocostuff_sample, tmp_path_factory.mktemp("patches"), train_ids=TRAIN_IDS[:4], crop=32)


@pytest.fixture(autouse=True)
def _restore_torch_determinism() -> Iterator[None]:
    """Trainers switch torch's process-wide deterministic mode; keep it from leaking into other tests."""
    from srseg.train.engine import DeterminismState

    state = DeterminismState()
    yield
    state.restore()


@pytest.fixture(scope="package", autouse=True)
def _one_intra_op_thread() -> Iterator[None]:
    """Train the tiny test models on one intra-op thread (subprocesses get OMP_NUM_THREADS=1).

    Their tensors are too small to gain from a second thread, and on a shared 2-vCPU machine an
    OpenMP barrier stalls for up to a second whenever the sibling vCPU is busy elsewhere.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
