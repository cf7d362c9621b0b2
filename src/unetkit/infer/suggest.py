"""Which unlabelled images to label next: uncertainty from the TTA views, pooled per image, plus diversity.

For every candidate image (any size; predicted through the tiler like ``unetkit predict``):

1. **Per-pixel uncertainty** ``u(x) = H(p̄(x)) / log K`` in [0, 1]: the entropy of the class probabilities
   averaged over the test-time-augmentation views and the blended tiles, normalised by its maximum (``K`` =
   number of classes; one sigmoid channel counts as ``K = 2``, the Bernoulli ``(p, 1 - p)``). Where the views
   disagree their mean is flat, so disagreement raises ``u`` as well; the variance across the views is
   reported alongside (``tta_variance``, its image mean).
2. **Foreground-aware pooling**: the region ``R`` = pixels the model calls foreground (label != 0) plus the
   ``top_fraction`` most uncertain pixels, and
   ``score = (1 - fg_weight) * mean_x u(x) + fg_weight * mean_{x in R} u(x)``,
   so a small uncertain defect on a large, easy background still scores high (the image mean alone would
   drown it) while an image that is uncertain everywhere scores highest.
3. **Diversity**: greedy uncertainty-weighted k-center on the pooled encoder features (the deepest encoder
   stage, averaged over space and tiles, L2-normalised): the first pick has the top score, each next one
   maximises ``score * d`` where ``d`` is its feature distance to the nearest pick so far. A near-duplicate
   of a pick has ``d ~ 0`` and waits until every distinct image is taken.

Images of the run's own training and validation sets (``plan.data``, split as training split them, with
the ``train --labels`` subset) are skipped, matched by resolved path or by file content.

Example:
    >>> result = suggest(["runs/tiles"], ["unlabelled/"], SuggestOptions(n=20), out="next")  # doctest: +SKIP
    >>> [p.path.name for p in result.picks][:3]                                             # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unetkit.config import Plan
from unetkit.data.normalize import normalize_for
from unetkit.infer.predictor import Predictor
from unetkit.precision import autocast
from unetkit.runtime.run import input_channels

THUMB = 160  # contact-sheet thumbnail size (pixels, longest side)


@dataclass(frozen=True)
class SuggestOptions:
    """What ``unetkit suggest`` does (defaults in brackets).

    Attributes:
        n: how many images to pick [20].
        tta: test-time augmentation whose views give the uncertainty (``flips``, ``d4``, ``d4+scales``) [flips].
        fg_weight: weight of the foreground region's mean uncertainty in the score, in [0, 1] [0.5].
        top_fraction: the most uncertain fraction of pixels counted in the region besides the foreground [0.01].
        diversity: pick by uncertainty-weighted k-center (False: by score alone) [True].
        checkpoint: ``best`` or ``last`` [best].
        device: torch device [cpu].
        backend: what runs the network (:data:`unetkit.infer.backend.BACKEND_CHOICES`) [torch].
        regions: box side in pixels: pick boxes of the images instead of whole images (2D only; see
            :mod:`unetkit.infer.suggest_regions`); 0 = whole images [0].
    """

    n: int = 20
    tta: str = "flips"
    fg_weight: float = 0.5
    top_fraction: float = 0.01
    diversity: bool = True
    checkpoint: str = "best"
    device: str = "cpu"
    backend: str = "torch"
    regions: int = 0


@dataclass
class ImageScore:
    """One candidate's score and its parts (see the module docstring)."""

    path: Path
    score: float
    uncertainty: float
    foreground_uncertainty: float
    foreground_fraction: float
    tta_variance: float
    features: np.ndarray = field(repr=False)
    thumbs: tuple[np.ndarray, np.ndarray | None] | None = field(default=None, repr=False)  # image (RGB), uncertainty
    regions: list[Any] = field(default_factory=list, repr=False)  # suggest_regions.Region boxes with --regions


@dataclass
class Pick:
    rank: int
    image: ImageScore
    distance: float  # feature distance to the nearest earlier pick (inf for the first)
    value: float  # what the greedy step maximised: score * distance (the score for the first pick)


@dataclass
class SuggestResult:
    picks: list[Pick]
    candidates: int  # images scored (after the skips)
    skipped_train: list[Path]
    skipped_val: list[Path]
    note: str = ""  # e.g. why no training image could be skipped
    written: list[Path] = field(default_factory=list)
    regions: list[Any] = field(default_factory=list)  # suggest_regions.Region picks with --regions, best first


# -- pure pieces ------------------------------------------------------------------------------------------


