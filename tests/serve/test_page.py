"""The web page in a real headless Chromium against a real server: upload a real ISBI slice, see the overlay, the
class areas (as the JSON answer says), the uncertainty map and the download link; no text over the drop zone.

Needs Debian's ``chromium`` (``/usr/bin/chromium``) and the ``playwright`` package (its own browser download is
never used). Without chromium the test is skipped, except in CI (``CI=true``), where it fails.
A screenshot goes to ``tmp_path`` and, when ``UNETKIT_TEST_ARTIFACTS`` is set, is copied there (e.g.
``UNETKIT_TEST_ARTIFACTS=tests/artifacts``, a folder git ignores).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
from _serve_helpers import DATA, make_run, need, service_for, serving
from PIL import Image

from _browser import CHROMIUM, sync_playwright_or_skip
from unetkit.config import Plan
from unetkit.runtime.overlay import class_colour

SLICE = DATA / "isbi2012_em_membrane" / "images" / "7.png"

# The drop zone's box and every element outside it that shows text of its own, with its box (both from
# getBoundingClientRect, so in the same coordinates however the page is scrolled).
TEXT_BOXES_JS = """() => {
  const box = (el) => { const r = el.getBoundingClientRect(); return {x: r.left, y: r.top, w: r.width, h: r.height}; };
  const drop = document.getElementById("drop");
  const texts = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (drop.contains(el) || el.tagName === "SCRIPT" || el.tagName === "STYLE") continue;
    const own = [...el.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
    const b = box(el);
    if (own && b.w > 0 && b.h > 0) texts.push({id: el.id || el.tagName, text: el.textContent.trim().slice(0, 40), ...b});
  }
  return {drop: box(drop), texts};
}"""


def _overlaps(a: dict, b: dict) -> bool:
    return a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]


def _no_text_over_the_drop_zone(page) -> None:  # type: ignore[no-untyped-def]
    found = page.evaluate(TEXT_BOXES_JS)
    drop, texts = found["drop"], found["texts"]
    assert len(texts) >= 2 and drop["h"] > 0, found
    hits = [t for t in texts if _overlaps(t, drop)]
    assert not hits, f"text over the drop zone {drop}: {hits}"


def test_the_page_segments_an_uploaded_slice(tmp_path: Path) -> None:
    sync_playwright = sync_playwright_or_skip()
    run = make_run(tmp_path / "run", tile=128, overlap=0.25, tta="flips")
    plan = Plan.load(run / "plan.yaml")
    plan.data.classes = ["background", "membrane"]
    plan.save(run / "plan.yaml")
    data = need(SLICE).read_bytes()
    with serving(service_for(run)) as client:
        status, _, body = client.request("POST", "/predict?format=json", data)
        assert status == 200
        expected = json.loads(body)
        with sync_playwright() as pw:
            # Playwright takes the profile folder (--user-data-dir) as the persistent context's first argument.
            browser = pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
                viewport={"width": 1200, "height": 900}, args=[
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync"])  # fmt: skip
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda err: errors.append(str(err)))
                page.goto(f"http://127.0.0.1:{client.port}/")
                page.wait_for_function("document.getElementById('model').textContent.includes('membrane')")
                _no_text_over_the_drop_zone(page)
                page.set_input_files("#file", str(SLICE))
                page.wait_for_selector("#result.shown", timeout=60_000)
                page.wait_for_function("document.getElementById('image').complete && "
                                       "document.getElementById('uncertainty').complete")
                _check_result(page, expected)
                _no_text_over_the_drop_zone(page)
                shot = tmp_path / "serve_page.png"
                page.screenshot(path=str(shot), full_page=True)
                assert not errors, errors
            finally:
                browser.close()
    with Image.open(shot) as picture:
        assert picture.size[0] == 1200
    if os.environ.get("UNETKIT_TEST_ARTIFACTS"):
        folder = Path(os.environ["UNETKIT_TEST_ARTIFACTS"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, folder / shot.name)


def _check_result(page, expected: dict) -> None:  # type: ignore[no-untyped-def]
    """The legend shows the JSON answer's names and areas; the layer, uncertainty and download are the answer's."""
    rows = page.locator("#legend tr")
    assert rows.count() == len(expected["classes"]) == 2
    for i, c in enumerate(expected["classes"]):
        assert rows.nth(i).locator(".name").inner_text() == c["name"]
        assert rows.nth(i).locator(".area").inner_text() == f"{100 * c['fraction']:.2f} %"
    assert [c["name"] for c in expected["classes"]] == ["background", "membrane"]
    assert 0 < expected["classes"][1]["fraction"] < 1
    # The coloured layer: class-1 pixels in class 1's colour, background transparent, the slider sets its opacity.
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(expected["mask_png"]))))
    fg = np.argwhere(mask == 1)[0]
    bg = np.argwhere(mask == 0)[0]
    pixel = "([y, x]) => Array.from(document.getElementById('layer').getContext('2d').getImageData(x, y, 1, 1).data)"
    assert page.evaluate(pixel, [int(fg[0]), int(fg[1])]) == [*class_colour(1), 255]
    assert page.evaluate(pixel, [int(bg[0]), int(bg[1])])[3] == 0
    page.locator("#opacity").fill("80")
    assert page.evaluate("getComputedStyle(document.getElementById('layer')).opacity") == "0.8"
    assert page.locator("#opacity-value").inner_text() == "80 %"
    assert page.locator("#uncertainty-figure").is_visible()
    assert page.get_attribute("#uncertainty", "src") == "data:image/png;base64," + expected["uncertainty_png"]
    assert page.get_attribute("#download", "href") == "data:image/png;base64," + expected["mask_png"]
    assert page.get_attribute("#download", "download") == "7_mask.png"
    assert "512 x 512 pixels" in page.locator("#status").inner_text()
