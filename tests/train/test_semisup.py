"""Semi-supervised training (``train --unlabelled``): the confident-pixel loss, the ramp, the batches, the
labelled images found among the unlabelled ones, bad input, 2D and 3D runs, and an unchanged run without it."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from unetkit.cli import main
from unetkit.runtime.examples import Example
from unetkit.train.batches import PatchBatcher
from unetkit.train.semisup import (
    SemiBatcher,
    UnlabelledBatcher,
    confident_labels,
    unsupervised_loss,
    unsupervised_weight,
    weak_view,
)

ISBI = "isbi2012_em_membrane"
TINY = [
    "--value-map", "0:1,255:0", "--encoder", "plain", "--set", "model.kwargs.width=4", "--set", "model.kwargs.depth=3",
    "--set", "train.patch_size=[64,64]", "--set", "train.batch_size=2", "--set", "train.time_budget_s=null",
    "--set", "train.steps=6", "--set", "train.val_every=6", "--set", "train.warmup_steps=2", "--set", "train.ema=0.9",
    "--set", "infer.tile_size=[128,128]", "--set", "train.align=false", "--precision", "fp32",
]  # fmt: skip


def _isbi_list(datasets: Path, tmp_path: Path, slices: range = range(4)) -> Path:
    root = datasets / ISBI
    path = tmp_path / "train.csv"
    path.write_text("image,mask\n" + "".join(f"{root}/images/{i}.png,{root}/masks/{i}.png\n" for i in slices))
    return path


# -- the loss uses only the teacher's confident pixels ------------------------------------------------------


def test_softmax_teacher_only_confident_pixels_contribute() -> None:
    # 2 classes on a 2 x 2 patch; the teacher's largest probability per pixel: 0.95, 0.6, 0.99, 0.5.
    teacher = torch.tensor([[[[0.95, 0.4], [0.01, 0.5]], [[0.05, 0.6], [0.99, 0.5]]]])
    labels, confident = confident_labels(teacher, threshold=0.9)
    assert labels.tolist() == [[[0, 1], [1, 0]]]
    assert confident.tolist() == [[[True, False], [True, False]]]
    student = torch.zeros(1, 2, 2, 2, requires_grad=True)  # uniform: CE = log 2 at every pixel
    loss = unsupervised_loss(student, teacher, threshold=0.9)
    assert loss.item() == pytest.approx(2 * math.log(2) / 4)  # 2 confident pixels, divided by all 4
    loss.backward()
    assert student.grad is not None
    touched = student.grad.abs().sum(dim=1)[0]
    assert (touched > 0).tolist() == [[True, False], [True, False]]
    # At a confident pixel the gradient is (softmax - one_hot) / N: (0.5 - 1) / 4 for the teacher's class.
    assert student.grad[0, 0, 0, 0].item() == pytest.approx(-0.125)
    assert student.grad[0, 1, 1, 0].item() == pytest.approx(-0.125)


def test_sigmoid_teacher_confidence_is_max_of_p_and_one_minus_p() -> None:
    teacher = torch.tensor([[[[0.97, 0.4], [0.02, 0.88]]]])  # one sigmoid channel
    labels, confident = confident_labels(teacher, threshold=0.9)
    assert labels.tolist() == [[[1, 0], [0, 1]]]
    assert confident.tolist() == [[[True, False], [True, False]]]
    logits = torch.tensor([[[[0.5, -2.0], [1.0, 3.0]]]], requires_grad=True)
    loss = unsupervised_loss(logits, teacher, threshold=0.9)
    softplus = torch.nn.functional.softplus
    expected = (softplus(torch.tensor(-0.5)) + softplus(torch.tensor(1.0))).item() / 4  # -log s(0.5), -log(1 - s(1))
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert logits.grad is not None
    assert (logits.grad[0, 0] != 0).tolist() == [[True, False], [True, False]]


def test_no_confident_pixel_gives_zero_loss_and_gradient() -> None:
    teacher = torch.full((2, 3, 4, 4), 1 / 3)
    student = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = unsupervised_loss(student, teacher, threshold=0.5)
    loss.backward()
    assert loss.item() == 0.0 and student.grad is not None and not student.grad.any()


def test_weight_ramps_up_and_stays() -> None:
    assert unsupervised_weight(0, total_steps=1000, weight=2.0, rampup=0.1) == pytest.approx(2.0 * math.exp(-5))
    assert unsupervised_weight(50, total_steps=1000, weight=2.0, rampup=0.1) == pytest.approx(2.0 * math.exp(-1.25))
    assert unsupervised_weight(100, total_steps=1000, weight=2.0, rampup=0.1) == 2.0
    assert unsupervised_weight(900, total_steps=1000, weight=2.0, rampup=0.1) == 2.0
    assert unsupervised_weight(5, total_steps=0, weight=2.0, rampup=0.1) == pytest.approx(2.0 * math.exp(-5))
    assert unsupervised_weight(0, total_steps=1000, weight=2.0, rampup=0.0) == 2.0


# -- batches -------------------------------------------------------------------------------------------------


def test_labelled_batch_is_drawn_as_without_unlabelled_images() -> None:
    rng = np.random.default_rng(0)
    examples = [Example(key=str(i), image=rng.normal(size=(1, 40, 40)).astype(np.float32),
                        mask=(rng.random((40, 40)) > 0.7).astype(np.int64)) for i in range(3)]
    labelled = PatchBatcher(examples, patch_size=(32, 32), batch_size=2, foreground_fraction=0.5, augment=None)
    semi = SemiBatcher(labelled, UnlabelledBatcher([e.image for e in examples], patch_size=(32, 32), batch_size=3))
    x, y = labelled.next(np.random.default_rng([7, 3]))
    x2, y2, weak, strong = semi.next(np.random.default_rng([7, 3]))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert weak.shape == strong.shape == (3, 1, 32, 32)
    assert not torch.equal(weak, strong)


def test_weak_view_is_a_flip_or_turn_of_the_patch() -> None:
    image = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    views = {weak_view(image, np.random.default_rng(s)).tobytes() for s in range(64)}
    # Every output is one of the 8 symmetries of the square (the same on both channels).
    symmetries = set()
    for k in range(4):
        for flip in (False, True):
            a = np.flip(image, axis=2) if flip else image
            symmetries.add(np.ascontiguousarray(np.rot90(a, k=k, axes=(1, 2))).tobytes())
    assert views <= symmetries and len(views) == 8


# -- the CLI: recorded plan, labelled images found, bad input -------------------------------------------------


def test_train_with_unlabelled_records_and_reports_labelled_copies(datasets: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    root = datasets / ISBI
    data = _isbi_list(datasets, tmp_path)
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in (10, 11, 12):
        shutil.copy(root / "images" / f"{i}.png", pool / f"u{i}.png")
    shutil.copy(root / "images" / "1.png", pool / "renamed_copy.png")  # same content as a labelled image
    (pool / "same_path.png").symlink_to(root / "images" / "2.png")  # resolves to a labelled image
    out = tmp_path / "run"
    assert main(["train", str(data), "--out", str(out), *TINY, "--unlabelled", str(pool)]) == 0
    printed = capsys.readouterr().out
    assert "2 image(s) there are also in the labelled set" in printed
    plan = yaml.safe_load((out / "plan.yaml").read_text())["train"]
    assert plan["unlabelled"] == [str(pool.resolve())]
    assert sorted(Path(p).name for p in plan["unlabelled_skipped"]) == ["renamed_copy.png", "same_path.png"]
    assert plan["ema"] == 0.9  # the plan's own EMA is the teacher
    assert json.loads((out / "state.json").read_text())["scalars"]["step"] == 6


def _one_line_error(capsys, argv: list[str]) -> str:  # type: ignore[no-untyped-def]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_bad_unlabelled_folders_are_one_line_errors(datasets: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = _isbi_list(datasets, tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["train", str(data), "--out", str(tmp_path / "run"), *TINY, "--overwrite"]
    assert "holds no image file" in _one_line_error(capsys, [*base, "--unlabelled", str(empty)])
    assert str(empty) in _one_line_error(capsys, [*base, "--unlabelled", str(empty)])

    labelled_only = tmp_path / "labelled_only"
    labelled_only.mkdir()
    for i in range(4):
        (labelled_only / f"{i}.png").symlink_to(datasets / ISBI / "images" / f"{i}.png")
    err = _one_line_error(capsys, [*base, "--unlabelled", str(labelled_only)])
    assert "every --unlabelled image (4) is an image of the labelled set" in err

    rgb = tmp_path / "rgb"
    rgb.mkdir()
    kvasir = sorted((datasets / "kvasir_seg_polyps" / "images").iterdir())[0]
    shutil.copy(kvasir, rgb / kvasir.name)
    err = _one_line_error(capsys, [*base, "--unlabelled", str(rgb)])
    assert kvasir.name in err and "has 3 channel(s); the run takes 1" in err


def test_3d_run_learns_from_unlabelled_volumes(datasets: Path, tmp_path: Path) -> None:
    src = datasets / "msd_task04_hippocampus"
    cases = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006"]
    listing = tmp_path / "train.csv"
    listing.write_text("image,mask\n" + "".join(f"{src}/images/{c}.nii.gz,{src}/labels/{c}.nii.gz\n" for c in cases))
    pool = tmp_path / "pool"
    pool.mkdir()
    for c in ("hippocampus_007", "hippocampus_008"):
        (pool / f"{c}.nii.gz").symlink_to(src / "images" / f"{c}.nii.gz")
    out = tmp_path / "run"
    options = ["--encoder", "plain", "--set", "model.kwargs.width=4", "--set", "model.kwargs.depth=3",
               "--set", "train.patch_size=[16,16,16]", "--set", "train.batch_size=2", "--set", "train.time_budget_s=null",
               "--set", "train.steps=3", "--set", "train.val_every=3", "--set", "train.warmup_steps=1",
               "--set", "train.align=false", "--set", "infer.tile_size=[16,16,16]", "--set", "train.unlabelled_rampup=0",
               "--set", "train.unlabelled_threshold=0.5", "--precision", "fp32"]  # fmt: skip
    assert main(["train", str(listing), "--out", str(out), *options, "--unlabelled", str(pool)]) == 0
    plan = yaml.safe_load((out / "plan.yaml").read_text())["train"]
    assert plan["unlabelled"] == [str(pool.resolve())] and plan["unlabelled_skipped"] == [] and plan["ema"] == 0.99
    losses = [float(row.split(",")[1]) for row in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert losses and all(math.isfinite(v) for v in losses)


# -- without --unlabelled nothing changes ---------------------------------------------------------------------

# The last checkpoint of the TINY run (6 fp32 steps on ISBI slices 0-3) as trained by unetkit before
# semi-supervised training existed (commit d2d5421): parameter count, sum, sum of squares, and a cosine
# projection of all tensors concatenated in name order. Identical bit for bit on the machine that recorded it;
# the tolerance only absorbs other CPUs' floating-point order. A different batch, an extra op in the step or a
# changed EMA moves the projection by far more (a changed seed: see the second assertion).
MAIN_FINGERPRINT = (30840, 384.6762597092063, 833.4168158096825, 2.8402845980684805)


def _fingerprint(run: Path) -> tuple[int, float, float, float]:
    from safetensors.torch import load_file

    weights = load_file(str(run / "last" / "model.safetensors"))
    v = np.concatenate([weights[k].double().numpy().ravel() for k in sorted(weights)])
    return v.size, float(v.sum()), float((v * v).sum()), float((v * np.cos(np.arange(v.size))).sum())


def test_run_without_unlabelled_matches_main(datasets: Path, tmp_path: Path, simulate_cpu) -> None:  # type: ignore[no-untyped-def]
    # The contiguous fp32 layout the fingerprint was recorded with (this AVX2 machine trains fp32 in channels_last
    # since; another layout reorders the convolutions' sums).
    simulate_cpu("x86-avx512")
    data = _isbi_list(datasets, tmp_path)
    assert main(["train", str(data), "--out", str(tmp_path / "run"), *TINY]) == 0
    got = _fingerprint(tmp_path / "run")
    assert got[0] == MAIN_FINGERPRINT[0]
    assert got[1:] == pytest.approx(MAIN_FINGERPRINT[1:], rel=1e-6, abs=1e-5)
    assert main(["train", str(data), "--out", str(tmp_path / "seed1"), *TINY, "--set", "train.seed=1"]) == 0
    other = _fingerprint(tmp_path / "seed1")
    assert abs(other[3] - MAIN_FINGERPRINT[3]) > 1e-3  # the fingerprint tells runs apart


def test_images_outside_the_labelled_subset_count_as_unlabelled(datasets: Path, tmp_path: Path) -> None:
    from unetkit.config import Plan
    from unetkit.data.options import DataConfig
    from unetkit.train.semisup import run_image_files

    data = _isbi_list(datasets, tmp_path, range(10))
    plan = Plan(data=DataConfig(root=str(data), mask_threshold=128))
    everything = run_image_files(plan)
    assert len(everything) == 10
    plan.train.labels = 3
    used = run_image_files(plan)
    assert len(used) == 3 + 2 and set(used) < set(everything)  # 3 labelled + the validation part (0.2 of 10)
