"""Dataset checks: find the classic mistakes before a training run wastes hours on them.

:func:`check_dataset` discovers the samples, reads every image and mask once, and reports findings, each with
a severity (``error`` blocks training, ``warning`` does not) and a message saying what to do. ``unetkit check``
prints the report; the trainer calls :func:`check_dataset` before training.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.data._raw import read_mask_array
from unetkit.data.annotations import with_source_classes
from unetkit.data.dataset import LoadedSample, assemble_sample, mask_spatial_shape, read_sample_image
from unetkit.data.discovery import DiscoveryResult, Sample, discover
from unetkit.data.fingerprint import DataFingerprint, FingerprintAccumulator
from unetkit.data.masks import (
    MaskEncodingError,
    apply_roi,
    count_values,
    encode_mask,
    encode_multilabel,
    hex_colour,
    infer_mask_encoding,
    resolve_classes,
)
from unetkit.data.options import DataConfig

ERROR, WARNING = "error", "warning"
_MAX_LISTED = 5  # files named per finding; the rest are counted
# The fingerprint's class statistics, withheld when the masks' encoding is wrong.
_CLASS_FIELDS = ("classes", "class_pixels", "class_frequencies", "class_presence", "foreground_fraction",
                 "ignore_fraction")


@dataclass
class Finding:
    """One problem. ``code`` is stable (for scripts), ``message`` says what is wrong and what to do."""

    severity: str
    code: str
    message: str
    files: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    """Everything :func:`check_dataset` found.

    Attributes:
        root: the dataset as given.
        findings: errors and warnings, errors first.
        summary: counts, layout, sizes, channels, dtypes, mask values/colours, the encoding guess and the
            fingerprint's dict form (``summary["fingerprint"]``, see ``DataFingerprint.to_dict()``).
        fingerprint: the samples' ``unetkit.data.fingerprint.DataFingerprint`` (None when none was read);
            without class statistics when the masks' encoding is wrong.
    """

    root: str
    findings: list[Finding] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    fingerprint: DataFingerprint | None = None
    # With ``check_dataset(..., keep=True)``: every sample as :func:`unetkit.data.dataset.load_sample` loads it,
    # from the same decode the checks used (empty when the report has errors).
    samples: list[LoadedSample] = field(default_factory=list, repr=False)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def ok(self) -> bool:
        """True when nothing blocks training."""
        return not self.errors

    @property
    def has_errors(self) -> bool:
        return bool(self.errors)

    def add(self, severity: str, code: str, message: str, files: list[Any] | None = None) -> None:
        self.findings.append(Finding(severity, code, message, [str(f) for f in files or []]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "ok": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [asdict(f) for f in self.findings],
            "summary": self.summary,
        }

    def to_text(self, *, errors_only: bool = False) -> str:
        """Human-readable report: a summary block (unless ``errors_only``), then one line per finding."""
        lines = [] if errors_only else _summary_lines(self)
        for f in self.findings:
            if f.severity == ERROR or not errors_only:
                lines.append(f"{f.severity.upper():7s} [{f.code}] {f.message}")
        if not errors_only:
            lines.append(f"result: {len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        return "\n".join(lines)


@dataclass
class _Scan:
    """Per-dataset tallies gathered while reading the samples."""

    values: Counter = field(default_factory=Counter)
    colours: Counter = field(default_factory=Counter)
    problems: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    checked: int = 0


def check_dataset(config: DataConfig, *, max_samples: int | None = None, keep: bool = False) -> CheckReport:
    """Check a dataset for the classic mistakes.

    Args:
        config: how to read the dataset (root, folders, mask encoding, classes).
        max_samples: read only this many samples, spread evenly over the dataset (``None``: all).
        keep: keep every sample in ``report.samples`` (the trainer plans and trains on them: each file is
            decoded once); dropped again when the report has errors.

    Returns:
        :class:`CheckReport`; ``report.ok`` is False when training would fail or learn the wrong thing.
    """
    report = CheckReport(root=str(config.root))
    try:
        config = with_source_classes(config)
        found = discover(config)
    except (ValueError, FileNotFoundError) as err:
        report.add(ERROR, "discovery", str(err))
        return report
    _report_discovery(found, report)
    samples = _subset(found.samples, max_samples)
    acc = FingerprintAccumulator(config)
    scan = _Scan()
    for sample in samples:
        loaded = _scan_sample(sample, config, scan, acc)
        if keep and loaded is not None:
            report.samples.append(loaded)
    _report_problems(scan, config, report)
    # An export's masks are class indices by construction (classes named by the export): nothing to guess.
    _report_encoding(scan, config, report, labelled=found.has_masks and found.annotations is None)
    _report_images(acc, report)
    report.summary.update(_describe(found, scan, len(samples)))
    if acc.shapes:
        fp = acc.result()
        shown = fp.to_dict()
        if any(f.code in _ENCODING_CODES for f in report.errors):
            # Class statistics of wrongly encoded masks mislead (e.g. 256 "classes"); show none.
            blank = DataFingerprint()
            fp = replace(fp, **{name: getattr(blank, name) for name in _CLASS_FIELDS})
            shown = {k: v for k, v in shown.items() if k not in _CLASS_FIELDS}
        else:
            _report_classes(fp, config, report)
        report.fingerprint = fp
        report.summary["fingerprint"] = shown
    report.findings.sort(key=lambda f: f.severity != ERROR)
    if report.has_errors:
        report.samples = []
    return report


def _subset(samples: list[Sample], max_samples: int | None) -> list[Sample]:
    if max_samples is None or max_samples >= len(samples):
        return samples
    picks = np.linspace(0, len(samples) - 1, num=max(max_samples, 1)).round().astype(int)
    return [samples[i] for i in sorted(set(picks.tolist()))]


def _report_discovery(found: DiscoveryResult, report: CheckReport) -> None:
    if not found.samples:
        report.add(ERROR, "no_pairs", "no image/mask pairs found: check the folder names and file names "
                   "(images and masks are paired by relative folder and file stem)")  # fmt: skip
    if not found.has_masks:
        report.add(ERROR, "no_masks", f"no masks found next to {found.image_root}: put them in a masks/ "
                   "folder or pass --mask-dir")  # fmt: skip
    pairs = [
        (found.unmatched_images, "unmatched_images", "image(s) have no mask and will not be used"),
        (found.unmatched_masks, "unmatched_masks", "mask(s) have no image and will not be used"),
        (found.images_without_roi, "missing_roi", "image(s) have no ROI mask: they are scored everywhere"),
        (found.unmatched_rois, "unmatched_rois", "ROI mask(s) match no image"),
        (
            found.missing_files,
            "missing_files",
            "file(s) named in the list do not exist; their rows are skipped",
        ),
    ]
    if found.annotations is not None:
        report.summary["annotations"] = found.annotations.summary
        for f in found.annotations.findings:
            report.add(f.severity, f.code, f.message, f.items)
        _report_unannotated(found.annotations.summary, report)
    jpeg = [p for s in found.samples for p in s.mask_paths if p.suffix.lower() in (".jpg", ".jpeg")]
    if jpeg:
        report.add(WARNING, "jpeg_masks", f"{len(jpeg)} mask(s) are JPEG ({_names(jpeg)}): JPEG blurs label "
                   "edges into new values; re-save masks as PNG, or binarise with --mask-threshold 128", jpeg)  # fmt: skip
    for files, code, text in pairs:
        if files:
            hint = " Fix the file names (pairs need the same relative folder and stem) or move them out."
            report.add(WARNING, code, f"{len(files)} {text}: {_names(files)}.{hint}", files)


def _report_unannotated(summary: dict[str, Any], report: CheckReport) -> None:
    count = summary.get("images_without_annotations", 0)
    if count:
        first = ", ".join(summary["images_without_annotations_first"])
        report.add(WARNING, "no_annotations", f"{count} image(s) of {summary['images']} have no annotation and are "
                   f"used as background only (first: {first}); remove them from the export if they are unlabelled")  # fmt: skip


def _scan_sample(
    sample: Sample, config: DataConfig, scan: _Scan, acc: FingerprintAccumulator
) -> LoadedSample | None:
    """Read and check one sample; the loaded sample, or ``None`` when its image or mask failed."""
    scan.checked += 1
    try:
        image, meta = read_sample_image(sample)
    except (ValueError, OSError) as err:
        scan.problems["unreadable_image"].append((str(sample.image_paths[0]), str(err)))
        return None
    spatial = tuple(image.shape[1:])
    mask = None
    if sample.mask is not None:
        mask = _scan_mask(sample, config, spatial, scan)
    acc.add(LoadedSample(sample.key, image, mask, sample.group, sample.folder, meta))
    if sample.mask is not None and mask is None:
        return None
    return assemble_sample(sample, image, dict(meta), mask)


def _scan_mask(
    sample: Sample, config: DataConfig, spatial: tuple[int, ...], scan: _Scan
) -> np.ndarray | None:
    """Read, histogram, size-check and encode one sample's mask (and ROI); ``None`` when it fails."""
    paths = sample.mask if isinstance(sample.mask, list) else [sample.mask]
    raws: list[np.ndarray | None] = []
    for path in paths:
        if path is None:
            raws.append(None)
            continue
        try:
            # As the loader reads it (unetkit.data.dataset.read_sample_mask): multi-label layers keep palettes.
            raw = read_mask_array(path, resolve_palette=bool(config.colour_table) and not isinstance(sample.mask, list))
        except (ValueError, OSError) as err:
            scan.problems["unreadable_mask"].append((str(path), str(err)))
            return None
        values, colours = count_values(raw, spatial_ndim=len(spatial))
        scan.values.update(values)
        scan.colours.update(colours)
        if mask_spatial_shape(raw, len(spatial)) != spatial:
            size = "x".join(map(str, mask_spatial_shape(raw, len(spatial))))
            msg = f"image {sample.image_paths[0].name} is {'x'.join(map(str, spatial))}, mask {path.name} is {size}"
            scan.problems["size_mismatch"].append((str(path), msg))
            return None
        raws.append(raw)
    try:
        if isinstance(sample.mask, list):
            mask = encode_multilabel(raws, spatial, config)
        else:
            mask = encode_mask(raws[0], config, source=str(sample.mask), spatial_ndim=len(spatial))  # type: ignore[arg-type]
        return _scan_roi(sample, config, mask, spatial, scan)
    except MaskEncodingError as err:
        scan.problems[err.code].append((str(sample.mask), str(err)))
    return None


