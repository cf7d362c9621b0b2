"""Post-processing on small hand-drawn masks with hand-computed results."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label as sk_label

from unetkit.runtime.postprocess import (
    fill_holes,
    keep_largest_component,
    label_instances,
    postprocess,
    probabilities_to_labels,
    probs_to_mask,
    remove_small_components,
)


def _grid(text: str) -> np.ndarray:
    """Rows of digits -> int label map (readable masks in tests)."""
    return np.array([[int(c) for c in row.strip()] for row in text.strip().splitlines()], dtype=np.int64)


def test_probs_to_mask_modes() -> None:
    p1 = np.array([[[0.2, 0.5, 0.51]]])
    np.testing.assert_array_equal(probs_to_mask(p1), [[0, 0, 1]])  # auto -> binary; strictly above 0.5
    np.testing.assert_array_equal(probs_to_mask(p1, threshold=0.3), [[0, 1, 1]])
    p3 = np.array([[[0.7, 0.1]], [[0.2, 0.3]], [[0.1, 0.6]]])
    np.testing.assert_array_equal(probs_to_mask(p3), [[0, 2]])
    np.testing.assert_array_equal(probabilities_to_labels(p3), [[0, 2]])
    np.testing.assert_array_equal(
        probs_to_mask(p3, mode="multilabel", threshold=0.25),
        [[[True, False]], [[False, True]], [[False, True]]],
    )
    # Two classes take a one-pass comparison: the same labels as argmax, ties going to class 0.
    p2 = np.random.default_rng(0).random((2, 33, 31)).astype(np.float32)
    p2[1, :3] = p2[0, :3]
    labels = probs_to_mask(p2)
    np.testing.assert_array_equal(labels, np.argmax(p2, axis=0))
    assert labels.dtype == np.int64 and not labels[:3].any()
    with pytest.raises(ValueError, match="binary mode needs one channel"):
        probs_to_mask(p3, mode="binary")
    with pytest.raises(ValueError, match="unknown mode"):
        probs_to_mask(p3, mode="softmax")


def test_remove_small_components_per_class() -> None:
    mask = _grid("""
        1100002
        1100002
        0000000
        0010330
        0000000
    """)
    expected = _grid("""
        1100002
        1100002
        0000000
        0000330
        0000000
    """)
    np.testing.assert_array_equal(remove_small_components(mask, min_size=2), expected)
    np.testing.assert_array_equal(
        remove_small_components(mask, min_size=3),
        _grid("""
        1100000
        1100000
        0000000
        0000000
        0000000
    """),
    )
    np.testing.assert_array_equal(
        remove_small_components(mask, min_size=3, classes=[3]),
        _grid("""
        1100002
        1100002
        0000000
        0010000
        0000000
    """),
    )
    np.testing.assert_array_equal(remove_small_components(mask, min_size=0), mask)


def test_connectivity_of_diagonal_pixels() -> None:
    diag = _grid("""
        100
        010
        001
    """)
    assert remove_small_components(diag, min_size=2, connectivity=1).sum() == 0  # three singletons
    np.testing.assert_array_equal(remove_small_components(diag, min_size=2, connectivity=2), diag)  # one of 3
    as_bool = remove_small_components(diag.astype(bool), min_size=2, connectivity=2)
    assert as_bool.dtype == bool and as_bool.sum() == 3


def test_remove_small_components_3d() -> None:
    mask = np.zeros((3, 4, 4), dtype=np.uint8)
    mask[0, 0, 0] = 1
    mask[1:, 2:, 2:] = 1  # 8 voxels
    out = remove_small_components(mask, min_size=2)
    assert out.dtype == np.uint8 and out[0, 0, 0] == 0 and out.sum() == 8


def test_fill_holes_only_background_and_size_limit() -> None:
    mask = _grid("""
        1111100
        1002100
        1000100
        1111100
        0000000
    """)
    filled = fill_holes(mask, classes=[1])
    np.testing.assert_array_equal(
        filled,
        _grid("""
        1111100
        1112100
        1111100
        1111100
        0000000
    """),
    )  # the class-2 pixel inside is kept
    ring = _grid("""
        11111111
        10110001
        11111111
    """)
    np.testing.assert_array_equal(
        fill_holes(ring, max_hole_size=1),
        _grid("""
        11111111
        11110001
        11111111
    """),
    )  # hole of 1 filled, hole of 3 kept
    assert fill_holes(ring).min() == 1


def test_fill_holes_diagonal_gap_depends_on_connectivity() -> None:
    ring = _grid("""
        0111
        1001
        1001
        1111
    """)  # the hole touches the outside only through a diagonal (0,0)-(1,1)
    assert (fill_holes(ring, connectivity=1)[1:3, 1:3] == 1).all()
    np.testing.assert_array_equal(fill_holes(ring, connectivity=2), ring)
    as_bool = fill_holes(ring.astype(bool))
    assert as_bool.dtype == bool and as_bool[1:3, 1:3].all()


def test_keep_largest_component_per_class() -> None:
    mask = _grid("""
        1100122
        1100000
        0000022
        2220000
    """)
    np.testing.assert_array_equal(
        keep_largest_component(mask),
        _grid("""
        1100000
        1100000
        0000000
        2220000
    """),
    )


def test_label_instances_numbers_each_class_then_scan_order() -> None:
    mask = _grid("""
        1102
        0002
        1020
    """)
    instances, owner = label_instances(mask)
    np.testing.assert_array_equal(instances, [[1, 1, 0, 3], [0, 0, 0, 3], [2, 0, 4, 0]])
    np.testing.assert_array_equal(owner, [0, 1, 1, 2, 2])
    assert instances.dtype == np.int32


def test_label_instances_matches_skimage_on_random_mask() -> None:
    mask = (np.random.default_rng(0).random((40, 50)) > 0.6).astype(np.int64)
    for connectivity in (1, 2):
        instances, owner = label_instances(mask, connectivity=connectivity)
        reference = sk_label(mask, connectivity=connectivity)
        assert instances.max() == reference.max() == len(owner) - 1
        np.testing.assert_array_equal(instances > 0, mask > 0)
        pairs = set(zip(instances[mask > 0].tolist(), reference[mask > 0].tolist(), strict=True))
        assert len(pairs) == reference.max()  # one-to-one correspondence of components


def test_postprocess_composes() -> None:
    probs = np.zeros((1, 5, 6))
    probs[0, 0, 0] = 0.9  # speck
    probs[0, 1:4, 1:5] = 0.9
    probs[0, 2, 2] = 0.1  # hole
    out = postprocess(probs, min_size=2, fill=True)
    expected = np.zeros((5, 6), dtype=np.int64)
    expected[1:4, 1:5] = 1
    np.testing.assert_array_equal(out, expected)
    multilabel = postprocess(np.stack([probs[0], probs[0]]), mode="multilabel", min_size=2)
    assert multilabel.shape == (2, 5, 6) and multilabel.dtype == bool and multilabel.sum() == 2 * 11


def test_bad_masks_raise() -> None:
    with pytest.raises(ValueError, match="integer label map"):
        remove_small_components(np.zeros((3, 3)), min_size=2)
    with pytest.raises(ValueError, match="connectivity"):
        keep_largest_component(np.zeros((3, 3), dtype=int), connectivity=3)
