"""The package's layers: a module may import from its own layer and the layers below it, never from above.

io → augment → descriptors → model → train → check → md → backends → experiment → recommend → cli, with the shared
basics (errors, structures and their geometry checks, the model's architecture, reference energies, error measures,
output safety, worker pools and Dask workers, progress bars, choice names, the memory available) below everything.
A lower layer that reaches up is how one concept ends up with two homes; this test names the import that does it.
Within a layer no modules import each other in a circle (an import inside a function counts: it only hides the
circle), and no module takes a private name (``_name``) from another package.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pyita

PACKAGE = Path(pyita.__file__).resolve().parent
#: Layers from the bottom up; a module's layer is its first name below ``pyita``.
LAYERS = [
    {"errors", "paths", "structure", "geometry", "reference", "metrics", "progress", "parallel", "cluster", "sample",
     "data", "architecture", "choices", "memory"},
    {"io"},
    {"augment"},
    {"descriptors"},
    {"model"},
    {"train", "predict", "calculator"},
    {"check"},
    {"md"},
    {"backends"},
    {"experiment"},
    {"recommend"},
    {"cli", "__main__"},
]


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "pyita" or len(parts) < 2:
        return None
    for rank, names in enumerate(LAYERS):
        if parts[1] in names:
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


@functools.cache
def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, not ``….__init__``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("pyita", *path.relative_to(PACKAGE).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(module: str, path: Path):
    """``(line, imported module, names taken)`` for every import in ``module``, also those inside functions;
    ``from pkg import sub`` imports the module ``pkg.sub`` where there is one."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # from . import x, from ..y import z
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in modules():
                    yield node.lineno, f"{base}.{alias.name}", []
                else:
                    yield node.lineno, base, [alias.name]


def upward_imports() -> list[str]:
    found = []
    for module, path in modules().items():
        own = layer_of(module) if module != "pyita" else 0
        for line, name, _ in imports(module, path):
            other = layer_of(name)
            if other is not None and own is not None and other > own:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    return found


def import_graph() -> dict[str, list[str]]:
    return {m: sorted({name for _, name, _ in imports(m, path) if name in modules() and name != m})
            for m, path in modules().items()}


def circles(graph: dict[str, list[str]]) -> list[list[str]]:
    """The sets of modules that import each other in a loop: the strongly connected parts of ``graph`` (Tarjan)."""
    order, low, stack, found = {}, {}, [], []

    def visit(m: str) -> None:
        order[m] = low[m] = len(order)
        stack.append(m)
        for n in graph[m]:
            if n not in order:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in stack:
                low[m] = min(low[m], order[n])
        if low[m] == order[m]:
            part = stack[stack.index(m):]
            del stack[stack.index(m):]
            if len(part) > 1:
                found.append(sorted(part))

    for m in graph:
        if m not in order:
            visit(m)
    return found


def owner(module: str) -> str:
    """Who may take ``module``'s private names: the modules of its package; a top-level module's, itself alone."""
    return module if module.count(".") < 2 or modules()[module].name == "__init__.py" else module.rpartition(".")[0]


def private_imports() -> list[str]:
    found = []
    for module, path in modules().items():
        for line, name, taken in imports(module, path):
            private = [t for t in taken if t.startswith("_") and not t.startswith("__")]
            if private and name in modules() and module != owner(name) and not module.startswith(owner(name) + "."):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} takes {', '.join(private)} from {name}")
    return found


def test_no_layer_imports_from_a_higher_one():
    assert upward_imports() == []


def test_the_check_can_fail():
    assert layer_of("pyita.cli") > layer_of("pyita.io.xsf") > layer_of("pyita.errors")


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_the_circle_check_can_fail():
    assert circles({"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": []}) == [["a", "b", "c"]]
    assert owner("pyita.descriptors.chebyshev") == "pyita.descriptors" and owner("pyita.structure") == "pyita.structure"


def test_no_private_name_of_another_package():
    assert private_imports() == []
