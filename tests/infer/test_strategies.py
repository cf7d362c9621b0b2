"""One interface over the labelling strategies, and ``suggest --regions`` (boxes instead of images)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from _run_factory import make_run
from PIL import Image

from unetkit.cli import main
from unetkit.infer.strategies import random_pick, select, stratified_pick
from unetkit.infer.suggest_regions import Region, box_grid, pick_regions

FILES = [Path(f"{i}.png") for i in range(8)]


def test_random_pick_is_seeded_and_without_replacement() -> None:
    a = random_pick(FILES, n=5, seed=3)
    assert len(set(a)) == 5 and a == random_pick(FILES, n=5, seed=3)
    assert a != random_pick(FILES, n=5, seed=4)


def test_stratified_pick_takes_one_per_foreground_stratum() -> None:
    fractions = [0.0, 0.1, 0.2, 0.0, 0.5, 0.6, 0.0, 0.3]  # with foreground, by fraction: 1, 2, 7, 4, 5
    for seed in range(10):
        picked = {int(p.stem) for p in stratified_pick(FILES, fractions, n=2, seed=seed)}
        # np.array_split of [1, 2, 7, 4, 5] in 2: [1, 2, 7] and [4, 5]
        assert len(picked & {1, 2, 7}) == 1 and len(picked & {4, 5}) == 1
    picked = {int(p.stem) for p in stratified_pick(FILES, fractions, n=6, seed=0)}
    assert {1, 2, 4, 5, 7} <= picked and len(picked) == 6  # all 5 with foreground, one without


def test_select_falls_back_without_a_run_and_checks_its_arguments() -> None:
    chosen = select("foreground-random", FILES, n=3, seed=1)
    assert chosen.strategy == "random" and chosen.note == "no run yet: random"
    assert chosen.files == random_pick(sorted(FILES), n=3, seed=1)
    with pytest.raises(ValueError, match="unknown strategy 'best'; choose one of random, foreground-random"):
        select("best", FILES, n=1)
    with pytest.raises(ValueError, match="cannot choose 9 of 8"):
        select("random", FILES, n=9)


def test_box_grid_and_region_cap_per_image() -> None:
    assert box_grid((5, 4), 3) == [(0, 0, 3, 3), (0, 3, 3, 4), (3, 0, 5, 3), (3, 3, 5, 4)]
    a, b = Path("a.png"), Path("b.png")
    regions = [Region(a, (0, 0, 1, 1), s, s, 0.0) for s in (0.9, 0.8, 0.7)] + [Region(b, (0, 0, 1, 1), 0.5, 0.5, 0.0)]
    picked = pick_regions(regions, n=3, per_image=2)
    assert [(r.path.name, r.score) for r in picked] == [("a.png", 0.9), ("a.png", 0.8), ("b.png", 0.5)]
    with pytest.raises(ValueError, match="--n 4 is more than the 3 region"):
        pick_regions(regions, n=4, per_image=2)


def test_suggest_regions_writes_boxes_and_crops(datasets: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", tile=128, overlap=0.0, tta="flips")
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in (0, 1):
        shutil.copy(datasets / "isbi2012_em_membrane" / "images" / f"{i}.png", pool / f"{i}.png")
    out = tmp_path / "out"
    assert main(["suggest", str(run), str(pool), "--n", "3", "--regions", "200", "--out", str(out)]) == 0
    with (out / "regions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    for r in rows:
        y0, x0, y1, x1 = (int(r[k]) for k in ("y0", "x0", "y1", "x1"))
        assert y0 % 200 == 0 and x0 % 200 == 0 and 0 < y1 - y0 <= 200 and 0 < x1 - x0 <= 200  # ISBI: 512 x 512
        with Image.open(r["crop"]) as crop:
            assert crop.size == (x1 - x0, y1 - y0)
            assert np.array_equal(np.asarray(crop), np.asarray(Image.open(r["file"]))[y0:y1, x0:x1])  # the pixels
    assert max(sum(r["file"] == f for r in rows) for f in {r["file"] for r in rows}) <= 2


def test_cli_random_strategy_writes_the_usual_csv(datasets: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", tile=128, overlap=0.0, tta="flips")
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in (0, 1, 2, 3):
        shutil.copy(datasets / "isbi2012_em_membrane" / "images" / f"{i}.png", pool / f"{i}.png")
    out = tmp_path / "out"
    assert main(["suggest", str(run), str(pool), "--n", "2", "--strategy", "random", "--seed", "5", "--out", str(out)]) == 0
    with (out / "suggestions.csv").open() as f:
        names = [Path(r["file"]).name for r in csv.DictReader(f)]
    assert names == [p.name for p in random_pick(sorted(pool.iterdir()), n=2, seed=5)]
    assert (out / "contact_sheet.png").is_file()


def test_run_based_strategies_use_the_runs_predictions(datasets: Path, tmp_path: Path) -> None:
    from unetkit.infer.strategies import predicted_foreground

    run = make_run(tmp_path / "run", tile=128, overlap=0.0, tta="flips")
    pool = tmp_path / "pool"
    pool.mkdir()
    files = []
    for i in (0, 1, 2, 3):
        files.append(Path(shutil.copy(datasets / "isbi2012_em_membrane" / "images" / f"{i}.png", pool / f"{i}.png")))
    fractions = predicted_foreground(run, files)
    assert all(0.0 < f < 1.0 for f in fractions)  # the untrained head labels part of each EM image foreground
    chosen = select("foreground-random", files, n=2, seed=0, run=run)
    assert chosen.strategy == "foreground-random" and chosen.files == stratified_pick(files, fractions, n=2, seed=0)
    suggested = select("suggest", files, n=2, run=run)
    assert suggested.strategy == "suggest" and len(set(suggested.files)) == 2 and set(suggested.files) <= set(files)
