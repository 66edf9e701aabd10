"""What a fresh process pays before its first fill: the heavy modules stay out.

``import fastinit`` and ``import fastinit.torch`` import none of ml_dtypes,
Numba (llvmlite), CuPy or tqdm: each is imported by the call that needs it
(a bfloat16 NumPy buffer, the first CPU fill, the first CUDA buffer, a
progress bar). The CUDA backend never imports the Numba kernels, so a CUDA
user compiles none. Each import is checked in a fresh interpreter; the
CUDA backend's whole import graph, lazy imports included, is also read from
the source. Times are measured by bench/bench_startup.py, not here.
"""

import ast
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("ml_dtypes", "numba", "llvmlite", "cupy", "tqdm", "fastinit.kernels.cpu")


def _loaded_after(setup, code, env=None):
    """The modules of :data:`HEAVY` that ``code`` imports in a fresh interpreter
    after ``setup`` (whatever ``setup`` imported itself is not counted)."""
    script = (f"import json, sys\n{setup}\nbefore = set(sys.modules)\n{code}\n"
              f"heavy = {HEAVY!r}\n"
              "new = sorted(m for m in set(sys.modules) - before\n"
              "             if any(m == h or m.startswith(h + '.') for h in heavy))\n"
              "print(json.dumps(new))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_fastinit_imports_nothing_heavy():
    assert _loaded_after("import numpy", "import fastinit") == []


def test_a_first_fill_imports_numba_only_to_compile(tmp_path):
    """A float32 NumPy fill with an empty kernel cache compiles with Numba; the
    next process links the cached kernel with llvmlite and imports neither
    Numba nor the kernels' sources; neither imports ml_dtypes, CuPy or tqdm
    (the check itself is shown to see imports: numba does appear)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    setup, fill = "import numpy as np, fastinit as fi", "fi.uniform(np.empty(8, np.float32), seed=0)"
    cold = _loaded_after(setup, fill, env)
    assert "numba" in cold and "fastinit.kernels.cpu" in cold
    warm = _loaded_after(setup, fill, env)
    assert "llvmlite" in warm
    assert not [m for m in warm if m.startswith(("numba", "fastinit.kernels.cpu"))], warm
    for new in (cold, warm):
        assert not [m for m in new if m.split(".")[0] in ("ml_dtypes", "cupy", "tqdm")], new


def test_import_fastinit_torch_imports_nothing_heavy():
    """Also: fastinit.interop imports ml_dtypes on the first bfloat16 NumPy
    array handed over; one of another dtype goes through without it (one
    interpreter for both: importing torch is the expensive part)."""
    pytest.importorskip("torch")
    new = _loaded_after(
        "import numpy as np, torch",
        "import fastinit.torch as ft\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('ml_dtypes', 'numba', 'llvmlite', 'cupy') or m.startswith('fastinit.kernels.cpu'))\n"
        "assert not heavy, heavy\n"
        "t = ft.to_torch(np.zeros(3, np.float32)); assert t.dtype == torch.float32\n"
        "assert 'ml_dtypes' not in sys.modules\n"
        "import fastinit as fi\n"
        "b = fi.empty((3,), 'bfloat16'); b[...] = 1.5\n"
        "t = ft.to_torch(b); assert t.dtype == torch.bfloat16 and t.tolist() == [1.5] * 3")
    assert "ml_dtypes" in new and not [m for m in new if m.startswith(("numba", "tqdm"))], new


def test_cuda_backend_import_imports_no_numba():
    """The dispatcher's CUDA backend, imported as a first CUDA fill imports it."""
    new = _loaded_after("import fastinit, fastinit._dlpack as d, fastinit._dispatch as D",
                        "D.backend(d.KDL_CUDA)\nassert 'fastinit.backends.cuda' in sys.modules")
    assert not [m for m in new if m.split(".")[0] in ("numba", "llvmlite")
                or m.startswith("fastinit.kernels.cpu")], new


# --- the import graph, lazy imports included, read from the source ----------------
SOURCES = {"fastinit": os.path.join(ROOT, "fastinit"),
           "fastinit.kernels": os.path.join(ROOT, "kernels")}


def _path(module):
    """The source file of package module ``module``, or None."""
    for package, folder in sorted(SOURCES.items(), key=lambda kv: -len(kv[0])):
        if module == package or module.startswith(package + "."):
            rel = module[len(package):].lstrip(".").replace(".", os.sep)
            base = os.path.join(folder, rel) if rel else folder
            for cand in (os.path.join(base, "__init__.py"), base + ".py"):
                if os.path.isfile(cand):
                    return cand
    return None


def _imported_names(module, path):
    """Every module name an import statement of ``module`` names (any depth)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    here = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = here
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{node.module}" if node.module else pkg
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names
                         if _path(f"{base}.{a.name}") is not None)
    return names


def import_closure(module):
    """Every module reachable from ``module`` through import statements,
    function-level ones included; package modules are followed (with their
    parent packages), other modules are listed by name."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        path = _path(m)
        if path is None:
            continue
        for name in _imported_names(m, path):
            parts = name.split(".")
            todo.extend(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return seen


def _numba_reached(module):
    return sorted(m for m in import_closure(module)
                  if m.split(".")[0] in ("numba", "llvmlite")
                  or m.startswith("fastinit.kernels.cpu"))


def test_cuda_backend_import_graph_excludes_numba():
    assert _numba_reached("fastinit.backends.cuda") == []


def test_the_import_graph_check_sees_lazy_imports():
    """The CPU backend imports Numba only inside functions: the check finds it."""
    reached = _numba_reached("fastinit.backends.cpu")
    assert "numba" in reached and "fastinit.kernels.cpu.fills" in reached


def test_startup_bench_runs_small():
    """bench/bench_startup.py end to end on a small model, first fills
    included (it is measured by hand; this keeps it from rotting). No timing
    is asserted."""
    pytest.importorskip("torch")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench_startup.py"),
                           "--parts", "imports,first_fill,materialize", "--repeat", "1",
                           "--params", "0.005e9"], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for line in ("import fastinit over import numpy", "import fastinit.torch over import torch",
                 "first fill, 4096 elements", "kernel loads: ", "import numba alone",
                 "fastinit.torch.materialize", "to_empty + reset_parameters",
                 "first-touch floor", "reset_parameters / materialize", "materialize / floor"):
        assert line in proc.stdout, proc.stdout
