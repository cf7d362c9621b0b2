"""What the HTTP service does with one upload, free of any HTTP plumbing (so it can be tested directly).

An upload is the bytes of one image file. Its type is read from its first bytes (never from a name the
client sends): PNG, JPEG, TIFF / GeoTIFF, or gzip-compressed NIfTI. The bytes are written under a fixed
name into a private temporary folder and predicted by the same code as ``unetkit predict``, so the mask keeps
the input's format and geometry: PNG for PNG / JPEG, TIFF with the same CRS and transform for TIFF, NIfTI
with the same affine for NIfTI. Every problem becomes a :class:`ServiceError` carrying an HTTP status and
a message naming it.

One :class:`~unetkit.serve.batching.MicroBatcher` thread owns the model; every request's sliding-window
loop runs in its caller's thread and sends its tiles there, so concurrent requests share forward passes.
"""

from __future__ import annotations

import base64
import contextlib
import io
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unetkit.runtime.run import encoder_name, input_channels, output_classes
from unetkit.serve.batching import MicroBatcher

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
# The uncertainty map's colours run up to the image's largest spread, but at least this one (a confident
# prediction's tiny spreads are not stretched into a bright map). Probabilities spread by 0.5 at most.
_MIN_SCALE = 0.05


class ServiceError(Exception):
    """A request the service refuses: ``status`` is the HTTP status, the message says why, ``headers`` go along."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class Limits:
    """``max_bytes``: largest upload; ``max_pixels``: most pixels (voxels) of one image; ``max_queue``: most
    predictions waiting or running at once (more get 503); ``timeout_s``: longest one prediction may take
    (then 504)."""

    max_bytes: int = 256 * 2**20
    max_pixels: int = 64 * 2**20
    max_queue: int = 32
    timeout_s: float = 120.0


@dataclass(frozen=True)
class Batching:
    """Micro-batching: at most ``max_batch`` tiles per forward pass, gathered for at most ``max_wait_ms``;
    ``enabled=False``: one pass per request batch."""

    max_batch: int = 16
    max_wait_ms: float = 5.0
    enabled: bool = True


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
    """One loaded predictor, its batching worker, admission control and readiness."""

    def __init__(self, predictor: Any, *, run_dir: str | Path, limits: Limits | None = None,
                 batching: Batching | None = None) -> None:  # fmt: skip
        self.predictor = predictor
        self.run_dir = Path(run_dir)
        self.limits = limits or Limits()
        self.batching = batching or Batching()
        if self.limits.max_queue < 1 or self.limits.timeout_s <= 0:
            raise ValueError("max_queue must be >= 1 and timeout_s positive")
        self.batcher = MicroBatcher(predictor.network, max_batch=self.batching.max_batch,
                                    max_wait_s=self.batching.max_wait_ms / 1000.0, batching=self.batching.enabled)
        self._slots = threading.BoundedSemaphore(self.limits.max_queue)
        self._ready = threading.Event()
        self._warm_up_thread: threading.Thread | None = None
        self.warm_up_error: str | None = None
        self.last_seconds = 1.0

    # -- life cycle ------------------------------------------------------------------------------
    def start(self, *, warm_up: bool = True) -> None:
        """Start the model's worker thread and, once, a warm-up prediction in the background (see :attr:`ready`)."""
        self.batcher.start()
        if warm_up and self._warm_up_thread is None:
            self._warm_up_thread = threading.Thread(target=self.warm_up, name="unetkit-warm-up", daemon=True)
            self._warm_up_thread.start()

    def close(self) -> None:
        """Stop the worker; requests still waiting for the model get an error."""
        self.batcher.close()

    @property
    def ready(self) -> bool:
        """True once a warm-up prediction went through the model (the first real one is not the slow one)."""
        return self._ready.is_set()

    def warm_up(self) -> None:
        """Predict one synthetic tile-sized image through the whole path (normalisation, TTA, worker)."""
        tile = [int(t) for t in self.predictor.infer.tile_size]
        channels = input_channels(self.predictor.plan)
        ramp = np.linspace(0.0, 1.0, num=int(np.prod(tile)), dtype=np.float32).reshape(tile)
        try:
            with self.batcher.caller():
                self._routed(deadline=None)(np.stack([ramp] * channels))
        except Exception as err:  # noqa: BLE001 - /ready reports it; the server stays up for /health and /info
            self.warm_up_error = f"warm-up prediction failed: {type(err).__name__}: {err}"
            return
        self._ready.set()

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        """Hold one of ``limits.max_queue`` prediction slots for the block.

        Raises:
            ServiceError: 503 with ``Retry-After`` when every slot is taken.
        """
        if not self._slots.acquire(blocking=False):
            retry = max(1, round(self.last_seconds))
            raise ServiceError(
                503, f"the server is busy: {self.limits.max_queue} predictions are queued or running; "
                f"retry in {retry} s", headers={"Retry-After": str(retry)},
            )  # fmt: skip
        try:
            yield
        finally:
            self._slots.release()

    # -- answers ---------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """What the page and clients need to know about the model and the service's limits."""
        plan = self.predictor.plan
        classes = output_classes(plan)
        return {
            "run": self.run_dir.name,
            "model": plan.model.name,
            "encoder": encoder_name(plan),
            "task": plan.data.task,
            "in_channels": plan.data.in_channels,
            "spatial_dims": plan.data.spatial_dims,
            "classes": class_table(plan.data, max(classes, 2)),
            "tta": self.predictor.infer.tta,
            "tile_size": list(self.predictor.infer.tile_size),
            "max_bytes": self.limits.max_bytes,
            "max_pixels": self.limits.max_pixels,
            "max_queue": self.limits.max_queue,
            "timeout_s": self.limits.timeout_s,
            "batching": {"enabled": self.batching.enabled, "max_batch": self.batching.max_batch,
                         "max_wait_ms": self.batching.max_wait_ms},
            "ready": self.ready,
        }

    def predict(self, body: bytes, *, fmt: str = "mask") -> Reply:
        """Predict the image in ``body`` and answer in ``fmt`` (``mask``, ``overlay`` or ``json``).

        Raises:
            ServiceError: 400 unreadable image or one the model cannot take, 413 too large, 415 not an image,
                503 shutting down, 504 not done within ``limits.timeout_s``.
        """
        if fmt not in FORMATS:
            raise ServiceError(400, f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        if not body:
            raise ServiceError(400, "empty upload: send the image file's bytes as the request body")
        if len(body) > self.limits.max_bytes:
            raise ServiceError(413, f"upload of {len(body)} bytes exceeds the limit of {self.limits.max_bytes}")
        suffix = sniff_suffix(body[:8])
        two_d = self.predictor.spatial_dims == 2
        if fmt == "overlay" and not two_d:
            raise ServiceError(400, "overlays are drawn for 2D images only; ask for format=mask or json")
        with tempfile.TemporaryDirectory(prefix="unetkit-serve-") as tmp:
            source = Path(tmp) / f"upload{suffix}"  # never a name the client chose
            source.write_bytes(body)
            self._check_size(source)
            out = Path(tmp) / "out"
            out.mkdir()
            started = time.perf_counter()
            targets = self._predict_file(source, out, overlay=fmt != "mask" and two_d,
                                         uncertainty=fmt == "json" and two_d and self.predictor.with_uncertainty)
            seconds = time.perf_counter() - started
            self.last_seconds = seconds
            headers = {"X-Unetkit-Seconds": f"{seconds:.3f}"}
            if fmt == "mask":
                mask = targets["mask"]
                return Reply(mask.read_bytes(), MEDIA_TYPES[".nii.gz" if mask.name.endswith(".nii.gz") else mask.suffix],
                             headers)  # fmt: skip
            if fmt == "overlay":
                return Reply(targets["overlay"].read_bytes(), "image/png", headers)
            return Reply(self._json(source, targets, seconds), "application/json", headers)

    # -- steps ---------------------------------------------------------------------------------
    def _routed(self, *, deadline: float | None) -> Any:
        """The predictor with its tiles sent to the worker thread, answering by ``deadline``."""
        return self.predictor.with_network(self.batcher.tile_fn(deadline=deadline))

    def _check_size(self, source: Path) -> None:
        from unetkit.data.io import image_shape

        try:
            shape = image_shape(source)
        except (ValueError, OSError) as err:
            if "DecompressionBomb" in str(err):  # Pillow refuses a header declaring a huge image
                raise ServiceError(413, f"{_without_path(err, source)}; limit {self.limits.max_pixels} pixels") from err
            raise ServiceError(400, _without_path(err, source)) from err
        except Warning as err:  # Pillow's DecompressionBombWarning where warnings are errors
            raise ServiceError(413, f"image declares more pixels than the limit of {self.limits.max_pixels}") from err
        pixels = int(np.prod(shape[1:]))
        if pixels > self.limits.max_pixels:
            raise ServiceError(
                413,
                f"image of {'x'.join(str(s) for s in shape[1:])} = {pixels} pixels exceeds the limit of "
                f"{self.limits.max_pixels}; predict it with `unetkit predict` (window by window)",
            )

    def _predict_file(self, source: Path, out: Path, *, overlay: bool, uncertainty: bool) -> dict[str, Path]:
        from unetkit.infer.paths import PathRequest, predict_paths

        # One input, read whole (the pixel limit above keeps it small), in this thread.
        request = PathRequest(inputs=(str(source),), out=out, uncertainty=uncertainty, overlay=overlay,
                              window_threshold=None, sequential=True)
        timeout = self.limits.timeout_s
        try:
            with self.batcher.caller():
                run = predict_paths(self._routed(deadline=time.monotonic() + timeout), request)
                (outcome,) = list(run.outcomes)
                if outcome.error is not None:
                    raise outcome.error
        except TimeoutError as err:  # before OSError, of which it is a kind
            raise ServiceError(504, f"the prediction did not finish within {timeout:g} s (the server is busy); "
                                    "retry later") from err  # fmt: skip
        except RuntimeError as err:
            if "shutting down" not in str(err) and "closed" not in str(err):
                raise
            raise ServiceError(503, "the service is shutting down", headers={"Retry-After": "5"}) from err
        except (ValueError, OSError) as err:
            raise ServiceError(400, _without_path(err, source)) from err
        targets = run.planned[0].targets
        assert targets is not None  # a refused input is an outcome with an error, raised above
        return targets

    def _json(self, source: Path, targets: dict[str, Path], seconds: float) -> bytes:
        import json

        from unetkit.data.io import read_image

        labels = read_image(targets["mask"]).array[0]
        classes = self.info()["classes"]
        counts = np.bincount(labels.ravel().astype(np.int64), minlength=len(classes))
        total = int(labels.size)
        payload: dict[str, Any] = {
            "shape": list(labels.shape),
            "seconds": round(seconds, 3),
            "tta": self.predictor.infer.tta,
            "classes": [
                {**c, "pixels": int(counts[c["index"]]), "fraction": float(counts[c["index"]]) / max(total, 1)}
                for c in classes
            ],
        }
        if labels.ndim == 2:
            payload["mask_png"] = _b64_png(labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16))
            payload["image_png"] = _b64_png(display_image(read_image(source).array))
        if "overlay" in targets:
            payload["overlay_png"] = base64.b64encode(targets["overlay"].read_bytes()).decode("ascii")
        path = targets.get("uncertainty")
        if path is not None and path.exists():
            variance = read_image(path).array[0]
            std = np.sqrt(np.clip(variance, 0.0, None))
            scale = max(float(std.max()), _MIN_SCALE)
            payload["uncertainty_png"] = _b64_png(uncertainty_colours(std, scale=scale))
            payload["uncertainty"] = {"measure": "standard deviation of the probabilities across TTA views",
                                      "mean": float(std.mean()), "max": float(std.max()), "scale_max": scale}
        return json.dumps(payload).encode()


