"""A run folder written by an earlier unetkit (tests/fixtures/run_v1, made by make_run_v1.py) still loads and
predicts what it predicted then: plan format 1 and checkpoint format 1 stay readable as the code changes."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from unetkit.cli import main
from unetkit.config import Plan
from unetkit.data.io import read_image
from unetkit.infer.predictor import Predictor

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RUN = FIXTURES / "run_v1"
# The stored probabilities are rounded to 5 decimals; kernels differ slightly between CPUs.
ATOL = 5e-5


@pytest.fixture(scope="module")
def expected() -> dict:  # type: ignore[type-arg]
    return json.loads((RUN / "expected.json").read_text())


@pytest.fixture(scope="module")
def image(datasets: Path) -> np.ndarray:
    sys.path.insert(0, str(FIXTURES))
    try:
        from make_run_v1 import input_crop
    finally:
        sys.path.remove(str(FIXTURES))
    return input_crop(datasets)


def test_the_fixture_is_an_old_format_run() -> None:
    assert Plan.load(RUN / "plan.yaml").format_version == 1
    assert json.loads((RUN / "best" / "config.json").read_text())["format_version"] == 1


def test_an_old_run_predicts_as_it_did(expected: dict, image: np.ndarray) -> None:  # type: ignore[type-arg]
    # The tiles it used then: newer plans predict an image that fits in one pass (infer.max_pass_pixels), which
    # changes the blend at tile borders, not the format this test guards.
    prediction = Predictor.from_run(RUN, max_pass_pixels=0)(image)
    foreground = np.asarray(expected["foreground"], dtype=np.float32)
    assert prediction.probabilities.shape == (2, *foreground.shape)
    np.testing.assert_allclose(prediction.probabilities[1], foreground, atol=ATOL)
    np.testing.assert_allclose(prediction.uncertainty, np.asarray(expected["uncertainty"]), atol=ATOL)
    labels = np.asarray(expected["labels"])
    clear = np.abs(foreground - 0.5) > ATOL  # pixels whose label no rounding can flip
    assert clear.mean() > 0.95 and 0.05 < labels.mean() < 0.95
    np.testing.assert_array_equal(prediction.labels[clear], labels[clear])


def test_an_old_run_predicts_as_it_did_from_the_command_line(
    expected: dict, image: np.ndarray, tmp_path: Path  # type: ignore[type-arg]
) -> None:
    from PIL import Image

    source = tmp_path / "crop.png"
    Image.fromarray(image[0]).save(source)
    run = tmp_path / "run_v1"  # a copy: predict's backend auto may cache an ONNX graph beside the weights
    shutil.copytree(RUN, run)
    assert main(["predict", str(run), str(source), "--out", str(tmp_path / "out"), "--max-pass-pixels", "0"]) == 0
    written = read_image(tmp_path / "out" / "crop.png").array[0]
    foreground = np.asarray(expected["foreground"])
    clear = np.abs(foreground - 0.5) > ATOL
    np.testing.assert_array_equal((written > 0)[clear], np.asarray(expected["labels"])[clear] > 0)
