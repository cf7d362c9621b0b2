"""``unetkit serve``: a real server on a free port, real images over HTTP, every refusal with its status and reason."""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _run_factory import make_run
from PIL import Image

from unetkit.cli import main
from unetkit.data.io import read_image
from unetkit.infer.overlay import class_colour, make_overlay
from unetkit.infer.predictor import Predictor
from unetkit.serve import Limits, SegmentationService, make_server
from unetkit.serve.app import class_table

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
ISBI = DATA / "isbi2012_em_membrane" / "images" / "3.png"
DUBAI_JPG = DATA / "dubai_aerial_landcover" / "images" / "tile_1" / "image_part_001.jpg"
HIPPO = DATA / "msd_task04_hippocampus" / "images" / "hippocampus_001.nii.gz"


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


class Client:
    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def raw(self, data: bytes) -> bytes:
        """Send bytes as they are (for requests http.client will not write) and return the whole answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # the request ends here, whatever its headers claim
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def serve(run: Path, limits: Limits | None = None) -> Iterator[Client]:
    service = SegmentationService(Predictor.from_run(run), run_dir=run, limits=limits)
    server = make_server(service, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Client(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("serve") / "run", tile=64, overlap=0.25)


@pytest.fixture(scope="module")
def client(run_2d: Path) -> Iterator[Client]:
    yield from serve(run_2d, Limits(max_bytes=2**20, max_pixels=300 * 300))


def error_of(status_body: tuple[int, dict[str, str], bytes]) -> tuple[int, str]:
    status, headers, body = status_body
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)["error"]


# ----------------------------------------------------------------------------------------------- answers
def test_mask_is_the_predictors_label_map_as_png(client: Client, run_2d: Path) -> None:
    image = isbi_crop()
    status, headers, body = client.request("POST", "/predict", png_bytes(image))
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert float(headers["X-Unetkit-Seconds"]) > 0
    labels = np.asarray(Image.open(io.BytesIO(body)))
    expected = Predictor.from_run(run_2d)(image[None].astype(np.float32)).labels
    assert labels.shape == (150, 170)
    np.testing.assert_array_equal(labels, expected)
    assert set(np.unique(labels)) == {0, 1}


def test_json_counts_classes_and_carries_mask_and_overlay(client: Client, run_2d: Path) -> None:
    image = isbi_crop()
    status, headers, body = client.request("POST", "/predict?format=json", png_bytes(image))
    assert status == 200 and headers["Content-Type"] == "application/json"
    reply = json.loads(body)
    expected = Predictor.from_run(run_2d)(image[None].astype(np.float32)).labels
    assert reply["shape"] == [150, 170]
    assert [c["name"] for c in reply["classes"]] == ["background", "class 1"]  # the plan names no classes
    assert reply["classes"][1]["colour"] == list(class_colour(1)) and reply["classes"][0]["colour"] is None
    assert [c["pixels"] for c in reply["classes"]] == [int((expected == 0).sum()), int((expected == 1).sum())]
    assert sum(c["fraction"] for c in reply["classes"]) == pytest.approx(1.0)
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(reply["mask_png"]))))
    np.testing.assert_array_equal(mask, expected)
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(reply["overlay_png"]))))
    np.testing.assert_array_equal(overlay, make_overlay(image, expected))


def test_class_names_come_from_the_plan_or_the_task() -> None:
    assert [c["name"] for c in class_table([], 2, binary=True)] == ["background", "foreground"]
    assert [c["name"] for c in class_table(["bg", "road"], 3)] == ["bg", "road", "class 2"]


def test_overlay_format_is_a_png_of_the_overlay(client: Client, run_2d: Path) -> None:
    image = isbi_crop()
    status, headers, body = client.request("POST", "/predict?format=overlay", png_bytes(image))
    assert status == 200 and headers["Content-Type"] == "image/png"
    expected = Predictor.from_run(run_2d)(image[None].astype(np.float32)).labels
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))), make_overlay(image, expected))


def test_page_health_and_info(client: Client) -> None:
    status, headers, body = client.request("GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'type="file"' in body and b"predict?format=json" in body
    assert json.loads(client.request("GET", "/health")[2]) == {"status": "ok"}
    info = json.loads(client.request("GET", "/info")[2])
    assert info["in_channels"] == 1 and info["spatial_dims"] == 2 and len(info["classes"]) == 2
    assert info["max_bytes"] == 2**20 and info["max_pixels"] == 90000


def test_simultaneous_requests_all_get_their_own_answer(client: Client, run_2d: Path) -> None:
    images = [isbi_crop(), np.ascontiguousarray(isbi_crop()[::-1, :120])]
    results: dict[int, bytes] = {}

    def post(i: int) -> None:
        results[i] = client.request("POST", "/predict", png_bytes(images[i % 2]))[2]

    threads = [threading.Thread(target=post, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    predictor = Predictor.from_run(run_2d)
    for i, body in results.items():
        expected = predictor(images[i % 2][None].astype(np.float32)).labels
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))), expected)
    assert len(results) == 4


def test_geotiff_upload_gets_a_geotiff_mask_with_the_same_crs_and_transform(tmp_path: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    array = np.moveaxis(np.asarray(Image.open(need(DUBAI_JPG)).convert("RGB")), -1, 0)[:, :120, :140].copy()
    source = tmp_path / "scene.tif"
    transform = rasterio.Affine(0.31, 0.02, 512345.5, -0.01, -0.29, 2789012.25)
    with rasterio.open(source, "w", driver="GTiff", height=120, width=140, count=3, dtype="uint8",
                       crs="EPSG:32640", transform=transform) as ds:
        ds.write(array)
    run = make_run(tmp_path / "run", in_channels=3, classes=3, tile=64, overlap=0.25)
    for client in serve(run):
        status, headers, body = client.request("POST", "/predict", source.read_bytes())
    assert status == 200 and headers["Content-Type"] == "image/tiff"
    answer = tmp_path / "mask.tif"
    answer.write_bytes(body)
    with rasterio.open(answer) as mask:
        assert mask.crs.to_epsg() == 32640 and mask.transform == transform
        labels = mask.read(1)
    np.testing.assert_array_equal(labels, Predictor.from_run(run)(array.astype(np.float32)).labels)


def test_nifti_upload_gets_a_nifti_mask_with_the_same_affine(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", spatial_dims=3, classes=3, tile=[32, 32, 32], overlap=0.25)
    source = need(HIPPO)
    for client in serve(run):
        status, headers, body = client.request("POST", "/predict", source.read_bytes())
        overlay = error_of(client.request("POST", "/predict?format=overlay", source.read_bytes()))
    assert status == 200 and headers["Content-Type"] == "application/gzip"
    answer = tmp_path / "mask.nii.gz"
    answer.write_bytes(body)
    mask, real = nib.load(answer), nib.load(source)
    np.testing.assert_array_equal(mask.affine, real.affine)
    expected = Predictor.from_run(run)(read_image(source).array)
    np.testing.assert_array_equal(np.asarray(mask.dataobj), expected.labels)
    assert overlay[0] == 400 and "2D images only" in overlay[1]


# ---------------------------------------------------------------------------------------------- refusals
def test_bad_images_are_refused_with_the_reason(client: Client) -> None:
    good = png_bytes(isbi_crop())
    assert error_of(client.request("POST", "/predict", b"hello, world")) == (
        415, "unsupported upload: send the bytes of one PNG, JPEG, TIFF or .nii.gz file")
    status, message = error_of(client.request("POST", "/predict", good[: len(good) // 2]))
    assert status == 400 and "unreadable image" in message and "truncated" in message
    assert "unetkit-serve-" not in message  # the server's temporary path is not shown
    rgb = np.asarray(Image.open(need(DUBAI_JPG)).convert("RGB"))[:100, :100]
    assert error_of(client.request("POST", "/predict", png_bytes(rgb))) == (
        400, "the model takes 1 channel(s); the image has 3")
    assert error_of(client.request("POST", "/predict", b"")) == (
        400, "empty upload: send the image file's bytes as the request body")


def test_too_large_uploads_and_images_are_refused_and_the_server_lives_on(client: Client) -> None:
    status, message = error_of(client.request("POST", "/predict", b"\x89PNG\r\n\x1a\n" + b"\0" * 2**20))
    assert status == 413 and "exceeds the limit of 1048576" in message
    big = np.zeros((400, 300), dtype=np.uint8)  # 120000 pixels > 90000, a tiny file
    status, message = error_of(client.request("POST", "/predict", png_bytes(big)))
    assert status == 413 and "400x300 = 120000 pixels" in message
    assert "unetkit predict" in message
    assert client.request("GET", "/health")[0] == 200


def test_malformed_requests(client: Client) -> None:
    assert error_of(client.request("PUT", "/predict", b"x"))[0] == 405
    assert error_of(client.request("GET", "/predict")) == (405, "GET is not allowed on /predict; use POST")
    assert error_of(client.request("GET", "/nothing"))[0] == 404
    assert error_of(client.request("POST", "/predict?fmt=png", b"x")) == (
        400, "unknown query parameter(s) fmt for /predict")
    assert error_of(client.request("POST", "/predict?format=svg", b"x")) == (
        400, "unknown format 'svg'; choose one of mask, overlay, json")
    assert error_of(client.request("POST", "/predict?format=mask&format=json", b"x"))[0] == 400
    answer = client.raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") and b"malformed Content-Length" in answer
    answer = client.raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 411") and b"Content-Length header is required" in answer
    answer = client.raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 411")
    answer = client.raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n\x89PNG")  # client stops
    assert answer.startswith(b"HTTP/1.1 400") and b"upload ended after 4 of 100 bytes" in answer
    assert client.request("GET", "/health")[0] == 200


def test_cli_refuses_a_missing_run_and_a_bad_port(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err.lower()
    assert main(["serve", str(tmp_path / "missing"), "--port", "70000"]) == 2
    assert "--port must be in 0..65535" in capsys.readouterr().err


def test_cli_serves_until_interrupted(run_2d: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "unetkit.cli", "serve", str(run_2d), "--port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith(f"serving {run_2d} on http://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        status, _, body = Client(port).request("POST", "/predict?format=json", png_bytes(isbi_crop()))
        assert status == 200 and json.loads(body)["shape"] == [150, 170]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in err
