"""Metrics: hand-computed cases, every empty case, MONAI as an oracle on random and real masks (2D and 3D)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from unetkit import metrics as M

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
# MONAI 1.6 passes a deprecated argument to itself inside get_mask_edges.
MONAI_WARNINGS = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy.*:FutureWarning")


# --------------------------------------------------------------------------------------- hand-computed
def test_overlap_metrics_hand_computed():
    target = np.array([[0, 0, 1, 1], [0, 2, 2, 1], [0, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 0, 1], [2, 2, 2, 0]])
    # Pixel (2,3) is ignored.
    # class 0: target (0,0),(0,1),(1,0),(2,0); pred (0,0),(1,0),(1,2) -> TP 2, FP 1, FN 2
    # class 1: target (0,2),(0,3),(1,3); pred (0,1),(0,2),(0,3),(1,3) -> TP 3, FP 1, FN 0
    # class 2: target (1,1),(1,2),(2,1),(2,2); pred (1,1),(2,0),(2,1),(2,2) -> TP 3, FP 1, FN 1
    kw = {"num_classes": 3, "ignore_index": 255}
    np.testing.assert_allclose(M.dice_per_class(pred, target, **kw), [4 / 7, 6 / 7, 6 / 8])
    np.testing.assert_allclose(M.iou_per_class(pred, target, **kw), [2 / 5, 3 / 4, 3 / 5])
    np.testing.assert_allclose(M.precision_per_class(pred, target, **kw), [2 / 3, 3 / 4, 3 / 4])
    np.testing.assert_allclose(M.recall_per_class(pred, target, **kw), [2 / 4, 3 / 3, 3 / 4])


def test_ignore_index_and_valid_mask_exclude_pixels():
    target = np.array([[1, 1, 255, 0]])
    pred = np.array([[1, 0, 1, 1]])
    # (0,2) ignored: class 1 TP 1, FP 1 (0,3), FN 1 (0,1).
    np.testing.assert_allclose(M.dice_per_class(pred, target, num_classes=2)[1], 2 / 4)
    # Also dropping (0,3) with a valid mask: TP 1, FN 1 -> 2/3.
    valid = np.array([[1, 1, 1, 0]], dtype=bool)
    np.testing.assert_allclose(M.dice_per_class(pred, target, num_classes=2, valid=valid)[1], 2 / 3)
    # An ignored pixel that differs in the prediction changes nothing.
    pred2 = pred.copy()
    pred2[0, 2] = 0
    np.testing.assert_array_equal(
        M.dice_per_class(pred, target, num_classes=2), M.dice_per_class(pred2, target, num_classes=2)
    )


def test_one_hot_input_matches_label_maps_and_accepts_torch():
    rng = np.random.default_rng(1)
    t = rng.integers(0, 3, (6, 7))
    p = rng.integers(0, 3, (6, 7))
    onehot = lambda x: np.stack([x == c for c in range(3)]).astype(np.uint8)  # noqa: E731
    np.testing.assert_allclose(
        M.dice_per_class(onehot(p), onehot(t)), M.dice_per_class(torch.from_numpy(p), t, num_classes=3)
    )


def test_surface_uses_face_connectivity_and_image_border():
    plus = np.zeros((5, 5), dtype=bool)
    plus[2, 1:4] = plus[1:4, 2] = True
    # Face-connected erosion keeps the centre (its 4 neighbours are set): 4 surface pixels, not 5.
    assert M.surface(plus).sum() == 4 and not M.surface(plus)[2, 2]
    # A full image's border is surface (outside counts as background): 3x3 -> 8 surface pixels.
    assert M.surface(np.ones((3, 3), dtype=bool)).sum() == 8
    cube = np.zeros((5, 5, 5), dtype=bool)
    cube[1:4, 1:4, 1:4] = True
    assert M.surface(cube).sum() == 27 - 1


def test_hd95_and_nsd_hand_computed():
    # Target: one pixel at (0, 0). Prediction: a 1-pixel line (0, 0..20), all of it surface.
    # pred->target distances are 0, 1, ..., 20 -> P95 = 0.95 * 20 = 19; target->pred: [0]. HD95 = 19.
    target = np.zeros((3, 25), dtype=np.int64)
    target[0, 0] = 1
    pred = np.zeros_like(target)
    pred[0, :21] = 1
    assert M.hd95_per_class(pred, target, num_classes=2)[1] == pytest.approx(19.0)
    assert M.hd95_per_class(pred, target, num_classes=2, percentile=100)[1] == pytest.approx(20.0)
    # Spacing 0.5 along x halves every distance.
    assert M.hd95_per_class(pred, target, num_classes=2, spacing=(1.0, 0.5))[1] == pytest.approx(9.5)
    # NSD with tolerance 4: distances 0..4 (5 of 21) plus the target pixel (1 of 1) -> 6 / 22.
    assert M.nsd_per_class(pred, target, num_classes=2, tolerance=4.0)[1] == pytest.approx(6 / 22)
    assert M.nsd_per_class(pred, target, num_classes=2, tolerance=3.99)[1] == pytest.approx(5 / 22)


def test_hd95_two_points_anisotropic_2d_and_3d():
    a = np.zeros((6, 6), dtype=np.int64)
    b = np.zeros_like(a)
    a[0, 0], b[3, 4] = 1, 1
    assert M.hd95_per_class(a, b, num_classes=2)[1] == pytest.approx(5.0)
    assert M.hd95_per_class(a, b, num_classes=2, spacing=(2.0, 1.0))[1] == pytest.approx(math.sqrt(52))
    a3 = np.zeros((4, 5, 6), dtype=np.int64)
    b3 = np.zeros_like(a3)
    a3[0, 0, 0], b3[2, 3, 5] = 1, 1
    assert M.hd95_per_class(a3, b3, num_classes=2, spacing=(1, 2, 3))[1] == pytest.approx(
        math.sqrt(4 + 36 + 225)
    )


# ----------------------------------------------------------------------------------------- empty cases
@pytest.mark.parametrize(
    "shape,spacing", [((4, 6), (1.0, 1.0)), ((4, 6), (2.0, 0.5)), ((3, 4, 5), (1.0, 1.0, 3.0))]
)
@pytest.mark.parametrize("case", ["both", "pred_empty", "target_empty"])
def test_empty_cases(shape, spacing, case):
    full = np.zeros(shape, dtype=np.int64)
    full[(1,) * len(shape)] = 1
    pred = full if case == "target_empty" else np.zeros(shape, np.int64)
    target = full if case == "pred_empty" else np.zeros(shape, np.int64)
    scores = M.image_metrics(pred, target, num_classes=2, spacing=spacing, nsd_tolerance=1.0)
    diagonal = math.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(shape, spacing, strict=True)))
    if case == "both":
        expected = {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0, "hd95": 0.0, "nsd": 1.0}
    else:
        expected = {"dice": 0.0, "iou": 0.0, "precision": 0.0, "recall": 0.0, "hd95": diagonal, "nsd": 0.0}
    for name, value in expected.items():
        assert scores[name][1] == pytest.approx(value), name
        assert np.isfinite(scores[name]).all()
    assert M.max_distance(shape, spacing) == pytest.approx(diagonal)


def test_everything_ignored_counts_as_both_empty():
    target = np.full((3, 3), 255)
    pred = np.ones((3, 3), dtype=np.int64)
    scores = M.image_metrics(pred, target, num_classes=2)
    assert all(np.all(v == (0.0 if k == "hd95" else 1.0)) for k, v in scores.items())


@MONAI_WARNINGS
def test_monai_dice_without_ignore_empty_agrees_on_empty_cases():
    DiceMetric = pytest.importorskip("monai.metrics").DiceMetric  # noqa: N806

    z, o = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    o[..., 1, 1] = 1
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    for p, t in [(z, z), (z, o), (o, z)]:
        ours = M.dice_per_class(p[0].numpy(), t[0].numpy())[0]
        assert float(metric(p, t)[0, 0]) == pytest.approx(ours)
    # MONAI's default (ignore_empty=True) gives NaN for an empty target where we return a number.
    assert torch.isnan(DiceMetric(reduction="none")(z, z)).all()


# ------------------------------------------------------------------------------------- MONAI oracle
def _onehot(x: np.ndarray, labels) -> torch.Tensor:
    return torch.from_numpy(np.stack([x == c for c in labels])[None].astype(np.float32))


def _monai_scores(pred, target, labels, spacing, tolerance):
    """MONAI's Dice / HD95 / NSD for the given labels (each channel is scored on its own)."""
    mm = pytest.importorskip("monai.metrics")
    p, t = _onehot(pred, labels), _onehot(target, labels)
    dice = mm.DiceMetric(include_background=True, reduction="none")(p, t)[0].numpy()
    hd = mm.HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(
        p, t, spacing=spacing
    )
    nsd = mm.SurfaceDiceMetric([tolerance] * len(labels), include_background=True, reduction="none")(
        p, t, spacing=spacing
    )
    return {"dice": dice, "hd95": hd[0].numpy(), "nsd": nsd[0].numpy()}