def _scan_roi(
    sample: Sample, config: DataConfig, mask: np.ndarray, spatial: tuple[int, ...], scan: _Scan
) -> np.ndarray | None:
    if sample.roi is None:
        return mask
    try:
        roi = read_mask_array(sample.roi, resolve_palette=False)
    except (ValueError, OSError) as err:
        scan.problems["unreadable_mask"].append((str(sample.roi), str(err)))
        return None
    if mask_spatial_shape(roi, len(spatial)) != spatial:
        size = "x".join(map(str, mask_spatial_shape(roi, len(spatial))))
        msg = f"image {sample.image_paths[0].name} is {'x'.join(map(str, spatial))}, ROI {sample.roi.name} is {size}"
        scan.problems["size_mismatch"].append((str(sample.roi), msg))
        return None
    return apply_roi(mask, roi, ignore_index=config.ignore_index, source=str(sample.roi))


# Findings that mean "the masks are not being read as the classes they hold".
_ENCODING_CODES = {
    "mask_0_255", "soft_mask", "grey_levels", "rgb_mask_no_table", "not_labels", "empty",
    "values_outside_classes", "unknown_colours", "unmapped_values", "non_integer_mask", "bad_mask",
}  # fmt: skip
_PROBLEM_TEXT = {
    "unreadable_image": "image(s) cannot be read (truncated or corrupt): re-export or remove them",
    "unreadable_mask": "mask(s) cannot be read (truncated or corrupt): re-export or remove them",
    "size_mismatch": "image/mask pair(s) differ in size: masks must have exactly the image's size",
    "values_outside_classes": "mask(s) hold values outside the declared classes",
    "unknown_colours": "mask(s) hold colours that are not in the colour table",
    "unmapped_values": "mask(s) hold values missing from the value map",
    "rgb_mask_no_table": "mask(s) are RGB: give a colour table (--colour-table)",
    "mask_0_255": "mask(s) hold {0,255}: pass --mask-threshold 128 or --value-map 255:1",
    "non_integer_mask": "mask(s) hold non-integer values",
    "bad_mask": "mask(s) have an unusable format",
}


