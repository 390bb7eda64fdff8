"""The package's imports run one way, layer by layer, without circles.

Layers, from the top: ``cli`` -> ``study`` -> ``segment`` -> ``engine`` -> ``postprocess``,
``metrics`` and ``models`` (side by side, none importing another) -> ``data`` -> ``common``.
A module may import its own subpackage and any lower layer. Every import counts, at module
level or inside a function, except those under ``if TYPE_CHECKING:`` (type hints only, never
run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nucstudy"

#: Subpackage -> its layer (higher imports lower).
LAYERS = {
    "cli": 6,
    "study": 5,
    "segment": 4,
    "engine": 3,
    "postprocess": 2,
    "metrics": 2,
    "models": 2,
    "data": 1,
    "common": 0,
}
#: Modules at the package's root: (group, layer). The package itself and its list of old
#: import paths sit at the bottom; ``python -m nucstudy`` runs the cli.
ROOT_MODULES = {"__init__": ("root", 0), "_compat": ("root", 0), "__main__": ("main", 7)}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> tuple[str, int]:
    """(subpackage, layer) of a ``nucstudy...`` module name."""
    parts = module.split(".")
    if len(parts) == 1:
        return ROOT_MODULES["__init__"]
    head = parts[1]
    if head in LAYERS:
        return head, LAYERS[head]
    if head in ROOT_MODULES:
        return ROOT_MODULES[head]
    raise AssertionError(f"{module}: a module outside every layer")


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def imports_of(path: Path) -> set[str]:
    """The nucstudy modules ``path`` imports (run-time imports only)."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_lines(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("nucstudy"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("nucstudy"):
                for alias in node.names:  # "from nucstudy.data import classes" is a module
                    candidate = f"{node.module}.{alias.name}"
                    sub = PACKAGE.parent / Path(*candidate.split("."))
                    is_module = sub.with_suffix(".py").is_file() or (sub / "__init__.py").is_file()
                    found.add(candidate if is_module else node.module)
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_down_the_layers(module):
    package, layer = layer_of(module)
    wrong = []
    for imported in sorted(GRAPH[module]):
        other, other_layer = layer_of(imported)
        if other == package:
            continue
        if other_layer >= layer:
            wrong.append(f"{imported} (layer {other} {other_layer})")
    assert not wrong, f"{module} (layer {package} {layer}) imports " + ", ".join(wrong)


def test_no_circles():
    circles = []
    state: dict[str, int] = {}

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        for imported in GRAPH.get(name, ()):
            target = imported if imported in GRAPH else None
            if target is None:
                continue
            if state.get(target) == 1:
                circles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not circles, "import circles:\n" + "\n".join(circles)
