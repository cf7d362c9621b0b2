"""Test-time augmentation (TTA): predict transformed copies of the input, undo each transform, merge.

Views are elements of the symmetry group of the pixel grid: flips of spatial axes followed by quarter turns
in the plane of the last two spatial axes. A view is applied to the input, the model predicts, and the
*inverse* view is applied to the prediction, so all predictions are aligned with the input before merging.
Scales resize the input by a factor, predict, and resize the prediction back to the input size.

Levels and their cost (forward passes per input, i.e. model evaluations per tile):

* ``none``: the identity. 1 pass.
* ``flips``: every subset of flipped spatial axes. 4 passes in 2D, 8 in 3D.
* ``d4``: in 2D the 8 symmetries of the square (4 quarter turns, each with and without a flip of W);
  in 3D the 8 flip combinations of the 3 axes (no rotations: volumes are often anisotropic). 8 passes.
* ``d4+scales``: ``d4`` at each scale (default 0.75, 1, 1.25). ``8 * len(scales)`` passes (24 by default).

All views of a batch go to the model in as few calls as possible: views whose transformed shapes agree are
concatenated along the batch axis (up to ``max_batch`` samples per call). Rotating a non-square input
changes its shape, so those views form a second group.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unetkit.choices import TTA_LEVELS

MERGES = ("mean", "max", "gmean")
UNCERTAINTIES = ("variance", "entropy")
DEFAULT_SCALES = (0.75, 1.0, 1.25)
_EPS = 1e-7

TileFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class View:
    """A grid symmetry: flip the spatial ``flips`` axes (0 = first spatial axis), then rotate ``rot90``
    quarter turns in the plane of the last two spatial axes (from the first of them towards the second,
    like ``numpy.rot90(x, k, axes=(-2, -1))``)."""

    flips: tuple[int, ...] = ()
    rot90: int = 0

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a ``(B, C, *spatial)`` batch."""
        if self.flips:
            x = x.flip([2 + a for a in self.flips])
        if self.rot90 % 4:
            x = torch.rot90(x, self.rot90 % 4, dims=(-2, -1))
        return x

    def invert(self, y: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`apply` on a ``(B, K, *spatial')`` prediction."""
        if self.rot90 % 4:
            y = torch.rot90(y, -(self.rot90 % 4), dims=(-2, -1))
        if self.flips:
            y = y.flip([2 + a for a in self.flips])
        return y


def tta_views(level: str, spatial_dims: int) -> list[View]:
    """The views of a TTA level (identity first); see the module docstring for the table.

    Raises:
        ValueError: unknown level or spatial_dims not 2 or 3.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"TTA supports 2 or 3 spatial dimensions, got {spatial_dims}")
    if level not in TTA_LEVELS:
        raise ValueError(f"unknown TTA level {level!r}; choose one of {', '.join(TTA_LEVELS)}")
    if level == "none":
        return [View()]
    all_flips = [
        View(flips=combo)
        for r in range(spatial_dims + 1)
        for combo in itertools.combinations(range(spatial_dims), r)
    ]
    if level == "flips" or spatial_dims == 3:
        return all_flips
    return [View(flips=f, rot90=k) for f in ((), (1,)) for k in range(4)]


def tta_scales(level: str, *, scales: Sequence[float] = DEFAULT_SCALES) -> tuple[float, ...]:
    """The scales of a TTA level: ``scales`` for ``d4+scales``, ``(1.0,)`` otherwise."""
    if level not in TTA_LEVELS:
        raise ValueError(f"unknown TTA level {level!r}; choose one of {', '.join(TTA_LEVELS)}")
    return tuple(float(s) for s in scales) if level == "d4+scales" else (1.0,)


def tta_cost(level: str, spatial_dims: int, *, scales: Sequence[float] = DEFAULT_SCALES) -> int:
    """Forward passes per input (per tile) for a TTA level: ``len(views) * len(scales)``."""
    return len(tta_views(level, spatial_dims)) * len(tta_scales(level, scales=scales))


def _scaled_size(size: Sequence[int], scale: float, multiple: int) -> tuple[int, ...]:
    """``round(n * scale)`` per axis, rounded to a multiple of ``multiple`` (never below it)."""
    return tuple(max(multiple, round(n * scale / multiple) * multiple) for n in size)


def _resize(x: torch.Tensor, size: Sequence[int], interpolation: str) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    if interpolation == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest-exact")
    mode = "bilinear" if x.ndim == 4 else "trilinear"
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


def _check_args(batch: torch.Tensor, views: Sequence[View], scales: Sequence[float], merge: str, uncertainty: str,
                interpolation: str) -> None:  # fmt: skip
    if batch.ndim not in (4, 5):
        raise ValueError(f"batch must be (B, C, H, W) or (B, C, D, H, W), got shape {tuple(batch.shape)}")
    if not views or not scales:
        raise ValueError("TTA needs at least one view and one scale")
    ndim = batch.ndim - 2
    for view in views:
        if any(not 0 <= a < ndim for a in view.flips):
            raise ValueError(f"{view} flips an axis outside the {ndim} spatial axes")
    if any(not s > 0 for s in scales):
        raise ValueError(f"scales must be > 0, got {tuple(scales)}")
    if merge not in MERGES:
        raise ValueError(f"unknown merge {merge!r}; choose one of {', '.join(MERGES)}")
    if uncertainty not in UNCERTAINTIES:
        raise ValueError(f"unknown uncertainty {uncertainty!r}; choose one of {', '.join(UNCERTAINTIES)}")
    if interpolation not in ("linear", "nearest"):
        raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")


def _predict_views(fn: TileFn, inputs: list[torch.Tensor], max_batch: int | None) -> list[torch.Tensor]:
    """Run ``fn`` on every transformed input, concatenating same-shaped ones into as few calls as allowed."""
    outputs: list[torch.Tensor | None] = [None] * len(inputs)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(inputs):
        groups.setdefault(tuple(x.shape[1:]), []).append(i)
    per_input = inputs[0].shape[0]
    per_call = max(1, (max_batch or per_input * len(inputs)) // per_input)  # whole views per call
    for members in groups.values():
        for first in range(0, len(members), per_call):
            chunk = members[first : first + per_call]
            y = fn(torch.cat([inputs[i] for i in chunk]))
            if y.ndim != inputs[0].ndim or y.shape[0] != per_input * len(chunk):
                raise ValueError(f"fn must map (B, C, *spatial) to (B, K, *spatial); got {tuple(y.shape)}")
            for i, part in zip(chunk, y.split(per_input), strict=True):
                outputs[i] = part
    return [y for y in outputs if y is not None]


def _merge(preds: torch.Tensor, merge: str) -> torch.Tensor:
    if merge == "mean":
        return preds.mean(dim=0)
    if merge == "max":
        return preds.amax(dim=0)
    return preds.clamp_min(_EPS).log().mean(dim=0).exp()


def _uncertainty(preds: torch.Tensor, kind: str) -> torch.Tensor:
    """``(B, 1, *spatial)`` from stacked aligned predictions ``(V, B, K, *spatial)``."""
    if kind == "variance":
        return preds.var(dim=0, unbiased=False).mean(dim=1, keepdim=True)
    p = preds.mean(dim=0).clamp(_EPS, 1.0)
    if p.shape[1] == 1:  # one sigmoid channel: entropy of the Bernoulli (p, 1 - p)
        q = (1.0 - p).clamp_min(_EPS)
        return -(p * p.log() + q * q.log())
    return -(p * p.log()).sum(dim=1, keepdim=True)


@dataclass(frozen=True)
class Resize:
    """How :func:`apply_tta` resizes inputs for scales other than 1.

    Attributes:
        interpolation: ``linear`` (bi/trilinear) or ``nearest``.
        size_multiple: scaled sizes are rounded to a multiple of this (e.g. a network's total stride).
    """

    interpolation: str = "linear"
    size_multiple: int = 1


def apply_tta(
    fn: TileFn,
    batch: torch.Tensor,
    *,
    views: Sequence[View] = (View(),),
    scales: Sequence[float] = (1.0,),
    merge: str = "mean",
    uncertainty: str | None = "variance",
    max_batch: int | None = None,
    resize: Resize = Resize(),  # noqa: B008  (frozen, so a shared default is safe)
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Predict every (scale, view) of ``batch``, align the predictions with the input, and merge them.

    Args:
        fn: maps ``(N, C, *spatial)`` to ``(N, K, *spatial)``; for ``gmean`` and ``entropy`` it must return
            probabilities (sigmoid or softmax), for ``mean``/``max``/``variance`` logits work too.
        batch: ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
        views: grid symmetries (see :func:`tta_views`).
        scales: input resize factors; predictions are resized back to the input size.
        merge: ``mean``, ``max`` (per element) or ``gmean`` (geometric mean of probabilities, not
            renormalised across classes; the argmax is unaffected by renormalising).
        uncertainty: ``variance`` (per-pixel variance across views and scales, averaged over channels),
            ``entropy`` (predictive entropy, in nats, of the mean probabilities; one channel = Bernoulli), or
            None (no uncertainty map).
        max_batch: most samples per call of ``fn`` (default: everything in one call per input shape); at
            least one whole view (``B`` samples) goes in each call.
        resize: how scaled inputs are resized (:class:`Resize`).

    Returns:
        ``(merged (B, K, *spatial) float tensor, uncertainty (B, 1, *spatial) or None)``, computed without
        gradients.
    """
    _check_args(batch, views, scales, merge, uncertainty or "variance", resize.interpolation)
    with torch.no_grad():
        return _tta(fn, batch, views, scales, merge, uncertainty, max_batch, resize.interpolation,
                    resize.size_multiple)  # fmt: skip


def _tta(
    fn: TileFn,
    batch: torch.Tensor,
    views: Sequence[View],
    scales: Sequence[float],
    merge: str,
    uncertainty: str | None,
    max_batch: int | None,
    interpolation: str,
    size_multiple: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    size = tuple(batch.shape[2:])
    inputs, plan = [], []
    for scale in scales:
        scaled = (
            _resize(batch, _scaled_size(size, scale, size_multiple), interpolation) if scale != 1 else batch
        )
        for view in views:
            inputs.append(view.apply(scaled))
            plan.append(view)
    outputs = _predict_views(fn, inputs, max_batch)
    aligned = [_resize(view.invert(y), size, interpolation) for view, y in zip(plan, outputs, strict=True)]
    preds = torch.stack(aligned)
    merged = _merge(preds, merge)
    return merged, (_uncertainty(preds, uncertainty) if uncertainty else None)


def make_tta_fn(
    fn: TileFn,
    *,
    level: str = "none",
    spatial_dims: int = 2,
    scales: Sequence[float] = DEFAULT_SCALES,
    merge: str = "mean",
    uncertainty: str | None = None,
    max_batch: int | None = None,
    size_multiple: int = 1,
) -> TileFn:
    """Wrap ``fn`` so that each call applies TTA of ``level``; ready for ``sliding_window_predict``.

    With ``uncertainty`` set (``variance`` or ``entropy``) the wrapped function returns ``K + 1`` channels,
    the last being the uncertainty map, so it is tiled and blended with the prediction.
    """
    views, level_scales = tta_views(level, spatial_dims), tta_scales(level, scales=scales)

    def wrapped(batch: torch.Tensor) -> torch.Tensor:
        merged, unc = apply_tta(
            fn, batch, views=views, scales=level_scales, merge=merge, uncertainty=uncertainty, max_batch=max_batch,
            resize=Resize(size_multiple=size_multiple),
        )  # fmt: skip
        return merged if unc is None else torch.cat([merged, unc], dim=1)

    return wrapped
