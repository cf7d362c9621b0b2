"""Shared fixtures for the diffusion tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# tests/diffusion/conftest.py -> repo root is parents[2]; the datasets sit beside the repo.
DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # The test machine has 2 cores shared by several jobs: with two intra-op threads each, torch spends most
    # of its time waiting for a free core (measured ~10x slower per step than one thread under load).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def em_images() -> Path:
    path = DATASETS / "isbi2012_em_membrane" / "images"
    if not path.is_dir():
        pytest.skip(f"dataset not available: {path}")
    return path


def _write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def two_class_folder(tmp_path: Path) -> Path:
    """``root/dark/*.png`` (grey ~40) and ``root/bright/*.png`` (grey ~210), 20x24 each."""
    rng = np.random.default_rng(0)
    root = tmp_path / "classes"
    for name, level in (("dark", 40), ("bright", 210)):
        for i in range(3):
            noise = rng.integers(-10, 11, size=(20, 24))
            _write_png(root / name / f"{i}.png", (level + noise).astype(np.uint8))
    return root