def class_table(data: Any, classes: int) -> list[dict[str, Any]]:
    """``[{index, name, colour}]`` per class; colours are the overlay's (background has none).

    Names come from the data options (``classes``, the colour table, a value map or threshold: see
    :func:`unetkit.data.masks.resolve_classes`); an unnamed class 0 of data with a background is
    ``background``, the other class of a two-class model ``foreground``, any other unnamed class ``class k``.
    """
    from unetkit.data.masks import resolve_classes
    from unetkit.runtime.overlay import class_colour

    names = resolve_classes(data)
    background = bool(getattr(data, "background", True))
    table = []
    for k in range(classes):
        if k < len(names):
            name = names[k]
        elif background and k == 0:
            name = "background"
        elif background and classes == 2:
            name = "foreground"
        else:
            name = f"class {k}"
        table.append({"index": k, "name": name, "colour": None if k == 0 else list(class_colour(k))})
    return table


def display_image(array: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 of a ``(C, H, W)`` image as the overlay shows it (first three channels, or the first)."""
    from unetkit.runtime.overlay import to_uint8_rgb

    return to_uint8_rgb(np.moveaxis(array[:3], 0, -1) if array.shape[0] >= 3 else array[0])


# Dark violet -> red -> yellow: more uncertain is brighter; the ends stay apart from the overlay's grey images.
_UNCERTAINTY_STOPS = np.array([[10, 5, 30], [110, 20, 120], [215, 50, 70], [250, 150, 30], [252, 245, 150]], float)


def uncertainty_colours(std: np.ndarray, *, scale: float = 0.5) -> np.ndarray:
    """``(H, W, 3)`` uint8 colour map of a standard deviation map: 0 dark violet, ``scale`` and above bright yellow."""
    t = np.clip(std / scale, 0.0, 1.0) * (len(_UNCERTAINTY_STOPS) - 1)
    low = np.minimum(t.astype(np.int64), len(_UNCERTAINTY_STOPS) - 2)
    frac = (t - low)[..., None]
    rgb = _UNCERTAINTY_STOPS[low] * (1 - frac) + _UNCERTAINTY_STOPS[low + 1] * frac
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _b64_png(array: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _without_path(err: Exception, source: Path) -> str:
    """The reader's message without the server's temporary path (the client never named a file)."""
    text = str(err.args[0]) if err.args else str(err)
    return text.replace(f"{source}: ", "").replace(str(source), "the upload")
