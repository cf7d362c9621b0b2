"""unetkit as the ML backend of a real Label Studio (started by the test, see _label_studio.py).

One project with a BrushLabels config and 10 ISBI 2012 slices: predictions with scores appear on the tasks,
sorting the tasks by prediction score is ``suggest``'s order, 5 annotations submitted through Label Studio's
API reach unetkit's dataset, a training event yields a new ``model_version`` (a second one while it runs is
refused), and Label Studio's own brush-to-PNG export gives back the submitted masks. Bad input: a config whose
labels are not the run's classes, a task whose image cannot be fetched, annotations with an empty or malformed
RLE. The tests of this module share one Label Studio and run in order.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _label_studio import Studio, running_label_studio  # noqa: E402
from _serve_helpers import make_run  # noqa: E402

from _browser import CHROMIUM, sync_playwright_or_skip  # noqa: E402
from unetkit.config import Plan  # noqa: E402
from unetkit.data.annotations.brush_rle import mask_to_rle, rle_to_mask  # noqa: E402
from unetkit.serve.label_studio.app import create_app  # noqa: E402
from unetkit.serve.label_studio.backend import BackendOptions, LabelStudioBackend  # noqa: E402
from unetkit.serve.label_studio.images import LabelStudio  # noqa: E402
from unetkit.serve.server import Server  # noqa: E402

SLICES = list(range(10))
URLS: dict[int, str] = {}
ANNOTATED = 5
BRUSH_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image">
    <Label value="membrane" background="#FF0000"/>
  </BrushLabels>
</View>"""


