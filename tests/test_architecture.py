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
