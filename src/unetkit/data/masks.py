"""Turn a raw mask (whatever the file stores) into int64 class indices, with ``ignore_index`` for unlabelled.

Encodings (chosen from ``DataConfig``, in this order):

* ``colour_table``: RGB colour-coded masks; each colour -> its class index (table order), ``ignore_colours``
  -> ignore; any other colour is an error listing the colours and their pixel counts;
* ``mask_threshold``: grey masks binarised with ``value >= threshold`` -> 1 (0/255 masks and soft-edged,
  JPEG-like masks); may be followed by a ``value_map`` over {0, 1} (e.g. ``{0: 1, 1: 0}`` to invert);
* ``value_map``: raw value -> class index (e.g. ``{0: 1, 255: 0}`` makes ISBI's membrane the foreground);
  unmapped values are an error, except ``ignore_index`` itself;
* otherwise the stored values are the class indices; ``ignore_index`` (default 255) marks unlabelled pixels,
  so ``{0, 1, 255}`` is a binary mask with ignored pixels.

Multi-label masks are one binary file per class (see :func:`encode_multilabel`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unetkit.data.options import DataConfig

RGB = tuple[int, int, int]


class MaskEncodingError(ValueError):
    """A mask the configured encoding cannot turn into class indices.

    Attributes:
        code: machine-readable reason (``unknown_colours``, ``rgb_mask_no_table``, ``mask_0_255``,
            ``values_outside_classes``, ``unmapped_values``, ``non_integer_mask``, ``bad_mask``), used by
            ``unetkit check`` to group findings.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def default_class_names(n: int) -> list[str]:
    """``["background", "foreground"]`` for 2 classes, else ``["class_0", ...]``."""
    return ["background", "foreground"] if n == 2 else [f"class_{i}" for i in range(n)]


def resolve_classes(config: DataConfig) -> list[str]:
    """The class names implied by ``config``; ``[]`` when only the data can tell (plain index masks)."""
    if config.classes:
        return list(config.classes)
    if config.colour_table:
        return list(config.colour_table)
    if config.value_map:
        targets = [v for v in config.value_map.values() if v != config.ignore_index]
        return default_class_names(max(targets) + 1) if targets else []
    if config.mask_threshold is not None:
        return default_class_names(2)
    return []


def encode_mask(
    raw: np.ndarray, config: DataConfig, *, source: str = "mask", spatial_ndim: int | None = None
) -> np.ndarray:
    """Encode one raw mask as class indices.

    Args:
        raw: ``(H, W)`` / ``(D, H, W)`` values or ``(H, W, 3|4)`` colours, as read from the file.
        config: the encoding options (module docstring).
        source: the file name, used in error messages.
        spatial_ndim: the image's number of spatial axes, when known; it tells a colour mask ``(H, W, 3)``
            from a volume with 3 slices. Without it a trailing axis of 3-4 is taken as colour.

    Returns:
        int64 array of the spatial shape: class indices, ``config.ignore_index`` where unlabelled.

    Raises:
        ValueError: unknown colours, values outside the declared classes, unmapped values, RGB masks without
            a colour table, non-integer values, or a {0, 255} mask that would ignore every foreground pixel.
    """
    if config.colour_table:
        return encode_colours(raw, config.colour_table, config.ignore_colours,
                              ignore_index=config.ignore_index, source=source)  # fmt: skip
    grey = _single_channel(raw, source, colour=is_colour(raw, spatial_ndim))
    n_classes = len(resolve_classes(config))
    if config.mask_threshold is not None:
        grey = (grey >= config.mask_threshold).astype(np.int64)
    if config.value_map:
        out = _apply_value_map(grey, config.value_map, config.ignore_index, source)
    else:
        out = grey.astype(np.int64)
        if not n_classes:
            _reject_ignored_foreground(out, config.ignore_index, source)
    _check_range(out, n_classes, config.ignore_index, source)
    return out


