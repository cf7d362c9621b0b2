"""Helpers of the HTTP service tests: tiny runs, real images, a real server on a free loopback port."""

from __future__ import annotations

import http.client
import io
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# The run factory lives with the inference tests; these tests use the same tiny runs.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "infer"))
from _run_factory import make_run  # noqa: E402

from unetkit.infer.predictor import Predictor  # noqa: E402
from unetkit.serve import Batching, Limits, SegmentationService  # noqa: E402

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
ISBI = DATA / "isbi2012_em_membrane" / "images" / "3.png"
DUBAI_JPG = DATA / "dubai_aerial_landcover" / "images" / "tile_1" / "image_part_001.jpg"
HIPPO = DATA / "msd_task04_hippocampus" / "images" / "hippocampus_001.nii.gz"

__all__ = ["DATA", "DUBAI_JPG", "HIPPO", "ISBI", "Client", "exact_predictor", "isbi_crop", "make_run", "need",
           "png_bytes", "service_for", "serving"]


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"dataset file {path} is not available")
    return path


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def isbi_crop() -> np.ndarray:
    return np.asarray(Image.open(need(ISBI)))[40:190, 10:180].copy()  # 150 x 170: not a tile multiple


def exact_predictor(run: Path, **overrides: object) -> Predictor:
    """Plain fp32 (this CPU's fast path would use bf16): what exactness tests compare against."""
    return Predictor.from_run(run, fast=False, **overrides)


class Client:
    """http.client against 127.0.0.1:port, plus raw socket writes for requests http.client will not send."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def raw(self, data: bytes, *, half_close: bool = False) -> bytes:
        """Send bytes as they are and return everything the server sends until it closes the connection."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)  # the client stops here, whatever its headers claimed
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


@contextmanager
def serving(service: SegmentationService, *, api_key: str | None = None) -> Iterator[Client]:
    """``service`` behind uvicorn on a free loopback port, ready (warmed up) when the block starts."""
    from unetkit.serve.app import create_app
    from unetkit.serve.server import Server

    with Server(create_app(service, api_key=api_key), "127.0.0.1", 0, log_level="warning") as server:
        client = Client(server.port)
        for _ in range(3000):
            if client.request("GET", "/ready")[0] == 200:
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"the service never became ready: {service.warm_up_error}")
        yield client


def service_for(run: Path, *, limits: Limits | None = None, batching: Batching | None = None,
                **overrides: object) -> SegmentationService:  # fmt: skip
    return SegmentationService(exact_predictor(run, **overrides), run_dir=run, limits=limits, batching=batching)
