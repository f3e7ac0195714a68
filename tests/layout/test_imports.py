"""The layout's rules, checked on the source: dependencies point one way.

* No import cycle among the modules of hub/, spool/ and adapters/ (imports
  made only for the type checker, under ``if TYPE_CHECKING:``, are not
  dependencies at run time and are left out).
* No module imports another module's private name (``from x import _y``).
* Nothing outside spool/ imports sqlite3 or aiosqlite: all SQL is in a backend.
* No stage is handed the whole hub as ``Any`` to hide a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

from support import REPO

PACKAGES = ("hub", "spool", "adapters")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_pkg: bool) -> list[tuple[str, list[str], int]]:
    """(imported module, names, line) of every run-time import, including those
    inside functions (a lazy import still closes a cycle)."""
    found: list[tuple[str, list[str], int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, [], child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                    pkg = pkg[:len(pkg) - child.level + 1]
                    base = ".".join(pkg + ([base] if base else []))
                found.append((base, [a.name for a in child.names], child.lineno))
            visit(child)
    visit(tree)
    return found


def _graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[str, list[str], int]]]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    raw: dict[str, list[tuple[str, list[str], int]]] = {}
    for name, path in mods.items():
        imports = _imports(ast.parse(path.read_text(encoding="utf-8")), name,
                           path.name == "__init__.py")
        raw[name] = imports
        for target, names, _line in imports:
            for candidate in [f"{target}.{n}" for n in names] + [target]:
                if candidate in mods and candidate != name:
                    graph[name].add(candidate)
                    break
    return graph, raw


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:  # Tarjan, recursive: the graph is small
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles():
    graph, _ = _graph()
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    # Guard for the guard: a made-up graph with a cycle is reported.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_names_imported_across_modules():
    _, raw = _graph()
    bad = [f"{mod}:{line} imports {target}.{n}" for mod, imports in raw.items()
           for target, names, line in imports for n in names
           if n.startswith("_") and not n.startswith("__") and target.split(".")[0] in PACKAGES]
    assert bad == []


def test_sql_lives_in_the_spool_backends():
    _, raw = _graph()
    bad = [f"{mod}:{line} imports {target}" for mod, imports in raw.items()
           for target, _names, line in imports
           if target.split(".")[0] in ("sqlite3", "aiosqlite") and not mod.startswith("spool.")]
    assert bad == []
    bench = [str(p.relative_to(REPO)) for p in (REPO / "bench").glob("*.py")
             if "import sqlite3" in p.read_text() or "import aiosqlite" in p.read_text()]
    assert bench == []


def test_no_stage_takes_the_hub_as_any():
    bad = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.arg) and node.arg == "hub" and isinstance(node.annotation, ast.Name) \
                    and node.annotation.id == "Any":
                bad.append(f"{name}:{node.lineno}")
    assert bad == []
