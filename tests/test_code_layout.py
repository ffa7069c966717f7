"""The package's import graph: no circle, nothing imported upwards, nothing private borrowed.

The folders read as the chain, bottom to top: the shared basics (errors, specs, config, files,
runtime), the pure per-tile stages (``patches``), one product (``product``), what a run writes
(``archive``, ``encode``) and the reproduction's rules (``bigearthnet``), where products come
from (``sources``), the chain itself (``chain``) and training (``train``), then the CLI. A
module may import from its own layer or one below it, never from above.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ben_builder"

LAYERS = {
    "ben_builder": 0,
    "ben_builder.errors": 0,
    "ben_builder.specs": 0,
    "ben_builder.config": 0,
    "ben_builder.files": 0,
    "ben_builder.runtime": 0,
    "ben_builder.patches": 1,
    "ben_builder.product": 2,
    "ben_builder.archive": 3,
    "ben_builder.encode": 3,
    "ben_builder.bigearthnet": 3,
    "ben_builder.sources": 4,
    "ben_builder.chain": 5,
    "ben_builder.train": 5,
    "ben_builder.cli": 6,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int:
    """The layer of ``module``: that of its longest listed prefix."""
    key = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len)
    return LAYERS[key]


def _imports(module: str) -> list[tuple[str, str, int]]:
    """``(imported module, imported name, line)`` of every project import, at any depth."""
    tree = ast.parse(MODULES[module].read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name in MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("ben_builder"):
                continue
            for a in node.names:  # a submodule imported by name is an edge to that submodule
                sub = f"{node.module}.{a.name}"
                out.append(
                    (sub, "", node.lineno) if sub in MODULES else (node.module, a.name, node.lineno)
                )
    return out


def test_every_module_has_a_layer():
    assert not [m for m in MODULES if not any(m == k or m.startswith(k + ".") for k in LAYERS)]


def test_the_import_graph_has_no_cycle():
    graph = {m: {t for t, _, _ in _imports(m) if t != m} for m in MODULES}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")
    assert set(order) == set(MODULES)


def test_no_module_imports_from_a_layer_above_it():
    upward = [
        f"{m}:{line} imports {t} (layer {_layer(t)} above {_layer(m)})"
        for m in MODULES
        for t, _, line in _imports(m)
        if _layer(t) > _layer(m)
    ]
    assert not upward


def test_no_module_borrows_another_modules_private_names():
    private = [
        f"{m}:{line} imports {name} from {t}"
        for m in MODULES
        for t, name, line in _imports(m)
        if name.startswith("_") and not name.startswith("__") and t != m
    ]
    assert not private


def test_the_cycle_check_finds_a_cycle():
    """The check itself: a two-module circle is reported (so a passing run means something)."""
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter({"a": {"b"}, "b": {"a"}}).static_order())


def test_test_doubles_are_not_shipped():
    """Stand-ins for hubs and sen2cor live with the tests, not in the wheel."""
    shipped = [p.name for p in PACKAGE.rglob("*.py") if "fake" in p.name or "stand_in" in p.name]
    assert not shipped
