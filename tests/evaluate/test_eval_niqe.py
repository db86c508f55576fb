"""NIQE with a pristine model fitted on real COCO images: sharp beats blurred, files round-trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from srseg.degrade.bicubic import imresize, modcrop
from srseg.evaluate.niqe import (
    NUM_FEATURES,
    NiqeModel,
    NiqeParamsError,
    fit_niqe_params,
    load_niqe_params,
    niqe,
    niqe_features,
    save_niqe_params,
)
from srseg.imageio import load_rgb


@pytest.fixture(scope="module")
def pristine(cocostuff_sample: Path) -> NiqeModel:
    """A model fitted on the 13 real train images (the val images are the test set)."""
    paths = sorted((cocostuff_sample / "images" / "train2017").glob("*.jpg"))
    assert len(paths) >= 5
    return fit_niqe_params(load_rgb(p) for p in paths)


def _val_images(cocostuff_sample: Path, count: int = 3) -> list[np.ndarray]:
    paths = sorted((cocostuff_sample / "images" / "val2017").glob("*.jpg"))[:count]
    return [np.ascontiguousarray(modcrop(load_rgb(p), 4)) for p in paths]


def _bicubic_x4(image: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(image).permute(2, 0, 1)
    return imresize(imresize(t, 0.25), 4.0).permute(1, 2, 0).numpy()


def test_model_shape_and_features(pristine: NiqeModel, cocostuff_sample: Path) -> None:
    assert pristine.mu.shape == (NUM_FEATURES,) and pristine.cov.shape == (NUM_FEATURES, NUM_FEATURES)
    assert np.all(np.isfinite(pristine.mu)) and np.allclose(pristine.cov, pristine.cov.T)
    image = _val_images(cocostuff_sample, 1)[0]
    features, sharpness = niqe_features(image)
    rows, cols = image.shape[0] // 96, image.shape[1] // 96
    assert features.shape == (rows * cols, NUM_FEATURES) and sharpness.shape == (rows * cols,)
    shapes = features[:, [0, 18]]  # GGD shape parameters at both scales lie on the search grid
    assert np.all((shapes >= 0.2) & (shapes <= 10.0))


def test_sharp_images_score_lower_than_blurred(pristine: NiqeModel, cocostuff_sample: Path) -> None:
    for image in _val_images(cocostuff_sample):
        sharp, blurred = niqe(image, pristine), niqe(_bicubic_x4(image), pristine)
        assert np.isfinite(sharp) and sharp >= 0.0
        assert sharp < blurred, (sharp, blurred)


def test_identical_statistics_give_zero_distance(pristine: NiqeModel, cocostuff_sample: Path) -> None:
    image = _val_images(cocostuff_sample, 1)[0]
    features, _ = niqe_features(image)
    own = NiqeModel(features.mean(axis=0), np.cov(features, rowvar=False))
    assert niqe(image, own) == pytest.approx(0.0, abs=1e-6)


def test_params_round_trip_and_bad_files_are_named(pristine: NiqeModel, tmp_path: Path) -> None:
    path = save_niqe_params(tmp_path / "niqe.npz", pristine)
    loaded = load_niqe_params(path)
    np.testing.assert_array_equal(loaded.mu, pristine.mu)
    np.testing.assert_array_equal(loaded.cov, pristine.cov)
    assert loaded.patch_size == 96
    with pytest.raises(NiqeParamsError, match="not found"):
        load_niqe_params(tmp_path / "absent.npz")
    np.savez(tmp_path / "short.npz", mu=np.zeros(5), cov=np.eye(5))
    with pytest.raises(NiqeParamsError, match=r"short\.npz.*must be \(36,\)"):
        load_niqe_params(tmp_path / "short.npz")
    np.savez(tmp_path / "nomu.npz", cov=np.eye(36))
    with pytest.raises(NiqeParamsError, match="missing arrays"):
        load_niqe_params(tmp_path / "nomu.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(NiqeParamsError, match="junk"):
        load_niqe_params(tmp_path / "junk.npz")


def test_image_smaller_than_a_patch_is_an_error(pristine: NiqeModel) -> None:
    with pytest.raises(ValueError, match="smaller than one 96x96 patch"):
        niqe(np.zeros((50, 200, 3), dtype=np.uint8), pristine)
