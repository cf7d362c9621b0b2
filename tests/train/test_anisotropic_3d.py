"""Anisotropic volumes end to end (CI keeps this one): real hippocampus MRI resampled to 3-5 mm slices is planned
at an anisotropic target spacing, trained on, predicted back on each input's own grid (shape, affine, header),
and scored in mm by ``evaluate``, whose HD95 / surface Dice must match MONAI's on those predicted volumes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from unetkit.cli import main
from unetkit.config import Plan

# Voxel sizes (x, y, z in mm) of the eight cases: median 1 x 1 x 4 mm (ratio 4 > 3, anisotropic), and the
# 10th percentile of z is 3 mm, so the planner's target is 1 x 1 x 3 mm. The held-out case (last) is at
# neither spacing, so prediction resamples it there and back.
SPACINGS = [(1.0, 1.0, 3.0)] * 2 + [(1.0, 1.0, 4.0)] * 4 + [(1.25, 1.25, 5.0)] * 2
CASES = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006", "hippocampus_007",
         "hippocampus_008", "hippocampus_011", "hippocampus_014"]  # fmt: skip


def _train_options(steps: int, width: int) -> list[str]:
    return ["--set", "train.time_budget_s=null", "--set", f"train.steps={steps}", "--set", "train.warmup_steps=4",
            "--set", f"train.val_every={steps}", "--set", "train.align=false", "--set", f"model.kwargs.width={width}",
            "--precision", "fp32"]  # fmt: skip


def _write_coarse_case(src: Path, case: str, spacing: tuple[float, ...], out: Path) -> None:
    """The real 1 mm case resampled to ``spacing`` (image cubic, label nearest), with a matching affine."""
    import nibabel as nib

    image = nib.load(src / "images" / f"{case}.nii.gz")
    label = nib.load(src / "labels" / f"{case}.nii.gz")
    zoom = [1.0 / s for s in spacing]  # the source is 1 mm isotropic (SOURCE.md)
    arrays = {
        "images": ndimage.zoom(np.asarray(image.dataobj, dtype=np.float32), zoom, order=3),
        "masks": ndimage.zoom(np.asarray(label.dataobj).astype(np.uint8), zoom, order=0),
    }
    affine = image.affine.copy()
    affine[:3, :3] = np.diag(spacing)
    for folder, array in arrays.items():
        (out / folder).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, affine), out / folder / f"{case}.nii.gz")


def _monai_surface_scores(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    """MONAI's HD95 (mm) and surface Dice at 1 mm of one class's boolean masks."""
    import torch

    mm = pytest.importorskip("monai.metrics")
    p, t = (torch.from_numpy(m[None, None].astype(np.float32)) for m in (pred, truth))
    hd = mm.compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=list(spacing))
    nsd = mm.compute_surface_dice(p, t, class_thresholds=[1.0], include_background=True, spacing=list(spacing))
    return float(hd[0, 0]), float(nsd[0, 0])


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy.*:FutureWarning")  # MONAI 1.6 internals
def test_anisotropic_volumes_plan_train_predict_evaluate(datasets: Path, tmp_path: Path) -> None:
    """CI: a few steps of a narrow network, so the plan, the grids and the metrics are checked, not learning."""
    _plan_train_predict_evaluate(datasets, tmp_path, steps=24, width=8)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy.*:FutureWarning")
def test_anisotropic_volumes_learn(datasets: Path, tmp_path: Path) -> None:
    """The same with the planned width and enough steps to find the hippocampus (minutes on 2 CPU cores)."""
    dice, compared = _plan_train_predict_evaluate(datasets, tmp_path, steps=200, width=16)
    # Measured on 2 busy AVX2 cores (9 min): anterior 0.583, posterior 0.180, validation 0.53; nothing scores 0.
    assert np.mean(dice) > 0.3 and min(dice) > 0.1, dice
    assert compared == 2  # both classes predicted, so both were checked against MONAI


def _plan_train_predict_evaluate(datasets: Path, tmp_path: Path, *, steps: int, width: int) -> tuple[list[float], int]:
    """Returns the held-out case's Dice per class and how many classes were compared with MONAI."""
    import nibabel as nib

    src = datasets / "msd_task04_hippocampus"
    data, held_out = tmp_path / "train", tmp_path / "test"
    for case, spacing in zip(CASES[:-1], SPACINGS[:-1], strict=True):
        _write_coarse_case(src, case, spacing, data)
    _write_coarse_case(src, CASES[-1], SPACINGS[-1], held_out)

    assert main(["plan", str(data), "--out", str(tmp_path / "plan.yaml")]) == 0
    plan = Plan.load(tmp_path / "plan.yaml")
    assert plan.data.target_spacing == [1.0, 1.0, 3.0], plan.data.spacing_reason
    assert "anisotropic" in plan.data.spacing_reason
    # ~12 slices of 3 mm: the patch has fewer voxels along z than in-plane.
    assert plan.train.patch_size[2] < min(plan.train.patch_size[:2]), plan.train.patch_size
    assert plan.infer.tta == "flips"

    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), *_train_options(steps, width)]) == 0
    assert Plan.load(run / "plan.yaml").data.target_spacing == [1.0, 1.0, 3.0]

    test_image = held_out / "images" / f"{CASES[-1]}.nii.gz"
    pred_dir = tmp_path / "pred"
    assert main(["predict", str(run), str(test_image), "--out", str(pred_dir), "--prob"]) == 0
    source = nib.load(test_image)
    mask = nib.load(pred_dir / f"{CASES[-1]}.nii.gz")
    prob = nib.load(pred_dir / f"{CASES[-1]}_prob.nii.gz")
    assert mask.shape == source.shape and prob.shape == (*source.shape, 3)
    np.testing.assert_array_equal(mask.affine, source.affine)
    np.testing.assert_array_equal(prob.affine, source.affine)
    assert mask.header.get_zooms() == source.header.get_zooms()
    assert mask.get_data_dtype() == np.uint8 and prob.get_data_dtype() == np.float32
    labels = np.asarray(mask.dataobj)
    np.testing.assert_array_equal(labels, np.asarray(prob.dataobj).argmax(-1))

    truth = np.asarray(nib.load(held_out / "masks" / f"{CASES[-1]}.nii.gz").dataobj)
    dice = [2 * ((labels == c) & (truth == c)).sum() / ((labels == c).sum() + (truth == c).sum()) for c in (1, 2)]
    print(f"anisotropic held-out case {CASES[-1]} at {SPACINGS[-1]} mm: Dice anterior {dice[0]:.3f}, "
          f"posterior {dice[1]:.3f} ({steps} steps, width {width})")

    evaluated = tmp_path / "eval"
    assert main(["evaluate", str(run), str(held_out), "--out", str(evaluated)]) == 0
    with (evaluated / "per_image.csv").open() as f:
        row = next(csv.DictReader(f))
    summary = json.loads((evaluated / "summary.json").read_text())
    assert summary["images"] == 1
    # evaluate predicts exactly what predict wrote (same grid, same TTA), so its Dice is the one above.
    assert float(row["dice_class_1"]) == pytest.approx(dice[0], abs=1e-6)
    assert float(row["dice_class_2"]) == pytest.approx(dice[1], abs=1e-6)
    compared = _assert_agrees_with_monai(row, labels, truth, SPACINGS[-1])
    return dice, compared


