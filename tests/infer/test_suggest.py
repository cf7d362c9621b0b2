"""``unetkit suggest``: pooling and k-center by hand, ranking on real images, the CLI on a real folder, errors."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _run_factory import make_run
from PIL import Image

from unetkit.cli import main
from unetkit.config import Plan
from unetkit.infer.suggest import (
    SuggestOptions,
    foreground_region,
    greedy_k_center,
    pixel_uncertainty,
    pool_uncertainty,
    suggest,
)
from unetkit.models.base import load_model

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
ISBI = DATA / "isbi2012_em_membrane"
DRIVE_RGB = DATA / "drive_retina_vessels" / "training" / "images" / "21_training.tif"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"dataset file {path} is not available")
    return path


# -- pure pieces, hand-computed ---------------------------------------------------------------------------


def test_pixel_uncertainty_is_normalised_entropy() -> None:
    sigmoid = np.array([[[0.5, 0.9, 1.0]]])  # (1, 1, 3)
    h09 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)  # 0.46900
    np.testing.assert_allclose(pixel_uncertainty(sigmoid), [[1.0, h09, 0.0]], atol=1e-6)
    softmax = np.array([[0.25, 1.0], [0.25, 0.0], [0.25, 0.0], [0.25, 0.0]])[:, None]  # (4, 1, 2)
    np.testing.assert_allclose(pixel_uncertainty(softmax), [[1.0, 0.0]], atol=1e-6)
    two = np.array([[0.8], [0.2]])[:, None]  # (2, 1, 1): same as a sigmoid at 0.2
    np.testing.assert_allclose(pixel_uncertainty(two), pixel_uncertainty(np.array([[[0.2]]])), atol=1e-6)


def test_foreground_aware_pooling_lifts_a_small_uncertain_defect() -> None:
    u = np.array([[0.0, 0.0, 0.0, 0.8]])
    labels = np.array([[0, 0, 0, 1]])
    region = foreground_region(labels, u, top_fraction=0.0)
    assert region.tolist() == [[False, False, False, True]]
    assert pool_uncertainty(u, region, fg_weight=0.5) == pytest.approx((0.5, 0.2, 0.8))
    # No predicted foreground: the top 25 % (1 pixel) most uncertain pixels stand in for it.
    u2 = np.array([[0.1, 0.6, 0.2, 0.3]])
    region2 = foreground_region(np.zeros((1, 4), int), u2, top_fraction=0.25)
    assert region2.tolist() == [[False, True, False, False]]
    assert pool_uncertainty(u2, region2, fg_weight=0.25) == pytest.approx((0.75 * 0.3 + 0.25 * 0.6, 0.3, 0.6))
    # A uniform, mildly uncertain background (mean 0.3 everywhere) scores below the small defect.
    flat = np.full((1, 4), 0.3)
    flat_score = pool_uncertainty(flat, foreground_region(np.zeros((1, 4), int), flat, top_fraction=0.25),
                                  fg_weight=0.5)[0]  # fmt: skip
    assert flat_score == pytest.approx(0.3)


def test_greedy_k_center_weights_by_uncertainty_and_skips_duplicates() -> None:
    feats = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    weights = np.array([1.0, 1.0, 0.5, 0.9])
    order, dist, values = greedy_k_center(feats, weights, 3)
    # first: argmax weight (tie -> index 0); then value = w * d: [-, 0, 0.5*5, 0.9*1] -> 2; then
    # d = min(d to 0, d to 2): row 1 -> 0, row 3 -> min(1, sqrt(9+9)) = 1 -> 0.9 * 1 beats 1.0 * 0.
    assert order == [0, 2, 3]
    assert dist == [math.inf, 5.0, 1.0]
    assert values == pytest.approx([1.0, 2.5, 0.9])
    assert greedy_k_center(feats, weights, 4)[0] == [0, 2, 3, 1]  # the duplicate comes last
    with pytest.raises(ValueError, match="cannot pick 5 of 4"):
        greedy_k_center(feats, weights, 5)


# -- ranking with a model whose uncertainty is controlled ----------------------------------------------------


def isbi_crop(folder: Path, name: str, *, index: int, size: int = 128) -> Path:
    array = np.asarray(Image.open(need(ISBI / "images" / f"{index}.png")))[:size, :size]
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(folder / name)
    return folder / name


@pytest.fixture(scope="module")
def controlled_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny U-Net whose head is set so that a real EM image sits on its decision boundary (median logit
    difference 0: unsure) while a flat image (zero after z-scoring) is pushed 20 logits into background."""
    root = make_run(tmp_path_factory.mktemp("controlled"), tile=128, overlap=0.25, tta="flips")
    model = load_model(root / "best").eval()
    image = np.asarray(Image.open(need(ISBI / "images" / "0.png")))[:128, :128].astype(np.float32)
    x = torch.from_numpy((image - image.mean()) / image.std())[None, None]
    with torch.no_grad():
        real = model(x)
        flat = model(torch.zeros_like(x))
        diff_real = (real[:, 1] - real[:, 0]).median()
        diff_flat = (flat[:, 1] - flat[:, 0]).mean()
        gap = float(diff_flat - diff_real)
        assert abs(gap) > 1e-3  # the flat image's features differ from the real one's
        scale = 20.0 / abs(gap)
        model.head.weight.mul_(scale)
        model.head.bias.mul_(scale)
        real = model(x)
        model.head.bias[1] -= float((real[:, 1] - real[:, 0]).median())
        flat = model(torch.zeros_like(x))
        if float((flat[:, 1] - flat[:, 0]).mean()) > 0:  # the flat image must go to background, not foreground
            model.head.weight.mul_(-1.0)
            model.head.bias.mul_(-1.0)
    model.save_pretrained(root / "best")
    return root


