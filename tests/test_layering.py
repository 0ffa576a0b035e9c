"""The package's layering, read from the sources: no import cycles (imports inside functions count), no
submodule imports the package root, and every module imports only from the layers below its own.

Parsed with ``ast``, nothing is imported: the check is the same whatever is installed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Bottom to top. A module may import from its own package and from the layers below it, never from a
# layer above or from another package of its own layer.
LAYERS = (
    ("swinv2._version", "swinv2.errors", "swinv2.fields", "swinv2.runs"),
    ("swinv2.layers",),
    ("swinv2.weights",),
    ("swinv2.models",),
    ("swinv2.pretrained", "swinv2.data"),
    ("swinv2.train",),
    ("swinv2.video", "swinv2.dense"),
    ("swinv2.deploy",),
    ("swinv2.tools",),
    ("swinv2.cli",),
    ("swinv2.__main__",),
)


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in (SRC / "swinv2").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


MODULES = _modules()


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The project modules an import statement names (``from pkg import name`` names ``pkg.name`` when
    that is a module, else ``pkg``)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            here = module.split(".") if is_package else module.split(".")[:-1]
            here = here[: len(here) - node.level + 1]
            base = ".".join(here + ([node.module] if node.module else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    resolved = []
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name:
            resolved.append(name)
    return resolved


def _named() -> dict[str, set[str]]:
    """module -> the project modules its import statements name, anywhere in its body."""
    named = {}
    for module, (path, is_package) in MODULES.items():
        named[module] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                named[module].update(_targets(module, is_package, node))
    return named


NAMED = _named()


def _imports() -> dict[str, set[str]]:
    """module -> the project modules it imports, with the packages Python runs on the way (importing
    ``a.b.c`` runs ``a.b``), except the importer's own enclosing packages (they are running already)."""
    graph = {}
    for module, named in NAMED.items():
        edges = set()
        for target in named:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                step = ".".join(parts[:i])
                if step in MODULES and step != module and not module.startswith(step + "."):
                    edges.add(step)
        graph[module] = edges
    return graph


GRAPH = _imports()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
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


def _layer(module: str) -> tuple[int, str]:
    """(layer index, the package of that layer the module belongs to)."""
    for rank, packages in enumerate(LAYERS):
        for package in packages:
            if module == package or module.startswith(package + "."):
                return rank, package
    raise AssertionError(f"{module} is in no layer of LAYERS: place it there")


def test_the_checker_finds_a_cycle_and_its_members():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    assert "swinv2.weights.saving" in GRAPH["swinv2.models.swinv2"]  # a function-level import
    assert "swinv2.layers.symbolic_windows" in GRAPH["swinv2.models.swinv2"]  # `from ..layers import <module>`
    assert "swinv2.layers" in GRAPH["swinv2.models.swinv2"]  # the package Python runs on the way
    assert "swinv2.data.decode" in GRAPH["swinv2.data.folders"]


def test_no_import_cycles():
    cycles = _cycles(GRAPH)
    print(f"{len(MODULES)} modules, {sum(map(len, GRAPH.values()))} import edges, {len(cycles)} cycles")
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_submodule_imports_the_package_root():
    offenders = sorted(m for m, named in NAMED.items() if "swinv2" in named and m != "swinv2")
    assert offenders == []


def _upward(module: str, graph: dict[str, set[str]]) -> list[str]:
    """The imports of ``module`` from its own layer's other packages or from a layer above."""
    rank, package = _layer(module)
    wrong = []
    for target in sorted(graph[module]):
        if target == "swinv2" or target == package or target.startswith(package + "."):
            continue
        target_rank, target_package = _layer(target)
        if target_rank >= rank:
            wrong.append(f"{target} (layer {target_rank}: {target_package})")
    return wrong


def test_the_layer_check_names_an_upward_import():
    assert _upward("swinv2.models.swinv2", {"swinv2.models.swinv2": {"swinv2.deploy.hub", "swinv2.layers"}}) == [
        "swinv2.deploy.hub (layer 7: swinv2.deploy)"
    ]
    assert _upward("swinv2.video.model", {"swinv2.video.model": {"swinv2.dense.backbone"}}) != []  # a peer


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "swinv2"))
def test_imports_only_from_lower_layers(module):
    wrong = _upward(module, GRAPH)
    rank, package = _layer(module)
    assert wrong == [], f"{module} (layer {rank}: {package}) imports from its own layer or above: {wrong}"
