"""Debian's Chromium driven by Playwright, for the page tests (the service's page, the docs site)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


def sync_playwright_or_skip():  # type: ignore[no-untyped-def]
    """Playwright's ``sync_playwright``; outside CI a missing browser skips the test, in CI (``CI=true``) it fails."""
    if os.environ.get("CI") == "true":
        assert CHROMIUM.exists(), f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package"
        from playwright.sync_api import sync_playwright
    else:
        if not CHROMIUM.exists():
            pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium); CI installs it and runs this test")
        sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    return sync_playwright
