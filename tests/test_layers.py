"""The package's layers: a module may import from its own layer and the layers below it, never from above.

io → augment → descriptors → model → train → backends → experiment → cli, with the shared basics (errors,
structures and their geometry checks, reference energies, output safety, worker pools, progress bars) below
everything. A lower layer that reaches up is how one concept ends up with two homes; this test names the import
that does it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pyita

PACKAGE = Path(pyita.__file__).resolve().parent
#: Layers from the bottom up; a module's layer is its first name below ``pyita``.
LAYERS = [
    {"errors", "paths", "structure", "geometry", "reference", "progress", "parallel", "sample", "data", "architecture"},
    {"io"},
    {"augment"},
    {"descriptors"},
    {"model"},
    {"train", "predict", "calculator"},
    {"check"},
    {"backends"},
    {"experiment"},
    {"cli"},
]


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "pyita" or len(parts) < 2:
        return None
    for rank, names in enumerate(LAYERS):
        if parts[1] in names:
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def upward_imports() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("pyita", *path.relative_to(PACKAGE).with_suffix("").parts))
        own = layer_of(module.removesuffix(".__init__")) if module != "pyita.__init__" else 0
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                other = layer_of(name)
                if other is not None and own is not None and other > own:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {name}")
    return found


def test_no_layer_imports_from_a_higher_one():
    assert upward_imports() == []


def test_the_check_can_fail():
    assert layer_of("pyita.cli") > layer_of("pyita.io.xsf") > layer_of("pyita.errors")