def _report_problems(scan: _Scan, config: DataConfig, report: CheckReport) -> None:
    """One error per kind of problem: the count, the first example in full, the files."""
    for code, items in scan.problems.items():
        files = [f for f, _ in items]
        text = _PROBLEM_TEXT.get(code, "mask(s) cannot be encoded")
        if code == "unknown_colours":
            detail = _unknown_colours(scan, config)
        elif code == "size_mismatch":
            detail = "; ".join(d for _, d in items[:_MAX_LISTED])
        else:
            detail = f"First: {items[0][1]}"
        more = f" ({len(items)} files)" if len(items) > 1 else ""
        report.add(ERROR, code, f"{len(items)} {text}: {detail}{more}", files)


def _unknown_colours(scan: _Scan, config: DataConfig) -> str:
    known = {
        tuple(int(x) for x in c) for c in list((config.colour_table or {}).values()) + config.ignore_colours
    }
    unknown = sorted(((n, c) for c, n in scan.colours.items() if c not in known), reverse=True)
    listed = ", ".join(f"{hex_colour(c)} ({n} px)" for n, c in unknown[:12])
    return f"{listed}. Add them to the colour table, or ignore them with --ignore-colour"


def _report_encoding(scan: _Scan, config: DataConfig, report: CheckReport, *, labelled: bool) -> None:
    """Dataset-level guess of the mask encoding; an error when the masks cannot be used as configured."""
    if not labelled or not (scan.values or scan.colours):
        return
    guess = infer_mask_encoding(dict(scan.values), dict(scan.colours), ignore_index=config.ignore_index)
    configured = (
        bool(config.colour_table) or config.value_map is not None or config.mask_threshold is not None
    )
    report.summary["mask_encoding"] = {
        "kind": guess.kind,
        "message": guess.message,
        "description": guess.description,
        "options": guess.options,
        "configured": _configured(config),
    }
    if configured or not guess.needs_options or config.task == "multilabel":
        return
    # One dataset-level finding replaces the per-file errors it explains.
    for code in ("mask_0_255", "rgb_mask_no_table", "values_outside_classes"):
        report.findings = [f for f in report.findings if f.code != code]
    report.add(ERROR, guess.kind, guess.message)


