"""The documentation site, built once per test session (``mkdocs build --strict`` into a temporary folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _docs import build_site


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built site's folder; the build must pass with warnings as errors (broken links, anchors, docstrings)."""
    pytest.importorskip("mkdocs", reason="the docs extra (mkdocs, mkdocs-material, mkdocstrings) is not installed")
    out = tmp_path_factory.mktemp("site")
    done = build_site(out)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out
