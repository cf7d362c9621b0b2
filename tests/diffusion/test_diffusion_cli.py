"""``unetkit diffusion train|sample`` end to end, including the bad-input paths."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import wasserstein_distance

from unetkit.cli import main
from unetkit.config import parse_duration
from unetkit.diffusion.build import class_labels_for
from unetkit.diffusion.progress import ProgressReporter

TINY_FLAGS = ["--base-channels", "8", "--channel-mults", "1,2", "--num-res-blocks", "1"]


def _train(data: Path, run: Path, *extra: str) -> int:
    return main(["diffusion", "train", str(data), "--out", str(run), "--image-size", "16", "--steps", "3",
                 "--batch-size", "2", *TINY_FLAGS, *extra])


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def class_run(two_class_folder: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    assert _train(two_class_folder, run, "--class-conditional") == 0
    return run


def test_train_writes_a_run(two_class_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    class_run = tmp_path / "run"
    assert _train(two_class_folder, class_run, "--class-conditional") == 0
    assert sorted(p.name for p in class_run.iterdir()) == ["config.json", "loss.csv", "model.safetensors"]
    config = json.loads(class_run.joinpath("config.json").read_text())
    assert config["kwargs"]["num_classes"] == 2 and config["kwargs"]["in_channels"] == 1
    assert config["diffusion"]["class_names"] == ["bright", "dark"]
    assert config["diffusion"]["extra"]["steps"] == 3
    assert class_run.joinpath("loss.csv").read_text().splitlines()[0] == "step,loss"
    assert len(class_run.joinpath("loss.csv").read_text().splitlines()) == 4
    out = capsys.readouterr().out
    assert "classes: bright, dark" in out and "step 3/3 loss" in out  # not a TTY: a line per N steps, and the last


def test_sample_writes_grid_and_singles_reproducibly(class_run: Path, tmp_path: Path) -> None:
    args = ["diffusion", "sample", str(class_run), "--n", "5", "--steps", "4", "--seed", "7"]
    assert main([*args, "--out", str(tmp_path / "a" / "grid.png")]) == 0
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["grid.png", "grid_000.png", "grid_001.png", "grid_002.png", "grid_003.png", "grid_004.png"]
    grid = np.asarray(Image.open(tmp_path / "a" / "grid.png"))
    assert grid.shape == (2 + 2 * 18, 2 + 3 * 18)  # 3 columns x 2 rows of 16x16 with 2-pixel padding
    single = np.asarray(Image.open(tmp_path / "a" / "grid_004.png"))
    assert single.shape == (16, 16)
    assert np.array_equal(grid[20:36, 20:36], single)  # row 1, column 1 of the grid
    assert main([*args, "--out", str(tmp_path / "b" / "grid.png")]) == 0
    assert main([*args[:-1], "8", "--out", str(tmp_path / "c" / "grid.png")]) == 0
    assert _digest(tmp_path / "a" / "grid.png") == _digest(tmp_path / "b" / "grid.png")
    assert _digest(tmp_path / "a" / "grid.png") != _digest(tmp_path / "c" / "grid.png")


def test_class_label_by_name_or_index(class_run: Path, tmp_path: Path) -> None:
    common = ["diffusion", "sample", str(class_run), "--n", "2", "--steps", "3"]
    assert main([*common, "--class-label", "dark", "--out", str(tmp_path / "name.png")]) == 0
    assert main([*common, "--class-label", "1", "--out", str(tmp_path / "index.png")]) == 0
    assert _digest(tmp_path / "name.png") == _digest(tmp_path / "index.png")


def test_unknown_class_label_is_a_clear_error(class_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["diffusion", "sample", str(class_run), "--n", "2", "--steps", "2", "--class-label", "Crack",
                 "--out", str(tmp_path / "g.png")])
    assert code == 1
    assert "unknown class label 'Crack'; this run knows: 0=bright, 1=dark" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


def test_class_labels_for() -> None:
    assert class_labels_for(None, ["a", "b", "c"], 5).tolist() == [0, 1, 2, 0, 1]
    assert class_labels_for("c", ["a", "b", "c"], 2).tolist() == [2, 2]
    assert class_labels_for(None, [], 3) is None
    for bad in ("3", "-1", "d"):
        with pytest.raises(ValueError, match="unknown class label"):
            class_labels_for(bad, ["a", "b", "c"], 1)
    with pytest.raises(ValueError, match="without --class-conditional"):
        class_labels_for("a", [], 1)


def test_non_image_file_fails_naming_it_unless_skip_bad(
    two_class_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (two_class_folder / "dark" / "README.md").write_text("# notes")
    assert _train(two_class_folder, tmp_path / "r1") == 1
    err = capsys.readouterr().err
    assert "unetkit diffusion: error:" in err and "README.md (not an image type" in err and "--skip-bad" in err
    assert not (tmp_path / "r1").exists()
    assert _train(two_class_folder, tmp_path / "r2", "--skip-bad") == 0
    assert "warning: skipped" in capsys.readouterr().err


def test_too_small_image_fails_naming_it(two_class_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Image.fromarray(np.zeros((12, 30), np.uint8)).save(two_class_folder / "dark" / "tiny.png")
    assert _train(two_class_folder, tmp_path / "run") == 1
    assert "tiny.png (30x12 WxH)" in capsys.readouterr().err


def test_other_bad_arguments(two_class_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["diffusion", "train", str(two_class_folder), "--out", str(tmp_path / "r"), "--image-size", "12",
                 "--steps", "1", *TINY_FLAGS, "--channel-mults", "1,2,2,2"])
    assert code == 1 and "--image-size 12 must be a multiple of 8" in capsys.readouterr().err
    assert _train(two_class_folder, tmp_path / "run") == 0
    assert _train(two_class_folder, tmp_path / "run") == 1  # the run exists now
    assert "already holds a run; pass --overwrite" in capsys.readouterr().err
    assert main(["diffusion", "sample", str(tmp_path / "nowhere")]) == 1
    assert "config.json not found" in capsys.readouterr().err


def test_parse_duration() -> None:
    assert parse_duration("90") == 90 and parse_duration("90s") == 90
    assert parse_duration("5m") == 300 and parse_duration("1.5h") == 5400
    for bad in ("", "5 min", "-1m", "0"):
        with pytest.raises(ValueError, match="cannot read duration"):
            parse_duration(bad)


def test_progress_lines_without_a_tty_and_a_bar_with_one() -> None:
    plain = io.StringIO()
    with ProgressReporter(total=5, unit="step", every=2, stream=plain) as reporter:
        for step in range(1, 6):
            reporter.update(step, 1.0 / step)
    lines = plain.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["step 2/5 loss 0.5000", "step 4/5 loss 0.2500", "step 5/5 loss 0.2000"]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    with ProgressReporter(total=5, unit="step", every=2, stream=terminal) as reporter:
        for step in range(1, 6):
            reporter.update(step, 0.5)
    assert "5/5" in terminal.getvalue() and "loss=0.5000" in terminal.getvalue()  # tqdm's bar, not lines
    assert "step 2/5" not in terminal.getvalue()


def test_help_lists_the_actions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["diffusion", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "sample" in out


@pytest.mark.slow
def test_cli_training_on_em_crops_learns_the_intensity_histogram(em_images: Path, tmp_path: Path) -> None:
    """~2 min: 32x32 EM crops through the CLI; trained samples' histogram is close to the data's."""
    run = tmp_path / "run"
    args = ["diffusion", "train", str(em_images), "--out", str(run), "--image-size", "32", "--steps", "150",
            "--batch-size", "16", "--lr", "2e-3", "--base-channels", "16", "--channel-mults", "1,2",
            "--num-res-blocks", "1"]
    assert main(args) == 0
    losses = np.loadtxt(run / "loss.csv", delimiter=",", skiprows=1)[:, 1]
    assert losses[-30:].mean() < 0.3 * losses[:30].mean()
    assert main(["diffusion", "sample", str(run), "--n", "16", "--steps", "25", "--out", str(tmp_path / "s" / "g.png")]) == 0
    samples = np.concatenate([np.asarray(Image.open(p)).ravel() for p in sorted((tmp_path / "s").glob("g_*.png"))])
    real = np.concatenate([np.asarray(Image.open(p)).ravel() for p in sorted(em_images.glob("*.png"))[:5]])
    # An untrained model yields clipped +-1 pixels (W1 ~ 90 grey levels here); require a close match.
    distance = wasserstein_distance(samples, real)
    assert distance < 20, distance
