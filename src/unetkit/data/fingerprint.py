"""Dataset fingerprint: the numbers a planner needs (sizes, channels, intensities, class frequencies).

Samples are consumed one at a time, so a fingerprint of a dataset never holds all of it in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from unetkit.data.masks import default_class_names, resolve_classes
from unetkit.data.options import DataConfig

if TYPE_CHECKING:
    from unetkit.data.dataset import LoadedSample

# Pixels drawn per image for intensity statistics (weighted by the image's true pixel count).
_SAMPLES_PER_IMAGE = 10_000


def fingerprint(items: Sequence[Any], config: DataConfig | None = None, *, seed: int = 0) -> dict[str, Any]:
    """Summarise a dataset.

    Args:
        items: :class:`LoadedSample` objects, or :class:`Sample` objects (then ``config`` is required and each is
            loaded in turn).
        config: the data options (class names, ignore index, background flag).
        seed: seed of the pixel subsample used for percentiles.

    Returns:
        dict with ``num_samples``, ``spatial_dims``, ``channels`` (sorted distinct counts), ``dtypes``,
        ``sizes`` (``min`` / ``median`` / ``max`` per spatial axis), ``spacing`` (median, when known),
        ``spacing_p10`` / ``spacing_min`` / ``spacing_max`` (per axis, when known),
        ``intensity`` (per channel ``mean``, ``std``, ``min``, ``max``, ``p00_5``, ``p50``, ``p99_5``; mean/std
        and percentiles are estimated from up to 10,000 random pixels per image, the mean/std weighted by
        image size; ``intensity_foreground`` the same over labelled foreground pixels; ``None`` when images
        differ in channel count), ``classes``, ``class_pixels``,
        ``class_frequencies`` (share of labelled pixels), ``class_presence`` (share of images containing the
        class), ``foreground_fraction`` (non-background share of labelled pixels, or any-class share for
        multi-label), ``ignore_fraction``, ``num_labelled`` and ``georeferenced`` (every image carries a CRS or
        an affine transform, as GeoTIFFs do).

    Raises:
        ValueError: empty input, or samples without a config.
    """
    config = config or DataConfig()
    acc = FingerprintAccumulator(config, seed=seed)
    for item in _loaded(items, config):
        acc.add(item)
    return acc.result()


def _loaded(items: Sequence[Any], config: DataConfig) -> Iterable[LoadedSample]:
    from unetkit.data.dataset import LoadedSample, load_sample

    if not items:
        raise ValueError("cannot fingerprint an empty dataset")
    for item in items:
        yield item if isinstance(item, LoadedSample) else load_sample(item, config)


class FingerprintAccumulator:
    """Collects the statistics of :func:`fingerprint` one sample at a time."""

    def __init__(self, config: DataConfig, *, seed: int = 0) -> None:
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.shapes: list[tuple[int, ...]] = []
        self.channels: set[int] = set()
        self.dtypes: set[str] = set()
        self.spacings: list[tuple[float, ...]] = []
        self.georeferenced = 0  # images whose file carries a CRS or an affine transform (GeoTIFF)
        self.moments: dict[str, list[np.ndarray]] = {
            "all": [],
            "fg": [],
        }  # per image: [n, sum, sumsq, min, max]
        self.draws: dict[str, list[np.ndarray]] = {"all": [], "fg": []}
        self.class_pixels: dict[int, int] = {}
        self.presence: dict[int, int] = {}
        self.ignored = 0
        self.labelled_images = 0
        self.multilabel_any = 0
        self.layer_pixels = 0  # multi-label: pixels per class layer (the frequency denominator)

    def add(self, item: LoadedSample) -> None:
        image = item.image
        self.shapes.append(tuple(image.shape[1:]))
        self.channels.add(int(image.shape[0]))
        self.dtypes.add(str(item.meta.get("dtype", image.dtype)))
        if item.meta.get("crs") or item.meta.get("transform"):
            self.georeferenced += 1
        if item.meta.get("spacing"):
            self.spacings.append(tuple(float(s) for s in item.meta["spacing"]))
        flat = image.reshape(image.shape[0], -1)
        # Intensity statistics come from a random subset of pixels: exact enough for planning, and cheap
        # for multi-megapixel images.
        n = flat.shape[1]
        idx = (
            np.sort(self.rng.choice(n, size=_SAMPLES_PER_IMAGE, replace=False))
            if n > _SAMPLES_PER_IMAGE
            else None
        )
        drawn = flat if idx is None else flat[:, idx]
        self._intensity("all", drawn, weight=n, lo=flat.min(1), hi=flat.max(1))
        if item.mask is not None:
            fg = self._mask(item.mask)
            fg_drawn = fg if idx is None else fg[idx]
            if fg_drawn.any():
                sel = drawn[:, fg_drawn]
                self._intensity("fg", sel, weight=int(fg.sum()), lo=sel.min(1), hi=sel.max(1))

    def _mask(self, mask: np.ndarray) -> np.ndarray:
        """Count classes; return the flat foreground indicator."""
        self.labelled_images += 1
        ignore = self.config.ignore_index
        if self.config.task == "multilabel":
            layers = mask.reshape(mask.shape[0], -1)
            for k in range(layers.shape[0]):
                n = int((layers[k] == 1).sum())
                self.class_pixels[k] = self.class_pixels.get(k, 0) + n
                self.presence[k] = self.presence.get(k, 0) + int(n > 0)
            fg = (layers == 1).any(axis=0)
            self.multilabel_any += int(fg.sum())
            self.layer_pixels += layers.shape[1]
            return fg
        m = mask.reshape(-1)
        counts = np.bincount(m)  # masks are validated non-negative
        for v in np.flatnonzero(counts).tolist():
            n = int(counts[v])
            if v == ignore:
                self.ignored += n
                continue
            self.class_pixels[v] = self.class_pixels.get(v, 0) + n
            self.presence[v] = self.presence.get(v, 0) + 1
        if not self.config.background:
            return np.zeros(m.shape, dtype=bool)
        return (m != ignore) & (m > 0)

    def _intensity(self, which: str, x: np.ndarray, *, weight: int, lo: np.ndarray, hi: np.ndarray) -> None:
        x = x.astype(np.float64)
        mean, meansq = x.mean(1), (x * x).mean(1)
        self.moments[which].append(np.stack([np.full(x.shape[0], float(weight)), mean * weight,
                                             meansq * weight, lo.astype(np.float64), hi.astype(np.float64)]))  # fmt: skip
        self.draws[which].append(x)

    def result(self) -> dict[str, Any]:
        if not self.shapes:
            raise ValueError("cannot fingerprint an empty dataset")
        shapes = np.array(self.shapes) if len({len(s) for s in self.shapes}) == 1 else None
        out: dict[str, Any] = {
            "num_samples": len(self.shapes),
            "num_labelled": self.labelled_images,
            "spatial_dims": sorted({len(s) for s in self.shapes}),
            "channels": sorted(self.channels),
            "dtypes": sorted(self.dtypes),
            "sizes": _spread(shapes) if shapes is not None else {},
            "spacing": np.median(np.array(self.spacings), axis=0).tolist() if self.spacings else None,
            **self._spacing_spread(),
            # Every image placed on the ground (a CRS or an affine transform): the planner treats them as aerial.
            "georeferenced": self.georeferenced == len(self.shapes),
            "intensity": self._intensity_stats("all"),
            "intensity_foreground": self._intensity_stats("fg"),
        }
        if len(out["spatial_dims"]) == 1:
            out["spatial_dims"] = out["spatial_dims"][0]
        out.update(self._class_stats())
        return out

    def _spacing_spread(self) -> dict[str, list[float] | None]:
        """10th percentile, min and max voxel size per axis (the planner's anisotropy rule uses the 10th)."""
        if not self.spacings or len({len(s) for s in self.spacings}) != 1:
            return {"spacing_p10": None, "spacing_min": None, "spacing_max": None}
        sp = np.array(self.spacings)
        return {"spacing_p10": np.percentile(sp, 10, axis=0).tolist(), "spacing_min": sp.min(0).tolist(),
                "spacing_max": sp.max(0).tolist()}

    def _intensity_stats(self, which: str) -> dict[str, list[float]] | None:
        if not self.moments[which] or len(self.channels) != 1:
            return None
        m = np.stack(self.moments[which])  # (images, 5, C)
        n, s, ss = m[:, 0].sum(0), m[:, 1].sum(0), m[:, 2].sum(0)
        mean = s / n
        std = np.sqrt(np.maximum(ss / n - mean * mean, 0.0))
        draws = np.concatenate(self.draws[which], axis=1)
        pct = np.percentile(draws, [0.5, 50, 99.5], axis=1)
        return {
            "mean": mean.tolist(), "std": std.tolist(), "min": m[:, 3].min(0).tolist(),
            "max": m[:, 4].max(0).tolist(), "p00_5": pct[0].tolist(), "p50": pct[1].tolist(),
            "p99_5": pct[2].tolist(),
        }  # fmt: skip

    def _class_stats(self) -> dict[str, Any]:
        if not self.labelled_images:
            return {"classes": resolve_classes(self.config), "class_pixels": {}, "class_frequencies": {}}
        multilabel = self.config.task == "multilabel"
        names = resolve_classes(self.config)
        n_classes = max(len(names), max(self.class_pixels, default=-1) + 1)
        names = names if len(names) == n_classes else default_class_names(n_classes)
        labelled = self.layer_pixels if multilabel else sum(self.class_pixels.values())
        pixels = {names[k]: int(self.class_pixels.get(k, 0)) for k in range(n_classes)}
        if multilabel:
            fg = self.multilabel_any / max(labelled, 1)
        elif self.config.background:
            fg = sum(v for k, v in self.class_pixels.items() if k > 0) / max(labelled, 1)
        else:
            fg = 1.0
        return {
            "classes": names,
            "class_pixels": pixels,
            "class_frequencies": {k: v / max(labelled, 1) for k, v in pixels.items()},
            "class_presence": {
                names[k]: self.presence.get(k, 0) / self.labelled_images for k in range(n_classes)
            },
            "foreground_fraction": fg,
            "ignore_fraction": self.ignored / max(labelled + self.ignored, 1),
        }


def _spread(shapes: np.ndarray) -> dict[str, list[int]]:
    return {
        "min": shapes.min(0).tolist(),
        "median": [int(v) for v in np.median(shapes, axis=0)],
        "max": shapes.max(0).tolist(),
    }
