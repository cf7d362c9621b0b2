"""End to end on real data: train on ISBI slices 0-15, score held-back slices 20-29 (CI keeps this one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unetkit.cli import main

SMALL = [
    "--encoder", "plain",
    "--set", "model.kwargs.width=8",
    "--set", "train.patch_size=[128,128]",
    "--set", "train.batch_size=4",
    "--set", "train.time_budget_s=null",
    "--set", "train.warmup_steps=20",
    "--set", "infer.tile_size=[256,256]",
]  # fmt: skip


def _isbi_lists(datasets: Path, tmp_path: Path, train: range, test: range) -> tuple[Path, Path]:
    root = datasets / "isbi2012_em_membrane"
    paths = []
    for name, ids in (("train", train), ("test", test)):
        rows = ["image,mask"] + [f"{root}/images/{i}.png,{root}/masks/{i}.png" for i in ids]
        path = tmp_path / f"{name}.csv"
        path.write_text("\n".join(rows) + "\n")
        paths.append(path)
    return paths[0], paths[1]


def test_train_evaluate_predict_isbi(datasets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_csv, test_csv = _isbi_lists(datasets, tmp_path, range(0, 16), range(20, 30))
    run = tmp_path / "run"
    opts = ["--value-map", "0:1,255:0"]
    assert main(["train", str(train_csv), "--out", str(run), *opts, *SMALL, "--set", "train.steps=240"]) == 0
    for name in ("plan.yaml", "best/config.json", "best/model.safetensors", "last/model.safetensors",
                 "state.json", "metrics.csv", "curve.png"):  # fmt: skip
        assert (run / name).is_file(), name

    assert main(["evaluate", str(run), str(test_csv), "--out", str(tmp_path / "eval")]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["images"] == 10
    # Predicting "all membrane" scores Dice ~0.36 and "nothing" 0; a model that learnt membranes is far above.
    assert summary["dice"] >= 0.70, summary

    out = tmp_path / "pred"
    assert main(["predict", str(run), str(datasets / "isbi2012_em_membrane" / "test_images_unlabeled" / "0.png"),
                 "--out", str(out)]) == 0  # fmt: skip
    assert (out / "0.png").is_file() and (out / "0_overlay.png").is_file()


def test_existing_run_is_not_overwritten(datasets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_csv, _ = _isbi_lists(datasets, tmp_path, range(0, 4), range(4, 5))
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("precious")
    code = main(["train", str(train_csv), "--out", str(run), "--value-map", "0:1,255:0", *SMALL, "--set", "train.steps=2"])
    assert code != 0
    assert "--overwrite" in capsys.readouterr().err
    assert (run / "keep.txt").read_text() == "precious"
