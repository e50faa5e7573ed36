"""The packages import each other in one direction only, and no module imports itself back through others.

Layers, lowest first (a module may import its own package and the layers below it, nothing beside or above):

    base      fsar, fsar._* helpers, fsar.workspace, fsar.errors
    data      fsar.cache, fsar.datasets
    stages    fsar.extract, fsar.episodes, fsar.matchers
    report    fsar.report (the result-record format, statistics, tables, plots; reads episode lists)
    runner    fsar.runner (evaluation, training, checkpoints, feature loading; writes records)
    demo      fsar.demo
    cli       fsar.cli (and ``python -m fsar``)

Imports inside functions count too: a lazy import still ties the two modules together. Imports under
``if TYPE_CHECKING:`` do not: they serve annotations and never run.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

import fsar

ROOT = Path(fsar.__file__).parent
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"base"}),
    frozenset({"cache", "datasets"}),
    frozenset({"extract", "episodes", "matchers"}),
    frozenset({"report"}),
    frozenset({"runner"}),
    frozenset({"demo"}),
    frozenset({"cli"}),
)
BASE_MODULES = frozenset({"fsar", "fsar.workspace", "fsar.errors"})


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The fsar modules ``path`` imports, anywhere in the file (``from fsar.x import y`` counts as fsar.x.y
    when y is a module)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
                   for inner in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "fsar")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "fsar":
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``): imports for annotations only, never run."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def component(module: str) -> str:
    """The layer component of a module: its top-level package, with the base modules and the CLI folded."""
    if module in BASE_MODULES or module.split(".")[1].startswith("_") and module != "fsar.__main__":
        return "base"
    top = module.split(".")[1]
    return "cli" if top.startswith("cli") or top == "__main__" else top


def layer(module: str) -> int:
    name = component(module)
    for rank, members in enumerate(LAYERS):
        if name in members:
            return rank
    raise AssertionError(f"{module}: package {name!r} is in no layer; add it to LAYERS in {__file__}")


@functools.cache
def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(sorted(scc))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_module_has_a_layer() -> None:
    for name in all_modules():
        layer(name)


@pytest.mark.parametrize("module", sorted(all_modules()))
def test_imports_go_down_the_layers(module: str) -> None:
    upward = sorted(
        dep for dep in graph()[module]
        if component(dep) != component(module) and layer(dep) >= layer(module)
    )
    assert not upward, f"{module} imports {upward}: beside or above its layer ({component(module)})"


def test_imports_for_annotations_only_do_not_count(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nimport fsar.errors\nif TYPE_CHECKING:\n"
                      "    from fsar.report.results import Record\n\n\ndef f() -> None:\n    import fsar.workspace\n")
    assert imports_of(source, all_modules()) == {"fsar.errors", "fsar.workspace"}