def _configured(config: DataConfig) -> str:
    parts = []
    if config.colour_table:
        parts.append(f"colour table with {len(config.colour_table)} colour(s)")
    if config.ignore_colours:
        parts.append("ignore colours " + ", ".join(hex_colour(c) for c in config.ignore_colours))
    if config.mask_threshold is not None:
        parts.append(f"threshold {config.mask_threshold}")
    if config.value_map is not None:
        parts.append(f"value map {dict(config.value_map)}")
    return "; ".join(parts) or "values used as class indices"


def _report_images(acc: FingerprintAccumulator, report: CheckReport) -> None:
    if len(acc.channels) > 1:
        report.add(ERROR, "mixed_channels", f"images have different channel counts {sorted(acc.channels)}: "
                   "convert them all to grey or all to RGB")  # fmt: skip
    if len({len(s) for s in acc.shapes}) > 1:
        report.add(
            ERROR, "mixed_dims", "the dataset mixes 2D images and 3D volumes: keep one kind per dataset"
        )


def _report_classes(fp: DataFingerprint, config: DataConfig, report: CheckReport) -> None:
    pixels, fg, ignored = fp.class_pixels, fp.foreground_fraction, fp.ignore_fraction
    if not pixels or fg is None or ignored is None:  # no labelled image
        return
    declared = resolve_classes(config)
    absent = [name for name in declared if pixels.get(name, 0) == 0]
    if absent:
        report.add(WARNING, "class_absent", f"class(es) {', '.join(absent)} never appear in the masks checked: "
                   "check the class list / colour table, or drop unused classes")  # fmt: skip
    if config.background and config.task != "multilabel" and fg == 0.0:
        report.add(WARNING, "all_background", "every mask is background only (class 0): nothing to learn; "
                   "check the mask encoding (--mask-threshold / --value-map)")  # fmt: skip
    if config.background and len(pixels) == 2 and fg > 0.5:
        report.add(WARNING, "foreground_majority", f"the foreground covers {100 * fg:.0f}% of the labelled pixels: "
                   "if the structure of interest is the other one, invert it (e.g. --value-map 0:1,255:0)")  # fmt: skip
    if ignored > 0.5:
        report.add(WARNING, "mostly_ignored", f"{100 * ignored:.0f}% of the mask pixels are "
                   f"ignore_index ({config.ignore_index}): is the ignore index right?")  # fmt: skip


