"""Overlays: shape/dtype, exact colours where the mask is, untouched background, outlines."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from unetkit.runtime.overlay import (
    DEFAULT_PALETTE,
    class_colour,
    drawn_labels,
    make_overlay,
    outline_pixels,
    to_uint8_rgb,
)


def _square_mask() -> np.ndarray:
    mask = np.zeros((9, 10), dtype=np.int64)
    mask[2:7, 3:8] = 1  # 5x5 square: 16 border pixels, 3x3 interior
    mask[0, 0] = 2
    return mask


def test_grey_image_blended_interior_outline_and_untouched_background() -> None:
    image = np.full((9, 10), 100, dtype=np.uint8)
    mask = _square_mask()
    out = make_overlay(image, mask, alpha=0.4)
    assert out.shape == (9, 10, 3) and out.dtype == np.uint8
    red = DEFAULT_PALETTE[0]
    assert red == (230, 57, 70)
    # interior: round(0.6 * 100 + 0.4 * colour) by hand
    np.testing.assert_array_equal(out[3:6, 4:7], np.broadcast_to([152, 83, 88], (3, 3, 3)))
    # square border: the opaque class colour
    border = (mask == 1).copy()
    border[3:6, 4:7] = False
    assert (out[border] == red).all()
    # class 2 single pixel is all border
    assert tuple(out[0, 0]) == DEFAULT_PALETTE[1]
    # background unchanged
    assert (out[mask == 0] == 100).all()


def test_rgb_image_without_outline_and_custom_colours() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(9, 10, 3), dtype=np.uint8)
    mask = _square_mask()
    out = make_overlay(image, mask, colours={1: (0, 0, 255), 2: (255, 255, 0)}, alpha=0.5, outline=False)
    np.testing.assert_array_equal(out[mask == 0], image[mask == 0])
    expected = np.rint(0.5 * image[mask == 1].astype(float) + 0.5 * np.array([0, 0, 255])).astype(np.uint8)
    np.testing.assert_array_equal(out[mask == 1], expected)
    seq = make_overlay(image, mask, colours=[(0, 0, 0), (0, 0, 255), (255, 255, 0)], alpha=0.5, outline=False)
    np.testing.assert_array_equal(seq, out)
    assert (make_overlay(image, mask, alpha=0.0, outline=False) == image).all()
    assert (make_overlay(image, mask, alpha=1.0, outline=False)[mask == 1] == DEFAULT_PALETTE[0]).all()


def test_outline_pixels_and_width() -> None:
    mask = _square_mask()
    edges = outline_pixels(mask) & (mask == 1)
    assert edges.sum() == 16 and not edges[3:6, 4:7].any()
    image = np.zeros((9, 10), dtype=np.uint8)
    thick = make_overlay(image, mask, outline_width=2)
    assert (thick[mask == 1][:, 0] == 230).sum() == 24  # 5x5 minus the centre pixel
    full = np.ones((4, 4), dtype=int)  # a region touching only the image border has no outline
    assert not outline_pixels(full).any()


def test_image_conversions() -> None:
    np.testing.assert_array_equal(to_uint8_rgb(np.array([[0.0, 0.5, 1.0]]))[0, :, 0], [0, 128, 255])
    np.testing.assert_array_equal(
        to_uint8_rgb(np.array([[0, 1000, 2000]], dtype=np.uint16))[0, :, 1], [0, 128, 255]
    )
    np.testing.assert_array_equal(to_uint8_rgb(np.array([[-1.0, 1.0]]))[0, :, 2], [0, 255])
    np.testing.assert_array_equal(to_uint8_rgb(np.array([[3, 200]], dtype=np.int32))[0, :, 0], [3, 200])
    np.testing.assert_array_equal(to_uint8_rgb(np.array([[True, False]]))[0, :, 0], [255, 0])
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    assert to_uint8_rgb(rgba).shape == (2, 2, 3) and to_uint8_rgb(rgba).max() == 0
    assert to_uint8_rgb(np.zeros((2, 2, 1), dtype=np.uint8)).shape == (2, 2, 3)


def test_default_palette_is_distinct_and_not_grey() -> None:
    colours = [np.array(class_colour(k), dtype=float) for k in range(1, 21)]
    for a, b in itertools.combinations(colours, 2):
        assert np.abs(a - b).sum() > 60
    for c in colours:
        assert c.max() - c.min() > 60  # saturated: stands out on grey-scale images


def test_bad_inputs_raise() -> None:
    image = np.zeros((4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="does not match"):
        make_overlay(image, np.zeros((4, 5), dtype=int))
    with pytest.raises(ValueError, match="no colour given for class 2"):
        make_overlay(image, np.full((4, 4), 2), colours={1: (1, 2, 3)})
    with pytest.raises(ValueError, match="alpha"):
        make_overlay(image, np.zeros((4, 4), dtype=int), alpha=1.5)
    with pytest.raises(ValueError, match=">= 0"):
        make_overlay(image, np.full((4, 4), -1))
    with pytest.raises(ValueError, match="integer label map"):
        make_overlay(image, np.zeros((4, 4), dtype=float))
    with pytest.raises(ValueError, match="background"):
        class_colour(0)


def test_drawn_labels_shift_every_class_up_without_a_background_and_blank_the_ignored() -> None:
    labels = np.array([[0, 1], [2, 255]])
    np.testing.assert_array_equal(drawn_labels(labels, background=True), labels)
    np.testing.assert_array_equal(drawn_labels(labels, background=False), [[1, 2], [3, 256]])
    np.testing.assert_array_equal(drawn_labels(labels, background=True, ignore=255), [[0, 1], [2, 0]])
    np.testing.assert_array_equal(drawn_labels(labels, background=False, ignore=255), [[1, 2], [3, 0]])
    # class 0 of a plan without background is drawn, in the first palette colour
    image = np.full((2, 2), 100, dtype=np.uint8)
    out = make_overlay(image, drawn_labels(np.zeros((2, 2), dtype=np.int64), background=False), outline=False)
    np.testing.assert_array_equal(out, np.broadcast_to([152, 83, 88], (2, 2, 3)))