def pixel_uncertainty(probs: np.ndarray) -> np.ndarray:
    """Normalised predictive entropy ``(*spatial)`` in [0, 1] of probabilities ``(K, *spatial)``.

    One channel is a sigmoid: the entropy of ``(p, 1 - p)`` over ``log 2``. ``K`` channels: ``-sum p log p``
    over ``log K``. E.g. ``p = 0.5`` (one channel) -> 1.0; ``(0.25, 0.25, 0.25, 0.25)`` -> 1.0; one-hot -> 0.
    """
    p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
    if p.shape[0] == 1:
        q = np.clip(1.0 - p[0], 1e-12, 1.0)
        return (-(p[0] * np.log(p[0]) + q * np.log(q)) / math.log(2.0)).astype(np.float32)
    return (-(p * np.log(p)).sum(axis=0) / math.log(p.shape[0])).astype(np.float32)


def foreground_region(labels: np.ndarray, uncertainty: np.ndarray, *, top_fraction: float) -> np.ndarray:
    """Boolean mask: the predicted foreground (``labels != 0``) or among the ``ceil(top_fraction * size)`` most
    uncertain pixels (ties at the cut-off all count). ``top_fraction = 0``: the foreground alone."""
    if not 0.0 <= top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in [0, 1], got {top_fraction}")
    region = labels != 0
    k = math.ceil(top_fraction * uncertainty.size)
    if k > 0:
        cut = np.partition(uncertainty.ravel(), uncertainty.size - k)[uncertainty.size - k]
        region = region | (uncertainty >= cut)
    return region


def pool_uncertainty(uncertainty: np.ndarray, region: np.ndarray, *, fg_weight: float) -> tuple[float, float, float]:
    """``(score, image mean, region mean)`` with ``score = (1 - fg_weight) * image mean + fg_weight * region
    mean``; an empty region has mean 0. E.g. ``u = [0, 0, 0, 0.8]``, region ``[F, F, F, T]``, weight 0.5 ->
    ``(0.5, 0.2, 0.8)``."""
    if not 0.0 <= fg_weight <= 1.0:
        raise ValueError(f"fg_weight must be in [0, 1], got {fg_weight}")
    mean = float(uncertainty.mean()) if uncertainty.size else 0.0
    inside = float(uncertainty[region].mean()) if region.any() else 0.0
    return (1.0 - fg_weight) * mean + fg_weight * inside, mean, inside


def greedy_k_center(features: np.ndarray, weights: np.ndarray, n: int) -> tuple[list[int], list[float], list[float]]:
    """Uncertainty-weighted greedy k-center: ``n`` row indices of ``features (M, F)``.

    The first pick is ``argmax(weights)``; each next one maximises ``weights[i] * d(i)``, ``d(i)`` being the
    Euclidean distance from row ``i`` to the nearest row picked so far (ties: the lowest index). Rows equal
    to a pick have ``d = 0`` and come only after every other row.

    Returns:
        ``(order, distances, values)``: picked indices, each one's ``d`` at its pick (inf for the first) and
        the maximised value (the weight for the first).

    Raises:
        ValueError: ``n`` outside ``1..M`` or mismatched shapes.
    """
    m = features.shape[0]
    if weights.shape != (m,):
        raise ValueError(f"got {weights.shape} weights for {m} feature rows")
    if not 1 <= n <= m:
        raise ValueError(f"cannot pick {n} of {m} candidates")
    feats = features.astype(np.float64)
    first = int(np.argmax(weights))
    order, distances, values = [first], [math.inf], [float(weights[first])]
    nearest = np.linalg.norm(feats - feats[first], axis=1)
    taken = np.zeros(m, dtype=bool)
    taken[first] = True
    while len(order) < n:
        value = np.where(taken, -np.inf, weights * nearest)
        best = int(np.argmax(value))
        order.append(best)
        distances.append(float(nearest[best]))
        values.append(float(value[best]))
        taken[best] = True
        nearest = np.minimum(nearest, np.linalg.norm(feats - feats[best], axis=1))
    return order, distances, values


def rank_by_score(weights: np.ndarray, n: int) -> list[int]:
    """The ``n`` indices of the largest weights, largest first (ties: the lowest index)."""
    return [int(i) for i in np.argsort(-weights, kind="stable")[:n]]


