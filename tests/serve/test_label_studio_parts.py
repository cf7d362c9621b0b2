"""The Label Studio backend's pieces without Label Studio: config matching, results <-> masks, versions, keys."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import numpy as np
import pytest

from unetkit.data.annotations.brush_rle import rle_to_mask
from unetkit.serve.label_studio import versions
from unetkit.serve.label_studio.images import FetchError, resolve
from unetkit.serve.label_studio.labelling_config import ConfigMismatch, parse_config
from unetkit.serve.label_studio.predictions import BadAnnotation, annotation_mask, results_for

CONFIG = """<View><Image name="img" value="$picture"/>
<BrushLabels name="brush" toName="img"><Label value="Membrane"/><Label value="vesicle"/></BrushLabels>
<PolygonLabels name="poly" toName="img"><Label value="membrane"/></PolygonLabels></View>"""
CLASSES = ["background", "membrane", "vesicle"]


def test_the_config_is_read_and_matched_by_name() -> None:
    config = parse_config(CONFIG)
    assert (config.image_name, config.image_key) == ("img", "picture")
    assert [(t.kind, t.name, t.to_name, t.labels) for t in config.tags] == [
        ("brushlabels", "brush", "img", ("Membrane", "vesicle")), ("polygonlabels", "poly", "img", ("membrane",))]
    assert config.class_map(CLASSES) == {"Membrane": 1, "vesicle": 2, "membrane": 1}


@pytest.mark.parametrize(("text", "message"), [
    (CONFIG.replace("vesicle", "nucleus"), r"label\(s\) nucleus are not classes of the run; the run's class\(es\) vesicle have no label"),
    ("<View><Text name='t' value='$t'/></View>", "no <Image> tag"),
    ("<View><Image name='i' value='$i'/><Choices name='c' toName='i'/></View>", "no <BrushLabels> or <PolygonLabels>"),
    ("<View><Image", "not XML"),
    ('<!DOCTYPE v [<!ENTITY a "b">]><View/>', "document type"),
])  # fmt: skip
def test_configs_the_run_cannot_serve(text: str, message: str) -> None:
    with pytest.raises(ConfigMismatch, match=message):
        parse_config(text).class_map(CLASSES)


def test_brush_and_polygon_results_and_back() -> None:
    labels = np.zeros((6, 8), dtype=np.int64)
    labels[1:4, 2:6] = 1  # a 3 x 4 membrane block
    labels[5, 0] = 2
    config = parse_config(CONFIG)
    results = results_for(labels, config=config, classes=CLASSES)
    brush = [r for r in results if r["type"] == "brushlabels"]
    assert [r["value"]["brushlabels"] for r in brush] == [["Membrane"], ["vesicle"]]
    np.testing.assert_array_equal(rle_to_mask(brush[0]["value"]["rle"], height=6, width=8), labels == 1)
    (poly,) = [r for r in results if r["type"] == "polygonlabels"]
    # pixel-edge outline of the block, in percent of width (8) and height (6)
    corners = {(round(x * 8 / 100), round(y * 6 / 100)) for x, y in poly["value"]["points"]}
    assert corners == {(2, 1), (6, 1), (6, 4), (2, 4)}
    mask = annotation_mask(results, config=config, classes=CLASSES, size=(6, 8))
    np.testing.assert_array_equal(mask, labels)


@pytest.mark.parametrize(("value", "message"), [
    ({"format": "rle", "rle": [], "brushlabels": ["vesicle"]}, "empty brush RLE"),
    ({"format": "rle", "rle": [0, 0, 0, 200, 1], "brushlabels": ["vesicle"]}, "malformed brush RLE"),
    ({"format": "rle", "rle": [1], "brushlabels": ["nucleus"]}, "not in the labelling config"),
])  # fmt: skip
def test_bad_annotations(value: dict, message: str) -> None:  # type: ignore[type-arg]
    result = [{"id": "r", "type": "brushlabels", "value": value}]
    with pytest.raises(BadAnnotation, match=message):
        annotation_mask(result, config=parse_config(CONFIG), classes=CLASSES, size=(4, 4))


@pytest.mark.parametrize(("reference", "url"), [
    ("/data/upload/3/ab-x.png", "http://ls:8080/data/upload/3/ab-x.png"),
    ("/data/local-files/?d=em/x.png", "http://ls:8080/data/local-files/?d=em/x.png"),
    ("http://ls:8080/data/upload/1/y.png", "http://ls:8080/data/upload/1/y.png"),
])  # fmt: skip
def test_image_references_resolve_on_label_studio(reference: str, url: str) -> None:
    assert resolve(reference, base="http://ls:8080") == url


@pytest.mark.parametrize("reference", ["http://elsewhere/x.png", "file:///etc/passwd", "//other:8080/x.png", ""])
def test_image_references_elsewhere_are_refused(reference: str) -> None:
    with pytest.raises(FetchError):
        resolve(reference, base="http://ls:8080")


def test_versions_are_named_by_their_weights(tmp_path: Path) -> None:
    run = tmp_path / "em"
    (run / "best").mkdir(parents=True)
    (run / "best" / "model.safetensors").write_bytes(b"weights")
    v0 = versions.current(run)
    assert v0.name == "v0" and v0.folder == run
    assert v0.model_version == f"em-v0-{hashlib.sha256(b'weights').hexdigest()[:8]}"
    assert versions.next_name(run) == "v1"
    (run / "versions" / "v1" / "best").mkdir(parents=True)
    (run / "versions" / "v1" / "best" / "model.safetensors").write_bytes(b"other")
    assert versions.next_name(run) == "v2"
    versions.set_current(run, versions.describe(run, "v1"))
    assert versions.current(run).name == "v1"


def test_the_api_key_rules() -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from unetkit.serve.label_studio.app import create_app

    class Backend:  # only /health and the key check are reached
        def health(self) -> dict:  # type: ignore[type-arg]
            return {"status": "UP"}

        def setup(self, payload: dict) -> dict:  # type: ignore[type-arg]
            return {"model_version": "m"}

        predict = webhook = setup

    client = TestClient(create_app(Backend(), api_key="s3cret"))  # type: ignore[arg-type]
    assert client.get("/health").status_code == 200
    assert client.post("/setup", json={}).json()["error"].startswith("missing API key")
    assert client.post("/setup", json={}, headers={"X-API-Key": "nope"}).status_code == 401
    basic = base64.b64encode(b"labelstudio:s3cret").decode()
    assert client.post("/setup", json={}, headers={"Authorization": f"Basic {basic}"}).json() == {"model_version": "m"}
    assert client.post("/setup", json={}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.post("/setup", content=b"[1]", headers={"X-API-Key": "s3cret"}).status_code == 400


def test_the_command_refuses_missing_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from unetkit.cli import main

    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "UNETKIT_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert main(["label-studio", str(tmp_path), "--device", "cpu"]) == 1
    assert capsys.readouterr().err == ("unetkit label-studio: error: --label-studio-url (or LABEL_STUDIO_URL) must be "
                                       "Label Studio's http(s) URL, got ''\n")  # fmt: skip
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:8080")
    assert main(["label-studio", str(tmp_path), "--host", "0.0.0.0", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("unetkit label-studio: error: listening on 0.0.0.0 lets other machines use the model")
    assert len(err.strip().splitlines()) == 1
