"""Mask encodings: indices, 0/255 thresholds, value maps, colour tables, ignore, ROI, multi-label, palettes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetkit.data._raw import read_mask_array
from unetkit.data.masks import (
    MaskEncodingError,
    apply_roi,
    count_values,
    encode_mask,
    encode_multilabel,
    infer_mask_encoding,
    parse_colour,
    parse_colour_table,
    parse_value_map,
    resolve_classes,
)
from unetkit.data.options import DataConfig

RED, GREEN, BLUE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0)


def rgb(rows: list[list[tuple[int, int, int]]]) -> np.ndarray:
    return np.array(rows, dtype=np.uint8)


# --- grey masks -------------------------------------------------------------------------------------


def test_indices_as_stored_with_ignore_pixels() -> None:
    raw = np.array([[0, 1, 255], [1, 0, 0]], dtype=np.uint8)
    out = encode_mask(raw, DataConfig())
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [[0, 1, 255], [1, 0, 0]])


def test_0_255_mask_without_options_is_refused_with_the_fix() -> None:
    raw = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    with pytest.raises(
        MaskEncodingError, match=r"a\.png: masks hold \{0,255\}: pass --mask-threshold 128"
    ) as info:
        encode_mask(raw, DataConfig(), source="a.png")
    assert info.value.code == "mask_0_255"


def test_threshold_binarises_soft_edges_at_the_given_value() -> None:
    raw = np.array([[0, 1, 127, 128, 200, 255]], dtype=np.uint8)
    out = encode_mask(raw, DataConfig(mask_threshold=128))
    np.testing.assert_array_equal(out, [[0, 0, 0, 1, 1, 1]])
    assert resolve_classes(DataConfig(mask_threshold=128)) == ["background", "foreground"]


def test_threshold_then_value_map_inverts() -> None:
    raw = np.array([[0, 255, 250]], dtype=np.uint8)
    out = encode_mask(raw, DataConfig(mask_threshold=128, value_map={0: 1, 1: 0}))
    np.testing.assert_array_equal(out, [[1, 0, 0]])


def test_value_map_makes_zero_the_foreground() -> None:
    raw = np.array([[0, 255], [255, 255]], dtype=np.uint8)
    out = encode_mask(raw, DataConfig(value_map={0: 1, 255: 0}))
    np.testing.assert_array_equal(out, [[1, 0], [0, 0]])


def test_value_map_rejects_unmapped_values_naming_file_and_values() -> None:
    raw = np.array([[0, 7, 9]], dtype=np.uint8)
    with pytest.raises(ValueError, match=r"m\.png: mask values \{7, 9\} are not in the value map"):
        encode_mask(raw, DataConfig(value_map={0: 0}), source="m.png")


def test_value_map_keeps_ignore_index_unmapped() -> None:
    raw = np.array([[0, 255, 3]], dtype=np.uint8)
    out = encode_mask(raw, DataConfig(value_map={0: 0, 3: 1}))
    np.testing.assert_array_equal(out, [[0, 255, 1]])


def test_values_outside_declared_classes_name_file_and_values() -> None:
    raw = np.array([[0, 1, 2, 5]], dtype=np.uint8)
    with pytest.raises(
        ValueError, match=r"x\.png: mask values \{2, 5\} are outside the declared classes \(0\.\.1"
    ):
        encode_mask(raw, DataConfig(classes=["bg", "fg"]), source="x.png")


def test_declared_classes_accept_their_range_and_ignore() -> None:
    raw = np.array([[0, 1, 2, 255]], dtype=np.uint8)
    out = encode_mask(raw, DataConfig(classes=["a", "b", "c"]))
    np.testing.assert_array_equal(out, raw.astype(np.int64))


def test_float_masks_must_hold_whole_numbers() -> None:
    np.testing.assert_array_equal(
        encode_mask(np.array([[0.0, 2.0]], dtype=np.float32), DataConfig()), [[0, 2]]
    )
    with pytest.raises(ValueError, match="non-integer"):
        encode_mask(np.array([[0.0, 0.5]], dtype=np.float32), DataConfig())


def test_grey_stored_as_rgb_counts_as_grey() -> None:
    raw = np.repeat(np.array([[0, 1], [2, 1]], dtype=np.uint8)[..., None], 3, axis=-1)
    np.testing.assert_array_equal(encode_mask(raw, DataConfig()), [[0, 1], [2, 1]])


def test_volume_mask_passes_through() -> None:
    raw = np.zeros((4, 5, 6), dtype=np.uint8)
    raw[1, 2, 3] = 2
    out = encode_mask(raw, DataConfig())
    assert out.shape == (4, 5, 6) and out[1, 2, 3] == 2 and out.sum() == 2


def test_volume_with_three_slices_is_not_mistaken_for_colour() -> None:
    raw = np.zeros((5, 6, 3), dtype=np.uint8)
    raw[0, 0, 2] = 1
    raw[1, 0, 0] = 2  # channels differ: as a (H, W, 3) colour mask this would be "RGB without a table"
    out = encode_mask(raw, DataConfig(), spatial_ndim=3)
    np.testing.assert_array_equal(out, raw)
    assert count_values(raw, spatial_ndim=3) == ({0: 88, 1: 1, 2: 1}, {})
    with pytest.raises(MaskEncodingError, match="RGB"):
        encode_mask(raw, DataConfig())  # without the hint a trailing axis of 3 means colour


# --- colour masks -----------------------------------------------------------------------------------


def test_colour_table_maps_colours_in_table_order_and_ignores_ignore_colours() -> None:
    raw = rgb([[RED, GREEN], [BLACK, BLUE]])
    config = DataConfig(
        colour_table={"r": [255, 0, 0], "g": [0, 255, 0], "b": [0, 0, 255]}, ignore_colours=[[0, 0, 0]]
    )
    np.testing.assert_array_equal(encode_mask(raw, config), [[0, 1], [255, 2]])


def test_unknown_colours_are_listed_with_pixel_counts() -> None:
    raw = rgb([[RED, BLACK, BLACK], [BLUE, BLUE, BLUE]])
    config = DataConfig(colour_table={"r": [255, 0, 0]})
    with pytest.raises(MaskEncodingError) as info:
        encode_mask(raw, config, source="t.png")
    message = str(info.value)
    assert info.value.code == "unknown_colours"
    assert "t.png: 2 colour(s) not in the colour table" in message
    # most frequent first: blue 3 px, black 2 px
    assert message.index("#0000FF (3 px)") < message.index("#000000 (2 px)")


def test_rgb_mask_without_table_says_to_give_one() -> None:
    raw = rgb([[RED, GREEN], [BLUE, RED]])
    with pytest.raises(
        ValueError, match=r"mask is RGB with 3 colours: give a colour table \(--colour-table\)"
    ):
        encode_mask(raw, DataConfig())


def test_duplicate_colour_in_table_is_an_error() -> None:
    with pytest.raises(ValueError, match="twice"):
        encode_mask(rgb([[RED]]), DataConfig(colour_table={"a": [255, 0, 0], "b": [255, 0, 0]}))


# --- ROI and multi-label ----------------------------------------------------------------------------


def test_roi_outside_becomes_ignore() -> None:
    mask = np.array([[0, 1], [1, 0]], dtype=np.int64)
    roi = np.array([[255, 0], [255, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(apply_roi(mask, roi, ignore_index=255), [[0, 255], [1, 0]])
    with pytest.raises(ValueError, match="ROI is 1x2 but the mask is 2x2"):
        apply_roi(mask, roi[:1], ignore_index=255)


def test_roi_applies_to_every_multilabel_layer() -> None:
    layers = np.ones((2, 2, 2), dtype=np.int64)
    roi = np.array([[1, 0], [1, 1]], dtype=np.uint8)
    out = apply_roi(layers, roi, ignore_index=255)
    assert (out[:, 0, 1] == 255).all() and (out[:, 1, 1] == 1).all()


def test_multilabel_stacks_binary_layers_and_absent_classes_are_zero() -> None:
    a = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    out = encode_multilabel([a, None], (2, 2), DataConfig(task="multilabel"))
    assert out.shape == (2, 2, 2) and out.dtype == np.int64
    np.testing.assert_array_equal(out[0], [[0, 1], [1, 0]])
    assert out[1].sum() == 0


# --- palette files, histograms, parsing, inference -----------------------------------------------------


def test_palette_mask_gives_indices_without_table_and_colours_with_one(tmp_path: Path) -> None:
    im = Image.fromarray(np.array([[0, 1], [2, 1]], dtype=np.uint8), mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    path = tmp_path / "p.png"
    im.save(path)
    np.testing.assert_array_equal(read_mask_array(path, resolve_palette=False), [[0, 1], [2, 1]])
    colours = read_mask_array(path, resolve_palette=True)
    assert colours.shape == (2, 2, 3)
    assert tuple(colours[0, 1]) == RED and tuple(colours[1, 0]) == GREEN


def test_truncated_mask_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "m.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="unreadable mask"):
        read_mask_array(path, resolve_palette=False)


def test_count_values_grey_and_colour() -> None:
    values, colours = count_values(np.array([[0, 0, 3]], dtype=np.uint8))
    assert values == {0: 2, 3: 1} and colours == {}
    values, colours = count_values(rgb([[RED, RED, BLUE]]))
    assert values == {} and colours == {RED: 2, BLUE: 1}


def test_parsers() -> None:
    assert parse_value_map("0:1, 255:0") == {0: 1, 255: 0}
    with pytest.raises(ValueError, match="RAW:CLASS"):
        parse_value_map("0-1")
    assert parse_colour("#3C1098") == [60, 16, 152] == parse_colour("60,16,152")
    with pytest.raises(ValueError, match="not a colour"):
        parse_colour("#12345")
    assert parse_colour_table("land=#8429F6,water=226,169,41") == {
        "land": [132, 41, 246],
        "water": [226, 169, 41],
    }


def test_parse_colour_table_from_json(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"Building": "#3C1098", "Road": [110, 193, 228]}')
    assert parse_colour_table(str(path)) == {"Building": [60, 16, 152], "Road": [110, 193, 228]}


@pytest.mark.parametrize(
    ("values", "kind", "needs"),
    [
        ({0: 10, 1: 5}, "binary", False),
        ({0: 10, 255: 5}, "mask_0_255", True),
        ({0: 10, 1: 3, 255: 5}, "indices_with_ignore", False),
        ({0: 10, 1: 3, 2: 5}, "indices", False),
        ({0: 1000, 255: 980, 7: 3, 200: 2}, "soft_mask", True),
        ({0: 10, 128: 5}, "grey_levels", True),
        ({v: 1 for v in range(0, 200, 3)}, "not_labels", True),
    ],
)
def test_infer_mask_encoding(values: dict, kind: str, needs: bool) -> None:
    guess = infer_mask_encoding(values)
    assert guess.kind == kind and guess.needs_options is needs


def test_infer_rgb_suggests_a_table_ordered_by_frequency() -> None:
    guess = infer_mask_encoding(colours={RED: 5, BLUE: 50})
    assert guess.kind == "rgb_mask_no_table"
    assert guess.message.startswith("masks are RGB with 2 colours: give a colour table (--colour-table)")
    assert guess.options["colour_table"] == {"class_0": [0, 0, 255], "class_1": [255, 0, 0]}
    assert infer_mask_encoding({0: 10, 128: 5}).options["value_map"] == {0: 0, 128: 1}
