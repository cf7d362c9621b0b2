"""``unetkit.infer.scoring``: per-image scores by hand, the NaN-aware mean, the files ``evaluate`` writes."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from unetkit.config import Plan
from unetkit.infer.scoring import METRICS, score_labels, summarise, write_scores


def test_foreground_scores_by_hand() -> None:
    target = np.array([[0, 1], [1, 1]], dtype=np.uint8)
    pred = np.array([[0, 1], [0, 1]], dtype=np.uint8)  # foreground: TP 2, FP 0, FN 1
    scores = score_labels(pred, target, Plan(), METRICS)
    assert scores == pytest.approx({"dice": 4 / 5, "iou": 2 / 3, "precision": 1.0, "recall": 2 / 3})


def test_ignored_pixels_do_not_count() -> None:
    target = np.array([[0, 1], [255, 255]], dtype=np.uint8)
    pred = np.array([[0, 1], [1, 0]], dtype=np.uint8)  # the bottom row is unlabelled
    assert score_labels(pred, target, Plan(), ("dice",)) == {"dice": 1.0}


def test_summary_skips_nan_and_files_are_written(tmp_path: Path) -> None:
    rows = [{"key": "a", "dice": 0.5}, {"key": "b", "dice": math.nan}, {"key": "c", "dice": 0.25}]
    summary = summarise(rows, ("dice",))
    assert summary == {"dice": 0.375, "images": 3}
    write_scores(tmp_path, rows, summary)
    assert json.loads((tmp_path / "summary.json").read_text()) == {"dice": 0.375, "images": 3}
    with (tmp_path / "per_image.csv").open() as f:
        assert [r["key"] for r in csv.DictReader(f)] == ["a", "b", "c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["per_image.csv", "summary.json"]
