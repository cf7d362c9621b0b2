"""The peer recipe of the accuracy benchmark: a plain, competent training loop shared by both peers.

Run as its own process by ``accuracy.py`` (one process per method, so nothing is shared)::

    python benchmarks/acc_peer.py --dataset isbi --arch smp --train-csv T.csv --test-csv S.csv \\
        --budget 10 --pred-dir PRED --result result.json [--threads N]

Recipe: per-image per-channel standardisation; random 256x256 crops (zero-padded, label IGNORE, when
the image is smaller); random flips and rot90; batch 4; AdamW lr 1e-3 with cosine decay over the
wall-clock budget; cross-entropy + soft Dice (both skipping IGNORE pixels); fp32. The budget clock
starts at the first training step. Inference: whole image, reflect-padded to a multiple of 32, argmax.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from acc_data import (
    IGNORE,
    SPECS,
    DatasetSpec,
    Row,
    prediction_path,
    read_image,
    read_labels,
    read_rows,
    standardise,
    write_json,
)
from PIL import Image

CROP = 256
BATCH = 4
LR = 1e-3


def build_model(*, arch: str, in_channels: int, classes: int) -> torch.nn.Module:
    """The two peers: smp U-Net (ResNet-34 encoder, random init) and MONAI BasicUNet."""
    if arch == "smp":
        import segmentation_models_pytorch as smp

        return smp.Unet("resnet34", encoder_weights=None, in_channels=in_channels, classes=classes)
    if arch == "monai":
        from monai.networks.nets import BasicUNet

        return BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=classes)
    raise ValueError(f"unknown peer architecture {arch!r}; use smp or monai")


def load_training(spec: DatasetSpec, rows: list[Row]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Standardised images ``(C, H, W)`` and labels ``(H, W)``, padded to at least CROP x CROP."""
    data = []
    for row in rows:
        image = standardise(read_image(row.image, channels=spec.in_channels))
        labels = read_labels(spec, row)
        if image.shape[1:] != labels.shape:
            raise ValueError(f"{row.image}: image size {image.shape[1:]} differs from mask size {labels.shape}")
        ph, pw = max(0, CROP - labels.shape[0]), max(0, CROP - labels.shape[1])
        if ph or pw:
            image = np.pad(image, ((0, 0), (0, ph), (0, pw)))
            labels = np.pad(labels, ((0, ph), (0, pw)), constant_values=IGNORE)
        data.append((image, labels))
    return data


def sample_batch(data: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """BATCH random crops with random flips / rot90 (same transform for image and labels)."""
    images, labels = [], []
    for _ in range(BATCH):
        image, label = data[int(rng.integers(len(data)))]
        y = int(rng.integers(label.shape[0] - CROP + 1))
        x = int(rng.integers(label.shape[1] - CROP + 1))
        im, lb = image[:, y : y + CROP, x : x + CROP], label[y : y + CROP, x : x + CROP]
        if rng.random() < 0.5:
            im, lb = im[:, :, ::-1], lb[:, ::-1]
        if rng.random() < 0.5:
            im, lb = im[:, ::-1, :], lb[::-1, :]
        k = int(rng.integers(4))
        im, lb = np.rot90(im, k, axes=(1, 2)), np.rot90(lb, k)
        images.append(np.ascontiguousarray(im))
        labels.append(np.ascontiguousarray(lb))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels).astype(np.int64))


def ce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + (1 - soft Dice), Dice per class over the whole batch, IGNORE pixels left out of both.

    Args:
        logits: ``(B, K, H, W)``; target: ``(B, H, W)`` int64 with ``IGNORE``.
    """
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE)
    valid = (target != IGNORE).unsqueeze(1).float()
    onehot = F.one_hot(target.clamp(max=logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2).float()
    probs = logits.softmax(dim=1) * valid
    onehot = onehot * valid
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    dice = (2 * inter + 1e-5) / (probs.sum(dims) + onehot.sum(dims) + 1e-5)
    if not torch.isfinite(ce):  # a batch made only of IGNORE pixels (e.g. crop of padding)
        ce = logits.sum() * 0.0
    return ce + (1 - dice.mean())


def train(model: torch.nn.Module, data: list, *, budget_s: float, seed: int) -> dict[str, float]:
    """Train until ``budget_s`` seconds have passed since the first step; cosine lr over that time."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    model.train()
    steps, loss_sum = 0, 0.0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget_s:
        for group in opt.param_groups:
            group["lr"] = LR * 0.5 * (1 + math.cos(math.pi * elapsed / budget_s))
        images, labels = sample_batch(data, rng)
        loss = ce_dice_loss(model(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        loss_sum += loss.item()
    return {"steps": steps, "train_seconds": time.perf_counter() - start,
            "mean_loss": loss_sum / max(steps, 1), "final_loss": loss.item() if steps else float("nan")}


@torch.inference_mode()
def predict_image(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """Whole-image argmax: reflect-pad ``(C, H, W)`` to a multiple of 32, predict, crop back."""
    _, h, w = image.shape
    ph, pw = (-h) % 32, (-w) % 32
    padded = np.pad(image, ((0, 0), (0, ph), (0, pw)), mode="reflect")
    logits = model(torch.from_numpy(np.ascontiguousarray(padded))[None])
    return logits[0, :, :h, :w].argmax(0).to(torch.uint8).numpy()


def predict_all(model: torch.nn.Module, *, spec: DatasetSpec, rows: list[Row], pred_dir: Path) -> float:
    """Write one class-index PNG per test row; returns the seconds taken."""
    model.eval()
    start = time.perf_counter()
    for row in rows:
        labels = predict_image(model, standardise(read_image(row.image, channels=spec.in_channels)))
        out = prediction_path(pred_dir, row)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        Image.fromarray(labels).save(tmp, format="PNG")
        os.replace(tmp, out)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, choices=sorted(SPECS))
    p.add_argument("--arch", required=True, choices=["smp", "monai"])
    p.add_argument("--train-csv", required=True, type=Path)
    p.add_argument("--test-csv", required=True, type=Path)
    p.add_argument("--budget", required=True, type=float, help="training minutes")
    p.add_argument("--pred-dir", required=True, type=Path)
    p.add_argument("--result", required=True, type=Path)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    spec = SPECS[args.dataset]
    data = load_training(spec, read_rows(args.train_csv))
    model = build_model(arch=args.arch, in_channels=spec.in_channels, classes=len(spec.classes))
    stats = train(model, data, budget_s=args.budget * 60, seed=args.seed)
    stats["infer_seconds"] = predict_all(model, spec=spec, rows=read_rows(args.test_csv), pred_dir=args.pred_dir)
    stats["torch_threads"] = torch.get_num_threads()
    stats["parameters"] = sum(t.numel() for t in model.parameters())
    write_json(args.result, stats)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