def encode_colours(
    raw: np.ndarray,
    table: Mapping[str, Sequence[int]],
    ignore_colours: Sequence[Sequence[int]] = (),
    *,
    ignore_index: int = 255,
    source: str = "mask",
) -> np.ndarray:
    """Map RGB colours to class indices (table order); ``ignore_colours`` -> ``ignore_index``.

    Raises:
        ValueError: a colour in the mask is neither in the table nor ignored (lists them with pixel counts),
            or the table repeats a colour.
    """
    codes = _colour_codes(raw, source)
    known = [_code(c) for c in table.values()] + [_code(c) for c in ignore_colours]
    if len(set(known)) != len(known):
        raise ValueError("the colour table (with ignore colours) lists a colour twice")
    targets = np.array(list(range(len(table))) + [ignore_index] * len(ignore_colours), dtype=np.int64)
    order = np.argsort(known)
    sorted_codes = np.asarray(known, dtype=np.int64)[order]
    idx = np.clip(np.searchsorted(sorted_codes, codes), 0, len(sorted_codes) - 1)
    hit = sorted_codes[idx] == codes
    if not hit.all():
        values, counts = np.unique(codes[~hit], return_counts=True)
        top = np.argsort(-counts)[:12]
        listed = ", ".join(f"{hex_colour(_decode(int(values[i])))} ({int(counts[i])} px)" for i in top)
        more = f" and {len(values) - 12} more" if len(values) > 12 else ""
        raise MaskEncodingError(
            "unknown_colours",
            f"{source}: {len(values)} colour(s) not in the colour table: {listed}{more}. "
            "Add them to the table or to the ignore colours (--ignore-colour)",
        )
    return targets[order][idx]


def encode_multilabel(
    layers: Sequence[np.ndarray | None], shape: Sequence[int], config: DataConfig
) -> np.ndarray:
    """Stack one binary file per class into ``(K, *shape)`` int64 {0, 1}.

    A value ``>= mask_threshold`` (default 1, i.e. any non-zero value) is "in the class"; a ``None`` layer (no
    file for that class) means the class is absent.
    """
    threshold = 1 if config.mask_threshold is None else config.mask_threshold
    out = np.zeros((len(layers), *shape), dtype=np.int64)
    for i, layer in enumerate(layers):
        if layer is not None:
            out[i] = _single_channel(layer, f"class {i}", colour=is_colour(layer, len(shape))) >= threshold
    return out


def apply_roi(mask: np.ndarray, roi: np.ndarray, *, ignore_index: int, source: str = "roi") -> np.ndarray:
    """Set pixels outside the region of interest (``roi == 0``) to ``ignore_index``.

    Args:
        mask: ``(*spatial)`` class indices or ``(K, *spatial)`` multi-label mask.
        roi: raw ROI mask, any non-zero value (any channel for colour files) is inside.

    Raises:
        ValueError: the ROI's size differs from the mask's.
    """
    inside = roi.any(axis=-1) if roi.ndim == mask.ndim + 1 and roi.shape[-1] in (3, 4) else roi != 0
    spatial = mask.shape[-inside.ndim :]
    if inside.shape != spatial:
        raise ValueError(f"{source}: ROI is {_size(inside.shape)} but the mask is {_size(spatial)}")
    out = mask.copy()
    out[..., ~inside] = ignore_index
    return out


def is_colour(raw: np.ndarray, spatial_ndim: int | None = None) -> bool:
    """True for a channel-last colour mask: ``spatial_ndim + 1`` axes, or (unknown dims) ``(H, W, 3|4)``."""
    if spatial_ndim is not None:
        return raw.ndim == spatial_ndim + 1 and raw.shape[-1] in (3, 4)
    return raw.ndim == 3 and raw.shape[-1] in (3, 4)


def count_values(
    raw: np.ndarray, *, spatial_ndim: int | None = None
) -> tuple[dict[int, int], dict[RGB, int]]:
    """Histogram a raw mask: ``(value -> pixels, {})`` for grey masks or ``({}, colour -> pixels)`` for RGB.

    RGB masks whose channels are all equal count as grey. ``spatial_ndim`` as in :func:`encode_mask`.
    """
    colour = is_colour(raw, spatial_ndim)
    if colour and not _grey_rgb(raw):
        codes, counts = np.unique(_colour_codes(raw, "mask"), return_counts=True)
        return {}, {_decode(int(c)): int(n) for c, n in zip(codes, counts, strict=True)}
    grey = raw[..., 0] if colour else raw
    values, counts = np.unique(grey, return_counts=True)
    return {_as_number(v): int(n) for v, n in zip(values, counts, strict=True)}, {}


