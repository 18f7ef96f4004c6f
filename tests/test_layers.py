"""The package's plan, enforced: every package sits in a declared layer and imports only from
its own layer or below, and no module imports itself back through others (docs/architecture.md
opens with this order). Imports inside functions count (they are circles all the same, only
later); imports under `if TYPE_CHECKING:` do not (they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "traitlens"

# Bottom to top. The top-level `traitlens` package only re-exports `api` lazily, by name.
LAYERS = [
    {"errors", "faults", "progress", "version"},
    {"config"},
    {"store"},
    {"cache"},
    {"data"},
    {"models"},
    {"train", "evaluate"},
    {"execution"},
    {"analysis"},
    {"forecast"},
    {"report"},
    {"recipes"},
    {"api"},
    {"cli", "__main__"},
]
LEVEL = {package: level for level, packages in enumerate(LAYERS) for package in packages}


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _runtime_imports(path: Path) -> set[str]:
    """Every traitlens module `path` imports, except under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree)
               if isinstance(block, ast.If) and getattr(block.test, "id", getattr(block.test, "attr", "")) == "TYPE_CHECKING"
               for child in block.body for node in ast.walk(child)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("traitlens"):
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("traitlens")}
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {imported for imported in _runtime_imports(path) if imported in modules and imported != name}
            for name, path in modules.items()}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "traitlens"


def test_every_package_has_a_layer():
    packages = {_package(name) for name in _modules()} - {"traitlens"}
    assert packages == set(LEVEL), f"undeclared: {sorted(packages - set(LEVEL))}; gone: {sorted(set(LEVEL) - packages)}"


def test_no_package_imports_from_a_layer_above_it():
    upward = sorted(f"{module} -> {imported}" for module, imports in _graph().items() for imported in imports
                    if _package(module) != "traitlens" and LEVEL[_package(imported)] > LEVEL[_package(module)])
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_import_circles():
    graph = _graph()
    circles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)
