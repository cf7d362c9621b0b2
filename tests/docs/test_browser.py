"""The built site in a real headless Chromium, served from the build folder on loopback: the home page, a tutorial
and the CLI reference load with no failed request (every request goes to the loopback server and succeeds).

Needs Debian's ``chromium`` and the ``playwright`` package (its own browser download is never used); skipped
without them, except in CI (``CI=true``), where it fails. Screenshots go to ``tests/artifacts/docs/``.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _docs import REPO
from PIL import Image

from _browser import CHROMIUM, sync_playwright_or_skip

ARTIFACTS = REPO / "tests" / "artifacts" / "docs"
PAGES = {
    "home": ("index.html", "unetkit"),
    "tutorial": ("tutorials/em-membranes.html", "EM membranes (ISBI 2012)"),
    "cli-reference": ("reference/cli.html", "Command line"),
}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (the base class's name)
        pass


@contextmanager
def _serving(folder: Path) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_three_pages_load_with_no_failed_request(site: Path, tmp_path: Path) -> None:
    sync_playwright = sync_playwright_or_skip()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with _serving(site) as base, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            viewport={"width": 1280, "height": 900}, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])  # fmt: skip
        try:
            for name, (path, heading) in PAGES.items():
                page = browser.new_page()
                failed: list[str] = []
                requested: list[str] = []
                errors: list[str] = []
                page.on("request", lambda r, seen=requested: seen.append(r.url))
                page.on("requestfailed", lambda r, bad=failed: bad.append(f"{r.url}: {r.failure}"))
                page.on("response", lambda r, bad=failed: r.status >= 400 and bad.append(f"{r.url}: {r.status}"))
                page.on("pageerror", lambda e, bad=errors: bad.append(str(e)))
                response = page.goto(f"{base}/{path}", wait_until="networkidle")
                assert response is not None and response.status == 200
                assert page.locator("article h1").first.inner_text().strip().rstrip("¶") == heading
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
                assert not failed, failed
                assert not errors, errors
                assert requested and all(u.startswith(base) or u.startswith("data:") for u in requested), requested
                # The stylesheet applied: the theme's header is laid out (a page without its CSS has no such box).
                assert page.locator("header.md-header").bounding_box()["height"] > 30
                page.close()
        finally:
            browser.close()
    for name in PAGES:
        with Image.open(ARTIFACTS / f"{name}.png") as shot:
            assert shot.size == (1280, 900)
