"""Dataset fingerprint: the numbers a planner needs (sizes, channels, intensities, class frequencies).

Samples are consumed one at a time, so a fingerprint of a dataset never holds all of it in memory. The result is
a :class:`DataFingerprint`; its dict form (``to_dict``) is what ``unetkit check --json`` prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from unetkit.data.masks import default_class_names, resolve_classes
from unetkit.data.options import DataConfig

if TYPE_CHECKING:
    from unetkit.data.dataset import LoadedSample

# Pixels drawn per image for intensity statistics (weighted by the image's true pixel count).
_SAMPLES_PER_IMAGE = 10_000
# Fields left out of the dict form while they hold their default: the accumulator writes the label statistics only
# when some image is labelled, and the planner adds ``has_roi``.
_OMITTED_AT_DEFAULT = {"optional": True}
_T = TypeVar("_T")


@dataclass(frozen=True)
class SizeSpread:
    """Image sizes per spatial axis, in pixels (voxels).

    Attributes:
        min: the smallest size seen on each axis (empty: not recorded).
        median: the median size on each axis (empty: not recorded).
        max: the largest size seen on each axis (empty: not recorded).
    """

    min: list[int] = field(default_factory=list)
    median: list[int] = field(default_factory=list)
    max: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class IntensityStats:
    """Per-channel intensity statistics (one value per channel; empty: not recorded).

    Mean and std are weighted by image size; the percentiles come from up to 10,000 random pixels per image.

    Attributes:
        mean: mean per channel.
        std: standard deviation per channel.
        min: smallest value per channel.
        max: largest value per channel.
        p00_5: 0.5th percentile per channel.
        p50: median per channel.
        p99_5: 99.5th percentile per channel.
    """

    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    min: list[float] = field(default_factory=list)
    max: list[float] = field(default_factory=list)
    p00_5: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99_5: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class DataFingerprint:
    """What ``fingerprint()`` found in a dataset. Each field has one default: what a hand-written fingerprint (or a
    dict form without the key) means when it does not record the field.

    Attributes:
        num_samples: images read.
        num_labelled: images that came with a mask.
        spatial_dims: the distinct dimensionalities seen, sorted (2 images, 3 volumes; the dict form writes a single
            one as a number); empty: not recorded (the planner takes the data options').
        channels: the distinct channel counts seen, sorted; empty: not recorded (the planner takes the data options').
        dtypes: the distinct pixel types of the files, sorted.
        sizes: min / median / max size per spatial axis; all empty when images differ in dimensionality.
        spacing: median voxel size per axis (files with a spacing, e.g. NIfTI), or None.
        spacing_p10: 10th percentile of the voxel sizes per axis, or None (the planner's anisotropy rule uses it).
        spacing_min: smallest voxel size per axis, or None.
        spacing_max: largest voxel size per axis, or None.
        georeferenced: every image carries a CRS or an affine transform, as GeoTIFFs do.
        intensity: per-channel statistics over all pixels; None when images differ in channel count.
        intensity_foreground: the same over labelled foreground pixels; None without foreground pixels, or when
            images differ in channel count.
        classes: class names (from the data options, or ``class_0``, ``class_1``, ... when the masks hold more).
        class_pixels: labelled pixels per class name.
        class_frequencies: share of the labelled pixels per class name.
        class_presence: share of the labelled images containing each class; None when no image is labelled.
        foreground_fraction: non-background share of the labelled pixels (multi-label: pixels with any class;
            1.0 without a background class); None when no image is labelled.
        ignore_fraction: share of the mask pixels at the ignore index; None when no image is labelled.
        has_roi: some image has a region-of-interest mask (set by the planner, which reads the samples' files).
    """

    num_samples: int = 0
    num_labelled: int = 0
    spatial_dims: list[int] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=list)
    sizes: SizeSpread = field(default_factory=SizeSpread)
    spacing: list[float] | None = None
    spacing_p10: list[float] | None = None
    spacing_min: list[float] | None = None
    spacing_max: list[float] | None = None
    georeferenced: bool = False
    intensity: IntensityStats | None = None
    intensity_foreground: IntensityStats | None = None
    classes: list[str] = field(default_factory=list)
    class_pixels: dict[str, int] = field(default_factory=dict)
    class_frequencies: dict[str, float] = field(default_factory=dict)
    class_presence: dict[str, float] | None = field(default=None, metadata=_OMITTED_AT_DEFAULT)
    foreground_fraction: float | None = field(default=None, metadata=_OMITTED_AT_DEFAULT)
    ignore_fraction: float | None = field(default=None, metadata=_OMITTED_AT_DEFAULT)
    has_roi: bool = field(default=False, metadata=_OMITTED_AT_DEFAULT)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``unetkit check --json``'s ``summary.fingerprint``): the fields in order, ``sizes`` and
        ``intensity`` as nested dicts (``sizes`` without its empty axes' entries), a single ``spatial_dims`` as
        a number; the label statistics and ``has_roi`` only when set.

        Returns:
            A dict of plain lists, dicts, numbers, strings and None.
        """
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("optional") and value == f.default:
                continue
            if isinstance(value, SizeSpread):
                value = {k: list(v) for k, v in vars(value).items() if v}
            elif isinstance(value, IntensityStats):
                value = {k: list(v) for k, v in vars(value).items()}
            elif isinstance(value, (list, dict)):
                value = value.copy()
            out[f.name] = value
        if len(self.spatial_dims) == 1:
            out["spatial_dims"] = self.spatial_dims[0]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DataFingerprint:
        """Read the dict form back; a missing key gets the field's default.

        Args:
            raw: a dict as ``to_dict()`` writes it (``spatial_dims`` / ``channels`` as a number or a list).

        Returns:
            The fingerprint.

        Raises:
            ValueError: a key that is no field of ``DataFingerprint``.
        """
        values = dict(raw)
        _check_keys(cls, values, "fingerprint")
        for name in ("spatial_dims", "channels"):
            if name in values and not isinstance(values[name], (list, tuple)):
                values[name] = [values[name]]
        if "sizes" in values:
            values["sizes"] = _nested(SizeSpread, values["sizes"] or {}, "fingerprint.sizes")
        for name in ("intensity", "intensity_foreground"):
            if values.get(name) is not None:
                values[name] = _nested(IntensityStats, values[name], f"fingerprint.{name}")
        return cls(**values)


def _check_keys(cls: type, raw: Mapping[str, Any], where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def _nested(cls: type[_T], raw: Mapping[str, Any], where: str) -> _T:
    _check_keys(cls, raw, where)
    return cls(**{k: list(v) for k, v in raw.items()})


def fingerprint(items: Sequence[Any], config: DataConfig | None = None, *, seed: int = 0) -> DataFingerprint:
    """Summarise a dataset.

    Args:
        items: :class:`LoadedSample` objects, or :class:`Sample` objects (then ``config`` is required and each is
            loaded in turn).
        config: the data options (class names, ignore index, background flag).
        seed: seed of the pixel subsample used for percentiles.

    Returns:
        The sizes, channels, spacings, intensities and class statistics (see ``DataFingerprint``).

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
    """Collects the statistics of ``fingerprint()`` one sample at a time."""

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

    def result(self) -> DataFingerprint:
        if not self.shapes:
            raise ValueError("cannot fingerprint an empty dataset")
        uniform = len({len(s) for s in self.shapes}) == 1
        p10, lo, hi = self._spacing_spread()
        return DataFingerprint(
            num_samples=len(self.shapes),
            num_labelled=self.labelled_images,
            spatial_dims=sorted({len(s) for s in self.shapes}),
            channels=sorted(self.channels),
            dtypes=sorted(self.dtypes),
            sizes=_spread(np.array(self.shapes)) if uniform else SizeSpread(),
            spacing=np.median(np.array(self.spacings), axis=0).tolist() if self.spacings else None,
            spacing_p10=p10,
            spacing_min=lo,
            spacing_max=hi,
            # Every image placed on the ground (a CRS or an affine transform): the planner treats them as aerial.
            georeferenced=self.georeferenced == len(self.shapes),
            intensity=self._intensity_stats("all"),
            intensity_foreground=self._intensity_stats("fg"),
            **self._class_stats(),
        )

    def _spacing_spread(self) -> tuple[list[float] | None, list[float] | None, list[float] | None]:
        """10th percentile, min and max voxel size per axis (the planner's anisotropy rule uses the 10th)."""
        if not self.spacings or len({len(s) for s in self.spacings}) != 1:
            return None, None, None
        sp = np.array(self.spacings)
        return np.percentile(sp, 10, axis=0).tolist(), sp.min(0).tolist(), sp.max(0).tolist()

    def _intensity_stats(self, which: str) -> IntensityStats | None:
        if not self.moments[which] or len(self.channels) != 1:
            return None
        m = np.stack(self.moments[which])  # (images, 5, C)
        n, s, ss = m[:, 0].sum(0), m[:, 1].sum(0), m[:, 2].sum(0)
        mean = s / n
        std = np.sqrt(np.maximum(ss / n - mean * mean, 0.0))
        draws = np.concatenate(self.draws[which], axis=1)
        pct = np.percentile(draws, [0.5, 50, 99.5], axis=1)
        return IntensityStats(
            mean=mean.tolist(), std=std.tolist(), min=m[:, 3].min(0).tolist(), max=m[:, 4].max(0).tolist(),
            p00_5=pct[0].tolist(), p50=pct[1].tolist(), p99_5=pct[2].tolist(),
        )

    def _class_stats(self) -> dict[str, Any]:
        """The :class:`DataFingerprint` fields from ``classes`` on (only the names when no image is labelled)."""
        if not self.labelled_images:
            return {"classes": resolve_classes(self.config)}
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


def _spread(shapes: np.ndarray) -> SizeSpread:
    return SizeSpread(
        min=shapes.min(0).tolist(),
        median=[int(v) for v in np.median(shapes, axis=0)],
        max=shapes.max(0).tolist(),
    )
