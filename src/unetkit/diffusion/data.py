"""Training images for diffusion: any folder of PNG/JPEG/TIFF images, grey or RGB, read once into memory.

Pixels are scaled to ``[-1, 1]`` (the range the noise schedule and ``clip_sample`` assume). For
class-conditional training the class of an image is the name of the folder that holds it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_MAX_LISTED = 10


@dataclass
class ImageFolder:
    """Images of one folder, ready for random crops.

    Attributes:
        images: ``(C, H, W)`` arrays in their stored dtype (integers keep memory low; see ``scales``).
        scales: per image, the value that maps to 1.0 (255 for 8-bit, 65535 for 16-bit, 1 for float).
        paths: source file of each image.
        labels: class index of each image (class-conditional only, else None).
        class_names: sorted class (folder) names; empty when unconditional.
        channels: 1 (grey) or 3 (RGB).
        skipped: ``(path, reason)`` of files skipped with ``skip_bad``.
    """

    images: list[np.ndarray]
    scales: list[float]
    paths: list[Path]
    labels: list[int] | None
    class_names: list[str]
    channels: int
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def load_image_folder(
    root: str | Path,
    *,
    image_size: int,
    channels: int | None = None,
    class_conditional: bool = False,
    skip_bad: bool = False,
) -> ImageFolder:
    """Read every image under ``root`` (recursively; hidden files and folders are ignored).

    Args:
        root: folder of images.
        image_size: side of the square training crops; every image must be at least this big.
        channels: 1 or 3 to convert every image; None: 3 if any image has colour, else 1.
        class_conditional: label each image with its parent folder's name.
        skip_bad: skip files that are not readable images (listed in ``skipped``) instead of failing.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no images, non-image files (without ``skip_bad``), images smaller than ``image_size``,
            or images directly in ``root`` when class-conditional.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"training data folder {root} not found")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    arrays, paths, bad = [], [], []
    for path in _files(root):
        try:
            arrays.append(read_image(path))
            paths.append(path)
        except ValueError as err:
            bad.append((path, str(err)))
    if bad and not skip_bad:
        raise ValueError(
            f"{len(bad)} file(s) under {root} are not readable images (use --skip-bad to skip them): "
            + _listing(f"{p} ({why})" for p, why in bad)
        )
    if not arrays:
        raise ValueError(f"no images found under {root} (looked for {', '.join(IMAGE_SUFFIXES)})")
    small = [f"{p} ({a.shape[1]}x{a.shape[0]} WxH)" for p, a in zip(paths, arrays, strict=True) if min(a.shape[:2]) < image_size]
    if small:
        raise ValueError(
            f"{len(small)} image(s) are smaller than the requested {image_size}x{image_size} crops "
            f"(use a smaller --image-size or remove them): " + _listing(small)
        )
    labels, class_names = _class_labels(root, paths) if class_conditional else (None, [])
    if channels is None:
        channels = 3 if any(a.ndim == 3 and a.shape[2] >= 3 for a in arrays) else 1
    images = [_to_channels(a, channels) for a in arrays]
    scales = [_scale(a, p) for a, p in zip(images, paths, strict=True)]
    return ImageFolder(images, scales, paths, labels, class_names, channels, skipped=bad)


def read_image(path: Path) -> np.ndarray:
    """One image as ``(H, W)`` or ``(H, W, C)``; raises ValueError if it is not a readable image."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"not an image type ({', '.join(IMAGE_SUFFIXES)})")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            array = np.asarray(tifffile.imread(path))
        else:
            with Image.open(path) as im:
                array = np.asarray(im.convert("RGB") if im.mode in ("P", "CMYK", "YCbCr") else im)
    except UnidentifiedImageError as err:
        raise ValueError("cannot decode: not a valid image file") from err
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot decode: {err}") from err
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channel-first TIFF
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 2, 3, 4)):
        raise ValueError(f"unsupported image shape {array.shape} (expected grey or RGB)")
    return array


def random_batch(
    folder: ImageFolder, *, batch_size: int, image_size: int, generator: torch.Generator, flip: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random square crops (uniform over images, then over positions), optionally flipped left-right.

    Returns:
        ``(B, C, image_size, image_size)`` float32 in ``[-1, 1]`` and ``(B,)`` int64 labels (or None).
    """
    picks = torch.randint(len(folder), (batch_size,), generator=generator).tolist()
    crops = []
    for i in picks:
        image = folder.images[i]
        top = int(torch.randint(image.shape[1] - image_size + 1, (1,), generator=generator))
        left = int(torch.randint(image.shape[2] - image_size + 1, (1,), generator=generator))
        crop = image[:, top : top + image_size, left : left + image_size].astype(np.float32) / folder.scales[i]
        if flip and bool(torch.rand((), generator=generator) < 0.5):
            crop = crop[:, :, ::-1]
        crops.append(crop)
    batch = torch.from_numpy(np.ascontiguousarray(np.stack(crops))) * 2 - 1
    labels = None if folder.labels is None else torch.tensor([folder.labels[i] for i in picks], dtype=torch.long)
    return batch, labels


def _files(root: Path) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(root).parts) or not path.is_file():
            continue  # hidden files (.DS_Store, .ipynb_checkpoints) are never data
        found.append(path)
    return found


def _class_labels(root: Path, paths: list[Path]) -> tuple[list[int], list[str]]:
    loose = [p for p in paths if p.parent == root]
    if loose:
        raise ValueError(
            f"class-conditional training takes the class from each image's folder, but {len(loose)} image(s) "
            f"sit directly in {root}: " + _listing(loose)
        )
    names = sorted({p.parent.name for p in paths})
    index = {name: i for i, name in enumerate(names)}
    return [index[p.parent.name] for p in paths], names


def _to_channels(array: np.ndarray, channels: int) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] in (2, 4):
        array = array[:, :, : array.shape[2] - 1]  # drop alpha
    if array.shape[2] == channels:
        return np.ascontiguousarray(np.moveaxis(array, -1, 0))
    if channels == 3:
        return np.ascontiguousarray(np.repeat(np.moveaxis(array, -1, 0), 3, axis=0))
    # RGB -> grey with the ITU-R 601 luma weights (what PIL's "L" conversion uses).
    grey = array[:, :, 0] * 0.299 + array[:, :, 1] * 0.587 + array[:, :, 2] * 0.114
    return grey.astype(np.float32)[None] if array.dtype.kind == "f" else np.rint(grey).astype(array.dtype)[None]


def _scale(array: np.ndarray, path: Path) -> float:
    if array.dtype == np.bool_:
        raise ValueError(f"{path}: binary image; diffusion training needs grey or colour images")
    if array.dtype.kind in "ui":
        return float(np.iinfo(array.dtype).max)
    if array.dtype.kind == "f":
        if array.size and (float(array.min()) < 0 or float(array.max()) > 1):
            raise ValueError(f"{path}: floating-point image outside [0, 1]; rescale it to [0, 1] first")
        return 1.0
    raise ValueError(f"{path}: unsupported pixel type {array.dtype}")


def _listing(items: Iterable[object]) -> str:
    names = [str(i) for i in items]
    more = f" ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more
