"""The MONAI peer of the 3D accuracy benchmark: ``BasicUNet(spatial_dims=3)`` trained by a plain recipe.

Run as its own process by ``accuracy3d.py``::

    python benchmarks/acc_peer3d.py --train-list TRAIN.json --test-list TEST.json --budget-s 600 \\
        --pred-dir PRED --result result.json

Recipe (what a MONAI user writes first): each volume z-scored on its own and zero-padded whole to 48 x 64 x 48
(every hippocampus crop fits); random flips on all three axes; batch 4; AdamW lr 1e-3 with cosine decay over
the wall-clock budget (the clock starts at the first training step); Dice + cross-entropy (``DiceCELoss``);
fp32, one thread. Prediction: ``sliding_window_inference`` with a 48 x 64 x 48 window (MONAI's defaults
otherwise), argmax, written as NIfTI with the input's affine and header.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

SHAPE = (48, 64, 48)
BATCH = 4
LR = 1e-3


def read_volume(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


def zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / max(float(x.std()), 1e-6)


def pad_whole(x: np.ndarray) -> np.ndarray:
    out = np.zeros(SHAPE, dtype=x.dtype)
    out[: x.shape[0], : x.shape[1], : x.shape[2]] = x
    return out


def load_training(pairs: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    images = [pad_whole(zscore(read_volume(Path(i)))) for i, _ in pairs]
    labels = [pad_whole(read_volume(Path(m)).round().astype(np.int64)) for _, m in pairs]
    return torch.from_numpy(np.stack(images)[:, None]), torch.from_numpy(np.stack(labels)[:, None])


def random_flips(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    axes = [2 + a for a in range(3) if rng.random() < 0.5]
    return (x.flip(axes), y.flip(axes)) if axes else (x, y)


def train(images: torch.Tensor, labels: torch.Tensor, *, budget_s: float, seed: int) -> tuple[torch.nn.Module, int]:
    from monai.losses import DiceCELoss
    from monai.networks.nets import BasicUNet

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = BasicUNet(spatial_dims=3, in_channels=1, out_channels=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    model.train()
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget_s:
        for group in optimizer.param_groups:
            group["lr"] = LR * 0.5 * (1 + math.cos(math.pi * elapsed / budget_s))
        idx = rng.choice(len(images), size=BATCH, replace=False)
        x, y = random_flips(images[idx], labels[idx], rng)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    return model, steps


@torch.inference_mode()
def predict(model: torch.nn.Module, images: list[str], out: Path) -> None:
    import nibabel as nib
    from monai.inferers import sliding_window_inference

    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    for path in map(Path, images):
        img = nib.load(path)
        x = torch.from_numpy(zscore(np.asarray(img.dataobj, dtype=np.float32)))[None, None]
        logits = sliding_window_inference(x, roi_size=SHAPE, sw_batch_size=1, predictor=model)
        labels = logits[0].argmax(0).numpy().astype(np.uint8)
        header = img.header.copy()
        header.set_data_dtype(np.uint8)
        header.set_slope_inter(None, None)
        nib.save(nib.Nifti1Image(labels, img.affine, header), out / path.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-list", required=True, help="JSON list of [image, label] paths")
    parser.add_argument("--test-list", required=True, help="JSON list of image paths")
    parser.add_argument("--budget-s", type=float, required=True)
    parser.add_argument("--pred-dir", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    images, labels = load_training(json.loads(Path(args.train_list).read_text()))
    started = time.perf_counter()
    model, steps = train(images, labels, budget_s=args.budget_s, seed=args.seed)
    trained = time.perf_counter() - started
    started = time.perf_counter()
    predict(model, json.loads(Path(args.test_list).read_text()), Path(args.pred_dir))
    result = {"steps": steps, "train_seconds": trained, "predict_seconds": time.perf_counter() - started,
              "threads": torch.get_num_threads()}
    Path(args.result).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