@pytest.fixture(scope="module")
def isbi(datasets: Path) -> Path:
    return datasets / "isbi2012_em_membrane"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with running_label_studio(tmp_path_factory.mktemp("label-studio")) as running:
        yield running


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 1-channel U-Net whose foreground class is called ``membrane``."""
    root = make_run(tmp_path_factory.mktemp("ls-run") / "em", tile=128, overlap=0.25)
    plan = Plan.load(root / "plan.yaml")
    plan.data.classes = ["background", "membrane"]
    plan.save(root / "plan.yaml")
    return root


@pytest.fixture(scope="module")
def backend(run: Path, studio: Studio) -> Any:
    """The backend, served on a free loopback port (``url`` as Label Studio reaches it)."""
    options = BackendOptions(tta="flips", steps=10)  # a fixed step count: the same fine-tune on any machine
    ml = LabelStudioBackend(run, studio=LabelStudio(url=studio.url, token=studio.token), options=options)
    with Server(create_app(ml), "127.0.0.1", 0, log_level="warning") as server:
        URLS[id(ml)] = f"http://127.0.0.1:{server.port}"
        yield ml
    ml.trainer.wait(600)


def url_of(backend: LabelStudioBackend) -> str:
    return URLS[id(backend)]


@pytest.fixture(scope="module")
def project(studio: Studio, backend: LabelStudioBackend, isbi: Path) -> dict[str, Any]:
    """The project: 10 uploaded slices, unetkit connected as its ML backend, predictions retrieved."""
    made = studio.api("POST", "/api/projects", json={"title": "ISBI membranes", "label_config": BRUSH_CONFIG})
    files = {f"file{i}": (f"{i}.png", (isbi / "images" / f"{i}.png").read_bytes(), "image/png") for i in SLICES}
    studio.api("POST", f"/api/projects/{made['id']}/import", files=files)
    ml = studio.api("POST", "/api/ml", json={"url": url_of(backend), "project": made["id"], "title": "unetkit"})
    studio.api("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={made['id']}",
               json={"selectedItems": {"all": True, "excluded": []}})  # fmt: skip
    return {"id": made["id"], "ml": ml["id"]}


def tasks(studio: Studio, project_id: int, *, ordering: str | None = None) -> list[dict[str, Any]]:
    query = f'&query={{"ordering":["{ordering}"]}}' if ordering else ""
    return studio.api("GET", f"/api/tasks?project={project_id}&fields=all&page_size=100{query}")["tasks"]


def slice_of(task: dict[str, Any]) -> int:
    """The ISBI slice number of a task (uploads are named ``<8 hex digits>-<original name>``)."""
    return int(task["data"]["image"].rsplit("/", 1)[-1].split("-", 1)[1].removesuffix(".png"))


def membrane(isbi: Path, index: int) -> np.ndarray:
    return np.asarray(Image.open(isbi / "masks" / f"{index}.png")) == 0  # 0 = membrane in the ISBI masks


def test_predictions_appear_with_scores(studio: Studio, project: dict[str, Any], backend: LabelStudioBackend) -> None:
    found = tasks(studio, project["id"])
    assert len(found) == len(SLICES)
    for task in found:
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == backend.model_version
        assert 0.0 < prediction["score"] <= 1.0
        (result,) = prediction["result"]
        assert (result["type"], result["from_name"], result["to_name"]) == ("brushlabels", "tag", "image")
        assert result["value"]["brushlabels"] == ["membrane"]
        mask = rle_to_mask(result["value"]["rle"], height=512, width=512)
        assert 0.0 < mask.mean() < 1.0  # the untrained model paints part of the slice
    assert len({round(t["predictions"][0]["score"], 9) for t in found}) == len(SLICES)


def test_sorting_by_score_is_suggests_order(studio: Studio, project: dict[str, Any], backend: LabelStudioBackend,
                                            run: Path, isbi: Path, tmp_path: Path) -> None:  # fmt: skip
    from unetkit.infer.suggest import SuggestOptions, suggest

    # The Data Manager's score column averages the predictions of the project's chosen model version (the
    # ML backend's title until someone picks a version in the settings, as a person would here).
    studio.api("PATCH", f"/api/projects/{project['id']}", json={"model_version": backend.model_version})
    ranked = tasks(studio, project["id"], ordering="-tasks:predictions_score")
    order = [slice_of(t) for t in ranked]
    result = suggest(run, [str(isbi / "images" / f"{i}.png") for i in SLICES],
                     SuggestOptions(n=len(SLICES), tta="flips", diversity=False), out=tmp_path)  # fmt: skip
    assert order == [int(p.image.path.stem) for p in result.picks]
    scores = [t["predictions_score"] for t in ranked]
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_allclose(scores, [p.image.score for p in result.picks], rtol=1e-5)
    # With its diversity step (the default) suggest's first pick is the top score too, so it tops the project.


def submit(studio: Studio, task_id: int, mask: np.ndarray) -> dict[str, Any]:
    h, w = mask.shape
    result = [{"id": f"m{task_id}", "from_name": "tag", "to_name": "image", "type": "brushlabels",
               "original_width": w, "original_height": h, "image_rotation": 0,
               "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": ["membrane"]}}]  # fmt: skip
    return studio.api("POST", f"/api/tasks/{task_id}/annotations", json={"result": result})


def wait_for(condition: Any, *, timeout: float = 120.0) -> None:
    until = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < until, "timed out"
        time.sleep(0.5)


def test_annotations_reach_unetkit(studio: Studio, project: dict[str, Any], backend: LabelStudioBackend,
                                   isbi: Path) -> None:  # fmt: skip
    chosen = sorted(tasks(studio, project["id"]), key=lambda t: t["id"])[:ANNOTATED]
    for task in chosen:
        submit(studio, task["id"], membrane(isbi, slice_of(task)))
    masks = backend.dataset / "masks"
    wait_for(lambda: len(list(masks.glob("task_*.png"))) == ANNOTATED)
    # Deleted in Label Studio (it sends the annotation's id only), the mask goes; submitted again, it is back.
    (annotation,) = studio.api("GET", f"/api/tasks/{chosen[0]['id']}/annotations")
    studio.api("DELETE", f"/api/annotations/{annotation['id']}")
    wait_for(lambda: not (masks / f"task_{chosen[0]['id']}.png").exists())
    assert len(list(masks.glob("task_*.png"))) == ANNOTATED - 1
    submit(studio, chosen[0]["id"], membrane(isbi, slice_of(chosen[0])))
    wait_for(lambda: len(list(masks.glob("task_*.png"))) == ANNOTATED)
    for task in chosen:
        stored = np.asarray(Image.open(masks / f"task_{task['id']}.png"))
        np.testing.assert_array_equal(stored, membrane(isbi, slice_of(task)).astype(np.uint8))
        image = np.asarray(Image.open(backend.dataset / "images" / f"task_{task['id']}.png"))
        np.testing.assert_array_equal(image, np.asarray(Image.open(isbi / "images" / f"{slice_of(task)}.png")))


def test_export_decodes_to_the_submitted_masks(studio: Studio, project: dict[str, Any], isbi: Path) -> None:
    with studio.client() as client:
        response = client.get(f"/api/projects/{project['id']}/export?exportType=BRUSH_TO_PNG")
    assert response.status_code == 200, response.text[:500]
    by_task = {t["id"]: slice_of(t) for t in tasks(studio, project["id"])}
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    pngs = [n for n in archive.namelist() if n.endswith(".png")]
    assert len(pngs) == ANNOTATED
    for name in pngs:
        task_id = int(Path(name).name.split("-")[1])
        decoded = np.asarray(Image.open(io.BytesIO(archive.read(name))))
        decoded = decoded[..., -1] if decoded.ndim == 3 else decoded
        np.testing.assert_array_equal(decoded > 0, membrane(isbi, by_task[task_id]))


def test_bad_annotations_are_refused(studio: Studio, project: dict[str, Any], backend: LabelStudioBackend,
                                     caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    unlabelled = [t for t in tasks(studio, project["id"]) if not t["annotations"]]
    served = backend.model_version
    bad = {"empty": [], "malformed": [1, 2, 3]}
    with caplog.at_level(logging.WARNING, logger="unetkit.label_studio"):
        for (kind, rle), task in zip(bad.items(), unlabelled, strict=False):
            result = [{"id": kind, "from_name": "tag", "to_name": "image", "type": "brushlabels", "original_width": 512,
                       "original_height": 512, "value": {"format": "rle", "rle": rle, "brushlabels": ["membrane"]}}]  # fmt: skip
            studio.api("POST", f"/api/tasks/{task['id']}/annotations", json={"result": result})
        wait_for(lambda: sum("not stored" in r.getMessage() for r in caplog.records) == 2)
    messages = [r.getMessage() for r in caplog.records if "not stored" in r.getMessage()]
    assert any("empty brush RLE" in m for m in messages), messages
    assert any("malformed brush RLE" in m for m in messages), messages
    assert len(list((backend.dataset / "masks").glob("task_*.png"))) == ANNOTATED
    assert backend.model_version == served
    for task in unlabelled[:2]:  # keep the project's export to the five good masks
        for annotation in studio.api("GET", f"/api/tasks/{task['id']}/annotations"):
            studio.api("DELETE", f"/api/annotations/{annotation['id']}")


def test_training_event_makes_a_new_model_version(studio: Studio, project: dict[str, Any], backend: LabelStudioBackend,
                                                  caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    before = backend.model_version
    studio.api("POST", f"/api/ml/{project['ml']}/train", json={})
    assert backend.trainer.running  # Label Studio's call returns once the backend answered the event
    # A second training event while the first runs: refused with a message, the served model unchanged.
    with caplog.at_level(logging.WARNING, logger="unetkit.label_studio"):
        studio.api("POST", f"/api/ml/{project['ml']}/train", json={})
    refused = [r.getMessage() for r in caplog.records if "already running" in r.getMessage()]
    assert refused and "the served model is unchanged" in refused[0], [r.getMessage() for r in caplog.records]
    assert backend.model_version == before
    assert backend.trainer.wait(600)
    decision = backend.last_training["decision"]  # type: ignore[index]
    assert decision is not None, backend.last_training
    assert decision["swap"], decision
    assert decision["new_dice"] >= decision["old_dice"] and decision["steps"] == 10
    assert backend.model_version != before and backend.version.name == "v1"
    v1 = backend.run / "versions" / "v1"  # the version's run folder, with the fine-tune's job, log and decision
    assert (v1 / "best" / "model.safetensors").is_file() and (v1 / "job.json").is_file()
    assert json.loads((v1 / "finetune.log").read_text().splitlines()[-1]) == decision
    assert json.loads((v1 / "decision.json").read_text()) == decision
    # Label Studio's next predictions carry the new version.
    studio.api("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={project['id']}",
               json={"selectedItems": {"all": True, "excluded": []}})  # fmt: skip
    versions = {p["model_version"] for t in tasks(studio, project["id"]) for p in t["predictions"]}
    assert backend.model_version in versions


def test_a_config_with_other_labels_is_refused(studio: Studio, backend: LabelStudioBackend,
                                               caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    config = BRUSH_CONFIG.replace("membrane", "nucleus")
    made = studio.api("POST", "/api/projects", json={"title": "Nuclei", "label_config": config})
    served = backend.model_version
    with caplog.at_level(logging.WARNING, logger="unetkit.label_studio"), studio.client() as client:
        response = client.post("/api/ml", json={"url": url_of(backend), "project": made["id"], "title": "unetkit"})
    # Label Studio refuses the connection (it shows the HTTP status of /setup); unetkit's log says why.
    assert response.status_code == 400 and "400 Client Error" in response.text, response.text
    why = ("the labelling config does not match the run: label(s) nucleus are not classes of the run; the run's "
           "class(es) membrane have no label")  # fmt: skip
    assert any(why in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    with httpx.Client(base_url=url_of(backend)) as client:  # the same answer, as /setup gives it
        direct = client.post("/setup", json={"project": f"{made['id']}.0", "schema": config})
    assert direct.status_code == 400 and why in direct.json()["error"]
    assert backend.model_version == served


def test_a_task_whose_image_cannot_be_fetched(studio: Studio, project: dict[str, Any], backend: LabelStudioBackend,
                                              isbi: Path, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    served = backend.model_version
    made = studio.api("POST", f"/api/projects/{project['id']}/import",
                      json=[{"image": "/data/upload/999/missing.png"}, {"image": "http://192.0.2.1/elsewhere.png"}])  # fmt: skip
    assert made["task_count"] == 2
    # ... sent together with a task that can be predicted: that one still gets its prediction.
    good = (isbi / "images" / "10.png").read_bytes()  # a slice the project does not hold yet
    studio.api("POST", f"/api/projects/{project['id']}/import", files={"file": ("10.png", good, "image/png")})
    with caplog.at_level(logging.WARNING, logger="unetkit.label_studio"):
        studio.api("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={project['id']}",
                   json={"selectedItems": {"all": True, "excluded": []}})  # fmt: skip
    messages = [r.getMessage() for r in caplog.records]
    assert any("no prediction" in m and "missing.png" in m and "Label Studio answered" in m for m in messages), messages
    assert any("no prediction" in m and "is not served by Label Studio" in m for m in messages), messages
    *bad, fine = sorted(tasks(studio, project["id"]), key=lambda t: t["id"])[-3:]
    assert all(not t["predictions"] for t in bad)
    assert [p["model_version"] for p in fine["predictions"]] == [backend.model_version]
    assert backend.model_version == served


def test_the_labelling_page_shows_the_pre_annotation(studio: Studio, project: dict[str, Any], tmp_path: Path) -> None:
    """Chromium logs in and opens a never-annotated task; unetkit's brush (red, #FF0000) lies over the grey slice."""
    sync_playwright = sync_playwright_or_skip()
    task = max((t for t in tasks(studio, project["id"]) if t["predictions"] and not t["annotations"]),
               key=lambda t: t["id"])  # the last slice: the bad-annotation tests used the first unlabelled ones
    shot = tmp_path / "label_studio_page.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            viewport={"width": 1400, "height": 1000}, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(f"{studio.url}/user/login/")
            page.fill("input[name=email]", studio.user)
            page.fill("input[name=password]", studio.password)
            page.click("button[type=submit], input[type=submit]")
            page.wait_for_url(lambda url: "/user/login" not in url, timeout=120_000)
            console: list[str] = []
            page.on("console", lambda message: console.append(f"{message.type}: {message.text[:300]}"))
            for attempt in range(3):  # the editor draws the brush once the image and the RLE are decoded
                if attempt == 0:
                    page.goto(f"{studio.url}/projects/{project['id']}/data?task={task['id']}")
                else:
                    page.reload()
                until = time.monotonic() + 90
                while red_fraction(page.screenshot()) < MIN_RED and time.monotonic() < until:
                    time.sleep(3)
                if red_fraction(page.screenshot()) >= MIN_RED:
                    break
            page.screenshot(path=str(shot))
            box = page.evaluate(_LARGEST_CANVAS_JS)  # the labelling canvas: the slice and its layers
        finally:
            browser.close()
    if os.environ.get("UNETKIT_TEST_ARTIFACTS"):
        folder = Path(os.environ["UNETKIT_TEST_ARTIFACTS"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, folder / shot.name)
        (folder / "label_studio_page_console.txt").write_text("\n".join(console))
    picture = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    x, y, w, h = (int(round(box[k])) for k in ("x", "y", "width", "height"))
    assert w > 300 and 0.9 < h / w < 1.1, box  # the square slice, shown large
    canvas = picture[y : y + h, x : x + w]
    red = red_pixels(canvas)
    # The membranes run across the slice, so the brush does too; what is not brush red is mostly the grey slice.
    assert red.mean() > 0.05, f"only {red.mean():.4f} of the labelling canvas is brush red"
    assert red[: h // 2].mean() > 0.02 and red[h // 2 :].mean() > 0.02 and red[:, : w // 2].mean() > 0.02
    assert grey_pixels(canvas)[~red].mean() > 0.5


MIN_RED = 0.01  # of the page's pixels: once reached, the editor has drawn the brush
# The bounding box of the largest canvas on the page (the labelling canvas).
_LARGEST_CANVAS_JS = """() => {
  const boxes = [...document.querySelectorAll('canvas')].map(c => c.getBoundingClientRect());
  const big = boxes.reduce((a, b) => (b.width * b.height > a.width * a.height ? b : a));
  return {x: big.x, y: big.y, width: big.width, height: big.height};
}"""


def red_pixels(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0] > rgb[..., 1] + 60) & (rgb[..., 0] > rgb[..., 2] + 60)


def grey_pixels(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (abs(r - g) < 8) & (abs(g - b) < 8) & (r > 20) & (r < 235)


def red_fraction(png: bytes) -> float:
    return float(red_pixels(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)).mean())
