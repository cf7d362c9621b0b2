"""Datasets of the accuracy benchmark: fixed splits, CSV lists, image reading and label decoding.

Every method (unetkit and the peers) trains on the same ``train.csv`` and is scored on the same
``test.csv``; the label decoding below is the single definition of ground truth used by the peers'
training *and* by the shared scorer (``acc_scoring``).

CSV lists have a header ``image,mask[,roi]`` and absolute paths, one row per image.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IGNORE = 255  # label value meaning "not scored / not trained on" (outside FOV, unlabelled colours)
DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

# Dubai land-cover colours actually present in the masks (SOURCE.md table; classes.json.original is wrong).
DUBAI_CLASSES = {
    "Building": (60, 16, 152),
    "Land": (132, 41, 246),
    "Road": (110, 193, 228),
    "Vegetation": (254, 221, 58),
    "Water": (226, 169, 41),
}
DUBAI_IGNORE = {"9B9B9B": (155, 155, 155), "000000": (0, 0, 0)}


@dataclass(frozen=True)
class Row:
    """One labelled image: absolute paths; ``roi`` is the scoring/training region (DRIVE FOV) or None."""

    image: Path
    mask: Path
    roi: Path | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """What the benchmark needs to know about one dataset.

    Attributes:
        name: short key used on the command line.
        classes: class names in class-index order (binary tasks: background, foreground).
        in_channels: channels of the image as read (1 grey, 3 RGB).
        metric: ``dice`` (mean per-image foreground Dice) or ``miou`` (dataset-level mean IoU).
        metric_text: how the score is computed, for the markdown table.
        split: ``(root) -> (train_rows, test_rows)``.
        decode: ``(mask_array, roi_array_or_None) -> (H, W) uint8`` class indices with ``IGNORE``.
    """

    name: str
    classes: tuple[str, ...]
    in_channels: int
    metric: str
    metric_text: str
    split: Callable[[Path], tuple[list[Row], list[Row]]]
    decode: Callable[[np.ndarray, np.ndarray | None], np.ndarray]


# ---------------------------------------------------------------- splits
def _numeric_key(path: Path) -> int:
    return int(path.stem)


def split_isbi(root: Path) -> tuple[list[Row], list[Row]]:
    base = root / "isbi2012_em_membrane"
    images = sorted((base / "images").glob("*.png"), key=_numeric_key)
    if [p.stem for p in images] != [str(i) for i in range(30)]:
        raise FileNotFoundError(f"{base / 'images'}: expected slices 0..29.png")
    rows = [Row(p, base / "masks" / p.name) for p in images]
    return rows[:20], rows[20:]


def split_drive(root: Path) -> tuple[list[Row], list[Row]]:
    base = root / "drive_retina_vessels"

    def part(name: str) -> list[Row]:
        images = sorted((base / name / "images").glob("*.tif"))
        if len(images) != 20:
            raise FileNotFoundError(f"{base / name / 'images'}: expected 20 .tif images, found {len(images)}")
        rows = []
        for p in images:
            ident = p.stem.split("_")[0]
            rows.append(Row(p, base / name / "1st_manual" / f"{ident}_manual1.gif",
                            base / name / "mask" / f"{p.stem}_mask.gif"))
        return rows

    return part("training"), part("test")


def split_dubai(root: Path) -> tuple[list[Row], list[Row]]:
    base = root / "dubai_aerial_landcover"

    def tiles(numbers: range) -> list[Row]:
        rows = []
        for n in numbers:
            images = sorted((base / "images" / f"tile_{n}").glob("*.jpg"))
            if not images:
                raise FileNotFoundError(f"{base / 'images' / f'tile_{n}'}: no .jpg images")
            rows += [Row(p, base / "masks" / f"tile_{n}" / f"{p.stem}.png") for p in images]
        return rows

    return tiles(range(1, 7)), tiles(range(7, 9))


def split_magnetic(root: Path, *, seed: int = 0, test_fraction: float = 0.2) -> tuple[list[Row], list[Row]]:
    """20 % test per defect-class folder (stratified), one seeded generator over classes in sorted order."""
    base = root / "magnetic_tile_defects"
    rng = np.random.default_rng(seed)
    train: list[Row] = []
    test: list[Row] = []
    folders = sorted(d for d in (base / "images").iterdir() if d.is_dir())
    if not folders:
        raise FileNotFoundError(f"{base / 'images'}: no class folders")
    for folder in folders:
        rows = [Row(p, base / "masks" / folder.name / f"{p.stem}.png") for p in sorted(folder.glob("*.jpg"))]
        n_test = int(round(test_fraction * len(rows)))
        order = rng.permutation(len(rows))
        test += [rows[i] for i in sorted(order[:n_test])]
        train += [rows[i] for i in sorted(order[n_test:])]
    return train, test


# ---------------------------------------------------------------- label decoding
def decode_isbi(mask: np.ndarray, roi: np.ndarray | None) -> np.ndarray:
    """Membrane (value 0) is the foreground class 1; cell interior (255) is 0."""
    _expect_values(mask, {0, 255}, "ISBI mask")
    return (mask == 0).astype(np.uint8)


def decode_threshold(mask: np.ndarray, roi: np.ndarray | None) -> np.ndarray:
    """``mask >= 128`` is foreground; pixels outside the ROI (if any) become IGNORE."""
    labels = (mask >= 128).astype(np.uint8)
    if roi is not None:
        labels[roi < 128] = IGNORE
    return labels


def decode_dubai(mask: np.ndarray, roi: np.ndarray | None) -> np.ndarray:
    """RGB colour -> class index (order of ``DUBAI_CLASSES``); unlabelled/black -> IGNORE."""
    if mask.ndim != 3 or mask.shape[-1] != 3:
        raise ValueError(f"Dubai mask must be (H, W, 3) RGB, got shape {mask.shape}")
    packed = (mask[..., 0].astype(np.int32) << 16) | (mask[..., 1].astype(np.int32) << 8) | mask[..., 2]
    labels = np.full(packed.shape, 254, np.uint8)  # 254 = colour not in the table (checked below)
    colours = [(i, rgb) for i, rgb in enumerate(DUBAI_CLASSES.values())]
    colours += [(IGNORE, rgb) for rgb in DUBAI_IGNORE.values()]
    for index, (r, g, b) in colours:
        labels[packed == ((r << 16) | (g << 8) | b)] = index
    if (labels == 254).any():
        odd = np.unique(mask[labels == 254].reshape(-1, 3), axis=0)[:5].tolist()
        raise ValueError(f"Dubai mask has colours outside the class table, e.g. {odd}")
    return labels


def _expect_values(array: np.ndarray, allowed: set[int], what: str) -> None:
    extra = set(np.unique(array).tolist()) - allowed
    if extra:
        raise ValueError(f"{what}: unexpected values {sorted(extra)[:10]} (allowed {sorted(allowed)})")


SPECS: dict[str, DatasetSpec] = {
    "isbi": DatasetSpec("isbi", ("cell", "membrane"), 1, "dice",
                        "foreground (membrane) Dice per image, mean over 10 test slices (20-29)",
                        split_isbi, decode_isbi),
    "drive": DatasetSpec("drive", ("background", "vessel"), 3, "dice",
                         "vessel Dice per image inside the FOV mask, mean over the 20 official test images",
                         split_drive, decode_threshold),
    "dubai": DatasetSpec("dubai", tuple(DUBAI_CLASSES), 3, "miou",
                         "mean IoU over 5 classes, dataset-level (one confusion matrix over all test pixels "
                         "of tiles 7-8; unlabelled #9B9B9B and #000000 ignored)",
                         split_dubai, decode_dubai),
    "magnetic": DatasetSpec("magnetic", ("background", "defect"), 1, "dice",
                            "defect Dice per image (empty prediction on empty mask = 1), mean over the "
                            "seeded stratified 20 % test split",
                            split_magnetic, decode_threshold),
}


# ---------------------------------------------------------------- reading
def read_image(path: Path, *, channels: int) -> np.ndarray:
    """Image as float32 ``(C, H, W)`` (grey -> 1 channel, colour -> 3 channels)."""
    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        array = np.asarray(im, dtype=np.float32)
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0).copy()


def read_labels(spec: DatasetSpec, row: Row) -> np.ndarray:
    """Ground truth of one row as ``(H, W)`` uint8 class indices with ``IGNORE``."""
    with Image.open(row.mask) as im:
        mask = np.asarray(im.convert("RGB" if spec.metric == "miou" else "L"))
    roi = None
    if row.roi is not None:
        with Image.open(row.roi) as im:
            roi = np.asarray(im.convert("L"))
        if roi.shape != mask.shape[:2]:
            raise ValueError(f"{row.roi}: ROI size {roi.shape} differs from mask size {mask.shape[:2]}")
    return spec.decode(mask, roi)


def standardise(image: np.ndarray) -> np.ndarray:
    """Per-image, per-channel zero mean / unit variance (``(C, H, W)`` float32)."""
    mean = image.mean(axis=(1, 2), keepdims=True)
    std = image.std(axis=(1, 2), keepdims=True)
    return ((image - mean) / np.maximum(std, 1e-6)).astype(np.float32)


def prediction_path(pred_dir: Path, row: Row) -> Path:
    """Where a method writes the prediction of ``row``: ``PRED_DIR/<image folder name>/<stem>.png``.

    The folder level keeps equal stems apart (Dubai's ``image_part_001`` exists in every tile).
    """
    return pred_dir / row.image.parent.name / f"{row.image.stem}.png"


# ---------------------------------------------------------------- CSV lists
def write_rows(path: Path, rows: list[Row]) -> None:
    """Write ``image,mask[,roi]`` with absolute paths, atomically."""
    if not rows:
        raise ValueError(f"{path}: refusing to write an empty list")
    keys = {(r.image.parent.name, r.image.stem) for r in rows}
    if len(keys) != len(rows):
        raise ValueError(f"{path}: two images share folder name and stem; predictions would collide")
    with_roi = rows[0].roi is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "mask", "roi"] if with_roi else ["image", "mask"])
        for r in rows:
            cells = [r.image.resolve(), r.mask.resolve()] + ([r.roi.resolve()] if with_roi else [])
            writer.writerow([str(c) for c in cells])
    os.replace(tmp, path)


def read_rows(path: Path) -> list[Row]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [Row(Path(r["image"]), Path(r["mask"]), Path(r["roi"]) if r.get("roi") else None)
                for r in reader]
    for r in rows:
        for p in (r.image, r.mask, r.roi):
            if p is not None and not p.is_file():
                raise FileNotFoundError(f"{path}: listed file {p} does not exist")
    return rows


def prepare_splits(*, spec: DatasetSpec, root: Path, work: Path) -> tuple[Path, Path]:
    """Write ``WORK/<name>/train.csv`` and ``test.csv`` (plus the Dubai colour table) and return the CSVs."""
    train, test = spec.split(root)
    folder = work / spec.name
    write_rows(folder / "train.csv", train)
    write_rows(folder / "test.csv", test)
    if spec.name == "dubai":
        write_json(folder / "colour_table.json", {k: list(v) for k, v in DUBAI_CLASSES.items()})
    return folder / "train.csv", folder / "test.csv"


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
