"""Typed options that say how a dataset on disk becomes (image, class-index mask) pairs."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class DataConfig:
    """How to read one dataset. Every field has a safe default; ``unetkit plan`` fills the rest.

    Attributes:
        root: dataset folder (or CSV/JSON list) as given by the user.
        image_dir / mask_dir: explicit sub-folders; empty means auto-detect (``images/`` + ``masks/``,
            ``imagesTr/`` + ``labelsTr/`` ...).
        roi_dir: optional folder of region-of-interest masks (e.g. DRIVE's field of view); pixels
            outside the ROI are ignored in training and scoring.
        mask_threshold: binarise grey masks: ``value >= threshold`` -> 1 (for 0/255 and soft JPEG-like masks).
        value_map: raw mask value -> class index, e.g. ``{0: 1, 255: 0}`` to make value 0 the foreground.
        colour_table: class name -> RGB triple for colour-coded masks; the order gives class indices.
        ignore_colours: RGB triples mapped to ``ignore_index``.
        ignore_index: label value meaning "not labelled" (never a class).
        classes: class names, background first for multi-class / binary.
        task: ``binary`` | ``multiclass`` | ``multilabel``.
        in_channels: image channels after reading.
        spatial_dims: 2 for images, 3 for volumes.
        normalization: ``zscore`` (per image, per channel) | ``dataset`` (per channel with the dataset's
            ``intensity_mean`` / ``intensity_std``) | ``minmax`` | ``none`` (see ``unetkit.data.normalize``).
        intensity_mean / intensity_std: per-channel statistics of the dataset, used by ``dataset``.
        background: class 0 is background (then foreground metrics average classes 1..K-1; with
            False, e.g. land-cover tables without a background colour, every class counts).
        group_by: how related images are grouped so they never straddle a split: ``none``, ``folder``
            (the parent folder, e.g. a tile or a patient) or a regex whose first group is the key.
        target_spacing: voxel size (per spatial axis, as stored: X, Y, Z for NIfTI) every volume is resampled
            to for training and prediction (predictions go back to each input's own grid); None = no
            resampling (2D images, volumes without spacing, plans written before it existed).
            See ``unetkit.data.resample``.
        spacing_reason: why the planner chose ``target_spacing``, in words (informational).
        vector_labels: one vector file (GeoJSON, GeoPackage, Shapefile) labelling every GeoTIFF scene under
            ``root`` (see ``unetkit.data.annotations.vectors``); empty: per-scene files with the scene's stem.
        class_field: the vector attribute holding each feature's class; empty: one foreground class.
    """

    root: str = ""
    image_dir: str = ""
    mask_dir: str = ""
    roi_dir: str = ""
    mask_threshold: int | None = None
    value_map: dict[int, int] | None = None
    colour_table: dict[str, list[int]] | None = None
    ignore_colours: list[list[int]] = field(default_factory=list)
    ignore_index: int = 255
    classes: list[str] = field(default_factory=list)
    task: str = "multiclass"
    in_channels: int = 1
    spatial_dims: int = 2
    normalization: str = "zscore"
    intensity_mean: list[float] = field(default_factory=list)
    intensity_std: list[float] = field(default_factory=list)
    group_by: str = "none"
    background: bool = True
    target_spacing: list[float] | None = None
    spacing_reason: str = ""
    vector_labels: str = ""
    class_field: str = ""


# What the planner fills in: it changes how a sample is normalised and resampled, not how its files are read.
_PLANNED_FIELDS = frozenset(
    {"in_channels", "spatial_dims", "normalization", "intensity_mean", "intensity_std", "target_spacing",
     "spacing_reason"}
)  # fmt: skip


def same_reading(a: DataConfig, b: DataConfig) -> bool:
    """Whether ``a`` and ``b`` find the same files and decode them into the same images and masks (they may
    differ only in what the planner fills in), so samples read with one serve the other."""
    return all(getattr(a, f.name) == getattr(b, f.name) for f in fields(DataConfig) if f.name not in _PLANNED_FIELDS)
