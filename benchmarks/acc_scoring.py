"""The one scorer of the accuracy benchmark, identical for every method.

A method's output is one PNG of class indices per test image (``acc_data.prediction_path``), the
same size as the image. Ground truth comes from ``acc_data.read_labels`` (pixels equal to
``IGNORE`` are not scored: DRIVE outside the FOV, Dubai unlabelled/black).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from acc_data import IGNORE, DatasetSpec, Row, prediction_path, read_labels
from PIL import Image


def binary_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Foreground (class 1) Dice of one image over the pixels where ``gt != IGNORE``.

    Args:
        pred: ``(H, W)`` predicted class indices (0/1).
        gt: ``(H, W)`` true class indices (0/1/IGNORE).

    Returns:
        ``2|P∩G| / (|P| + |G|)``; 1.0 when both are empty (nothing to find, nothing found).
    """
    _same_shape(pred, gt)
    valid = gt != IGNORE
    p = (pred == 1) & valid
    g = (gt == 1) & valid
    total = int(p.sum()) + int(g.sum())
    if total == 0:
        return 1.0
    return 2.0 * int((p & g).sum()) / total


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, *, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted, over ``gt != IGNORE``."""
    _same_shape(pred, gt)
    valid = gt != IGNORE
    t = gt[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    if t.size and t.max() >= num_classes:
        raise ValueError(f"ground truth has class {t.max()} but only {num_classes} classes exist")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_from_confusion(cm: np.ndarray) -> tuple[float, list[float]]:
    """Per-class IoU = TP / (TP + FP + FN) and their mean (classes absent from GT and prediction: NaN, skipped)."""
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
    return float(np.nanmean(iou)), [float(v) for v in iou]


def read_prediction(path: Path, *, num_classes: int, shape: tuple[int, int]) -> np.ndarray:
    """Read a class-index PNG and check its size and values."""
    if not path.is_file():
        raise FileNotFoundError(f"missing prediction {path}")
    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"{path}: prediction must be a single-channel class-index PNG, got mode {im.mode}")
        pred = np.asarray(im)
    if pred.shape != shape:
        raise ValueError(f"{path}: prediction size {pred.shape} differs from the ground truth {shape}")
    if pred.size and int(pred.max()) >= num_classes:
        raise ValueError(f"{path}: class index {int(pred.max())} >= number of classes {num_classes}")
    return pred


def score_predictions(*, spec: DatasetSpec, rows: list[Row], pred_dir: Path) -> dict[str, object]:
    """Score a method's prediction folder on the test rows.

    Returns:
        ``{"metric": "dice"|"miou", "score": float, "per_image": {...}}`` for Dice, or
        ``{"metric": "miou", "score": float, "per_class": {name: IoU}}`` for mean IoU.
    """
    k = len(spec.classes)
    cm = np.zeros((k, k), np.int64)
    per_image: dict[str, float] = {}
    for row in rows:
        gt = read_labels(spec, row)
        pred = read_prediction(prediction_path(pred_dir, row), num_classes=k, shape=gt.shape)
        if spec.metric == "miou":
            cm += confusion_matrix(pred, gt, num_classes=k)
        else:
            per_image[f"{row.image.parent.name}/{row.image.stem}"] = binary_dice(pred, gt)
    if spec.metric == "miou":
        mean, per_class = iou_from_confusion(cm)
        return {"metric": "miou", "score": mean, "per_class": dict(zip(spec.classes, per_class, strict=True))}
    return {"metric": "dice", "score": float(np.mean(list(per_image.values()))), "per_image": per_image}


def _same_shape(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")


# ---------------------------------------------------------------- self-test (hand-computed values)
def self_test() -> None:
    """Check the scorer on hand-made arrays and a PNG round trip; raises AssertionError on a mismatch."""
    g = np.array([[1, 1, 0, 0]], np.uint8)
    _close(binary_dice(np.array([[1, 0, 0, 0]], np.uint8), g), 2 * 1 / (1 + 2))  # 2/3
    _close(binary_dice(np.array([[1, 1, 1, 1]], np.uint8), g), 2 * 2 / (4 + 2))  # 2/3
    _close(binary_dice(np.zeros((1, 4), np.uint8), np.zeros((1, 4), np.uint8)), 1.0)  # empty on empty
    _close(binary_dice(np.zeros((1, 4), np.uint8), g), 0.0)  # missed everything
    _close(binary_dice(np.array([[0, 0, 1, 0]], np.uint8), np.zeros((1, 4), np.uint8)), 0.0)  # false alarm
    # FOV: the two wrong pixels outside the ROI (IGNORE) do not count -> perfect inside.
    _close(binary_dice(np.array([[1, 0, 1, 1]], np.uint8), np.array([[1, 0, IGNORE, IGNORE]], np.uint8)), 1.0)

    gt3 = np.array([[0, 0, 1], [2, 2, IGNORE]], np.uint8)
    pr3 = np.array([[0, 1, 1], [2, 0, 1]], np.uint8)
    cm = confusion_matrix(pr3, gt3, num_classes=3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]], cm.tolist()
    mean, per = iou_from_confusion(cm)
    # class 0: TP 1, FP 1 (gt2->0), FN 1 (gt0->1) = 1/3; class 1: 1/(1+1) = 1/2; class 2: 1/(1+1) = 1/2
    for got, want in zip(per, [1 / 3, 1 / 2, 1 / 2], strict=True):
        _close(got, want)
    _close(mean, (1 / 3 + 1 / 2 + 1 / 2) / 3)
    _, per_absent = iou_from_confusion(confusion_matrix(np.zeros((1, 2), np.uint8), np.zeros((1, 2), np.uint8),
                                                        num_classes=2))
    assert per_absent[0] == 1.0 and np.isnan(per_absent[1]), per_absent
    _self_test_decoders()
    _self_test_files()


def _self_test_decoders() -> None:
    """Label decoding shared by peers and scorer: Dubai colours, DRIVE FOV, ISBI inversion."""
    from acc_data import decode_dubai, decode_isbi, decode_threshold

    rgb = np.array([[[110, 193, 228], [155, 155, 155], [0, 0, 0], [60, 16, 152], [226, 169, 41]]], np.uint8)
    assert decode_dubai(rgb, None).tolist() == [[2, IGNORE, IGNORE, 0, 4]]
    try:
        decode_dubai(np.array([[[80, 227, 194]]], np.uint8), None)  # classes.json.original "Water": not used
    except ValueError:
        pass
    else:
        raise AssertionError("an unknown Dubai colour was accepted")
    vessel = np.array([[0, 127, 128, 255]], np.uint8)
    fov = np.array([[255, 255, 255, 0]], np.uint8)
    assert decode_threshold(vessel, fov).tolist() == [[0, 0, 1, IGNORE]]
    assert decode_threshold(vessel, None).tolist() == [[0, 0, 1, 1]]
    assert decode_isbi(np.array([[0, 255]], np.uint8), None).tolist() == [[1, 0]]


def _self_test_files() -> None:
    """End to end through PNG files: ISBI-style decoding (0 = membrane = foreground) and a size check."""
    from acc_data import SPECS

    spec = SPECS["isbi"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        mask = np.array([[0, 0, 255, 255], [255, 255, 255, 255]], np.uint8)  # membrane = top-left 2 pixels
        Image.fromarray(mask).save(root / "images" / "m.png")
        Image.fromarray(np.zeros((2, 4), np.uint8)).save(root / "images" / "x.png")
        row = Row(root / "images" / "x.png", root / "images" / "m.png")
        pred_dir = root / "pred"
        out = prediction_path(pred_dir, row)
        out.parent.mkdir(parents=True)
        Image.fromarray(np.array([[1, 0, 0, 0], [1, 0, 0, 0]], np.uint8)).save(out)
        result = score_predictions(spec=spec, rows=[row], pred_dir=pred_dir)
        _close(float(result["score"]), 2 * 1 / (2 + 2))  # TP 1, |P| 2, |G| 2
        Image.fromarray(np.zeros((3, 4), np.uint8)).save(out)
        try:
            score_predictions(spec=spec, rows=[row], pred_dir=pred_dir)
        except ValueError as err:
            assert "differs" in str(err), err
        else:
            raise AssertionError("a prediction of the wrong size was scored")


def _close(got: float, want: float) -> None:
    assert abs(got - want) < 1e-9, f"got {got}, want {want}"
