"""What the HTTP service does with one upload, free of any HTTP plumbing (so it can be tested directly).

An upload is the raw bytes of one image file. Its type is read from its first bytes (never from a name the
client sends): PNG, JPEG, TIFF / GeoTIFF, or gzip-compressed NIfTI. The bytes are written to a private
temporary folder and predicted by the same code as ``unetkit predict``, so the mask keeps the input's
format and geometry: PNG for PNG / JPEG, TIFF with the same CRS and transform for TIFF, NIfTI with the same
affine for NIfTI. Every problem becomes a :class:`ServiceError` carrying an HTTP status and a message
naming it.
"""

from __future__ import annotations

import base64
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = ("mask", "overlay", "json")
# Leading bytes -> the suffix the readers expect.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
    (b"II+\x00", ".tif"),  # BigTIFF
    (b"MM\x00+", ".tif"),
    (b"\x1f\x8b", ".nii.gz"),
)
MEDIA_TYPES = {".png": "image/png", ".tif": "image/tiff", ".nii.gz": "application/gzip"}


class ServiceError(Exception):
    """A request the service refuses: ``status`` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """``max_bytes``: largest upload; ``max_pixels``: most pixels (voxels) one image may have."""

    max_bytes: int = 256 * 2**20
    max_pixels: int = 64 * 2**20


@dataclass
class Reply:
    """A successful answer: body bytes, media type, and extra headers."""

    body: bytes
    media_type: str
    headers: dict[str, str]


def sniff_suffix(head: bytes) -> str:
    """The file suffix for an upload that starts with ``head``.

    Raises:
        ServiceError: 415 when the bytes are no image type the service reads.
    """
    for magic, suffix in _MAGIC:
        if head.startswith(magic):
            return suffix
    raise ServiceError(415, "unsupported upload: send the bytes of one PNG, JPEG, TIFF or .nii.gz file")


class SegmentationService:
    """One loaded predictor behind a lock: uploads are decoded in parallel, predicted one at a time."""

    def __init__(self, predictor: Any, *, run_dir: str | Path, limits: Limits | None = None) -> None:
        self.predictor = predictor
        self.run_dir = Path(run_dir)
        self.limits = limits or Limits()
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        """What the page and clients need to know about the model."""
        plan = self.predictor.plan
        classes = int(plan.model.kwargs.get("classes", 2))
        return {
            "run": self.run_dir.name,
            "model": plan.model.name,
            "encoder": plan.model.kwargs.get("encoder", "plain"),
            "task": plan.data.task,
            "in_channels": plan.data.in_channels,
            "spatial_dims": plan.data.spatial_dims,
            "classes": class_table(list(plan.data.classes), max(classes, 2), binary=plan.data.task == "binary"),
            "tta": self.predictor.infer.tta,
            "tile_size": list(self.predictor.infer.tile_size),
            "max_bytes": self.limits.max_bytes,
            "max_pixels": self.limits.max_pixels,
        }

    def predict(self, body: bytes, *, fmt: str = "mask") -> Reply:
        """Predict the image in ``body`` and answer in ``fmt`` (``mask``, ``overlay`` or ``json``).

        Raises:
            ServiceError: 400 unreadable image or one the model cannot take, 413 too large, 415 not an image.
        """
        if fmt not in FORMATS:
            raise ServiceError(400, f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        if not body:
            raise ServiceError(400, "empty upload: send the image file's bytes as the request body")
        if len(body) > self.limits.max_bytes:
            raise ServiceError(413, f"upload of {len(body)} bytes exceeds the limit of {self.limits.max_bytes}")
        suffix = sniff_suffix(body[:8])
        spatial_dims = self.predictor.spatial_dims
        if fmt == "overlay" and spatial_dims != 2:
            raise ServiceError(400, "overlays are drawn for 2D images only; ask for format=mask or json")
        with tempfile.TemporaryDirectory(prefix="unetkit-serve-") as tmp:
            folder = Path(tmp)
            source = folder / f"upload{suffix}"
            source.write_bytes(body)
            self._check_size(source)
            out = folder / "out"
            out.mkdir()
            started = time.perf_counter()
            targets = self._predict_file(source, out, overlay=fmt != "mask" and spatial_dims == 2)
            seconds = time.perf_counter() - started
            mask_path = targets["mask"]
            headers = {"X-Unetkit-Seconds": f"{seconds:.3f}"}
            if fmt == "mask":
                return Reply(mask_path.read_bytes(), MEDIA_TYPES[_suffix_of(mask_path)], headers)
            if fmt == "overlay":
                return Reply(targets["overlay"].read_bytes(), "image/png", headers)
            return Reply(self._json(mask_path, targets.get("overlay"), seconds), "application/json", headers)

    # -- steps ---------------------------------------------------------------------------------
    def _check_size(self, source: Path) -> None:
        from unetkit.data.io import image_shape

        try:
            shape = image_shape(source)
        except (ValueError, OSError) as err:
            raise ServiceError(400, _without_path(err, source)) from err
        pixels = int(np.prod(shape[1:]))
        if pixels > self.limits.max_pixels:
            raise ServiceError(
                413,
                f"image of {'x'.join(str(s) for s in shape[1:])} = {pixels} pixels exceeds the limit of "
                f"{self.limits.max_pixels}; predict it with `unetkit predict` (window by window)",
            )

    def _predict_file(self, source: Path, out: Path, *, overlay: bool) -> dict[str, Path]:
        from unetkit.infer.files import output_paths, predict_file

        targets = output_paths(source, out, prob=False, uncertainty=False, overlay=overlay)
        try:
            with self._lock:
                predict_file(self.predictor, source, targets)
        except (ValueError, OSError) as err:
            raise ServiceError(400, _without_path(err, source)) from err
        return targets

    def _json(self, mask_path: Path, overlay_path: Path | None, seconds: float) -> bytes:
        import json

        from unetkit.data.io import read_image

        labels = read_image(mask_path).array[0]
        classes = self.info()["classes"]
        counts = np.bincount(labels.ravel().astype(np.int64), minlength=len(classes))
        total = int(labels.size)
        payload: dict[str, Any] = {
            "shape": list(labels.shape),
            "seconds": round(seconds, 3),
            "classes": [
                {**c, "pixels": int(counts[c["index"]]), "fraction": float(counts[c["index"]]) / max(total, 1)}
                for c in classes
            ],
        }
        if mask_path.suffix == ".png":
            payload["mask_png"] = base64.b64encode(mask_path.read_bytes()).decode("ascii")
        if overlay_path is not None:
            payload["overlay_png"] = base64.b64encode(overlay_path.read_bytes()).decode("ascii")
        return json.dumps(payload).encode()


def class_table(names: list[str], classes: int, *, binary: bool = False) -> list[dict[str, Any]]:
    """``[{index, name, colour}]`` per class; colours are the overlay's (background has none). Unnamed classes
    are ``background`` (0), ``foreground`` (1 of a binary task) or ``class k``."""
    from unetkit.infer.overlay import class_colour

    table = []
    for k in range(classes):
        default = "background" if k == 0 else ("foreground" if binary and k == 1 else f"class {k}")
        name = names[k] if k < len(names) else default
        table.append({"index": k, "name": name, "colour": None if k == 0 else list(class_colour(k))})
    return table


def _suffix_of(path: Path) -> str:
    return ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix


def _without_path(err: Exception, source: Path) -> str:
    """The reader's message without the server's temporary path (the client never named a file)."""
    text = str(err.args[0]) if err.args else str(err)
    return text.replace(f"{source}: ", "").replace(str(source), "the upload")
