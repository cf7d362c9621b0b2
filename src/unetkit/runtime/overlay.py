"""Overlay a label map on an image for a quick visual check (training overlays, ``unetkit predict``)."""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

RGB = tuple[int, int, int]

# Saturated, mutually distinct hues at different lightness, none close to black, white or grey, so each
# class stands out on grey-scale micrographs and on colour photographs alike. Class k uses entry k - 1.
DEFAULT_PALETTE: tuple[RGB, ...] = (
    (230, 57, 70),  # red
    (58, 134, 255),  # blue
    (255, 190, 11),  # amber
    (6, 214, 160),  # mint
    (131, 56, 236),  # violet
    (251, 110, 7),  # orange
    (255, 0, 140),  # magenta
    (139, 201, 38),  # lime
    (17, 138, 178),  # cerulean
    (160, 95, 40),  # brown
    (0, 120, 60),  # green
    (120, 200, 255),  # sky
)


def class_colour(k: int) -> RGB:
    """Default colour of class ``k >= 1``: the palette, then darker saturated hues spaced by the golden ratio."""
    if k < 1:
        raise ValueError(f"class {k} has no colour: 0 is background and is never drawn")
    if k <= len(DEFAULT_PALETTE):
        return DEFAULT_PALETTE[k - 1]
    # darker than the palette so generated colours stay apart from it; hues spread by the golden ratio
    hue = (0.55 + k * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 1.0, 0.65)
    return (round(r * 255), round(g * 255), round(b * 255))


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """Convert an image to ``(H, W, 3)`` uint8 for display.

    ``(H, W)`` and ``(H, W, 1)`` become grey RGB, ``(H, W, 4)`` loses its alpha. uint8 is kept as is; bool
    becomes 0/255; floats in [0, 1] are scaled by 255; integers in [0, 255] are kept; anything else is
    stretched from its min..max to 0..255 (a constant image becomes 0).
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        image = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[..., :3]
    elif image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    else:
        raise ValueError(f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.copy()
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    values = image.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("image contains NaN or infinite values")
    lo, hi = (values.min(), values.max()) if values.size else (0.0, 0.0)
    if np.issubdtype(image.dtype, np.floating) and lo >= 0 and hi <= 1:
        values = values * 255.0
    elif not (np.issubdtype(image.dtype, np.integer) and lo >= 0 and hi <= 255):
        values = (values - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(values)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _colour_table(
    classes: Sequence[int], colours: Mapping[int, Sequence[int]] | Sequence[Sequence[int]] | None
) -> dict[int, np.ndarray]:
    table = {}
    for k in classes:
        if colours is None:
            rgb: Sequence[int] = class_colour(k)
        elif isinstance(colours, Mapping):
            if k not in colours:
                raise ValueError(f"no colour given for class {k} (colours has classes {sorted(colours)})")
            rgb = colours[k]
        else:
            if k >= len(colours):
                raise ValueError(
                    f"no colour given for class {k}: colours[k] is class k's colour, got {len(colours)}"
                )
            rgb = colours[k]
        if len(rgb) != 3:
            raise ValueError(f"colour of class {k} must be (r, g, b), got {rgb!r}")
        table[k] = np.asarray(rgb, dtype=np.float64)
    return table


def outline_pixels(mask: np.ndarray) -> np.ndarray:
    """Pixels of a label map that touch (share an edge with) a pixel of another label; the image border
    does not count as another label. Returns a bool ``(H, W)`` array."""
    mask = np.asarray(mask)
    edge = np.zeros(mask.shape, dtype=bool)
    edge[1:, :] |= mask[1:, :] != mask[:-1, :]
    edge[:-1, :] |= mask[:-1, :] != mask[1:, :]
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    return edge


def make_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    colours: Mapping[int, Sequence[int]] | Sequence[Sequence[int]] | None = None,
    alpha: float = 0.4,
    outline_width: int = 1,
    outline: bool = True,
) -> np.ndarray:
    """Draw a label map over an image.

    Background (label 0) pixels keep the image's colour exactly. A class-``k`` pixel becomes
    ``round((1 - alpha) * image + alpha * colour_k)``; with ``outline`` its region's border pixels (those
    within ``outline_width`` pixels of another label) are painted in the opaque class colour.

    Args:
        image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; converted by :func:`to_uint8_rgb`.
        mask: ``(H, W)`` non-negative integer (or bool) label map.
        colours: ``{class: (r, g, b)}`` or a sequence where ``colours[k]`` is class ``k``'s colour
            (``colours[0]`` is unused); default :func:`class_colour`.
        alpha: opacity of the class colour over the image, in [0, 1].
        outline_width: outline thickness in pixels (>= 1).
        outline: draw class outlines.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    rgb = to_uint8_rgb(image)
    mask = np.asarray(mask)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {rgb.shape[:2]}")
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must be an integer label map, got dtype {mask.dtype}")
    if mask.size and mask.min() < 0:
        raise ValueError("mask labels must be >= 0 (0 = background)")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if outline_width < 1:
        raise ValueError(f"outline_width must be >= 1, got {outline_width}")
    mask = mask.astype(np.int64)
    table = _colour_table([int(k) for k in np.unique(mask) if k != 0], colours)
    out = rgb.astype(np.float64)
    edges = _thick_outline(mask, outline_width) if outline else np.zeros(mask.shape, dtype=bool)
    for k, colour in table.items():
        region = mask == k
        out[region] = (1.0 - alpha) * out[region] + alpha * colour
        out[region & edges] = colour
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def drawn_labels(labels: np.ndarray, *, background: bool, ignore: int | None = None) -> np.ndarray:
    """The label map to hand :func:`make_overlay`, which never draws label 0.

    With ``background`` (class 0 is background) the labels as they are. Without (a plan whose classes are all
    foreground, e.g. a land-cover colour table), every class is shifted up by one so class 0 is drawn too:
    class ``k`` then shows in ``class_colour(k + 1)``. Pixels equal to ``ignore`` (unlabelled in a truth mask)
    become 0 and stay undrawn either way.
    """
    labels = np.asarray(labels).astype(np.int64)
    shown = labels if background else labels + 1
    return shown if ignore is None else np.where(labels == ignore, 0, shown)


def _thick_outline(mask: np.ndarray, width: int) -> np.ndarray:
    edge = outline_pixels(mask)
    if width > 1:
        edge = ndimage.binary_dilation(edge, iterations=width - 1) & (mask > 0)
    return edge