def _assert_agrees_with_monai(pred, target, classes, spacing, tolerance=1.5, labels=None):
    # MONAI returns NaN/inf for empty classes, so only classes present on both sides are compared.
    labels = [c for c in (labels or range(classes)) if (pred == c).any() and (target == c).any()]
    assert labels, "test data must have classes present on both sides"
    ref = _monai_scores(pred, target, labels, spacing, tolerance)
    ours = M.image_metrics(
        pred,
        target,
        num_classes=classes,
        spacing=spacing,
        nsd_tolerance=tolerance,
        metrics=("dice", "hd95", "nsd"),
    )
    np.testing.assert_allclose(ours["dice"][labels], ref["dice"], atol=1e-6)
    np.testing.assert_allclose(ours["hd95"][labels], ref["hd95"], rtol=1e-3)
    np.testing.assert_allclose(ours["nsd"][labels], ref["nsd"], atol=1e-6)
    return ours


def _random_labels(rng, shape, classes):
    field = ndimage.gaussian_filter(rng.random(shape), 2)
    return np.digitize(field, np.quantile(field, np.linspace(0, 1, classes + 1)[1:-1]))


@MONAI_WARNINGS
@pytest.mark.parametrize(
    "shape,spacing", [((40, 50), (1.0, 1.0)), ((40, 50), (0.7, 1.3)), ((20, 24, 18), (1.0, 2.0, 0.5))]
)
def test_random_masks_agree_with_monai(shape, spacing):
    rng = np.random.default_rng(sum(shape))
    target = _random_labels(rng, shape, 3)
    noise = _random_labels(rng, shape, 3)
    pred = np.where(rng.random(shape) < 0.9, target, noise)
    ours = _assert_agrees_with_monai(pred, target, 3, spacing)
    assert 0.5 < ours["dice"].min() < 1.0  # a non-trivial case