@dataclass
class EncodingSuggestion:
    """What the raw mask values look like and which options encode them.

    Attributes:
        kind: ``binary`` | ``indices`` | ``indices_with_ignore`` (usable as stored) or ``mask_0_255`` |
            ``soft_mask`` | ``grey_levels`` | ``rgb_mask_no_table`` | ``not_labels`` | ``empty`` (need options).
        description: what the masks hold, e.g. ``"masks hold {0,255}"``.
        advice: what to pass (empty when the masks are usable as stored).
        options: suggested ``DataConfig`` fields (``mask_threshold``, ``value_map``, ``colour_table``).
        needs_options: True when the masks cannot be used as stored.
    """

    kind: str
    description: str
    advice: str = ""
    options: dict = field(default_factory=dict)
    needs_options: bool = False

    @property
    def message(self) -> str:
        return f"{self.description}: {self.advice}" if self.advice else self.description


def infer_mask_encoding(
    values: Mapping[float, int] | None = None,
    colours: Mapping[RGB, int] | None = None,
    *,
    ignore_index: int = 255,
) -> EncodingSuggestion:
    """Guess the encoding from the pixel histograms of all masks (see :func:`count_values`).

    Args:
        values: grey value -> pixel count, summed over the masks.
        colours: RGB colour -> pixel count for colour masks.
        ignore_index: the label meaning "unlabelled".
    """
    if colours:
        return _suggest_colours(colours)
    if not values:
        return EncodingSuggestion("empty", "no mask pixels were read", needs_options=True)
    vs = sorted(values)
    integral = all(float(v).is_integer() for v in vs)
    labelled = [v for v in vs if v != ignore_index]
    if set(vs) <= {0, 1}:
        return EncodingSuggestion("binary", "masks hold class indices {0,1} (binary)")
    if set(vs) in ({0, 255}, {255}):
        return EncodingSuggestion("mask_0_255", "masks hold {0,255}", "pass --mask-threshold 128 or --value-map 255:1",
                                  {"mask_threshold": 128}, needs_options=True)  # fmt: skip
    total = sum(values.values())
    extremes = values.get(0, 0) + values.get(255, 0)
    # Anti-aliased or resampled 0/255 masks: a few soft pixels at the edges, or (resampled) dozens of levels
    # between the two extremes; the latter must not pass as 255 class indices plus the ignore value.
    soft = extremes >= 0.95 * total or (len(vs) > 32 and 0 in values and extremes >= 0.5 * total)
    if len(vs) > 2 and soft and max(vs) == 255:
        share = 100 * (1 - extremes / total)
        return EncodingSuggestion("soft_mask", f"masks are 0/255 with soft edges ({share:.2f}% of pixels in 1..254)",
                                  "pass --mask-threshold 128", {"mask_threshold": 128}, needs_options=True)  # fmt: skip
    if integral and labelled == list(range(len(labelled))):
        if len(labelled) < len(vs):
            text = f"masks hold class indices 0..{len(labelled) - 1} and ignored pixels ({ignore_index})"
            return EncodingSuggestion("indices_with_ignore", text)
        return EncodingSuggestion("indices", f"masks hold class indices 0..{len(vs) - 1}")
    if integral and len(vs) <= 32:
        vm = {int(v): i for i, v in enumerate(vs)}
        spec = ",".join(f"{k}:{i}" for k, i in vm.items())
        return EncodingSuggestion("grey_levels", f"masks hold {len(vs)} grey levels {_short(vs)}",
                                  f"map them to classes with --value-map {spec}", {"value_map": vm}, True)  # fmt: skip
    return EncodingSuggestion(
        "not_labels",
        f"masks hold {len(vs)} distinct values",
        "they look like images or lossy (JPEG) masks, not labels; check --mask-dir, or binarise with "
        "--mask-threshold",
        needs_options=True,
    )