def _describe(found: DiscoveryResult, scan: _Scan, n_checked: int) -> dict[str, Any]:
    top_values = dict(sorted(scan.values.items(), key=lambda kv: -kv[1])[:20])
    top_colours = {hex_colour(c): n for c, n in sorted(scan.colours.items(), key=lambda kv: -kv[1])[:20]}
    return {
        "layout": found.layout,
        "image_root": _str(found.image_root),
        "mask_root": _str(found.mask_root),
        "roi_root": _str(found.roi_root),
        "num_samples": len(found.samples),
        "num_checked": n_checked,
        "num_unmatched_images": len(found.unmatched_images),
        "num_unmatched_masks": len(found.unmatched_masks),
        "mask_values": {str(k): int(v) for k, v in sorted(top_values.items())},
        "num_mask_values": len(scan.values),
        "mask_colours": top_colours,
        "num_mask_colours": len(scan.colours),
    }


def _names(files: list[Path]) -> str:
    shown = ", ".join(p.name for p in files[:_MAX_LISTED])
    return shown + (f" (and {len(files) - _MAX_LISTED} more)" if len(files) > _MAX_LISTED else "")


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _annotation_line(a: dict[str, Any]) -> str:
    text = f"  {a['format']} export {a['file']}: classes {', '.join(a['classes'])}; images {a['images_found']} of {a['images']} found"
    if "annotations" in a:
        per = a["annotations_per_image"]
        per_class = ", ".join(f"{k} {v}" for k, v in a["annotations_per_class"].items())
        text += (f"; {a['annotations']} annotation(s) ({per_class}); per image {per['min']}..{per['max']} "
                 f"(median {per['median']}); {a['images_without_annotations']} image(s) without any")
    return text


def _summary_lines(report: CheckReport) -> list[str]:
    s = report.summary
    lines = [f"dataset: {report.root}"]
    if not s:
        return lines
    lines.append(f"  layout: {s['layout']}  images: {s['image_root']}  masks: {s['mask_root']}"
                 + (f"  roi: {s['roi_root']}" if s.get("roi_root") else ""))  # fmt: skip
    lines.append(f"  samples: {s['num_samples']} paired ({s['num_checked']} checked); unmatched: "
                 f"{s['num_unmatched_images']} image(s), {s['num_unmatched_masks']} mask(s)")  # fmt: skip
    fp = report.fingerprint
    if fp:
        sizes = fp.sizes
        size = " .. ".join("x".join(map(str, axes)) for axes in (sizes.min, sizes.max)) if sizes.min else "mixed"
        dims = fp.spatial_dims[0] if len(fp.spatial_dims) == 1 else fp.spatial_dims
        lines.append(f"  images: {dims}D, channels {fp.channels}, dtypes {', '.join(fp.dtypes)}, "
                     f"sizes {size} (median {'x'.join(map(str, sizes.median))})")  # fmt: skip
    if s.get("num_mask_colours"):
        shown = ", ".join(f"{c}: {n}" for c, n in s["mask_colours"].items())
        lines.append(f"  mask colours ({s['num_mask_colours']}): {shown}")
    elif s.get("num_mask_values"):
        shown = ", ".join(f"{v}: {n}" for v, n in s["mask_values"].items())
        extra = " ..." if s["num_mask_values"] > len(s["mask_values"]) else ""
        lines.append(f"  mask values ({s['num_mask_values']}, pixels): {shown}{extra}")
    if s.get("mask_encoding"):
        enc = s["mask_encoding"]
        lines.append(f"  mask encoding: {enc['configured']} ({enc['description']})")
    if s.get("annotations"):
        lines.append(_annotation_line(s["annotations"]))
    if fp and fp.class_frequencies and fp.foreground_fraction is not None and fp.ignore_fraction is not None:
        shares = ", ".join(f"{k} {100 * v:.1f}%" for k, v in fp.class_frequencies.items())
        lines.append(f"  classes (share of labelled pixels): {shares}")
        lines.append(f"  foreground {100 * fp.foreground_fraction:.1f}%, ignored {100 * fp.ignore_fraction:.1f}%")
    return lines
