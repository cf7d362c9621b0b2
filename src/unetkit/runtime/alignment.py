"""Sub-pixel alignment of predictions with the annotation convention, estimated on validation images.

Some label sets sit a fraction of a pixel off the structures they outline: masks rasterised with the
pixel-corner convention, or resampled with another grid origin. A network trained with flip augmentation
cannot learn such an offset (a flipped sample reverses it), so its predictions sit on the structures and
miss the labels by the same fraction of a pixel. On thin structures that costs a lot: ISBI 2012's membrane
labels sit about half a pixel above the membranes, and three different networks (unetkit, smp's ResNet-34
U-Net, MONAI's BasicUNet) all gain 0.006-0.01 Dice when their predictions are moved up by it.

After training, :func:`estimate_shift` tries shifts of the validation probabilities in quarter pixels, one
axis at a time, and keeps the best only if it beats no shift by a margin; the run's plan stores it as
``infer.shift`` and every prediction applies it with :func:`shift_tiles` (linear interpolation, edges
repeated), tile by tile, before the tiles are blended. Data whose labels are aligned keeps ``[]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

# Candidate shifts per axis, in pixels (positive = towards higher indices, as ``scipy.ndimage.shift``).
SHIFT_STEPS = (-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0)
# A shift is kept only when it raises the validation score by at least this much (noise guard).
MIN_GAIN = 0.003


def shift_tiles(tiles: torch.Tensor, shift: Sequence[float]) -> torch.Tensor:
    """Move ``(B, K, *spatial)`` maps by ``shift`` pixels per spatial axis, linearly interpolated.

    ``out[i] = in[i - s]`` along each axis, reading past an edge repeats the edge value (the same as
    ``scipy.ndimage.shift(x, s, order=1, mode="nearest")``). An empty or all-zero ``shift`` returns ``tiles``.

    Raises:
        ValueError: ``shift`` has a length other than the number of spatial axes.
    """
    spatial = tiles.ndim - 2
    if not shift or not any(shift):
        return tiles
    if len(shift) != spatial:
        raise ValueError(f"shift {list(shift)} must have one value per spatial axis ({spatial})")
    out = tiles
    for axis, s in enumerate(shift):
        if s == 0:
            continue
        dim, n = axis + 2, out.shape[axis + 2]
        whole = int(np.floor(s))
        frac = float(s) - whole
        # Edge values repeated on both sides, so that every read below is a slice (no gather): reading
        # in[i - whole] and in[i - whole - 1] for i in [0, n) needs `before` copies of the first row and
        # `after` copies of the last one.
        before, after = max(whole + 1, 0), max(-whole, 0)
        first, last = out.narrow(dim, 0, 1), out.narrow(dim, n - 1, 1)
        padded = torch.cat([first.expand(_sized(first, dim, before)), out, last.expand(_sized(last, dim, after))], dim)
        near = padded.narrow(dim, before - whole, n)
        if frac == 0.0:
            out = near.contiguous()
            continue
        out = torch.lerp(near, padded.narrow(dim, before - whole - 1, n), frac)  # (1 - f) near + f far
    return out


def _sized(edge: torch.Tensor, dim: int, count: int) -> list[int]:
    """The shape of ``edge`` (size 1 along ``dim``) with ``count`` along ``dim``."""
    shape = list(edge.shape)
    shape[dim] = count
    return shape


def shift_probabilities(probs: np.ndarray, shift: Sequence[float]) -> np.ndarray:
    """:func:`shift_tiles` for one ``(K, *spatial)`` numpy probability map."""
    if not shift or not any(shift):
        return probs
    return shift_tiles(torch.from_numpy(np.ascontiguousarray(probs))[None], shift)[0].numpy()


def estimate_shift(
    samples: Sequence[tuple[np.ndarray, np.ndarray]],
    score: Callable[[np.ndarray, np.ndarray], float],
    *,
    steps: Sequence[float] = SHIFT_STEPS,
    min_gain: float = MIN_GAIN,
) -> tuple[list[float], float, float]:
    """The shift of the probabilities that best matches the labels, searched one axis at a time.

    Args:
        samples: ``(probabilities (K, *spatial), target (*spatial))`` pairs, e.g. validation images.
        score: ``score(probabilities, target) -> float``, higher is better (e.g. thresholded Dice).
        steps: candidate shifts per axis, in pixels; must contain 0.
        min_gain: the best shift is kept only when its mean score beats no shift by at least this.

    Returns:
        ``(shift, score without shift, score with the returned shift)``; ``shift`` is ``[]`` when no
        candidate wins by ``min_gain`` (or there are no samples).
    """
    if not samples:
        return [], float("nan"), float("nan")
    if 0.0 not in steps:
        raise ValueError("steps must contain 0 (no shift)")
    spatial = samples[0][0].ndim - 1

    def mean_score(shift: list[float]) -> float:
        return float(np.mean([score(shift_probabilities(p, shift), t) for p, t in samples]))

    best = [0.0] * spatial
    base = best_score = mean_score(best)
    for axis in range(spatial):
        for step in steps:
            if step == best[axis]:
                continue
            trial = [*best]
            trial[axis] = float(step)
            value = mean_score(trial)
            if value > best_score:
                best, best_score = trial, value
    if best_score - base < min_gain:
        return [], base, base
    return best, base, best_score
