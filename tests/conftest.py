"""Shared test set-up."""

import os
from pathlib import Path

import pytest

# albumentations asks PyPI for a newer version on import unless told not to (offline CI, warnings-as-errors).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The shared real datasets folder; tests that need it skip when it is absent."""
    if not DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {DATASETS}")
    return DATASETS