def _suggest_colours(colours: Mapping[RGB, int]) -> EncodingSuggestion:
    ranked = sorted(colours, key=lambda c: -colours[c])
    description = f"masks are RGB with {len(ranked)} colours"
    if len(ranked) > 64:
        advice = "too many for a colour table; colour masks must be saved lossless (PNG), not JPEG"
        return EncodingSuggestion("not_labels", description, advice, needs_options=True)
    table = {f"class_{i}": list(c) for i, c in enumerate(ranked)}
    listed = ",".join(f"{name}={hex_colour(c)}" for name, c in table.items())
    advice = f'give a colour table (--colour-table), e.g. --colour-table "{listed}" (rename the classes)'
    return EncodingSuggestion("rgb_mask_no_table", description, advice, {"colour_table": table}, True)


def hex_colour(rgb: Sequence[int]) -> str:
    return "#{:02X}{:02X}{:02X}".format(*[int(c) for c in rgb[:3]])


def parse_colour(text: str | Sequence[int]) -> list[int]:
    """``"#3C1098"``, ``"3C1098"``, ``"60,16,152"`` or ``[60, 16, 152]`` -> ``[60, 16, 152]``.

    Raises:
        ValueError: not a colour.
    """
    if not isinstance(text, str):
        rgb = [int(c) for c in text]
    else:
        s = text.strip()
        if "," in s or " " in s.strip():
            rgb = [int(c) for c in s.replace(",", " ").split()]
        elif len(s.lstrip("#")) == 6:
            h = s.lstrip("#")
            try:
                rgb = [int(h[i : i + 2], 16) for i in (0, 2, 4)]
            except ValueError:
                rgb = []
        else:
            rgb = []
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise ValueError(f"{text!r} is not a colour; write #RRGGBB or R,G,B")
    return rgb


def parse_colour_table(spec: str) -> dict[str, list[int]]:
    """A colour table from a JSON file (``{"name": "#hex" | [r, g, b]}`` or a list of ``{"name", "color"}``)
    or inline text ``"name=#hex,name=#hex"``.

    Raises:
        ValueError: malformed table.
    """
    path = Path(spec).expanduser()
    if spec.lower().endswith(".json") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"colour table file not found: {path}")
        raw = json.loads(path.read_text())
        if isinstance(raw, list):
            raw = {str(r["name"]): r.get("color", r.get("colour")) for r in raw}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a JSON object name -> colour")
        return {str(name): parse_colour(c) for name, c in raw.items()}
    table = {}
    for item in _split_inline(spec):
        name, sep, colour = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"colour table entry {item!r} must look like name=#RRGGBB")
        table[name.strip()] = parse_colour(colour)
    return table


def _split_inline(spec: str) -> list[str]:
    # "a=#010203,b=4,5,6" : split at commas that start a new "name=" entry, so R,G,B colours survive.
    parts: list[str] = []
    for chunk in spec.split(","):
        if "=" in chunk or not parts:
            parts.append(chunk)
        else:
            parts[-1] += "," + chunk
    return [p for p in (s.strip() for s in parts) if p]


def parse_value_map(spec: str) -> dict[int, int]:
    """``"0:1,255:0"`` -> ``{0: 1, 255: 0}``.

    Raises:
        ValueError: malformed entry.
    """
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, sep, value = item.partition(":")
        try:
            out[int(key)] = int(value)
        except ValueError:
            raise ValueError(f"value map entry {item!r} must look like RAW:CLASS, e.g. 255:1") from None
        if not sep:
            raise ValueError(f"value map entry {item!r} must look like RAW:CLASS, e.g. 255:1")
    if not out:
        raise ValueError("empty value map")
    return out


