"""Fuzzing the API in-process (ASGI): schemathesis against the app's own OpenAPI schema, and hypothesis sending
malformed images made from real files. Both are bounded (fixed example counts, derandomised) for CI."""

from __future__ import annotations

import functools
import gzip
import io
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _serve_helpers import HIPPO, ISBI, need, service_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unetkit.serve import Limits, SegmentationService
from unetkit.serve.app import create_app

pytest.importorskip("schemathesis")

FUZZ = settings(max_examples=60, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip


@pytest.fixture(scope="module")
def service(run_2d: Path) -> Iterator[SegmentationService]:
    service = service_for(run_2d, limits=Limits(max_bytes=256 * 1024, max_pixels=300 * 300, timeout_s=30))
    service.start(warm_up=False)
    service.warm_up()
    yield service
    service.close()


@pytest.fixture(scope="module")
def asgi_schema(service: SegmentationService):  # type: ignore[no-untyped-def]
    import schemathesis

    return schemathesis.openapi.from_asgi("/openapi.json", create_app(service))


@pytest.mark.parametrize("path, method, mode", [
    ("/predict", "POST", "positive"), ("/predict", "POST", "negative"), ("/info", "GET", "positive"),
    ("/ready", "GET", "positive"), ("/health", "GET", "positive"), ("/", "GET", "positive")])  # fmt: skip
def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_schema(asgi_schema, path: str, method: str,
                                                                             mode: str) -> None:  # fmt: skip
    """Positive cases follow the schema (schemathesis even sends tiny valid PNGs and JPEGs); negative ones break it
    (unknown formats, wrong types), and must be refused with a 4xx the schema lists."""
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    operation = asgi_schema[path][method]
    seen: list[int] = []

    @FUZZ
    @given(case=operation.as_strategy(GenerationMode.NEGATIVE if mode == "negative" else GenerationMode.POSITIVE))
    def fuzz(case) -> None:  # type: ignore[no-untyped-def]
        seen.append(case.call_and_validate(checks=checks).status_code)

    fuzz()
    assert seen and all(status < 500 for status in seen)
    if mode == "negative":
        assert all(400 <= status < 500 for status in seen)


# ---------------------------------------------------------------------------------- malformed images
def _png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk declaring ``width x height`` 8-bit grey pixels, then a tiny IDAT and IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _tiff_header(width: int, height: int) -> bytes:
    """A little-endian TIFF whose one page declares ``width x height`` 8-bit pixels in a strip that is not there."""
    tags = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
            (273, 4, 1, 8 + 2 + 12 * 9 + 4), (277, 3, 1, 1), (278, 4, 1, height),
            (279, 4, 1, min(width * height, 2**32 - 1))]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *t) for t in tags) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0" * 16


def _gzip_bomb() -> bytes:
    """64 MiB of zeros in about 64 KiB: sniffed as NIfTI, with no NIfTI header inside."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as gz:
        block = b"\0" * 2**20
        for _ in range(64):
            gz.write(block)
    return buffer.getvalue()


@functools.cache
def real_file(kind: str) -> bytes:
    """A real 200 x 200 ISBI crop as PNG or TIFF (under the fixture's pixel limit), or a real hippocampus volume."""
    from unetkit.data.io import read_image, write_image

    if kind == "nifti":
        return need(HIPPO).read_bytes()
    folder = Path(tempfile.mkdtemp(prefix="unetkit-fuzz-"))
    path = folder / f"slice.{'tif' if kind == 'tiff' else 'png'}"
    write_image(path, read_image(need(ISBI)).array[:, :200, :200])
    data = path.read_bytes()
    shutil.rmtree(folder)
    return data


@pytest.fixture(scope="module")
def http(service: SegmentationService):  # type: ignore[no-untyped-def]
    from starlette.testclient import TestClient

    with TestClient(create_app(service)) as client:
        yield client


def _refused_with_a_message(answer) -> str:  # type: ignore[no-untyped-def]
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:200])
    assert answer.headers["content-type"] == "application/json"
    message = answer.json()["error"]
    assert isinstance(message, str) and len(message) > 10 and "unetkit-serve-" not in message
    return message


@FUZZ
@given(kind=st.sampled_from(["png", "tiff", "nifti"]), fraction=st.floats(0.0, 0.98), flip=st.integers(0, 2**16))
def test_truncated_and_corrupted_real_files_are_refused_with_a_reason(http, kind: str, fraction: float,
                                                                      flip: int) -> None:  # fmt: skip
    data = real_file(kind)
    cut = data[: max(1, int(len(data) * fraction))]
    answer = http.post("/predict", content=cut)
    message = _refused_with_a_message(answer)
    if len(cut) >= 8 and kind != "nifti":  # the type is still known from the first bytes
        assert "unreadable image" in message or "upload" in message, message
    # The same file with one byte changed after its header is either predicted or refused, never a 5xx.
    damaged = bytearray(data)
    damaged[64 + flip % (len(data) - 64)] ^= 0xFF
    assert http.post("/predict", content=bytes(damaged)).status_code in (200, 400, 413, 415)


@FUZZ
@given(width=st.integers(301, 2**31 - 1), height=st.integers(301, 2**31 - 1), kind=st.sampled_from(["png", "tiff"]))
def test_headers_declaring_huge_images_are_refused_before_decoding(http, width: int, height: int,
                                                                   kind: str) -> None:  # fmt: skip
    """Every such header declares more than the fixture's 300 x 300 pixels (and has almost no pixel data)."""
    body = _png_header(width, height) if kind == "png" else _tiff_header(width, height)
    answer = http.post("/predict", content=body)
    message = _refused_with_a_message(answer)
    assert answer.status_code == 413 and "pixels" in message, message


def test_a_gzip_bomb_is_refused_without_inflating_it(http) -> None:  # type: ignore[no-untyped-def]
    bomb = _gzip_bomb()
    assert len(bomb) < 256 * 1024
    message = _refused_with_a_message(http.post("/predict", content=bomb))
    assert "unreadable image" in message


def test_uploads_over_the_byte_limit_are_refused_whatever_their_content(http) -> None:  # type: ignore[no-untyped-def]
    body = b"\x89PNG\r\n\x1a\n" + np.random.default_rng(0).bytes(256 * 1024)
    answer = http.post("/predict", content=body)
    assert answer.status_code == 413 and "exceeds the limit of 262144" in _refused_with_a_message(answer)
