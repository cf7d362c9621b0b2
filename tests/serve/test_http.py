"""``unetkit serve``'s API on a real uvicorn server on a free loopback port: real images, every answer format,
every refusal with its status and reason."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _serve_helpers import (
    DUBAI_JPG,
    HIPPO,
    Client,
    exact_predictor,
    isbi_crop,
    make_run,
    need,
    png_bytes,
    service_for,
    serving,
)
from PIL import Image

from unetkit.data.io import read_image
from unetkit.data.options import DataConfig
from unetkit.runtime.overlay import class_colour, make_overlay
from unetkit.serve import Limits
from unetkit.serve.service import class_table, uncertainty_colours


@pytest.fixture(scope="module")
def client(run_2d: Path) -> Iterator[Client]:
    with serving(service_for(run_2d, limits=Limits(max_bytes=2**20, max_pixels=300 * 300))) as c:
        yield c


def error_of(answer: tuple[int, dict[str, str], bytes]) -> tuple[int, str]:
    status, headers, body = answer
    assert headers["content-type"] == "application/json"
    return status, json.loads(body)["error"]


def multipart(data: bytes, *, filename: str, field: str = "file") -> tuple[bytes, dict[str, str]]:
    boundary = "unetkit-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


# ----------------------------------------------------------------------------------------------- answers
def test_mask_is_the_predictors_label_map_as_png(client: Client, run_2d: Path) -> None:
    image = isbi_crop()
    status, headers, body = client.request("POST", "/predict", png_bytes(image))
    assert status == 200 and headers["content-type"] == "image/png"
    assert float(headers["x-unetkit-seconds"]) > 0
    labels = np.asarray(Image.open(io.BytesIO(body)))
    expected = exact_predictor(run_2d)(image[None].astype(np.float32)).labels
    assert labels.shape == (150, 170)
    np.testing.assert_array_equal(labels, expected)
    assert set(np.unique(labels)) == {0, 1}


def test_multipart_upload_gives_the_same_mask_and_ignores_the_client_file_name(client: Client) -> None:
    data = png_bytes(isbi_crop())
    raw = client.request("POST", "/predict", data)
    # The name claims NIfTI and climbs out of any folder: the bytes say PNG, and no name of the client is used.
    body, headers = multipart(data, filename="../../escaped.nii.gz")
    status, answer_headers, answer = client.request("POST", "/predict", body, headers)
    assert status == 200 and answer_headers["content-type"] == "image/png"
    assert answer == raw[2]
    body, headers = multipart(data, filename="x.png", field="image")
    assert error_of(client.request("POST", "/predict", body, headers)) == (
        400, "the multipart form has no file: send the image as the form field `file`")


def test_json_counts_classes_and_carries_mask_image_and_overlay(client: Client, run_2d: Path) -> None:
    image = isbi_crop()
    status, headers, body = client.request("POST", "/predict?format=json", png_bytes(image))
    assert status == 200 and headers["content-type"] == "application/json"
    reply = json.loads(body)
    expected = exact_predictor(run_2d)(image[None].astype(np.float32)).labels
    assert reply["shape"] == [150, 170] and reply["tta"] == "none"
    assert [c["name"] for c in reply["classes"]] == ["background", "foreground"]  # two classes, none named
    assert reply["classes"][1]["colour"] == list(class_colour(1)) and reply["classes"][0]["colour"] is None
    assert [c["pixels"] for c in reply["classes"]] == [int((expected == 0).sum()), int((expected == 1).sum())]
    assert reply["classes"][1]["fraction"] == pytest.approx(float((expected == 1).mean()))
    png = lambda key: np.asarray(Image.open(io.BytesIO(base64.b64decode(reply[key]))))  # noqa: E731
    np.testing.assert_array_equal(png("mask_png"), expected)
    np.testing.assert_array_equal(png("overlay_png"), make_overlay(image, expected))
    np.testing.assert_array_equal(png("image_png"), np.stack([image] * 3, axis=-1))
    assert "uncertainty_png" not in reply  # no TTA in this run


def test_json_with_tta_carries_the_uncertainty_map(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", tile=64, overlap=0.25, tta="flips")
    image = isbi_crop()
    with serving(service_for(run)) as client:
        status, _, body = client.request("POST", "/predict?format=json", png_bytes(image))
    assert status == 200
    reply = json.loads(body)
    result = exact_predictor(run)(image[None].astype(np.float32))
    std = np.sqrt(result.uncertainty.astype(np.float32))
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(reply["uncertainty_png"]))))
    assert shown.shape == (150, 170, 3) and reply["tta"] == "flips"
    scale = max(float(std.max()), 0.05)
    np.testing.assert_array_equal(shown, uncertainty_colours(std, scale=scale))
    assert reply["uncertainty"]["max"] == pytest.approx(float(std.max()), rel=1e-6) and std.max() > 0
    assert reply["uncertainty"]["scale_max"] == pytest.approx(scale, rel=1e-6)
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(base64.b64decode(reply["mask_png"])))), result.labels)


def test_uncertainty_colours_run_from_dark_to_bright() -> None:
    rgb = uncertainty_colours(np.array([[0.0, 0.05, 0.1, 0.4]]), scale=0.1)
    assert rgb[0, 0].tolist() == [10, 5, 30] and rgb[0, 2].tolist() == [252, 245, 150]
    assert rgb[0, 3].tolist() == rgb[0, 2].tolist()  # clipped at the scale
    assert rgb[0, 1].tolist() == [215, 50, 70]  # half way: the middle colour stop


def test_class_names_come_from_the_data_options_or_the_task() -> None:
    names = lambda data, k: [c["name"] for c in class_table(data, k)]  # noqa: E731
    assert names(DataConfig(), 2) == ["background", "foreground"]  # DRIVE / ISBI trained without names
    assert names(DataConfig(value_map={0: 1, 255: 0}, task="binary"), 2) == ["background", "foreground"]
    assert names(DataConfig(classes=["bg", "road"]), 3) == ["bg", "road", "class 2"]
    assert names(DataConfig(colour_table={"water": [0, 0, 255], "land": [0, 255, 0]}, background=False), 2) == [
        "water", "land"]
    assert names(DataConfig(), 3) == ["background", "class 1", "class 2"]
    assert names(DataConfig(background=False), 2) == ["class 0", "class 1"]


def test_overlay_format_is_a_png_of_the_overlay(client: Client, run_2d: Path) -> None:
    image = isbi_crop()
    status, headers, body = client.request("POST", "/predict?format=overlay", png_bytes(image))
    assert status == 200 and headers["content-type"] == "image/png"
    expected = exact_predictor(run_2d)(image[None].astype(np.float32)).labels
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))), make_overlay(image, expected))


def test_page_health_ready_info_and_schema(client: Client) -> None:
    status, headers, body = client.request("GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'type="file"' in body and b"predict?format=json" in body
    assert json.loads(client.request("GET", "/health")[2]) == {"status": "ok"}
    assert json.loads(client.request("GET", "/ready")[2]) == {"status": "ready"}
    info = json.loads(client.request("GET", "/info")[2])
    assert info["in_channels"] == 1 and info["spatial_dims"] == 2 and len(info["classes"]) == 2
    assert info["max_bytes"] == 2**20 and info["max_pixels"] == 90000 and info["ready"] is True
    assert info["batching"] == {"enabled": True, "max_batch": 16, "max_wait_ms": 5.0}
    schema = json.loads(client.request("GET", "/openapi.json")[2])
    predict = schema["paths"]["/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {"application/octet-stream", "multipart/form-data"}
    assert {"200", "400", "413", "415", "503", "504"} <= set(predict["responses"]) and "422" not in predict["responses"]
    status, headers, body = client.request("GET", "/docs")
    assert status == 200 and b"openapi.json" in body


def test_simultaneous_requests_all_get_their_own_answer(client: Client, run_2d: Path) -> None:
    images = [isbi_crop(), np.ascontiguousarray(isbi_crop()[::-1, :120])]
    results: dict[int, bytes] = {}

    def post(i: int) -> None:
        results[i] = client.request("POST", "/predict", png_bytes(images[i % 2]))[2]

    threads = [threading.Thread(target=post, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    predictor = exact_predictor(run_2d)
    expected = [predictor(image[None].astype(np.float32)).labels for image in images]
    assert len(results) == 6
    for i, body in results.items():
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))), expected[i % 2])


def test_geotiff_upload_gets_a_geotiff_mask_with_the_same_crs_and_transform(tmp_path: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    array = np.moveaxis(np.asarray(Image.open(need(DUBAI_JPG)).convert("RGB")), -1, 0)[:, :120, :140].copy()
    source = tmp_path / "scene.tif"
    transform = rasterio.Affine(0.31, 0.02, 512345.5, -0.01, -0.29, 2789012.25)
    with rasterio.open(source, "w", driver="GTiff", height=120, width=140, count=3, dtype="uint8",
                       crs="EPSG:32640", transform=transform) as ds:
        ds.write(array)
    run = make_run(tmp_path / "run", in_channels=3, classes=3, tile=64, overlap=0.25)
    with serving(service_for(run)) as client:
        status, headers, body = client.request("POST", "/predict", source.read_bytes())
    assert status == 200 and headers["content-type"] == "image/tiff"
    answer = tmp_path / "mask.tif"
    answer.write_bytes(body)
    with rasterio.open(answer) as mask:
        assert mask.crs.to_epsg() == 32640 and mask.transform == transform
        labels = mask.read(1)
    np.testing.assert_array_equal(labels, exact_predictor(run)(array.astype(np.float32)).labels)


def test_nifti_upload_gets_a_nifti_mask_with_the_same_affine(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", spatial_dims=3, classes=3, tile=[32, 32, 32], overlap=0.25)
    source = need(HIPPO)
    with serving(service_for(run)) as client:
        status, headers, body = client.request("POST", "/predict", source.read_bytes())
        overlay = error_of(client.request("POST", "/predict?format=overlay", source.read_bytes()))
    assert status == 200 and headers["content-type"] == "application/gzip"
    answer = tmp_path / "mask.nii.gz"
    answer.write_bytes(body)
    mask, real = nib.load(answer), nib.load(source)
    np.testing.assert_array_equal(mask.affine, real.affine)
    expected = exact_predictor(run)(read_image(source).array)
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
    assert status == 413 and message == "upload of 1048584 bytes exceeds the limit of 1048576"
    big = np.zeros((400, 300), dtype=np.uint8)  # 120000 pixels > 90000, a tiny file
    status, message = error_of(client.request("POST", "/predict", png_bytes(big)))
    assert status == 413 and "400x300 = 120000 pixels" in message and "unetkit predict" in message
    # A chunked upload has no length to check up front: it is counted while it streams.
    chunks = b"".join(b"%x\r\n%s\r\n" % (65536, b"\0" * 65536) for _ in range(17)) + b"0\r\n\r\n"
    answer = client.raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                        + chunks)
    assert answer.startswith(b"HTTP/1.1 413") and b"upload of more than 1048576 bytes exceeds the limit" in answer
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
    # uvicorn refuses what it cannot parse before the application sees it (plain text).
    answer = client.raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")
    answer = client.raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 411") and b"Content-Length header (or Transfer-Encoding: chunked)" in answer
    # Chunked uploads are read (and limited) as they stream: this one is simply not an image.
    answer = client.raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                        b"5\r\nhello\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 415")
    # A client that stops half-way has gone: nothing is predicted, and the server serves on.
    answer = client.raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n\x89PNG", half_close=True)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400")
    assert client.request("GET", "/health")[0] == 200


def test_a_stalled_upload_is_refused_after_the_timeout(run_2d: Path) -> None:
    with serving(service_for(run_2d, limits=Limits(timeout_s=0.5))) as client:
        answer = client.raw(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n\x89PNG")
        assert answer.startswith(b"HTTP/1.1 408") and b"the upload did not arrive within 0.5 s" in answer
        assert client.request("GET", "/health")[0] == 200


def test_a_full_queue_answers_503_with_retry_after(run_2d: Path) -> None:
    service = service_for(run_2d, limits=Limits(max_queue=1))
    with serving(service) as client:
        with service.admission():  # the one slot is taken
            status, headers, body = client.request("POST", "/predict", png_bytes(isbi_crop()))
        assert status == 503 and int(headers["retry-after"]) >= 1
        assert "the server is busy: 1 predictions are queued or running" in json.loads(body)["error"]
        assert client.request("POST", "/predict", png_bytes(isbi_crop()))[0] == 200  # the slot is free again


def test_a_prediction_past_its_deadline_answers_504(run_2d: Path) -> None:
    service = service_for(run_2d, limits=Limits(timeout_s=0.3))
    gate = threading.Event()
    with serving(service) as client:
        real = service.batcher.network
        service.batcher.network = lambda batch: (gate.wait(5), real(batch))[1]  # the model hangs
        try:
            status, message = error_of(client.request("POST", "/predict", png_bytes(isbi_crop())))
        finally:
            gate.set()
            service.batcher.network = real
        assert status == 504 and message.startswith("the prediction did not finish within 0.3 s")
        assert client.request("POST", "/predict", png_bytes(isbi_crop()))[0] == 200  # the worker lives on


def test_ready_is_503_until_the_warm_up_prediction_ran(run_2d: Path) -> None:
    from starlette.testclient import TestClient

    from unetkit.serve.app import create_app

    service = service_for(run_2d)
    http = TestClient(create_app(service))  # no lifespan: nothing warms the model up
    answer = http.get("/ready")
    assert answer.status_code == 503 and answer.json() == {"error": "the model is warming up"}
    assert answer.headers["retry-after"] == "1"
    assert http.get("/health").json() == {"status": "ok"}  # liveness does not wait
    service.warm_up()
    assert http.get("/ready").json() == {"status": "ready"}
    service.close()


def test_an_api_key_guards_everything_but_health_ready_and_the_page(run_2d: Path) -> None:
    data = png_bytes(isbi_crop())
    with serving(service_for(run_2d), api_key="s3cret-key") as client:
        for path, body in (("/predict", data), ("/info", None)):
            method = "POST" if body else "GET"
            status, message = error_of(client.request(method, path, body))
            assert status == 401 and message.startswith("missing API key")
            assert error_of(client.request(method, path, body, {"X-API-Key": "nope"}))[1].startswith("wrong API key")
            assert client.request(method, path, body, {"X-API-Key": "s3cret-key"})[0] == 200
            assert client.request(method, path, body, {"Authorization": "Bearer s3cret-key"})[0] == 200
        assert client.request("GET", "/health")[0] == 200 and client.request("GET", "/ready")[0] == 200
        assert client.request("GET", "/")[0] == 200
        schemes = json.loads(client.request("GET", "/openapi.json")[2])["components"]["securitySchemes"]
        assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
