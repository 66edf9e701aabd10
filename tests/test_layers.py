"""The layers of docs/design.md: imports go one way, and there is no cycle.

Every import statement of the package is read from the source, at any
depth (an import inside a function counts: a lazy import of a module that
imports you back is still a cycle), and resolved to a module of the package.
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = {"fastinit": os.path.join(ROOT, "fastinit"),
           "fastinit.kernels": os.path.join(ROOT, "kernels")}

# module name prefix -> layer (the longest matching prefix wins)
LAYERS = {
    "fastinit.kernels": 0,
    "fastinit._contract": 1, "fastinit._dlpack": 1, "fastinit._progress": 1,
    "fastinit._dispatch": 2, "fastinit.backends": 2,
    "fastinit.distributions": 3, "fastinit.fans": 3, "fastinit.buffers": 3,
    "fastinit._blocks": 3, "fastinit.structured": 3,
    "fastinit.torch": 4, "fastinit.keras": 4, "fastinit.jax": 4, "fastinit.interop": 4,
    "fastinit._xla_ffi": 4,
    "fastinit": 5,                       # the package's own __init__: the public surface
    "fastinit.cli": 6, "fastinit.__main__": 6,
}


def _modules():
    """{dotted module name: path} for every .py file of the package."""
    found = {}
    for package, folder in SOURCES.items():
        for d, _, files in os.walk(folder):
            if "__pycache__" in d:
                continue
            rel = os.path.relpath(d, folder)
            base = package if rel == "." else package + "." + rel.replace(os.sep, ".")
            for f in files:
                if f.endswith(".py"):
                    found[base if f == "__init__.py" else f"{base}.{f[:-3]}"] = \
                        os.path.join(d, f)
    return found


MODULES = _modules()


def _layer(name):
    best = max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len,
               default=None)
    if best is None:
        raise AssertionError(f"{name} has no layer: add it to LAYERS here and to the "
                             f"layer map of docs/design.md")
    return LAYERS[best]


def _resolve(name):
    """The package module an import of ``name`` loads (a module or its package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name, path):
    """The package modules that module ``name`` imports, anywhere in its body."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    here = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            # "from pkg import sub" imports the submodule sub when there is one
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod
                       for a in node.names]
        else:
            continue
        for t in targets:
            if t == "fastinit" or t.startswith("fastinit."):
                r = _resolve(t)
                if r is not None and r != name:
                    out.add(r)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    for name in MODULES:
        _layer(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_down(name):
    up = sorted(t for t in GRAPH[name] if _layer(t) > _layer(name))
    assert not up, f"{name} (layer {_layer(name)}) imports the layer above: {up}"


def test_no_import_cycle():
    state, stack, cycles = {}, [], []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(GRAPH[n]):
            if state.get(m) == "open":
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = "done"

    for n in sorted(GRAPH):
        if n not in state:
            visit(n)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_graph_is_read():
    """The checks above see real edges (a parser that found none would pass them)."""
    assert "fastinit._dispatch" in GRAPH["fastinit.distributions"]
    assert "fastinit.kernels._abi" in GRAPH["fastinit.backends.cpu"]
    assert "fastinit.backends.cpu" not in GRAPH["fastinit._dispatch"]   # by name only
