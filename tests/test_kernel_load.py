"""Cached kernels load without Numba's full registry refresh, safely (issue 13).

``_config.KernelCache`` loads a cached kernel with only what its machine code
needs (the runtime, its symbols) instead of Numba's whole context refresh
(which imports numba.np.arraymath, hence scipy.linalg, and every typing
registry). Each check runs in fresh interpreters, since the refresh happens
once per process:

- a Numba outside ``NARROW_NUMBA`` takes Numba's own path (forced by
  reporting another version), and that process also fills the disk cache;
- then a fresh process loads every kernel narrowly, imports none of the
  refresh's modules, and fills the same bits (and the NumPy reference's);
- a kernel with an external symbol that would not resolve, or whose check
  fails, takes Numba's path;
- the user's own Numba code in the same process still compiles (np.dot, through
  BLAS) and loads from its own disk cache afterwards;
- first loads from several threads at once fill the same bits.
"""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import naive

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# every signature of the kernels (bfloat16 and float16 share the uint16 one),
# and large fills (the same kernels on every thread, in pieces) on other dtypes
CASES = ([(dist, dtype, 1000) for dist in ("uniform", "normal", "truncated_normal")
          for dtype in ("float32", "float16", "bfloat16", "float64")]
         + [("uniform", "float64", 1 << 18), ("normal", "float32", 1 << 18),
            ("truncated_normal", "float16", 1 << 18)])
# distinct kernel signatures among CASES: 3 distributions x 3 output widths
KERNELS = 9

FILLS = r"""
import hashlib, json, sys
import numpy as np
import fastinit as fi

def fill(dist, dtype, n, seed=0):
    a = fi.empty((n,), dtype)
    getattr(fi, dist)(a, seed=seed, stream=3)
    return a

def digest(a):
    return hashlib.blake2b(a.view(np.uint8).tobytes(), digest_size=8).hexdigest()

def report(**extra):
    from fastinit.kernels.cpu import _config
    from numba.core import entrypoints
    mods = ("numba.np.arraymath", "numba.np.linalg", "scipy.linalg", "numba.typed.typeddict")
    print(json.dumps(dict(loads=dict(_config.LOADS), narrow=_config.NARROW,
                          imported=[m for m in mods if m in sys.modules],
                          entry_points=entrypoints._already_initialized, **extra)))
"""


