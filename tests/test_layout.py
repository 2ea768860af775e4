"""The package's import graph has no cycles: each module's imports of ``patcher``/``patches``
modules, at module level or inside functions, form a DAG, so the layers can be read (and
tested) bottom-up.  Imports under ``if TYPE_CHECKING:`` are left out: they do not run."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("patcher", "patches")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The package modules ``path`` imports (``from patcher import x`` counts as ``patcher.x``
    when that is a module)."""
    found: set[str] = set()
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base in known:
                found.add(base)
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    found.add(f"{base}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(here)
    return found


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    known = {module_name(p) for p in files}
    # a package's __init__ is imported with any of its modules: not an edge that makes a cycle
    return {module_name(p): imports_of(p, known) - set(PACKAGES) for p in files}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


def test_the_finder_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package):
    found = [c for c in cycles(graph()) if c[0].startswith(package)]
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


#: patcher's layers, bottom up: a module imports only modules of its own layer or of layers
#: below it (``patches`` sits beside ``series``, which runs it; no lower layer may import it).
LAYERS = (
    ("patcher.errors", "patcher.progress"),
    ("patcher.upstream",),
    ("patches", "patcher.series"),
    ("patcher.deploy",),
    ("patcher.verify",),
    ("patcher.ci",),
    ("patcher.cli",),
    ("patcher.console", "patcher.__main__"),
)


def layer(module: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_layout.py; add it to LAYERS")


def test_every_module_has_a_layer():
    for module in graph():
        if module not in PACKAGES:
            layer(module)


def test_lower_layers_never_import_higher_ones():
    upward = [
        f"{module} ({LAYERS[layer(module)][0]}) imports {target} ({LAYERS[layer(target)][0]})"
        for module, targets in graph().items()
        if module not in PACKAGES
        for target in sorted(targets)
        if layer(target) > layer(module)
    ]
    assert not upward, "imports against the layers: " + "; ".join(upward)


def test_the_in_environment_checks_import_no_patcher():
    """``verify/checks.py`` runs by path inside a release's environment, where patcher is not
    installed: it must not import patcher or patches (it loads ``deploy/checkpoint.py`` by path)."""
    assert graph()["patcher.verify.checks"] == set()
    assert graph()["patcher.deploy.checkpoint"] == set()


#: What the command line must not import before a command needs it: the engine (libcst costs
#: 0.3 s before a series runs; ``apply`` on a cached output never runs one) and the network
#: client (``http.client``, ``email`` and ``importlib.metadata``: ~40 ms, for downloads only).
LAZY = ("libcst", "http.client", "email.message", "importlib.metadata", "urllib.request")


def test_the_command_line_imports_neither_the_engine_nor_the_network_up_front():
    code = f"import sys, patcher.cli; print([m for m in {LAZY!r} if m in sys.modules])"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]", found.stdout