def _assert_agrees_with_monai(row: dict[str, str], labels: np.ndarray, truth: np.ndarray,
                              spacing: tuple[float, ...]) -> int:
    """evaluate's HD95 / NSD columns against MONAI's on the predicted volume; a class the network did not predict
    gets the documented values instead (MONAI's are inf / NaN there)."""
    diagonal = float(np.sqrt(sum(((n - 1) * s) ** 2 for n, s in zip(labels.shape, spacing, strict=True))))
    compared = 0
    for c in (1, 2):
        hd, nsd = float(row[f"hd95_class_{c}"]), float(row[f"nsd_class_{c}"])
        if not (labels == c).any():
            print(f"class {c}: not predicted; HD95 {hd:.4f} mm (the diagonal), NSD {nsd:.4f}")
            assert (hd, nsd) == (pytest.approx(diagonal), 0.0)
            continue
        ref_hd, ref_nsd = _monai_surface_scores(labels == c, truth == c, spacing)
        print(f"class {c}: HD95 {hd:.4f} mm (MONAI {ref_hd:.4f}), NSD@1mm {nsd:.4f} (MONAI {ref_nsd:.4f})")
        # MONAI computes distances in float32 (ours in float64): 1e-3 relative is that rounding, not a method gap.
        assert hd == pytest.approx(ref_hd, rel=1e-3)
        assert nsd == pytest.approx(ref_nsd, abs=1e-6)
        compared += 1
    return compared