def _run(code, cwd=ROOT, timeout=900):
    proc = subprocess.run([sys.executable, "-c", FILLS + textwrap.dedent(code)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


ALL = (f"digests = {{f'{{d}} {{t}} {{n}}': digest(fill(d, t, n)) for d, t, n in {CASES!r}}}; "
       "report(digests=digests)")


@pytest.fixture(scope="module")
def full_path():
    """Every case through Numba's own load path: this Numba reported as one the
    narrow load was not checked against. Also puts every kernel in the disk
    cache (compiling the ones missing) for the checks after it."""
    return _run(f"""
        import numba
        real, numba.__version__ = numba.__version__, "0.99.0"
        from fastinit.kernels.cpu import _config        # decides NARROW on import
        numba.__version__ = real                        # Numba's cache index records it
        {ALL}
    """)


def _digest(a):
    return hashlib.blake2b(a.view(np.uint8).tobytes(), digest_size=8).hexdigest()


def test_an_unchecked_numba_takes_numbas_own_path(full_path):
    assert full_path["narrow"] is False
    assert full_path["loads"].get("narrow", 0) == 0
    assert full_path["loads"].get("full", 0) + full_path["loads"].get("miss", 0) >= KERNELS
    assert "numba.np.arraymath" in full_path["imported"]      # the full refresh ran


def test_the_version_check():
    from fastinit.kernels.cpu import _config
    assert _config._version_checked("0.68.1") == ("0.68" in _config.NARROW_NUMBA)
    assert not _config._version_checked("0.99.0")
    assert not _config._version_checked("1.68.0")


def test_cached_kernels_load_narrowly_with_the_same_bits(full_path):
    got = _run(ALL)
    assert got["narrow"] is True, "this Numba is not in NARROW_NUMBA: the narrow path is off"
    assert got["loads"] == {"narrow": KERNELS}, got["loads"]
    # none of the refresh's registries, nor extension entry points, were loaded
    assert got["imported"] == [], got["imported"]
    assert got["entry_points"] is False
    assert got["digests"] == full_path["digests"]


def test_the_narrow_path_fills_the_reference_values(full_path):
    """The digests both paths agree on are those of the NumPy reference."""
    for dist, dtype, n in CASES[:4]:
        want = naive.reference(dist, n, dtype, seed=0, stream=3, offset=0)
        assert full_path["digests"][f"{dist} {dtype} {n}"] == _digest(np.ascontiguousarray(want))


def test_an_unresolved_symbol_or_an_odd_payload_takes_numbas_path(full_path):
    """One kernel with a symbol that would not resolve, one whose check raises
    (a payload of another shape): both load through Numba's own path."""
    got = _run("""
        from fastinit.kernels.cpu import _config
        real = _config._resolvable
        _config._resolvable = lambda name, engine: name != "NRT_MemInfo_call_dtor" and real(name, engine)
        a = fill("normal", "float32", 1000)
        _config._resolvable = real
        def odd(payload, target_context):
            raise TypeError("unexpected cached payload")
        _config.unresolved_symbols = odd
        b = fill("uniform", "float32", 1000)
        report(digests=[digest(a), digest(b)])
    """)
    assert got["loads"] == {"full": 2}, got["loads"]
    assert got["digests"] == [full_path["digests"]["normal float32 1000"],
                              full_path["digests"]["uniform float32 1000"]]


def test_user_numba_code_runs_after_a_narrow_load(full_path, tmp_path):
    """The refresh the narrow load skipped happens at the user's first compile:
    a user function on np.dot (BLAS through scipy, what numba.np.arraymath
    looks for at import) compiles after fastinit's narrow load, and in a later
    process loads from its own disk cache (Numba's own path)."""
    (tmp_path / "user_mod.py").write_text(textwrap.dedent("""
        import numba
        import numpy as np

        @numba.njit(cache=True)
        def cached_dot(a, b):
            return np.dot(a, b)
    """))
    code = f"""
        sys.path.insert(0, {str(tmp_path)!r})
        a = fill("uniform", "float32", 1000)
        from fastinit.kernels.cpu import _config
        narrow_first = dict(_config.LOADS)
        import user_mod
        x = np.arange(6.0).reshape(2, 3)
        y = np.arange(6.0).reshape(3, 2)
        ok = np.array_equal(user_mod.cached_dot(x, y), x @ y)
        hits = sum(user_mod.cached_dot.stats.cache_hits.values())
        report(ok=bool(ok), hits=hits, digest=digest(a), narrow_first=narrow_first)
    """
    first = _run(code, cwd=str(tmp_path))
    second = _run(code, cwd=str(tmp_path))
    for got in (first, second):
        assert got["ok"] is True
        assert got["narrow_first"] == {"narrow": 1}, got["narrow_first"]
        assert got["digest"] == full_path["digests"]["uniform float32 1000"]
        assert "numba.np.arraymath" in got["imported"]    # the user's compile refreshed
    assert first["hits"] == 0 and second["hits"] == 1


def test_first_loads_from_threads_at_once(full_path):
    got = _run(f"""
        import threading
        cases = {CASES!r}
        out = {{}}
        start = threading.Barrier(len(cases))
        def work(case):
            start.wait()
            out["%s %s %s" % case] = digest(fill(*case))
        threads = [threading.Thread(target=work, args=(c,)) for c in cases]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        report(digests=out)
    """)
    assert got["loads"] == {"narrow": KERNELS}, got["loads"]
    assert got["digests"] == full_path["digests"]