def _isbi_masks():
    folder = DATASETS / "isbi2012_em_membrane" / "masks"
    if not folder.is_dir():
        pytest.skip(f"{folder} not available")
    from PIL import Image

    return [np.asarray(Image.open(folder / f"{i}.png")) for i in (0, 7)]


@MONAI_WARNINGS
@pytest.mark.parametrize("perturbation", ["erode", "dilate", "shift"])
def test_isbi_masks_agree_with_monai(perturbation):
    for mask in _isbi_masks():
        target = (mask[:160, :160] > 127).astype(np.int64)  # 1 = cell interior, 0 = membrane
        if perturbation == "erode":
            pred = ndimage.binary_erosion(target, iterations=2)
        elif perturbation == "dilate":
            pred = ndimage.binary_dilation(target, iterations=3)
        else:
            pred = np.roll(target, (3, -2), axis=(0, 1))
        _assert_agrees_with_monai(pred.astype(np.int64), target, 2, (1.0, 1.0), tolerance=2.0)


def _hippocampus_label():
    folder = DATASETS / "msd_task04_hippocampus" / "labels"
    if not folder.is_dir():
        pytest.skip(f"{folder} not available")
    import nibabel as nib

    img = nib.load(folder / "hippocampus_001.nii.gz")
    return np.asarray(img.dataobj).astype(np.int64), tuple(float(z) for z in img.header.get_zooms()[:3])