def test_an_unsure_image_ranks_above_a_sure_one_and_a_duplicate_is_not_picked_twice(
    controlled_run: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "pool"
    unsure = isbi_crop(folder, "em_0.png", index=0)
    shutil.copy(unsure, folder / "em_0_copy.png")
    sure = folder / "flat.png"
    Image.fromarray(np.full((128, 128), 140, np.uint8)).save(sure)
    ranked = suggest(controlled_run, [str(folder)], SuggestOptions(n=3, tta="flips"), out=tmp_path / "a")
    by_name = {p.image.path.name: p for p in ranked.picks}
    real, flat = by_name["em_0.png"].image, by_name["flat.png"].image
    assert real.score > flat.score + 0.1
    assert real.uncertainty > 5 * flat.uncertainty  # image means (the region means are both high: see below)
    assert real.foreground_fraction > 0.1 > flat.foreground_fraction
    assert by_name["em_0.png"].image.score == pytest.approx(by_name["em_0_copy.png"].image.score)
    two = suggest(controlled_run, [str(folder)], SuggestOptions(n=2, tta="flips"), out=tmp_path / "b")
    assert [p.image.path.name for p in two.picks] == ["em_0.png", "flat.png"]  # not both copies
    assert two.picks[1].distance > 0.01
    plain = suggest(controlled_run, [str(folder)], SuggestOptions(n=2, tta="flips", diversity=False),
                    out=tmp_path / "c")  # fmt: skip
    assert sorted(p.image.path.name for p in plain.picks) == ["em_0.png", "em_0_copy.png"]


# -- the CLI on a real shared folder ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def isbi_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run whose plan points at the real ISBI folder, as if trained there with ``--labels 4``."""
    need(ISBI / "images")
    root = make_run(tmp_path_factory.mktemp("isbi_run"), tile=128, overlap=0.0, tta="flips")
    plan = Plan.load(root / "plan.yaml")
    plan.data.root = str(ISBI)
    plan.data.mask_threshold = 128
    plan.train.labels, plan.train.labels_seed = 4, 0
    plan.save(root / "plan.yaml")
    return root


def test_cli_writes_csv_and_contact_sheet_and_skips_the_runs_images(isbi_run: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from unetkit.infer.suggest import labelled_files

    known = labelled_files(Plan.load(isbi_run / "plan.yaml"))
    assert len(known.train_paths) == 4 and len(known.val_paths) == 6  # 30 images, val_fraction 0.2
    # A copy of a training image under another name is recognised by its content.
    pool = tmp_path / "pool"
    pool.mkdir()
    train_image = sorted(known.train_paths)[0]
    shutil.copy(train_image, pool / "renamed.png")
    for i in (0, 1, 2, 3, 4, 5):
        if (ISBI / "images" / f"{i}.png").resolve() not in known.train_paths | known.val_paths:
            shutil.copy(ISBI / "images" / f"{i}.png", pool / f"{i}.png")
    fresh = len(list(pool.iterdir())) - 1
    out = tmp_path / "out"
    code = main(["suggest", str(isbi_run), str(pool), str(ISBI / "images" / "6.png"), "--n", "2", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    six_side = known.side(ISBI / "images" / "6.png")
    assert f"scored {fresh + (six_side is None)} candidate image(s)" in text
    assert f"skipped {1 + (six_side == 'train')} of the run's training images" in text
    with (out / "suggestions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["rank"] for r in rows] == ["1", "2"]
    assert set(rows[0]) >= {"file", "score", "uncertainty", "foreground_uncertainty", "diversity_distance"}
    assert float(rows[0]["score"]) >= float(rows[1]["selection_value"]) / max(float(rows[1]["diversity_distance"]), 1e-9) - 1e-6
    assert "renamed.png" not in {Path(r["file"]).name for r in rows}
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.size == (2 * (2 * 160 + 18), 160 + 14 + 12)
        pixels = np.asarray(sheet.convert("RGB"))
    assert pixels.std() > 10  # thumbnails were drawn, not a blank page
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("case", ["empty", "channels", "too_many"])
def test_bad_input_is_one_line_and_exit_1(case: str, isbi_run: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    if case == "channels":
        shutil.copy(need(DRIVE_RGB), folder / "rgb.tif")
        expected = "rgb.tif: the image has 3 channel(s); the run takes 1"
        inputs = [str(folder)]
    elif case == "too_many":
        inputs = [str(ISBI / "images")]  # 30 images, 10 of them the run's: 20 candidates
        expected = "--n 21 is more than the 20 candidate image(s) (4 skipped as training images, 6 as validation"
    else:
        inputs, expected = [str(folder)], "no images found in"
    code = main(["suggest", str(isbi_run), *inputs, "--n", "21" if case == "too_many" else "1",
                 "--out", str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert expected in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
