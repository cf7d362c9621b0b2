"""Cold-start suggestions (``unetkit suggest --cold-start``): which images to label first, with no run.

With no model trained yet, uncertainty means nothing; what helps is a first labelled set that is *typical*
(no outliers) and *diverse* (no near-duplicates) (TypiClust, Hacohen et al., ICML 2022):

1. **Features**: every image goes through a frozen ImageNet-pretrained EfficientNet-Lite0 encoder (the
   weights bundled with the ``pretrained`` extra); the deepest stage is averaged over space and
   L2-normalised. The image is scaled to [0, 1] (``uint8`` by 255, anything else by its 1st / 99th
   percentiles), normalised as ImageNet-Lite0 expects (mean = std = 0.5) and resized to 224 x 224. Without
   the weights package a seeded, untrained plain encoder stands in and the result says so (its features
   still separate very different images, but are much weaker). A volume ``(C, D, H, W)`` contributes the
   mean of the features of three slices along its first spatial axis (at 1/4, 1/2 and 3/4 of it).
2. **Clusters**: seeded k-means (k-means++ starts, the best of several runs) into ``n`` clusters.
3. **Typicality** of an image: ``1 / mean distance to its k nearest neighbours`` in the pool (``k = min(20,
   M - 1)``); an outlier is far from everything and has a low one.
4. **Picks**: the most typical image of each cluster, clusters taken from the largest to the smallest (ties:
   the more typical pick first). Two copies of one image share a cluster, so only one is picked; an outlier
   that k-means isolates in a cluster of its own is the last pick.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

FEATURE_SIZE = 224  # side of the square the images are resized to for the encoder (its ImageNet input size)
NEIGHBOURS = 20  # k of the typicality's k nearest neighbours (TypiClust's choice)
KMEANS_RUNS = 10
KMEANS_ITERATIONS = 100
VOLUME_SLICES = (0.25, 0.5, 0.75)  # where along the first spatial axis a volume is sliced
THUMB = 160  # contact-sheet thumbnail size, as unetkit suggest's


# -- pure pieces ------------------------------------------------------------------------------------------


def kmeans(features: np.ndarray, n: int, *, seed: int = 0, runs: int = KMEANS_RUNS) -> np.ndarray:
    """Seeded k-means of ``features (M, F)`` into ``n`` clusters: ``runs`` k-means++ starts, Lloyd iterations
    to convergence (at most :data:`KMEANS_ITERATIONS`), the run of least inertia kept.

    Returns:
        ``(M,)`` cluster index of each row, ``0 .. n - 1`` (clusters may be empty only if rows repeat).

    Raises:
        ValueError: ``n`` outside ``1 .. M``.
    """
    m = features.shape[0]
    if not 1 <= n <= m:
        raise ValueError(f"cannot make {n} clusters of {m} images")
    x = features.astype(np.float64)
    rng = np.random.default_rng(seed)
    best, best_inertia = np.zeros(m, dtype=np.int64), math.inf
    for _ in range(runs):
        centres = _kmeans_plus_plus(x, n, rng)
        for _ in range(KMEANS_ITERATIONS):
            labels = _squared_distances(x, centres).argmin(axis=1)
            moved = np.array([x[labels == c].mean(axis=0) if (labels == c).any() else centres[c] for c in range(n)])
            if np.allclose(moved, centres):
                break
            centres = moved
        inertia = float(_squared_distances(x, centres).min(axis=1).sum())
        if inertia < best_inertia - 1e-12:
            best, best_inertia = _squared_distances(x, centres).argmin(axis=1), inertia
    return best


def typicality(features: np.ndarray, *, k: int = NEIGHBOURS) -> np.ndarray:
    """``1 / mean Euclidean distance to the k nearest other rows`` of ``features (M, F)`` (``k`` capped at
    ``M - 1``); a row with ``k`` exact copies gets ``inf``. One row: typicality 1.

    Example:
        >>> typicality(np.array([[0.0], [1.0], [3.0]]), k=1).tolist()
        [1.0, 1.0, 0.5]
    """
    m = features.shape[0]
    if m < 2:
        return np.ones(m)
    k = max(1, min(k, m - 1))
    x = features.astype(np.float64)
    out = np.empty(m)
    for start in range(0, m, 256):  # rows in blocks: memory (256, M), not (M, M)
        d = np.sqrt(np.maximum(_squared_distances(x[start:start + 256], x), 0.0))
        d[np.arange(d.shape[0]), np.arange(start, start + d.shape[0])] = np.inf  # not its own neighbour
        nearest = np.partition(d, k - 1, axis=1)[:, :k].mean(axis=1)
        with np.errstate(divide="ignore"):
            out[start:start + d.shape[0]] = 1.0 / nearest
    return out


def typical_picks(features: np.ndarray, n: int, *, seed: int = 0) -> list[tuple[int, int, float]]:
    """TypiClust picks: ``[(row, cluster size, typicality), ...]``, best first (see the module docstring).

    Raises:
        ValueError: ``n`` outside ``1 .. M``.
    """
    labels = kmeans(features, n, seed=seed)
    typical = typicality(features)
    picks = []
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        row = int(members[np.argmax(typical[members])])  # ties: the first row
        picks.append((row, len(members), float(typical[row])))
    picks.sort(key=lambda p: (-p[1], -p[2], p[0]))
    return picks


def _kmeans_plus_plus(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    centres = [x[int(rng.integers(x.shape[0]))]]
    for _ in range(1, n):
        d = _squared_distances(x, np.array(centres)).min(axis=1)
        total = d.sum()
        index = int(rng.choice(x.shape[0], p=d / total)) if total > 0 else int(rng.integers(x.shape[0]))
        centres.append(x[index])
    return np.array(centres)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :], 0.0)


# -- features ----------------------------------------------------------------------------------------------


@dataclass
class FeatureEncoder:
    """A frozen encoder and what it is (``reason`` says why the plain stand-in is used, when it is)."""

    encoder: torch.nn.Module
    name: str
    reason: str = ""


def pretrained_encoder(*, in_channels: int, device: str = "cpu") -> FeatureEncoder:
    """The ImageNet EfficientNet-Lite0 encoder (stem adapted to ``in_channels``), or, without its weights
    package, a seeded untrained plain encoder with the reason."""
    from unetkit.models.factory import create_model

    try:
        from unetkit.models.encoders.lite0 import lite0_weights_path

        lite0_weights_path()
        model = create_model("unet", encoder="tf_efficientnet_lite0", encoder_weights="imagenet",
                             in_channels=in_channels, classes=2)
        found = FeatureEncoder(encoder=_module(model.encoder), name="tf_efficientnet_lite0 (ImageNet)")
    except (ModuleNotFoundError, FileNotFoundError) as err:
        torch.manual_seed(0)
        model = create_model("unet", encoder="plain", in_channels=in_channels, classes=2)
        found = FeatureEncoder(encoder=_module(model.encoder), name="plain (untrained, seed 0)",
                               reason=f"no pretrained weights ({err}); features of an untrained plain encoder")
    found.encoder.eval().to(device)
    return found


@torch.inference_mode()
def image_features(encoder: FeatureEncoder, image: np.ndarray, *, device: str = "cpu") -> np.ndarray:
    """Pooled, L2-normalised deepest-stage features ``(F,)`` of a raw ``(C, H, W)`` image or ``(C, D, H, W)``
    volume (three slices, see the module docstring)."""
    if image.ndim == 4:
        depth = image.shape[1]
        slices = [image[:, min(depth - 1, int(f * depth))] for f in VOLUME_SLICES]
        feats = np.mean([image_features(encoder, s, device=device) for s in slices], axis=0)
        return feats / max(float(np.linalg.norm(feats)), 1e-12)
    x = torch.from_numpy(_unit_range(image))[None].to(device)
    x = F.interpolate((x - 0.5) / 0.5, size=(FEATURE_SIZE, FEATURE_SIZE), mode="bilinear", antialias=True,
                      align_corners=False)
    deepest = encoder.encoder(x)[-1]
    feats = deepest.float().flatten(2).mean(dim=2)[0].cpu().numpy().astype(np.float64)
    return feats / max(float(np.linalg.norm(feats)), 1e-12)


def _unit_range(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    pixels = image.astype(np.float32)
    low, high = np.percentile(pixels, (1, 99))
    return np.clip((pixels - low) / (high - low), 0, 1) if high > low else np.zeros_like(pixels)


# -- the command's one call ------------------------------------------------------------------------------


@dataclass
class ColdStartResult:
    """What :func:`cold_start` picked and wrote."""

    picks: list[Any]  # unetkit.infer.suggest.Pick objects, best first
    candidates: int
    encoder: str
    note: str = ""
    written: list[Path] = field(default_factory=list)


def cold_start(inputs: Sequence[str], *, n: int, out: str | Path, seed: int = 0, device: str = "cpu") -> ColdStartResult:
    """Pick ``n`` typical and diverse images of ``inputs`` (files, folders, globs) to label first; write
    ``out/suggestions.csv`` and ``out/contact_sheet.png`` (the columns of ``unetkit suggest``: ``score`` is
    the typicality, ``diversity_distance`` the feature distance to the nearest earlier pick,
    ``selection_value`` the size of the pick's cluster; the uncertainty columns are ``nan``).

    Raises:
        FileNotFoundError: no images found.
        ValueError: ``n`` larger than the pool, or images of different channel counts or dimensionality.
    """
    from unetkit.infer.files import expand_inputs
    from unetkit.infer.suggest import ImageScore, Pick
    from unetkit.infer.suggest_report import write_contact_sheet, write_csv

    files = expand_inputs(list(inputs))
    if n > len(files):
        raise ValueError(f"--n {n} is more than the {len(files)} image(s) in {', '.join(inputs)}")
    encoder, features = pool_features(files, device=device)
    picks: list[Pick] = []
    for rank, (row, size, typical) in enumerate(typical_picks(features, n, seed=seed), start=1):
        earlier = [p.image.features for p in picks]
        distance = float(np.linalg.norm(np.stack(earlier) - features[row], axis=1).min()) if earlier else math.inf
        scored = ImageScore(path=files[row], score=typical, uncertainty=math.nan, foreground_uncertainty=math.nan,
                            foreground_fraction=math.nan, tta_variance=math.nan, features=features[row],
                            thumbs=_thumbnail(_read(files[row])))
        picks.append(Pick(rank=rank, image=scored, distance=distance, value=float(size)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_csv(picks, out / "suggestions.csv"), write_contact_sheet(picks, out / "contact_sheet.png")]
    return ColdStartResult(picks=picks, candidates=len(files), encoder=encoder.name, note=encoder.reason,
                           written=written)


def pool_features(files: Sequence[Path], *, device: str = "cpu") -> tuple[FeatureEncoder, np.ndarray]:
    """The encoder and the features ``(M, F)`` of every file, read one at a time (memory: one image).

    Raises:
        ValueError: an image whose channel count or dimensionality differs from the first one's.
    """
    encoder: FeatureEncoder | None = None
    first: tuple[int, int] = (0, 0)
    rows = []
    for path in files:
        image = _read(path)
        if encoder is None:
            encoder, first = pretrained_encoder(in_channels=image.shape[0], device=device), (image.shape[0], image.ndim)
        elif (image.shape[0], image.ndim) != first:
            raise ValueError(f"{path}: {image.shape[0]} channel(s), {image.ndim - 1}D; {files[0]} has {first[0]} "
                             f"channel(s), {first[1] - 1}D: give images of one kind")
        rows.append(image_features(encoder, image, device=device))
    assert encoder is not None  # expand_inputs never returns an empty list
    return encoder, np.stack(rows)


def _read(path: Path) -> np.ndarray:
    from unetkit.data.dataset import read_sample_image
    from unetkit.data.discovery import Sample

    return read_sample_image(Sample(key=path.stem, image=path))[0]


def _thumbnail(image: np.ndarray) -> tuple[np.ndarray, None]:
    from unetkit.infer.suggest_report import thumbnails

    blank = np.zeros(image.shape[1:], dtype=np.float32)
    return thumbnails(image, blank, size=THUMB)[0], None


def _module(value: object) -> torch.nn.Module:
    if not isinstance(value, torch.nn.Module):
        raise TypeError("the model has no encoder module")
    return value