@MONAI_WARNINGS
@pytest.mark.parametrize("anisotropic", [False, True])
def test_hippocampus_label_agrees_with_monai_3d(anisotropic):
    target, spacing = _hippocampus_label()
    assert set(np.unique(target)) == {0, 1, 2}
    if anisotropic:
        spacing = (spacing[0] * 0.8, spacing[1], spacing[2] * 2.5)
    # Prediction: labels shifted by one voxel, with the anterior part grown into the background.
    pred = np.roll(target, 1, axis=0)
    grown = ndimage.binary_dilation(pred == 1) & (pred == 0)
    pred[grown] = 1
    # Foreground classes only: MONAI takes seconds on the background surface of a 3D volume.
    _assert_agrees_with_monai(pred, target, 3, spacing, tolerance=1.0, labels=[1, 2])


def test_dice_iou_against_numpy_formulas():
    rng = np.random.default_rng(5)
    for shape in [(30, 31), (9, 10, 11)]:
        a, b = rng.random(shape) < 0.3, rng.random(shape) < 0.4
        inter, union = np.logical_and(a, b).sum(), np.logical_or(a, b).sum()
        d = M.dice_per_class(a.astype(int), b.astype(int), num_classes=2)[1]
        j = M.iou_per_class(a.astype(int), b.astype(int), num_classes=2)[1]
        assert d == pytest.approx(2 * inter / (a.sum() + b.sum()))
        assert j == pytest.approx(inter / union)
        assert j == pytest.approx(d / (2 - d))


# ------------------------------------------------------------------------------------ batch, streaming
def test_compute_metrics_is_batch_first_and_matches_per_image():
    rng = np.random.default_rng(2)
    pred, target = rng.integers(0, 3, (3, 12, 12)), rng.integers(0, 3, (3, 12, 12))
    out = M.compute_metrics(pred, target, num_classes=3)
    assert set(out) == set(M.METRIC_NAMES) and out["dice"].shape == (3, 3)
    np.testing.assert_allclose(out["hd95"][1], M.hd95_per_class(pred[1], target[1], num_classes=3))


def _two_images():
    # Image A: class 1 fully right (2 px). Image B: class 1 target 6 px, prediction hits 2 of them, 0 FP.
    ta = np.array([[1, 1, 0, 0]])
    pa = ta.copy()
    tb = np.array([[1, 1, 1, 1, 1, 1, 0, 0]])
    pb = np.array([[1, 1, 0, 0, 0, 0, 0, 0]])
    return (pa, ta), (pb, tb)


