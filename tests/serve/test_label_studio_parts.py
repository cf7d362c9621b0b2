"""The Label Studio backend's pieces without Label Studio: config matching, results <-> masks, versions, keys."""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

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
    assert main(["label-studio", str(tmp_path), "--steps", "0", "--device", "cpu"]) == 1
    assert capsys.readouterr().err == "unetkit label-studio: error: --steps must be at least 1, got 0\n"


# -- the backend without Label Studio: storing annotations, when to fine-tune, when to swap --------------------
BRUSH = """<View><Image name="image" value="$image"/>
<BrushLabels name="tag" toName="image"><Label value="membrane"/></BrushLabels></View>"""


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """A backend of an untrained ``background, membrane`` run, trains every 2 annotations, 7 steps each; task
    images come from the ISBI slices (never from Label Studio) and fine-tunes are recorded, not started."""
    pytest.importorskip("fastapi")
    from _serve_helpers import ISBI, make_run, need

    from unetkit.config import Plan
    from unetkit.serve.label_studio.backend import BackendOptions, LabelStudioBackend
    from unetkit.serve.label_studio.images import LabelStudio

    root = make_run(tmp_path / "em", tile=64)
    plan = Plan.load(root / "plan.yaml")
    plan.data.classes = ["background", "membrane"]
    plan.save(root / "plan.yaml")
    ml = LabelStudioBackend(root, studio=LabelStudio(url="http://127.0.0.1:9", token="t"),
                            options=BackendOptions(train_every=2, steps=7))  # fmt: skip
    body = need(ISBI).read_bytes()
    monkeypatch.setattr(ml, "_task_bytes", lambda task, config: (body, ".png"))
    started: list[object] = []
    monkeypatch.setattr(ml.trainer, "start", started.append)
    ml.started = started  # type: ignore[attr-defined]
    return ml


def _event(task_id: int, mask: np.ndarray) -> dict:  # type: ignore[type-arg]
    from unetkit.data.annotations.brush_rle import mask_to_rle

    result = [{"id": "r", "from_name": "tag", "to_name": "image", "type": "brushlabels",
               "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": ["membrane"]}}]  # fmt: skip
    return {"action": "ANNOTATION_CREATED", "project": {"label_config": BRUSH},
            "task": {"id": task_id, "data": {"image": f"/data/upload/1/{task_id}.png"}},
            "annotation": {"id": 100 + task_id, "result": result}}  # fmt: skip


def test_every_n_annotations_start_a_fine_tune_of_n_steps(backend: object) -> None:
    from unetkit.serve.label_studio.finetune import fine_tune_plan

    ml: Any = backend
    mask = np.zeros((512, 512), dtype=bool)
    mask[100:200, 50:60] = True
    first = ml.webhook(_event(1, mask))
    assert "training" not in first and ml.started == []
    np.testing.assert_array_equal(np.asarray(Image.open(ml.dataset / "masks" / "task_1.png")), mask.astype(np.uint8))
    second = ml.webhook(_event(2, ~mask))
    assert second["training"]["status"] == "training" and second["training"]["version"] == "v1"
    (job,) = ml.started
    assert (job.steps, job.data, Path(job.out)) == (7, str(ml.dataset), ml.run / "versions" / "v1")
    plan = fine_tune_plan(job)
    assert (plan.train.steps, plan.train.time_budget_s, plan.data.root) == (7, None, str(ml.dataset))
    budgeted = fine_tune_plan(replace(job, steps=None, budget_s=90.0))
    assert budgeted.train.time_budget_s == 90.0
    assert "training" not in ml.webhook(_event(3, mask))  # the count starts again after each start


def test_the_served_model_changes_only_when_the_dice_does_not_drop(backend: object,
                                                                   caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    import shutil

    from unetkit.serve.label_studio.finetune import FineTuneJob

    ml: Any = backend
    served = ml.model_version
    job = FineTuneJob(current=str(ml.run), data=str(ml.dataset), out=str(ml.run / "versions" / "v1"),
                      classes=("background", "membrane"), budget_s=1.0)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="unetkit.label_studio"):
        ml._finished(job, None, "fine-tune v1 failed (exit 1); see finetune.log")
        ml._finished(job, {"swap": False, "old_dice": 0.5, "new_dice": 0.4, "reason": "validation Dice dropped"}, "")
    assert ml.model_version == served and not (ml.run / "versions" / "current.json").exists()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == f"fine-tune v1 failed (exit 1); see finetune.log; still serving {served}"
    assert messages[1] == f"fine-tune v1 kept aside (validation Dice dropped: 0.5 -> 0.4); still serving {served}"
    shutil.copytree(ml.run / "best", ml.run / "versions" / "v1" / "best")  # what a fine-tune writes
    shutil.copy(ml.run / "plan.yaml", ml.run / "versions" / "v1" / "plan.yaml")
    ml._finished(job, {"swap": True, "old_dice": 0.4, "new_dice": 0.4}, "")  # an equal Dice swaps
    assert ml.version.name == "v1" and ml.model_version != served
    assert versions.current(ml.run).model_version == ml.model_version


def test_the_key_goes_to_label_studio_only_even_through_redirects() -> None:
    """Label Studio redirects cloud-storage images to presigned URLs elsewhere: the key must not follow."""
    import http.server
    import threading

    from unetkit.serve.label_studio.images import LabelStudio, fetch

    seen: list[tuple[int, str, str | None]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            port = self.server.server_address[1]
            seen.append((port, self.path, self.headers.get("Authorization")))
            if self.path.startswith("/to/"):  # /to/<port>/<path>: a redirect to that server
                _, _, target, rest = self.path.split("/", 3)
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{target}/{rest}")
                self.end_headers()
                return
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"pixels from " + str(port).encode())

        def log_message(self, *args: object) -> None:
            pass

    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    studio_port, other_port = (s.server_address[1] for s in servers)
    studio = LabelStudio(url=f"http://127.0.0.1:{studio_port}", token="s3cret")
    try:
        assert fetch(f"/to/{other_port}/x.png", studio=studio, max_bytes=100) == f"pixels from {other_port}".encode()
        assert fetch(f"/to/{studio_port}/y.png", studio=studio, max_bytes=100) == f"pixels from {studio_port}".encode()
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    assert seen == [(studio_port, f"/to/{other_port}/x.png", "Token s3cret"), (other_port, "/x.png", None),
                    (studio_port, f"/to/{studio_port}/y.png", "Token s3cret"), (studio_port, "/y.png", "Token s3cret")]  # fmt: skip
