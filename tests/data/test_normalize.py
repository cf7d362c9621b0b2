"""Intensity normalisation: per image (zscore, minmax), per dataset (fixed statistics), errors."""

from __future__ import annotations

import numpy as np
import pytest

from unetkit.data.normalize import normalize, normalize_for
from unetkit.data.options import DataConfig


def test_dataset_mode_uses_the_given_statistics_for_every_image() -> None:
    image = np.array([[[0, 10], [20, 30]], [[100, 100], [100, 200]]], np.uint8)  # (2, 2, 2)
    out = normalize(image, mode="dataset", mean=[10.0, 100.0], std=[5.0, 50.0])
    expected = np.array([[[-2, 0], [2, 4]], [[0, 0], [0, 2]]], np.float32)  # (x - m) / s by hand
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32
    # Unlike zscore, the map does not depend on the image: a brighter image stays brighter.
    brighter = normalize(image + 10, mode="dataset", mean=[10.0, 100.0], std=[5.0, 50.0])
    np.testing.assert_allclose(brighter - out, [[[2, 2], [2, 2]], [[0.2, 0.2], [0.2, 0.2]]], atol=1e-6)
    np.testing.assert_allclose(normalize(image + 10, mode="zscore"), normalize(image, mode="zscore"), atol=1e-6)


def test_zscore_and_minmax_by_hand() -> None:
    image = np.array([[[1.0, 3.0]]])  # one channel: mean 2, population std 1
    np.testing.assert_allclose(normalize(image, mode="zscore"), [[[-1.0, 1.0]]])
    np.testing.assert_allclose(normalize(image, mode="minmax"), [[[0.0, 1.0]]])
    np.testing.assert_array_equal(normalize(image, mode="none"), image.astype(np.float32))


def test_dataset_mode_in_3d_and_a_zero_std_is_clamped() -> None:
    volume = np.full((1, 2, 2, 2), 7.0)
    np.testing.assert_allclose(normalize(volume, mode="dataset", mean=[5.0], std=[0.0]), 2.0 / 1e-6, rtol=1e-6)


def test_normalize_for_reads_the_plan() -> None:
    image = np.array([[[4.0, 8.0]]])
    data = DataConfig(normalization="dataset", intensity_mean=[4.0], intensity_std=[2.0])
    np.testing.assert_allclose(normalize_for(image, data), [[[0.0, 2.0]]])
    np.testing.assert_allclose(normalize_for(image, DataConfig()), [[[-1.0, 1.0]]])  # default zscore


def test_missing_or_wrong_statistics_are_clear_errors() -> None:
    image = np.zeros((3, 4, 4))
    with pytest.raises(ValueError, match="intensity_mean and data.intensity_std with one value per channel"):
        normalize(image, mode="dataset")
    with pytest.raises(ValueError, match=r"\(3\); got 1 and 3"):
        normalize(image, mode="dataset", mean=[0.0], std=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="unknown normalization 'global'"):
        normalize(image, mode="global")