def test_metric_accumulator_per_class_means_and_table(tmp_path):
    (pa, ta), (pb, tb) = _two_images()
    acc = M.MetricAccumulator(num_classes=2, class_names=["bg", "fg"], metrics=("dice", "recall"))
    acc.update(pa, ta, image_id="a")
    acc.update(pb, tb, image_id="b")
    # fg Dice: A = 1, B = 2*2 / (2 + 6) = 0.5 -> mean 0.75. bg Dice: A = 1, B = 2*2 / (6 + 2) = 0.5.
    np.testing.assert_allclose(acc.per_class()["dice"], [0.75, 0.75])
    summary = acc.summary()
    assert summary["dice"] == pytest.approx(0.75) and summary["recall/fg"] == pytest.approx((1 + 2 / 6) / 2)
    rows = acc.rows()
    assert [r["image"] for r in rows] == ["a", "b"] and rows[1]["dice/fg"] == pytest.approx(0.5)
    acc.write_csv(tmp_path / "eval.csv")
    with open(tmp_path / "eval.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert float(table[1]["dice/fg"]) == pytest.approx(0.5) and list(table[0])[:2] == ["image", "dice"]


def test_dataset_level_differs_from_per_image_mean():
    (pa, ta), (pb, tb) = _two_images()
    cm = M.ConfusionMatrix(num_classes=2)
    cm.update(pa, ta)
    cm.update(pb, tb)
    # Pooled class 1: TP 4, FP 0, FN 4 -> Dice 8/12, IoU 4/8 (per-image mean Dice was 0.75).
    np.testing.assert_array_equal(cm.matrix, [[4, 0], [4, 4]])
    assert cm.dice()[1] == pytest.approx(8 / 12)
    assert cm.iou()[1] == pytest.approx(0.5)
    # Class 0: TP 4, FP 4, FN 0 -> IoU 0.5; mIoU 0.5; foreground only 0.5; accuracy 8/12.
    assert cm.mean_iou() == pytest.approx(0.5) and cm.mean_iou(include_background=False) == pytest.approx(0.5)
    assert cm.pixel_accuracy() == pytest.approx(8 / 12)


def test_confusion_matrix_matches_pooled_numpy_and_ignores_pixels():
    rng = np.random.default_rng(3)
    pred, target = rng.integers(0, 4, (2, 20, 20)), rng.integers(0, 4, (2, 20, 20))
    target[:, :3] = 255
    cm = M.ConfusionMatrix(num_classes=4)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    keep = target != 255
    for c in range(4):
        p, t = (pred == c) & keep, (target == c) & keep
        assert cm.iou()[c] == pytest.approx((p & t).sum() / (p | t).sum())
    assert cm.matrix.sum() == keep.sum()


def test_skip_absent_leaves_class_out_of_means():
    acc = M.MetricAccumulator(num_classes=3, metrics=("dice",), skip_absent=True, include_background=True)
    acc.update(np.array([[0, 1]]), np.array([[0, 1]]))  # class 2 absent on both sides -> NaN, not 1.0
    acc.update(np.array([[0, 2]]), np.array([[0, 1]]))
    assert np.isnan(acc.per_image("dice")[0, 2])
    np.testing.assert_allclose(acc.per_class()["dice"], [1.0, 0.5, 0.0])
    plain = M.MetricAccumulator(num_classes=3, metrics=("dice",))
    plain.update(np.array([[0, 1]]), np.array([[0, 1]]))
    assert plain.per_image("dice")[0, 2] == 1.0


def test_mean_over_classes_background_option():
    assert M.mean_over_classes([0.2, 0.6, 1.0]) == pytest.approx(0.6)
    assert M.mean_over_classes([0.2, 0.6, 1.0], include_background=False) == pytest.approx(0.8)
    np.testing.assert_allclose(M.mean_over_classes(np.array([[1.0, 0.0], [0.5, np.nan]])), [0.5, 0.5])


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: M.dice_per_class(np.zeros((2, 2)), np.zeros((2, 3)), num_classes=2), "differs from target"),
        (lambda: M.dice_per_class(np.full((2, 2), 3), np.zeros((2, 2)), num_classes=2), "outside 0..1"),
        (lambda: M.dice_per_class(np.full((2, 2, 2), 2), np.zeros((2, 2, 2))), "values 0/1"),
        (
            lambda: M.hd95_per_class(np.zeros((2, 2)), np.zeros((2, 2)), num_classes=2, spacing=(1, 0)),
            "spacing",
        ),
        (
            lambda: M.nsd_per_class(np.zeros((2, 2)), np.zeros((2, 2)), num_classes=2, tolerance=-1),
            "tolerance",
        ),
        (lambda: M.MetricAccumulator(num_classes=2, metrics=("dice", "auc")), "unknown metric"),
    ],
)
def test_bad_input_raises_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
