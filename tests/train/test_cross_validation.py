"""k-fold training (``--folds K --fold N|all``), TensorBoard scalars and end-of-training validation overlays."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetkit.cli import main
from unetkit.config import Plan, TrainConfig
from unetkit.runtime.examples import Example, split_examples
from unetkit.train.overlays import overlay_name

TINY = [
    "--value-map", "0:1,255:0",
    "--encoder", "plain",
    "--set", "model.kwargs.width=4",
    "--set", "model.kwargs.depth=2",
    "--set", "train.patch_size=[64,64]",
    "--set", "train.batch_size=2",
    "--set", "train.time_budget_s=null",
    "--set", "train.steps=3",
    "--set", "train.val_every=3",
    "--set", "train.warmup_steps=1",
    "--set", "infer.tile_size=[64,64]",
]  # fmt: skip
KEYS = [str(i) for i in range(6)]
HEIGHT, WIDTH = 72, 88  # not square, so a transposed overlay would show


def _examples(groups: list[str]) -> list[Example]:
    zeros = np.zeros((1, 4, 4), np.float32)
    return [Example(key=f"k{i}", image=zeros, mask=zeros[0].astype(np.int64)) for i in range(len(groups))]


def _plan(**train: float) -> Plan:
    """A plan whose train section splits as ``train`` says."""
    return Plan(train=TrainConfig(**train))  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [2, 3, 4])
def test_folds_partition_the_data_and_no_group_straddles(k: int) -> None:
    groups = ["a", "a", "a", "b", "c", "c", "d", "e", "e", "f", "g", "h"]
    examples = _examples(groups)
    group_of = {e.key: g for e, g in zip(examples, groups, strict=True)}
    seen: list[str] = []
    for fold in range(k):
        train, val = split_examples(examples, groups, plan=_plan(val_fraction=0.2, seed=3, folds=k, fold=fold))
        train_keys, val_keys = {e.key for e in train}, {e.key for e in val}
        assert val_keys and not train_keys & val_keys and train_keys | val_keys == {e.key for e in examples}
        assert not {group_of[x] for x in train_keys} & {group_of[x] for x in val_keys}, "a group straddles"
        seen += sorted(val_keys)
    assert sorted(seen) == sorted(e.key for e in examples)  # every sample validates in exactly one fold


def test_folds_off_keeps_the_val_fraction_split_and_bad_folds_are_clear_errors() -> None:
    groups = [str(i) for i in range(10)]
    train, val = split_examples(_examples(groups), groups, plan=_plan(val_fraction=0.2, seed=0))
    assert (len(train), len(val)) == (8, 2)
    with pytest.raises(ValueError, match="k >= 2"):
        split_examples(_examples(groups), groups, plan=_plan(val_fraction=0.2, seed=0, folds=1))
    with pytest.raises(ValueError, match="fold must be in 0..2"):
        split_examples(_examples(groups), groups, plan=_plan(val_fraction=0.2, seed=0, folds=3, fold=3))


def test_plans_without_fold_fields_still_load() -> None:
    raw = Plan().to_dict()
    del raw["train"]["folds"], raw["train"]["fold"]
    plan = Plan.from_dict(raw)
    assert (plan.train.folds, plan.train.fold) == (0, 0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "isbi2012_em_membrane"
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root}")
    data = tmp_path_factory.mktemp("isbi_small")
    for sub in ("images", "masks"):
        (data / sub).mkdir()
        for key in KEYS:
            crop = np.asarray(Image.open(root / sub / f"{key}.png"))[:HEIGHT, :WIDTH]
            Image.fromarray(crop).save(data / sub / f"{key}.png")
    return data


@pytest.fixture(scope="module")
def cv_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cv") / "run"
    assert main(["train", str(dataset), "--out", str(out), "--folds", "3", "--fold", "all", *TINY]) == 0
    return out


def _best_val_dice(run: Path) -> float:
    with (run / "metrics.csv").open() as f:
        return max(float(r["val_dice"]) for r in csv.DictReader(f))


def test_fold_all_trains_each_fold_into_its_own_run_and_summarises(cv_run: Path) -> None:
    summary = json.loads((cv_run / "cv.json").read_text())
    assert summary["folds"] == 3 and summary["complete"] is True
    expected = [_best_val_dice(cv_run / f"fold_{i}") for i in range(3)]
    assert list(summary["fold_dice"]) == ["fold_0", "fold_1", "fold_2"]
    np.testing.assert_allclose(list(summary["fold_dice"].values()), expected, rtol=1e-6)
    assert summary["mean_dice"] == pytest.approx(float(np.mean(expected)))
    validated: list[str] = []
    for i in range(3):
        run = cv_run / f"fold_{i}"
        plan = Plan.load(run / "plan.yaml")
        assert (plan.train.folds, plan.train.fold) == (3, i)
        assert (run / "best" / "model.safetensors").is_file() and (
            run / "last" / "model.safetensors"
        ).is_file()
        # The overlays name the fold's validation images: the folds' validation parts partition the data.
        names = sorted(p.stem for p in (run / "overlays").glob("*.png"))
        assert len(names) == 2
        validated += names
    assert sorted(validated) == KEYS


def test_single_fold_matches_the_same_fold_of_fold_all(dataset: Path, cv_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "fold1"
    assert main(["train", str(dataset), "--out", str(out), "--folds", "3", "--fold", "1", *TINY]) == 0
    assert (Plan.load(out / "plan.yaml").train.folds, Plan.load(out / "plan.yaml").train.fold) == (3, 1)
    names = sorted(p.name for p in (out / "overlays").iterdir())
    assert names == sorted(p.name for p in (cv_run / "fold_1" / "overlays").iterdir())


def test_resuming_a_finished_cross_validation_keeps_its_summary(cv_run: Path) -> None:
    before = json.loads((cv_run / "cv.json").read_text())
    assert main(["train", "unused", "--out", str(cv_run), "--resume"]) == 0
    assert json.loads((cv_run / "cv.json").read_text()) == before


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--fold", "all"], "go together"),
        (["--folds", "3"], "go together"),
        (["--folds", "1", "--fold", "0"], "at least 2"),
        (["--folds", "3", "--fold", "3"], "0..2"),
        (["--folds", "3", "--fold", "x"], "0..2"),
    ],
)
def test_bad_fold_flags_are_clear_errors(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--plan", _plan_file(tmp_path), *flags])
        != 0
    )
    assert message in capsys.readouterr().err


def _plan_file(folder: Path) -> str:
    path = folder / "plan.yaml"
    Plan().save(path)
    return str(path)


def test_overlays_have_the_image_size(cv_run: Path) -> None:
    for path in (cv_run / "fold_0" / "overlays").glob("*.png"):
        overlay = np.asarray(Image.open(path))
        assert overlay.shape == (HEIGHT, WIDTH, 3) and overlay.dtype == np.uint8
        # Not a blank picture: the image's texture is there (the EM crop is far from constant).
        assert overlay.std() > 10


def test_overlay_names_are_short_and_never_hidden() -> None:
    assert overlay_name("a/b/c/slice 1.tif") == "c_slice_1.tif"
    assert overlay_name(".hidden") == "hidden"
    assert overlay_name("../..") == "image"


def test_tensorboard_events_hold_the_logged_scalars(cv_run: Path) -> None:
    pytest.importorskip("torch.utils.tensorboard")
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    run = cv_run / "fold_0"
    assert list((run / "tb").glob("events.out.tfevents.*"))
    acc = event_accumulator.EventAccumulator(str(run / "tb"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"loss", "lr", "val_dice"}
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    for tag in ("loss", "lr", "val_dice"):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [int(r["step"]) for r in rows]
        np.testing.assert_allclose([e.value for e in events], [float(r[tag]) for r in rows], rtol=1e-6)


def test_tensorboard_log_is_a_no_op_without_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from unetkit.train.logging import TensorBoardLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    log = TensorBoardLog(tmp_path / "tb")
    log.write(step=1, loss=0.5, lr=1e-3, val_dice=0.7)
    log.close()
    assert not log.enabled and not (tmp_path / "tb").exists()


def test_no_overlays_without_validation_or_in_3d(tmp_path: Path) -> None:
    import torch

    from unetkit.train.overlays import write_validation_overlays

    (tmp_path / "best").mkdir()  # never read: both cases return before loading a model
    example = _examples(["a"])[0]
    cpu = torch.device("cpu")
    assert write_validation_overlays(tmp_path, [], Plan(), device=cpu) == []
    plan_3d = Plan()
    plan_3d.data.spatial_dims = 3
    assert write_validation_overlays(tmp_path, [example], plan_3d, device=cpu) == []
    assert not (tmp_path / "overlays").exists()