def _single_channel(raw: np.ndarray, source: str, *, colour: bool) -> np.ndarray:
    if colour:
        if not _grey_rgb(raw):
            n = len(np.unique(_colour_codes(raw, source)))
            raise MaskEncodingError(
                "rgb_mask_no_table",
                f"{source}: mask is RGB with {n} colours: give a colour table (--colour-table)",
            )
        raw = raw[..., 0]
    if raw.dtype.kind == "f":
        if not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw)):
            raise MaskEncodingError(
                "non_integer_mask",
                f"{source}: mask holds non-integer values; masks must store whole class numbers",
            )
    elif raw.dtype.kind not in "biu":
        raise MaskEncodingError("bad_mask", f"{source}: unsupported mask dtype {raw.dtype}")
    return raw


def _apply_value_map(
    grey: np.ndarray, value_map: Mapping[int, int], ignore_index: int, source: str
) -> np.ndarray:
    values, inverse = np.unique(grey, return_inverse=True)
    vm = {int(k): int(v) for k, v in value_map.items()}
    unmapped = [int(v) for v in values if int(v) not in vm and int(v) != ignore_index]
    if unmapped:
        raise MaskEncodingError(
            "unmapped_values",
            f"{source}: mask values {_short(unmapped)} are not in the value map {vm}; add them (RAW:CLASS)",
        )
    lut = np.array([vm.get(int(v), ignore_index) for v in values], dtype=np.int64)
    return lut[inverse].reshape(grey.shape)


def _reject_ignored_foreground(out: np.ndarray, ignore_index: int, source: str) -> None:
    """0/255 masks read as indices would turn every foreground pixel into "ignore": refuse with the fix."""
    if ignore_index != 255:
        return
    values = set(np.unique(out).tolist())
    if 255 in values and values <= {0, 255}:
        raise MaskEncodingError(
            "mask_0_255",
            f"{source}: masks hold {{0,255}}: pass --mask-threshold 128 or --value-map 255:1 "
            "(255 is the ignore index; if it really marks unlabelled pixels, declare --classes)",
        )


def _check_range(out: np.ndarray, n_classes: int, ignore_index: int, source: str) -> None:
    values = np.unique(out)
    bad = [int(v) for v in values if v < 0 or (n_classes and v >= n_classes and v != ignore_index)]
    if bad:
        declared = f"0..{n_classes - 1}" if n_classes else "non-negative"
        raise MaskEncodingError(
            "values_outside_classes",
            f"{source}: mask values {_short(bad)} are outside the declared classes ({declared}, "
            f"ignore {ignore_index}); fix --classes or map them with --value-map",
        )


def _colour_codes(raw: np.ndarray, source: str) -> np.ndarray:
    """RGB -> one int per pixel (``r << 16 | g << 8 | b``); grey masks count as r = g = b."""
    if raw.ndim >= 3 and raw.shape[-1] in (3, 4):
        rgb = raw[..., :3]
    elif raw.ndim in (2, 3):
        rgb = np.repeat(raw[..., None], 3, axis=-1)
    else:
        raise MaskEncodingError(
            "bad_mask", f"{source}: cannot read colours from an array of shape {raw.shape}"
        )
    if rgb.dtype != np.uint8:
        raise MaskEncodingError("bad_mask", f"{source}: colour masks must be 8-bit RGB, got {rgb.dtype}")
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _grey_rgb(raw: np.ndarray) -> bool:
    return bool(np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 0], raw[..., 2]))


def _code(c: Sequence[int]) -> int:
    r, g, b = parse_colour(c) if isinstance(c, str) else [int(x) for x in c[:3]]
    return (r << 16) | (g << 8) | b


def _decode(code: int) -> RGB:
    return ((code >> 16) & 255, (code >> 8) & 255, code & 255)


def _as_number(v: np.generic) -> int:
    f = float(v)
    # NaN / inf (float masks, e.g. a raster's nodata) stay floats: int() of them raises.
    return int(f) if f.is_integer() else f  # type: ignore[return-value]


def _short(values: Sequence[float], n: int = 10) -> str:
    head = ", ".join(str(v) for v in values[:n])
    return f"{{{head}{', ...' if len(values) > n else ''}}}"


def _size(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)
