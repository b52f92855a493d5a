"""The import graph of dld_core/ and app/ has no cycle.

Every import counts: at module level or inside a function (a lazy import that dodges a circle still
closes it), absolute or relative. `from pkg import name` is an edge to the module pkg.name when there is
one, else to pkg; a package's __init__ run on the way to a submodule is not an edge of its own."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("dld_core", "app")


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """{module: the project modules it imports} for every .py under root's PACKAGES."""
    paths = {}
    for top in PACKAGES:
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return {module: {name for name in _imports(module, path, set(paths)) if name in paths} - {module}
            for module, path in paths.items()}


def _imports(module: str, path: Path, modules: set[str]) -> set[str]:
    """Every dotted name the module's import statements name, wherever they stand, relative ones resolved."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            base = ".".join(p for p in (base, node.module) if p)
            for alias in node.names:
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle as [a, b, ..., a], or [] when the graph has none (iterative depth-first search)."""
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        on_path, stack = [root], [iter(sorted(graph[root]))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                done.add(on_path.pop())
                stack.pop()
            elif nxt in on_path:
                return on_path[on_path.index(nxt):] + [nxt]
            elif nxt not in done:
                on_path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return []


def test_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "dld_core"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .. import top\n")
    (pkg / "top.py").write_text("import json\n\ndef f():\n    from .sub import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("from ..top import f\nfrom . import other\n")
    (pkg / "sub" / "other.py").write_text("import dld_core.sub\n")
    (tmp_path / "app").mkdir()
    graph = import_graph(tmp_path)
    assert graph == {"dld_core": set(), "dld_core.sub": {"dld_core.top"}, "dld_core.top": {"dld_core.sub.leaf"},
                     "dld_core.sub.leaf": {"dld_core.top", "dld_core.sub.other"},
                     "dld_core.sub.other": {"dld_core.sub"}}
    assert find_cycle(graph) == ["dld_core.sub", "dld_core.top", "dld_core.sub.leaf", "dld_core.sub.other",
                                 "dld_core.sub"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