def score_regions(
    path: Path, uncertainty: np.ndarray, labels: np.ndarray, *, size: int, fg_weight: float, top_fraction: float
) -> list[Any]:
    """Every ``size`` box of a 2D image's ``uncertainty (H, W)`` and predicted ``labels (H, W)``, scored like a
    whole image: :class:`unetkit.infer.suggest_regions.Region` objects.

    Raises:
        ValueError: a volume (regions are for 2D images).
    """
    from unetkit.infer.suggest_regions import Region, box_grid

    if uncertainty.ndim != 2:
        raise ValueError(f"{path}: --regions is for 2D images; this one has {uncertainty.ndim} spatial axes")
    regions = []
    for y0, x0, y1, x1 in box_grid(uncertainty.shape, size):
        u, lab = uncertainty[y0:y1, x0:x1], labels[y0:y1, x0:x1]
        region = foreground_region(lab, u, top_fraction=top_fraction)
        score, mean, _ = pool_uncertainty(u, region, fg_weight=fg_weight)
        regions.append(Region(path=path, box=(y0, x0, y1, x1), score=score, uncertainty=mean,
                              foreground_fraction=float((lab != 0).mean())))
    return regions


# -- scoring one image -----------------------------------------------------------------------------------


def score_image(
    predictor: Predictor, image: np.ndarray, *, options: SuggestOptions
) -> tuple[ImageScore, np.ndarray, np.ndarray]:
    """Score a raw ``(C, *spatial)`` image; returns the score (path unset), the uncertainty map ``(*spatial)`` and
    the predicted labels ``(*spatial)``."""
    from unetkit.runtime.postprocess import probabilities_to_labels

    probs, variance = predictor.probabilities(image)
    labels = probabilities_to_labels(probs, threshold=predictor.infer.threshold)
    u = pixel_uncertainty(probs)
    region = foreground_region(labels, u, top_fraction=options.top_fraction)
    score, mean, inside = pool_uncertainty(u, region, fg_weight=options.fg_weight)
    scored = ImageScore(
        path=Path(), score=score, uncertainty=mean, foreground_uncertainty=inside,
        foreground_fraction=float((labels != 0).mean()),
        tta_variance=float(variance.mean()) if variance is not None else 0.0,
        features=encoder_features(predictor, image),
    )  # fmt: skip
    return scored, u, labels


