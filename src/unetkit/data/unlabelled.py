"""Images without masks, for semi-supervised training (``train --unlabelled``) and cold-start suggestions.

:func:`unlabelled_files` lists the image files of the given folders; :func:`split_off_labelled` finds those
that are also images of the labelled dataset (by resolved path or by identical file content, SHA-256), so
that they are reported and not used twice; :func:`load_unlabelled` reads the rest exactly like the labelled
images (same decoding, same normalisation, same target spacing for volumes) and checks their channel count
and dimensionality against the run's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unetkit.data.options import DataConfig

DIGEST_CHUNK = 1 << 20


class UnlabelledError(ValueError):
    """An ``--unlabelled`` folder that cannot be used; the message is one line naming the folder or file."""


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks (bounded memory whatever the file's size)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(DIGEST_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def unlabelled_files(folders: Sequence[str | Path]) -> list[Path]:
    """The image files (readable suffixes, sorted) directly in each folder, folders in the given order.

    Raises:
        UnlabelledError: a folder that does not exist, or one that holds no image file.
    """
    from unetkit.data.io import SUPPORTED_SUFFIXES

    files: list[Path] = []
    for folder in folders:
        path = Path(folder)
        if not path.is_dir():
            raise UnlabelledError(f"{path}: --unlabelled folder not found")
        found = sorted(p for p in path.iterdir() if p.is_file() and _suffix(p) in SUPPORTED_SUFFIXES)
        if not found:
            raise UnlabelledError(f"{path}: --unlabelled folder holds no image file ({', '.join(SUPPORTED_SUFFIXES)})")
        files += found
    return files


@dataclass
class UnlabelledSplit:
    """The unlabelled files, split into those to use and those that are images of the labelled dataset."""

    use: list[Path] = field(default_factory=list)
    labelled: list[Path] = field(default_factory=list)  # also in the labelled set: reported, not used


def split_off_labelled(files: Sequence[Path], labelled: Sequence[Path]) -> UnlabelledSplit:
    """Separate the ``files`` that are images of the labelled set: same resolved path, or same bytes.

    Raises:
        UnlabelledError: every file is a labelled image (the folder is the labelled set itself).
    """
    paths = {Path(p).resolve() for p in labelled}
    sizes = {Path(p).stat().st_size for p in labelled if Path(p).is_file()}
    digests: set[str] | None = None  # hashed only when a candidate has the size of some labelled image
    split = UnlabelledSplit()
    for path in files:
        same = Path(path).resolve() in paths
        if not same and path.stat().st_size in sizes:
            digests = digests if digests is not None else {file_digest(p) for p in paths if p.is_file()}
            same = file_digest(path) in digests
        (split.labelled if same else split.use).append(path)
    if files and not split.use:
        folders = sorted({str(Path(p).parent) for p in files})
        raise UnlabelledError(f"{', '.join(folders)}: every --unlabelled image ({len(files)}) is an image of the "
                              "labelled set; give a folder of images without masks")
    return split


def load_unlabelled(files: Sequence[Path], data: DataConfig) -> list[np.ndarray]:
    """Read and normalise each file like the labelled images: ``(C, *spatial)`` float32 arrays.

    Raises:
        UnlabelledError: a file with another channel count or number of spatial axes than ``data``, or a
            volume whose spacing does not allow resampling to the plan's target spacing.
        ValueError: an unreadable file (the reader's message names it).
    """
    from unetkit.data.dataset import read_sample_image
    from unetkit.data.discovery import Sample
    from unetkit.data.normalize import normalize_for
    from unetkit.data.resample import to_target_spacing

    images = []
    for path in files:
        image, meta = read_sample_image(Sample(key=path.stem, image=path))
        if image.ndim != data.spatial_dims + 1:
            raise UnlabelledError(f"{path}: a {image.ndim - 1}D image; the run trains on {data.spatial_dims}D images")
        if image.shape[0] != data.in_channels:
            raise UnlabelledError(f"{path}: the image has {image.shape[0]} channel(s); the run takes {data.in_channels}")
        try:
            image, _ = to_target_spacing(image.astype(np.float32), None, spacing=meta.get("spacing"),
                                         target=data.target_spacing)
        except ValueError as err:
            raise UnlabelledError(f"{path}: {err}") from err
        images.append(normalize_for(image.astype(np.float32), data))
    return images


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()
