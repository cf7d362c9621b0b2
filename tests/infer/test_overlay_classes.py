"""Overlays written by predict and evaluate draw every class of a plan without a background class.

A land-cover colour table has no background: class 0 (e.g. Building) is a class like the others, and an
overlay that left it undrawn showed buildings as unlabelled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from unetkit.data.io import read_image
from unetkit.infer.files import write_outputs
from unetkit.infer.predictor import Prediction
from unetkit.infer.scoring import write_worst
from unetkit.runtime.overlay import DEFAULT_PALETTE

GREY = 100
# round(0.6 * 100 + 0.4 * colour) per channel, by hand
BLEND_RED = [152, 83, 88]  # class colour 1: (230, 57, 70)
BLEND_BLUE = [83, 114, 162]  # class colour 2: (58, 134, 255)


def _prediction(labels: np.ndarray) -> Prediction:
    return Prediction(labels=labels, probabilities=np.zeros((2, *labels.shape), dtype=np.float32))


def test_predict_overlay_draws_class_0_only_without_a_background(tmp_path: Path) -> None:
    source = tmp_path / "grey.png"
    Image.fromarray(np.full((6, 6), GREY, dtype=np.uint8)).save(source)
    labels = np.zeros((6, 6), dtype=np.int64)
    labels[:, 3:] = 1
    for background in (True, False):
        out = tmp_path / f"bg-{background}"
        out.mkdir()
        targets = {"mask": out / "grey.png", "overlay": out / "grey_overlay.png"}
        write_outputs(source, targets, read_image(source), _prediction(labels), background=background)
        overlay = np.asarray(Image.open(targets["overlay"]))
        left, right = overlay[1:-1, 0:2], overlay[1:-1, 4:6]  # away from the outline between the classes
        if background:
            assert (left == GREY).all()  # class 0 is background: untouched
            assert (right == BLEND_RED).all()
        else:
            assert (left == BLEND_RED).all() and (right == BLEND_BLUE).all()
        # the mask itself keeps the class numbers either way
        np.testing.assert_array_equal(np.asarray(Image.open(targets["mask"])), labels)


def test_worst_cases_draw_every_class_and_leave_unlabelled_truth_undrawn(tmp_path: Path) -> None:
    class Sample:
        key = "tile_1/scene.png"
        image = np.full((1, 4, 4), GREY, dtype=np.uint8)
        mask = np.array([[0, 0, 1, 1]] * 3 + [[255, 255, 255, 255]], dtype=np.uint8)

    write_worst(tmp_path, [(0.5, Sample(), np.zeros((4, 4), dtype=np.int64))], 1, background=False, ignore_index=255)
    pred = np.asarray(Image.open(tmp_path / "tile_1_scene.png_pred.png"))
    truth = np.asarray(Image.open(tmp_path / "tile_1_scene.png_truth.png"))
    assert (pred == BLEND_RED).all()  # class 0 everywhere: drawn, one region, so no outline
    assert (truth[3] == GREY).all()  # the unlabelled row is left as it is
    # interior pixels of the two truth classes (no neighbour of another label): blended in their colours
    assert (truth[0, 0] == BLEND_RED).all() and (truth[0, 3] == BLEND_BLUE).all()
    assert (truth[2, 0] == DEFAULT_PALETTE[0]).all()  # next to the unlabelled row: the opaque outline
