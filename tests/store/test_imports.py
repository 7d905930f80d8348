"""The store's modules import each other without a circle, at module level or inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import corral.store

PACKAGE = "corral.store"


def imports_of(path: Path) -> set[str]:
    """Every corral.store module that `path` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith(PACKAGE + ".")}


def test_store_modules_form_no_import_cycle():
    root = Path(corral.store.__file__).parent
    modules = {f"{PACKAGE}.{p.stem}": p for p in root.glob("*.py") if p.stem != "__init__"}
    graph = {name: imports_of(path) & set(modules) for name, path in modules.items()}

    def cycle_from(name: str, trail: tuple[str, ...]) -> tuple[str, ...] | None:
        if name in trail:
            return (*trail[trail.index(name) :], name)
        return next((c for n in graph[name] if (c := cycle_from(n, (*trail, name)))), None)

    cycles = [c for name in graph if (c := cycle_from(name, ()))]
    assert not cycles, " → ".join(cycles[0])
