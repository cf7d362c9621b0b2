"""Find (image, mask[, roi]) samples in a dataset folder or list file, without layout flags.

Layouts, tried in this order:

* an explicit list: ``root`` is a ``.csv`` (columns ``image``, ``mask`` and optionally ``roi``, ``group``,
  ``key``) or a ``.json`` list of objects with the same keys; paths are relative to the list file. In a CSV,
  several channel files for one image are separated by ``;`` (in JSON, give a list);
* explicit folders: ``DataConfig.image_dir`` / ``mask_dir`` / ``roi_dir`` (relative to ``root`` or absolute);
* nnU-Net: ``imagesTr/`` + ``labelsTr/`` (channel files ``case_0000.nii.gz``, ``case_0001.nii.gz`` -> one
  sample with several channels; ``dataset.json`` is read when present);
* paired folders: one of ``images/ image/ imgs/ img/ inputs/ input/`` with one of ``masks/ mask/ labels/
  label/ gt/ annotations/ ...`` (sub-folders allowed: files are paired by relative folder + stem, the
  extensions may differ);
* images directly in ``root`` (``flat``), with a ``masks/``-like sub-folder or without masks (prediction);
* an annotation export (tried first): COCO JSON, CVAT segmentation masks / XML, Label Studio JSON, GeoTIFF
  scenes with vector labels (:mod:`unetkit.data.annotations`); its annotations are rasterised into cached
  class-index masks and the layout is the export's kind (``coco``, ``cvat_masks``, ``cvat_xml``,
  ``labelstudio``, ``vectors``).

Multi-label masks (``DataConfig.task == "multilabel"``) are one binary file per class in
``<mask_dir>/<class_name>/<same relative path and stem as the image>``; ``Sample.mask`` is then a list in
class order with ``None`` where a class has no file (the class is absent from that image).

Files are paired by :func:`unetkit.data.matching.match_keys`; whatever stays unpaired is returned in the
:class:`DiscoveryResult`, never silently dropped.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from unetkit.data._raw import IMAGE_SUFFIXES, is_data_file, split_name
from unetkit.data.annotations import AnnotatedSamples, annotated_samples, open_source
from unetkit.data.discovery_lists import read_sample_list
from unetkit.data.matching import match_keys, split_key
from unetkit.data.options import DataConfig

IMAGE_DIR_NAMES = ("images", "image", "imgs", "img", "inputs", "input")
MASK_DIR_NAMES = (
    "masks", "mask", "labels", "label", "gt", "groundtruth", "ground_truth",
    "annotations", "annotation", "segmentations", "segmentation", "targets", "target",
)  # fmt: skip
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class Sample:
    """One training/evaluation example as files on disk.

    Attributes:
        key: unique id, the image's path relative to the images root without extension (``tile_1/part_001``).
        image: the image file, or the list of channel files (nnU-Net ``_0000``, ``_0001``...) in channel order.
        mask: the mask file; for multi-label data a list with one entry per class (``None`` = class absent);
            ``None`` for unlabelled images.
        roi: optional region-of-interest mask (pixels outside it are ignored).
        group: samples sharing a group never straddle a split (``DataConfig.group_by``).
        folder: the image's parent folder relative to the images root (``"."`` at top level), e.g. a defect
            class; usable as a stratification label.
    """

    key: str
    image: Path | list[Path]
    mask: Path | list[Path | None] | None = None
    roi: Path | None = None
    group: str = ""
    folder: str = "."

    @property
    def image_paths(self) -> list[Path]:
        return list(self.image) if isinstance(self.image, list) else [self.image]

    @property
    def mask_paths(self) -> list[Path]:
        if self.mask is None:
            return []
        return [m for m in self.mask if m is not None] if isinstance(self.mask, list) else [self.mask]


@dataclass
class DiscoveryResult:
    """What :func:`discover` found. Iterating over it yields the samples.

    Attributes:
        samples: the paired samples, sorted by key.
        unmatched_images: images with no mask (only when the dataset has masks at all).
        unmatched_masks: masks (or multi-label class files) with no image.
        images_without_roi: images that got no ROI file although ``roi_dir`` is set.
        unmatched_rois: ROI files with no image.
        missing_files: files named in a list (CSV/JSON) that do not exist; their rows are skipped.
        layout: ``list`` | ``explicit`` | ``nnunet`` | ``folders`` | ``flat`` (images directly in ``root``).
        image_root / mask_root / roi_root: the folders used (``None`` when absent).
        dataset_json: the nnU-Net ``dataset.json`` contents when present.
        annotations: for an annotation export, what it held and the problems found in it (``None`` otherwise).
    """

    samples: list[Sample]
    unmatched_images: list[Path] = field(default_factory=list)
    unmatched_masks: list[Path] = field(default_factory=list)
    images_without_roi: list[Path] = field(default_factory=list)
    unmatched_rois: list[Path] = field(default_factory=list)
    missing_files: list[Path] = field(default_factory=list)
    layout: str = "folders"
    image_root: Path | None = None
    mask_root: Path | None = None
    roi_root: Path | None = None
    dataset_json: dict | None = None
    annotations: AnnotatedSamples | None = None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def has_masks(self) -> bool:
        return self.mask_root is not None or any(s.mask is not None for s in self.samples)


def discover(config: DataConfig) -> DiscoveryResult:
    """Find the samples of the dataset described by ``config`` (layouts in the module docstring).

    Returns:
        :class:`DiscoveryResult` with samples sorted by key and everything left unpaired.

    Raises:
        FileNotFoundError: ``root`` (or an explicit folder) does not exist.
        ValueError: empty folder, ambiguous layout, two files with the same key, bad ``group_by``.
    """
    if not config.root:
        raise ValueError("no dataset given: set DataConfig.root to a folder or a CSV/JSON list")
    root = Path(config.root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"dataset not found: {root}")
    grouper = make_grouper(config.group_by)
    source = open_source(config)
    if source is not None:
        return _from_annotations(annotated_samples(source), grouper)
    if root.is_file():
        rows, missing = read_sample_list(root)
        samples = [Sample(key=r.key, image=r.image, mask=r.mask, roi=r.roi, folder=r.folder,
                          group=r.group if r.group else grouper(r.key)) for r in rows]  # fmt: skip
        return DiscoveryResult(
            samples=sorted(samples, key=lambda s: s.key), missing_files=missing, layout="list"
        )
    layout, image_root, mask_root = _resolve_roots(root, config)
    roi_root = _explicit_dir(root, config.roi_dir, "roi_dir") if config.roi_dir else None
    skip = tuple(p for p in (mask_root, roi_root) if p is not None)
    mask_keys = set(scan_folder(mask_root)) if mask_root and config.task != "multilabel" else set()
    images = _group_channels(
        scan_folder(image_root, exclude=skip), force=layout == "nnunet", mask_keys=mask_keys
    )
    if not images:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) found under {image_root}")
    result = DiscoveryResult(samples=[], layout=layout, image_root=image_root, mask_root=mask_root,
                             roi_root=roi_root, dataset_json=_read_dataset_json(root, layout))  # fmt: skip
    masks = _pair_masks(images, mask_root, config, result)
    rois = _pair_rois(images, roi_root, result) if roi_root else {}
    labelled = mask_root is not None
    for key, paths in sorted(images.items()):
        if labelled and key not in masks:
            continue
        folder = split_key(key)[0] or "."
        result.samples.append(Sample(key=key, image=paths if len(paths) > 1 else paths[0], mask=masks.get(key),
                                     roi=rois.get(key), group=grouper(key), folder=folder))  # fmt: skip
    return result


def _from_annotations(found: AnnotatedSamples, grouper) -> DiscoveryResult:  # type: ignore[no-untyped-def]
    samples = [Sample(key=key, image=image, mask=mask, group=grouper(key), folder=split_key(key)[0] or ".")
               for key, image, mask in found.pairs]  # fmt: skip
    def common(paths: list[Path]) -> Path | None:
        return Path(os.path.commonpath([p.parent for p in paths])) if paths else None

    return DiscoveryResult(
        samples=sorted(samples, key=lambda s: s.key), layout=found.source.kind, annotations=found,
        image_root=common([image for _, image, _ in found.pairs]), mask_root=common([m for _, _, m in found.pairs]),
    )


def make_grouper(group_by: str):  # type: ignore[no-untyped-def]
    """Return ``key -> group`` for ``none`` (each sample alone), ``folder`` or a regex with one group.

    Raises:
        ValueError: the regex is invalid, has no capture group, or (when called) does not match a key.
    """
    if group_by in ("", "none"):
        return lambda key: key
    if group_by == "folder":
        return lambda key: split_key(key)[0] or "."
    try:
        pattern = re.compile(group_by)
    except re.error as err:
        raise ValueError(f"group_by {group_by!r} is neither none/folder nor a valid regex: {err}") from err
    if pattern.groups < 1:
        raise ValueError(f"group_by regex {group_by!r} needs one capture group, e.g. '(patient\\d+)'")

    def by_regex(key: str) -> str:
        m = pattern.search(key)
        if m is None or m.group(1) is None:
            raise ValueError(f"group_by regex {group_by!r} does not match sample {key!r}")
        return m.group(1)

    return by_regex


def scan_folder(folder: Path, *, exclude: tuple[Path, ...] = ()) -> dict[str, Path]:
    """All image files under ``folder`` (recursive), keyed by relative path without extension.

    Args:
        folder: where to look.
        exclude: sub-folders to skip (a mask folder nested inside the image folder).

    Raises:
        ValueError: two files share a key (``x.png`` next to ``x.jpg``): which one is meant is unclear.
    """
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not is_data_file(path):
            continue
        if any(ex == path or ex in path.parents for ex in exclude):
            continue
        key = (rel.parent / split_name(path)[0]).as_posix()
        if key in found:
            raise ValueError(f"two files share the name {key!r}: {found[key]} and {path}; keep only one")
        found[key] = path
    return found


def _group_channels(files: dict[str, Path], *, force: bool, mask_keys: set[str]) -> dict[str, list[Path]]:
    """Merge nnU-Net channel files (``case_0000``, ``case_0001``) into one entry per case.

    Applied when ``force`` (nnU-Net layout) or when every image name ends in ``_NNNN`` and the masks are named
    after the cases (``case.png``) rather than the files; otherwise each file is its own entry (so a plain
    series ``slice_0000.png ... slice_0029.png`` is never mistaken for one 30-channel image).
    """
    parsed = {k: _CHANNEL_SUFFIX.match(split_key(k)[1]) for k in files}
    cases: dict[str, dict[int, Path]] = {}
    for k, m in parsed.items():
        if m is None:
            if force:
                raise ValueError(f"nnU-Net image {files[k]} lacks the channel suffix _0000")
            return {k2: [p] for k2, p in files.items()}
        folder = split_key(k)[0]
        case = f"{folder}/{m['case']}" if folder else m["case"]
        cases.setdefault(case, {})[int(m["channel"])] = files[k]
    if not force and not (mask_keys and set(cases) <= mask_keys and not set(files) & mask_keys):
        return {k: [p] for k, p in files.items()}
    counts = {len(ch) for ch in cases.values()}
    for case, ch in cases.items():
        if sorted(ch) != list(range(len(ch))) or len(counts) > 1:
            raise ValueError(
                f"case {case!r} has channel files {sorted(ch)}; every case needs 0..{max(counts) - 1}"
            )
    return {case: [ch[i] for i in sorted(ch)] for case, ch in cases.items()}


def _resolve_roots(root: Path, config: DataConfig) -> tuple[str, Path, Path | None]:
    """Decide the layout and the image / mask folders."""
    if config.image_dir:
        image_root = _explicit_dir(root, config.image_dir, "image_dir")
        mask_root = _explicit_dir(root, config.mask_dir, "mask_dir") if config.mask_dir else None
        return "explicit", image_root, mask_root
    children = {
        p.name.lower(): p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
    }
    if "imagestr" in children and "labelstr" in children:
        mask_root = (
            _explicit_dir(root, config.mask_dir, "mask_dir") if config.mask_dir else children["labelstr"]
        )
        return "nnunet", children["imagestr"], mask_root
    image_dirs = [children[n] for n in IMAGE_DIR_NAMES if n in children]
    mask_dirs = [children[n] for n in MASK_DIR_NAMES if n in children]
    if config.mask_dir:
        mask_dirs = [_explicit_dir(root, config.mask_dir, "mask_dir")]
    if len(image_dirs) > 1 or len(mask_dirs) > 1:
        names = ", ".join(p.name for p in image_dirs + mask_dirs)
        raise ValueError(f"{root}: several candidate folders ({names}); pass --image-dir and --mask-dir")
    if image_dirs:
        return "folders", image_dirs[0], (mask_dirs[0] if mask_dirs else None)
    if any(is_data_file(p) for p in root.iterdir()):
        return "flat", root, (mask_dirs[0] if mask_dirs else None)
    if not children:
        raise ValueError(f"{root} is empty: no image files and no sub-folders")
    raise ValueError(
        f"{root}: no images/ + masks/ (or imagesTr/ + labelsTr/) folders found; sub-folders are "
        f"{', '.join(sorted(p.name for p in children.values()))}. Pass --image-dir and --mask-dir"
    )


def _explicit_dir(root: Path, name: str, what: str) -> Path:
    path = Path(name).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {name!r} is not a folder (looked for {path})")
    return path


def _pair_masks(
    images: dict[str, list[Path]], mask_root: Path | None, config: DataConfig, result: DiscoveryResult
) -> dict[str, Path | list[Path | None]]:
    """image key -> mask (or per-class list for multi-label); records unpaired files in ``result``."""
    if mask_root is None:
        return {}
    if config.task == "multilabel":
        return _pair_multilabel(images, mask_root, config, result)
    masks = scan_folder(mask_root)
    if not masks:
        raise ValueError(f"mask folder {mask_root} holds no mask files ({', '.join(IMAGE_SUFFIXES)})")
    pairs = match_keys(images, masks)
    used = set(pairs.values())
    result.unmatched_images = [images[k][0] for k in sorted(images) if k not in pairs]
    result.unmatched_masks = [masks[k] for k in sorted(masks) if k not in used]
    return {k: masks[m] for k, m in pairs.items()}


def _pair_multilabel(
    images: dict[str, list[Path]], mask_root: Path, config: DataConfig, result: DiscoveryResult
) -> dict[str, Path | list[Path | None]]:
    class_dirs = {p.name: p for p in sorted(mask_root.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    classes = list(config.classes) or sorted(class_dirs)
    missing = [c for c in classes if c not in class_dirs]
    if not classes or missing:
        raise ValueError(
            f"multilabel masks need one sub-folder per class in {mask_root}; "
            f"missing: {', '.join(missing) or 'all'} (found: {', '.join(class_dirs) or 'none'})"
        )
    out: dict[str, list[Path | None]] = {k: [None] * len(classes) for k in images}
    for i, name in enumerate(classes):
        masks = scan_folder(class_dirs[name])
        pairs = match_keys(images, masks)
        used = set(pairs.values())
        result.unmatched_masks += [masks[k] for k in sorted(masks) if k not in used]
        for k, m in pairs.items():
            out[k][i] = masks[m]
    result.unmatched_images = [images[k][0] for k in sorted(images) if all(m is None for m in out[k])]
    return {k: v for k, v in out.items() if any(m is not None for m in v)}  # type: ignore[misc]


def _pair_rois(images: dict[str, list[Path]], roi_root: Path, result: DiscoveryResult) -> dict[str, Path]:
    rois = scan_folder(roi_root)
    pairs = match_keys(images, rois)
    used = set(pairs.values())
    result.images_without_roi = [images[k][0] for k in sorted(images) if k not in pairs]
    result.unmatched_rois = [rois[k] for k in sorted(rois) if k not in used]
    return {k: rois[r] for k, r in pairs.items()}


def _read_dataset_json(root: Path, layout: str) -> dict | None:
    path = root / "dataset.json"
    if layout != "nnunet" or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