@torch.inference_mode()
def encoder_features(predictor: Predictor, image: np.ndarray) -> np.ndarray:
    """The deepest encoder stage of ``predictor``'s model, averaged over space and over the image's tiles
    (non-overlapping, ``infer.tile_size``, the image zero-padded at its end), L2-normalised: ``(F,)``."""
    from unetkit.runtime.tiling import tile_grid

    encoder = getattr(predictor.model, "encoder", None)
    if encoder is None:
        raise ValueError("suggest needs a model with an encoder (a unetkit segmentation model)")
    stride = int(getattr(encoder, "output_stride", 1))
    x = torch.from_numpy(normalize_for(image.astype(np.float32), predictor.plan.data))
    tile = [-(-t // stride) * stride for t in predictor.infer.tile_size]
    target = [max(-(-n // stride) * stride, t) for n, t in zip(x.shape[1:], tile, strict=True)]
    pads = [p for n, t in zip(reversed(x.shape[1:]), reversed(target), strict=True) for p in (0, t - n)]
    x = F.pad(x, pads)
    pooled = []
    for window in tile_grid(tuple(target), tile, overlap=0.0):
        batch = x[(slice(None),) + tuple(window)][None].to(predictor.device)
        if predictor.layout is not None:
            batch = batch.contiguous(memory_format=predictor.layout)
        with autocast(predictor.device, predictor.amp_dtype):
            deepest = encoder(batch)[-1]
        pooled.append(deepest.float().flatten(2).mean(dim=2)[0])
    feats = torch.stack(pooled).mean(dim=0).cpu().numpy().astype(np.float64)
    return feats / max(float(np.linalg.norm(feats)), 1e-12)


# -- which files the run was trained on -------------------------------------------------------------------


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (how a copy of a training image under another name is recognised)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class LabelledFiles:
    """The image files of a run's training and validation sets: resolved paths and content digests."""

    train_paths: set[Path] = field(default_factory=set)
    val_paths: set[Path] = field(default_factory=set)
    train_digests: set[str] = field(default_factory=set)
    val_digests: set[str] = field(default_factory=set)
    note: str = ""

    def side(self, path: Path) -> str | None:
        """``train``, ``val`` or None for a candidate image file."""
        resolved = path.resolve()
        if resolved in self.train_paths:
            return "train"
        if resolved in self.val_paths:
            return "val"
        if not (self.train_digests or self.val_digests):
            return None
        digest = file_digest(path)
        return "train" if digest in self.train_digests else "val" if digest in self.val_digests else None


def labelled_files(plan: Plan) -> LabelledFiles:
    """The run's training and validation images, found again from ``plan.data`` and split exactly as training
    split them (:func:`unetkit.runtime.run.run_split`: the plan's seed, fraction, folds and labelled
    subset). A plan whose dataset is gone (or unset) gives empty sets and a note saying so."""
    from unetkit.data.discovery import discover
    from unetkit.runtime.run import run_split

    try:
        samples = discover(plan.data).samples
        train, val = run_split(plan, [s.key for s in samples], [s.group for s in samples])
    except (OSError, ValueError) as err:
        return LabelledFiles(note=f"the run's training images are unknown ({err}); no image was skipped")
    by_key = {s.key: s for s in samples}
    found = LabelledFiles()
    for side, side_keys in (("train", train), ("val", val)):
        paths = {p.resolve() for k in side_keys for p in by_key[k].image_paths}
        setattr(found, f"{side}_paths", paths)
        setattr(found, f"{side}_digests", {file_digest(p) for p in paths if p.is_file()})
    return found


# -- the command's one call ------------------------------------------------------------------------------


def suggest(run: str | Path, inputs: Sequence[str], options: SuggestOptions, *, out: str | Path) -> SuggestResult:
    """Rank the images named by ``inputs`` (files, folders, globs) for labelling with the run ``run``; write
    ``out/suggestions.csv`` and ``out/contact_sheet.png``.

    Raises:
        FileNotFoundError: no images found, a missing run.
        ValueError: an image with another channel count than the run's, ``n`` above the number of candidates
            left after skipping the run's own images, bad options.
    """
    from unetkit.infer.files import expand_inputs
    from unetkit.infer.suggest_report import write_contact_sheet, write_csv

    if options.tta == "none":
        raise ValueError("suggest needs test-time augmentation views: use --tta flips, d4 or d4+scales")
    files = expand_inputs(list(inputs))
    predictor = Predictor.from_run(run, checkpoint=options.checkpoint, device=options.device, tta=options.tta,
                                   backend=options.backend)
    known = labelled_files(predictor.plan)
    sides = [known.side(p) for p in files]
    pool = [p for p, s in zip(files, sides, strict=True) if s is None]
    skipped_train = [p for p, s in zip(files, sides, strict=True) if s == "train"]
    skipped_val = [p for p, s in zip(files, sides, strict=True) if s == "val"]
    if options.n > len(pool) and not options.regions:
        raise ValueError(f"--n {options.n} is more than the {len(pool)} candidate image(s) "
                         f"({len(skipped_train)} skipped as training images, {len(skipped_val)} as validation images)")
    scores = [_score_file(predictor, path, options) for path in pool]
    if options.regions:
        return _suggest_regions(scores, options, out=Path(out), known=known, skipped=(skipped_train, skipped_val))
    weights = np.array([s.score for s in scores])
    if options.diversity:
        order, distances, values = greedy_k_center(np.stack([s.features for s in scores]), weights, options.n)
    else:
        order = rank_by_score(weights, options.n)
        distances, values = [math.nan] * len(order), [float(weights[i]) for i in order]
    picks = [Pick(rank=r + 1, image=scores[i], distance=d, value=v)
             for r, (i, d, v) in enumerate(zip(order, distances, values, strict=True))]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_csv(picks, out / "suggestions.csv"), write_contact_sheet(picks, out / "contact_sheet.png")]
    return SuggestResult(picks=picks, candidates=len(pool), skipped_train=skipped_train, skipped_val=skipped_val,
                         note=known.note, written=written)


def _score_file(predictor: Predictor, path: Path, options: SuggestOptions) -> ImageScore:
    from unetkit.data.io import read_image
    from unetkit.infer.suggest_report import thumbnails

    image = read_image(path).array
    channels = input_channels(predictor.plan)
    if image.ndim != predictor.spatial_dims + 1:
        raise ValueError(f"{path}: expected a {predictor.spatial_dims}D image, got shape {image.shape[1:]}")
    if image.shape[0] != channels:
        raise ValueError(f"{path}: the image has {image.shape[0]} channel(s); the run takes {channels}")
    scored, u, labels = score_image(predictor, image.astype(np.float32), options=options)
    scored.path = path
    if options.regions:
        scored.regions = score_regions(path, u, labels, size=options.regions, fg_weight=options.fg_weight,
                                       top_fraction=options.top_fraction)
    scored.thumbs = thumbnails(image, u, size=THUMB)
    return scored


def _suggest_regions(
    scores: list[ImageScore], options: SuggestOptions, *, out: Path, known: LabelledFiles,
    skipped: tuple[list[Path], list[Path]],
) -> SuggestResult:
    """``--regions``: the best boxes over all candidates, written as ``regions.csv`` and crops."""
    from unetkit.infer.suggest_regions import pick_regions, write_regions

    picked = pick_regions([r for s in scores for r in s.regions], n=options.n)
    out.mkdir(parents=True, exist_ok=True)
    return SuggestResult(picks=[], candidates=len(scores), skipped_train=skipped[0], skipped_val=skipped[1],
                         note=known.note, written=write_regions(picked, out), regions=picked)
