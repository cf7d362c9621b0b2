"""``unetkit suggest --cold-start``: k-means, typicality, and picks on real images (duplicates, an outlier)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unetkit.cli import main
from unetkit.infer.coldstart import kmeans, typical_picks, typicality

POLYPS = 8


def test_typicality_is_inverse_mean_distance_to_nearest_neighbours() -> None:
    x = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0], [10.0, 0.0]])
    # k = 2: row 0's nearest are row 2 (1) and row 1 (5) -> 1 / 3; row 3's: row 1 (sqrt 65) and row 0 (10).
    got = typicality(x, k=2)
    assert got[0] == pytest.approx(1 / 3)
    assert got[3] == pytest.approx(1 / ((np.sqrt(65) + 10) / 2))
    assert typicality(np.array([[1.0], [1.0], [5.0]]), k=1)[0] == np.inf  # an exact copy


def test_kmeans_finds_separated_groups_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(c, 0.1, size=(10, 2)) for c in ((0, 0), (5, 5), (0, 5))])
    labels = kmeans(x, 3, seed=0)
    assert [len(set(labels[i:i + 10])) for i in (0, 10, 20)] == [1, 1, 1] and len(set(labels)) == 3
    assert np.array_equal(labels, kmeans(x, 3, seed=0))


def test_picks_take_largest_clusters_first() -> None:
    x = np.array([[0.0], [0.1], [0.2], [0.15], [10.0], [10.1], [50.0]])
    picks = typical_picks(x, 3)
    assert [size for _, size, _ in picks] == [4, 2, 1]
    assert picks[-1][0] == 6  # the isolated point comes last
    assert picks[0][0] in (1, 2, 3)  # a central member of the big cluster, not its edge


def _polyps(datasets: Path, folder: Path) -> list[Path]:
    folder.mkdir()
    files = []
    for src in sorted((datasets / "kvasir_seg_polyps" / "images").iterdir())[:POLYPS]:
        files.append(Path(shutil.copy(src, folder / src.name)))
    return files


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "suggestions.csv").open() as f:
        return list(csv.DictReader(f))


def test_two_copies_of_one_image_are_not_both_picked(datasets: Path, tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    files = _polyps(datasets, pool)
    shutil.copy(files[3], pool / "zz_copy_of_3.jpg")
    out = tmp_path / "out"
    # 9 images, 8 picks: typicality alone would pick the two copies first (each is the other's nearest neighbour).
    assert main(["suggest", "--cold-start", str(pool), "--n", "8", "--out", str(out)]) == 0
    picked = {Path(r["file"]).name for r in _rows(out)}
    assert len(picked) == 8
    assert not {files[3].name, "zz_copy_of_3.jpg"} <= picked
    assert (out / "contact_sheet.png").is_file()


def test_an_outlier_is_not_picked_before_typical_images(datasets: Path, tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    _polyps(datasets, pool)
    tile = sorted((datasets / "magnetic_tile_defects" / "images").rglob("*.jpg"))[0]
    grey = np.asarray(Image.open(tile).convert("L"))
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(pool / "outlier_tile.png")  # a tile among polyps, as RGB
    for n in (3, POLYPS + 1):
        out = tmp_path / f"out{n}"
        assert main(["suggest", "--cold-start", str(pool), "--n", str(n), "--out", str(out)]) == 0
        names = [Path(r["file"]).name for r in _rows(out)]
        assert len(names) == n
        assert "outlier_tile.png" not in names[:-1], names  # absent, or the very last pick
    rows = _rows(tmp_path / f"out{POLYPS + 1}")
    typical = {Path(r["file"]).name: float(r["score"]) for r in rows}
    assert typical["outlier_tile.png"] == min(typical.values())


def test_n_larger_than_the_pool_is_a_one_line_error(datasets: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    pool = tmp_path / "pool"
    _polyps(datasets, pool)
    assert main(["suggest", "--cold-start", str(pool), "--n", "20", "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--n 20 is more than the {POLYPS} image(s)" in err
    assert not (tmp_path / "out").exists()
