"""Fixtures of the HTTP service tests (helpers: _serve_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn, python-multipart) is not installed")

from _serve_helpers import make_run  # noqa: E402


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 1-channel, 2-class U-Net run with 64-pixel tiles."""
    return make_run(tmp_path_factory.mktemp("serve") / "run", tile=64, overlap=0.25)
