"""Fixtures of the bad-input corpus: the tiny run every run-based case copies."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "infer"))  # the run factory of the inference tests


@pytest.fixture(scope="session")
def template_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from _run_factory import make_run

    return make_run(tmp_path_factory.mktemp("badinput") / "run", tile=64, overlap=0.25)
