"""Import structure of ``src/unetkit``: no import circles, and the command layer is imported by the CLI only.

The graph is built from the source with ``ast`` (every ``import`` anywhere in a module, including the
lazy ones inside functions and ``TYPE_CHECKING`` blocks), so a circle hidden in a function body counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "unetkit"


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``package_dir`` (a package's ``__init__`` is the package)."""
    found = {}
    for path in package_dir.rglob("*.py"):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported_names(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Dotted names ``path`` imports: ``from a import b`` is ``a.b`` when that is a module, else ``a``."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            anchor = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                names.add(candidate if candidate in modules else base)
    return names


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (the longest dotted prefix that is a module; no self-edges)."""
    modules = module_files(package_dir)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imported_names(name, path, modules):
            # `import a.b.c` where only a.b is a module (or an external name): keep the module prefix.
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_unetkit_has_no_import_cycles() -> None:
    graph = import_graph(SRC)
    assert len(graph) > 50 and "unetkit.cli" in graph  # the walk saw the package
    found = cycles(graph)
    assert found == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_command_modules_are_imported_only_by_the_cli() -> None:
    graph = import_graph(SRC)
    leaks = sorted(
        f"{source} imports {target}"
        for source, targets in graph.items()
        for target in targets
        if target.startswith("unetkit.commands")
        and source != "unetkit.cli"
        and not source.startswith("unetkit.commands")
    )
    assert leaks == []


@pytest.fixture()
def toy_package(tmp_path: Path) -> Path:
    """``toy``: a -> b at the top level, b -> a inside a function, c -> a only; d.e -> d (package) -> d.e."""
    root = tmp_path / "toy"
    (root / "d").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from toy import b\n",
        "b.py": "def f():\n    from toy.a import thing\n",
        "c.py": "import toy.a\nfrom . import a\n",
        "d/__init__.py": "from .e import x\n",
        "d/e.py": "from toy import d\n",
    }
    for rel, text in files.items():
        (root / rel).write_text(text)
    return root


def test_the_checker_finds_lazy_and_relative_cycles(toy_package: Path) -> None:
    graph = import_graph(toy_package)
    assert graph["toy.a"] == {"toy.b"} and graph["toy.b"] == {"toy.a"} and graph["toy.c"] == {"toy.a"}
    assert graph["toy.d"] == {"toy.d.e"} and graph["toy.d.e"] == {"toy.d"}
    assert sorted(cycles(graph)) == [["toy.a", "toy.b"], ["toy.d", "toy.d.e"]]


# -- the stage rule: train, infer, export and diffusion stand side by side on the runtime layer --------------

# Top-level modules / packages of each stage (the export stage is three modules).
STAGES = {
    "train": ("train",),
    "infer": ("infer",),
    "export": ("export", "quantize", "onnx_rewrite"),
    "diffusion": ("diffusion",),
}
# Only the CLI layer (cli, commands) and the HTTP service compose stages; the runtime layer imports none.
COMPOSERS = ("cli", "commands", "serve")


def _head(module: str) -> str:
    """``a`` of ``pkg.a.b`` ("" for the top package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def stage_of(module: str) -> str | None:
    """The stage ``module`` (``pkg.a.b``) belongs to, or None for the runtime, the building blocks and leaves."""
    return next((stage for stage, heads in STAGES.items() if _head(module) in heads), None)


def stage_violations(graph: dict[str, set[str]]) -> list[str]:
    """Edges from one stage to another, and from the runtime layer to any stage or composer."""
    found = []
    for source, targets in graph.items():
        for target in targets:
            start, into = stage_of(source), stage_of(target)
            if start is not None and into is not None and start != into:
                found.append(f"{source} -> {target} (stage {start} imports stage {into})")
            elif _head(source) == "runtime" and (into is not None or _head(target) in COMPOSERS):
                found.append(f"{source} -> {target} (the runtime layer imports a stage or the CLI / service)")
    return sorted(found)


def private_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a private module (``pkg.x._y``) from outside its package ``pkg.x``; the top package's own
    private leaves (``pkg._io``, ``pkg._version``) are shared by design."""
    found = []
    for source, targets in graph.items():
        for target in targets:
            parts = target.split(".")
            for i, part in enumerate(parts[1:], 1):
                if part.startswith("_") and not part.startswith("__"):
                    owner = ".".join(parts[:i])
                    if i > 1 and source != owner and not source.startswith(owner + "."):
                        found.append(f"{source} -> {target}")
                    break
    return sorted(found)


def long_functions(package_dir: Path, *, limit: int = 80) -> list[str]:
    """Functions and methods longer than ``limit`` lines, their docstring excluded."""
    found = []
    for name, path in module_files(package_dir).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                length -= (first.end_lineno or first.lineno) - first.lineno + 1
            if length > limit:
                found.append(f"{name}.{node.name}: {length} lines")
    return sorted(found)


MODEL_OPTIONS = ("classes", "in_channels", "encoder", "width", "depth", "spatial_dims")


def untyped_option_reads(package_dir: Path) -> list[str]:
    """``kwargs.get("<model option>", ...)`` (any ``kwargs``) or ``model.kwargs.get(...)`` (any key) outside
    ``model_config.py``."""
    found = []
    for name, path in module_files(package_dir).items():
        if name.endswith(".model_config"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"):
                continue
            owner = node.func.value
            if not ((isinstance(owner, ast.Attribute) and owner.attr == "kwargs")
                    or (isinstance(owner, ast.Name) and owner.id == "kwargs")):
                continue
            key = node.args[0] if node.args else None
            named = isinstance(key, ast.Constant) and key.value in MODEL_OPTIONS
            on_model = isinstance(owner, ast.Attribute) and isinstance(owner.value, ast.Attribute) and owner.value.attr == "model"
            if named or on_model:
                found.append(f"{name}:{node.lineno}")
    return sorted(found)


def test_stages_import_only_the_runtime_and_the_building_blocks() -> None:
    graph = import_graph(SRC)
    assert {"unetkit.runtime.run", "unetkit.runtime.tiling", "unetkit.quantize", "unetkit.train.loop"} <= set(graph)
    assert stage_violations(graph) == []


def test_no_module_imports_another_packages_private_module() -> None:
    assert private_imports(import_graph(SRC)) == []


def test_no_function_is_longer_than_80_lines() -> None:
    assert long_functions(SRC) == []


def test_model_options_are_read_through_the_typed_config() -> None:
    assert untyped_option_reads(SRC) == []


@pytest.fixture()
def staged_package(tmp_path: Path) -> Path:
    """``toy`` laid out like unetkit, obeying every rule: stages on the runtime, a private module used inside
    its package, the CLI layer composing two stages."""
    root = tmp_path / "toy"
    files = {
        "__init__.py": "",
        "cli.py": "from toy.commands import run\n",
        "commands/__init__.py": "",
        "commands/run.py": "from toy.train import loop\nfrom toy.infer import predictor\n",
        "runtime/__init__.py": "",
        "runtime/tiling.py": "from toy.data import io\n",
        "data/__init__.py": "",
        "data/_common.py": "",
        "data/io.py": "from toy.data._common import x\n",
        "train/__init__.py": "",
        "train/loop.py": "from toy.runtime import tiling\n",
        "infer/__init__.py": "",
        "infer/predictor.py": "from toy.runtime.tiling import f\nfrom toy.data.io import read\n",
        "quantize.py": "def score(kwargs):\n    return kwargs.get('steps', 1)\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_layer_checks_pass_on_a_package_that_keeps_the_rules(staged_package: Path) -> None:
    graph = import_graph(staged_package)
    assert graph["toy.commands.run"] == {"toy.train.loop", "toy.infer.predictor"}  # composing stages is allowed
    assert stage_violations(graph) == [] and private_imports(graph) == []
    assert long_functions(staged_package) == [] and untyped_option_reads(staged_package) == []


def test_the_layer_checks_fail_on_a_deliberate_stage_to_stage_import(staged_package: Path) -> None:
    # The old shape: the training stage reusing inference's blocks, the runtime reaching up into a stage.
    (staged_package / "train" / "evaluation.py").write_text("def f():\n    from toy.infer.predictor import P\n")
    (staged_package / "runtime" / "run.py").write_text("import toy.quantize\n")
    assert stage_violations(import_graph(staged_package)) == [
        "toy.runtime.run -> toy.quantize (the runtime layer imports a stage or the CLI / service)",
        "toy.train.evaluation -> toy.infer.predictor (stage train imports stage infer)",
    ]
    (staged_package / "quantize.py").write_text("from toy.train import loop\n")
    assert "toy.quantize -> toy.train.loop (stage export imports stage train)" in stage_violations(
        import_graph(staged_package))


def test_the_other_checks_fail_on_deliberate_breaches(staged_package: Path) -> None:
    (staged_package / "infer" / "files.py").write_text("from toy.data._common import full_suffix\n")
    assert private_imports(import_graph(staged_package)) == ["toy.infer.files -> toy.data._common"]
    body = "".join(f"    x{i} = {i}\n" for i in range(79))  # ok: 80 lines without its docstring
    (staged_package / "infer" / "long.py").write_text(f'def ok():\n    """Doc."""\n{body}\n\ndef bad():\n{body}    return 0\n')
    assert long_functions(staged_package) == ["toy.infer.long.bad: 81 lines"]
    (staged_package / "infer" / "opts.py").write_text(
        "def f(plan, kwargs):\n    return plan.model.kwargs.get('norm'), kwargs.get('classes', 2)\n")
    assert untyped_option_reads(staged_package) == ["toy.infer.opts:2", "toy.infer.opts:2"]
