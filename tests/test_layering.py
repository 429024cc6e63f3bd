"""The package's architecture, as its imports draw it: layers that import only
downwards, and no two modules that import each other, directly or round a
circle. Every import counts, also those inside functions (a lazy import is
still a dependency; it only hides the circle until run time).

    ops, io, config  <-  data, modeling, evaluation  <-  runtimes  <-  models  <-  engine  <-  api  <-  inference
"""
from __future__ import annotations

import ast
import os

import pytest

import detkit

PACKAGE_DIR = os.path.dirname(detkit.__file__)

# Lowest first. Subpackages in one layer are independent: none imports another.
LAYERS = [
    ("ops", "io", "config"),
    ("data", "modeling", "evaluation"),
    ("runtimes",),
    ("models",),
    ("engine",),
    ("api",),
    ("inference",),
]
LAYER_OF = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def module_files(package_dir: str = PACKAGE_DIR) -> dict[str, str]:
    """'detkit.x.y' -> its file, for every module of the package."""
    root = os.path.dirname(package_dir)
    modules = {}
    for folder, _, files in os.walk(package_dir):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                modules[dotted.removesuffix(".__init__")] = path
    return modules


def imported_modules(module: str, path: str, modules: dict[str, str]) -> set[str]:
    """The package's modules that `module` imports anywhere in its file.
    `from package import name` counts as importing package.name when that is
    a module, else as importing the package."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                if f"{source}.{alias.name}" in modules:
                    found.add(f"{source}.{alias.name}")
                elif source in modules:
                    found.add(source)
    found.discard(module)
    return found


def import_graph(package_dir: str = PACKAGE_DIR) -> dict[str, set[str]]:
    modules = module_files(package_dir)
    return {module: imported_modules(module, path, modules) for module, path in modules.items()}


def part_of(module: str) -> str:
    """'detkit.models.ssd' -> 'models'; the package itself -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a higher layer, or of another subpackage of the same layer."""
    found = []
    for module, targets in graph.items():
        here = part_of(module)
        if here not in LAYER_OF:
            continue  # detkit/__init__.py: the facade on top
        for target in targets:
            there = part_of(target)
            if there == here:
                continue
            if there not in LAYER_OF:
                found.append(f"{module} imports {target}, which sits in no declared layer")
            elif LAYER_OF[there] >= LAYER_OF[here]:
                relation = "above it" if LAYER_OF[there] > LAYER_OF[here] else "beside it in its layer"
                found.append(f"{module} imports {target}, {relation}")
    return sorted(found)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_subpackage_is_in_a_layer():
    subpackages = {part_of(module) for module in import_graph()} - {""}
    assert subpackages == set(LAYER_OF), "declare the new subpackage's layer in LAYERS"


def test_no_import_against_the_layers():
    assert layer_violations(import_graph()) == []


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_ops_import_nothing_else_of_detkit():
    graph = import_graph()
    outside = {t for m, targets in graph.items() if part_of(m) == "ops" for t in targets if part_of(t) != "ops"}
    assert outside == set()


def test_no_module_is_much_over_500_lines():
    long = {m: n for m, p in module_files().items() if (n := sum(1 for _ in open(p, encoding="utf-8"))) > 550}
    assert long == {}


# The checks themselves, on small packages written here: each must catch what it is for.


def _package(tmp_path, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = tmp_path / "detkit" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path / "detkit")


def test_checks_catch_a_lazy_import_circle(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "runtimes/__init__.py": "from .ort import run\n",
        "runtimes/ort.py": "def run():\n    from . import fold\n",
        "runtimes/fold.py": "def fold():\n    from .. import runtimes\n",
    })
    assert circles(import_graph(root)) == [["detkit.runtimes", "detkit.runtimes.fold", "detkit.runtimes.ort"]]


def test_checks_catch_imports_up_and_sideways(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "ops/__init__.py": "from ..models import build\n",
        "data/__init__.py": "from detkit.modeling.ssd import SSD\n",
        "modeling/ssd.py": "SSD = None\n",
        "models/__init__.py": "def build():\n    pass\n",
    })
    assert layer_violations(import_graph(root)) == [
        "detkit.data imports detkit.modeling.ssd, beside it in its layer",
        "detkit.ops imports detkit.models, above it",
    ]


@pytest.mark.parametrize("text", ["import detkit.models.ssd\n", "from detkit.models import ssd\n",
                                  "from ..models import ssd\n", "from ..models.ssd import x\n"])
def test_every_import_form_is_seen(tmp_path, text):
    root = _package(tmp_path, {"__init__.py": "", "ops/__init__.py": text, "models/__init__.py": "",
                               "models/ssd.py": "x = 1\n"})
    assert import_graph(root)["detkit.ops"] == {"detkit.models.ssd"}
