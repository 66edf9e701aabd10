"""The CPU kernels' disk cache (fastinit/backends/_native.py) follows every kernel source.

An entry point's object code is cached under a key of the kernel sources'
digest, llvmlite's version and the CPU; a file that does not match the key or
its own checksum is compiled again and replaced. A later process links the
cached code without importing Numba, and fills the same bytes.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from numba.core.dispatcher import Dispatcher

import fastinit as fi
from fastinit import _contract as C
from fastinit.backends import _native
from fastinit.backends import cpu as cpu_backend
from fastinit.kernels._abi import CPU_ENTRIES, CPU_SCRATCH, DTYPES, KINDS, TILE, cpu_entry_name
from fastinit.kernels.cpu import fills as cpu

import naive


@pytest.fixture(scope="module", autouse=True)
def compiled():
    for dt in ("float32", "float64"):
        for draw in (fi.uniform, fi.normal, fi.truncated_normal):
            draw(fi.empty(8, dt), seed=1)


def _sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).view(np.uint8)).hexdigest()


# -- the key --------------------------------------------------------------------------

def test_digest_changes_with_any_kernel_source(tmp_path):
    for name in os.listdir(_native.KERNELS_DIR):
        if name.endswith(".py"):
            shutil.copy(os.path.join(_native.KERNELS_DIR, name), tmp_path / name)
    d0 = _native.sources_digest(str(tmp_path))
    assert d0 == _native.sources_digest()
    (tmp_path / "notes.txt").write_text("not a source")
    assert _native.sources_digest(str(tmp_path)) == d0
    philox = tmp_path / "philox.py"
    text = philox.read_text()
    philox.write_text(text.replace("PHILOX_ROUNDS = 10", "PHILOX_ROUNDS = 7"))
    assert _native.sources_digest(str(tmp_path)) != d0
    philox.write_text(text)
    assert _native.sources_digest(str(tmp_path)) == d0
    (tmp_path / "extra.py").write_text("")
    assert _native.sources_digest(str(tmp_path)) != d0


def test_digest_follows_the_abi(tmp_path):
    """The kernels compile kernels/_abi.py's integers in: an edit there recompiles them."""
    abi = tmp_path / "_abi.py"
    text = open(_native.ABI_FILE).read()
    abi.write_text(text)
    d0 = _native.sources_digest(shared=(str(abi),))
    assert d0 == _native.sources_digest()
    abi.write_text(text.replace("CTL_WORDS = 7", "CTL_WORDS = 8"))
    assert _native.sources_digest(shared=(str(abi),)) != d0


def test_numbas_cpu_settings_replace_the_host_in_the_key(monkeypatch):
    """Where NUMBA_CPU_NAME / NUMBA_CPU_FEATURES are set, Numba compiles for them,
    not for the host (a "generic" name alone means no features): the key follows
    Numba's choice, so with NUMBA_CPU_NAME=generic it names no host, and a cache
    warmed so is used on any CPU with the same setting."""
    ll = _native._ll()

    def key_with(**env):
        for name in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES"):
            if name in env:
                monkeypatch.setenv(name, env[name])
            else:
                monkeypatch.delenv(name, raising=False)
        _native.key.cache_clear()
        return _native.key()

    try:
        generic = key_with(NUMBA_CPU_NAME="generic")
        assert generic["cpu"] == "generic" and generic["features"] == ""
        both = key_with(NUMBA_CPU_NAME="generic", NUMBA_CPU_FEATURES="+sse2")
        assert both["features"] == "+sse2"
        monkeypatch.setattr(ll, "get_host_cpu_name", lambda: "another-cpu")
        monkeypatch.setattr(ll, "get_host_cpu_features", lambda: 1 / 0)
        assert key_with(NUMBA_CPU_NAME="generic") == generic      # no host read
        assert key_with(NUMBA_CPU_NAME="generic", NUMBA_CPU_FEATURES="+sse2") == both
        with pytest.raises(ZeroDivisionError):          # a named CPU: the host's features
            key_with(NUMBA_CPU_NAME="znver3")
        assert key_with(NUMBA_CPU_FEATURES="+sse2")["cpu"] == "another-cpu"
    finally:
        monkeypatch.undo()
        _native.key.cache_clear()


def test_the_key_holds_the_digest_llvmlite_and_the_cpu():
    import llvmlite
    from llvmlite import binding as ll
    k = _native.key()
    assert k["sources"] == _native.sources_digest()
    assert k["llvmlite"] == llvmlite.__version__
    assert k["cpu"] == ll.get_host_cpu_name() and k["features"]
    assert all(name in k for name in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_OPT"))


# -- cache files ------------------------------------------------------------------------

def test_a_cache_file_is_read_back_only_whole_and_under_its_key(tmp_path, monkeypatch):
    name = "fastinit_cpu_test"
    code = bytes(range(256)) * 5
    path = tmp_path / "a.o"
    _native.write(str(path), name, ["sqrtf"], code)
    assert _native.read(str(path), name) == (["sqrtf"], code)
    assert _native.read(str(path), "fastinit_cpu_other") is None      # another entry's
    assert not [f for f in os.listdir(tmp_path) if f != "a.o"]        # no temporary left
    data = path.read_bytes()
    damaged = bytearray(data)
    damaged[-100] ^= 1
    path.write_bytes(bytes(damaged))
    assert _native.read(str(path), name) is None                      # checksum
    path.write_bytes(data[:-1])
    assert _native.read(str(path), name) is None                      # truncated
    path.write_bytes(b"not a header\n" + code)
    assert _native.read(str(path), name) is None
    path.write_bytes(data)
    assert _native.read(str(path), name) == (["sqrtf"], code)
    other = dict(_native.key(), sources="0" * 32)                     # a kernel source edited
    monkeypatch.setattr(_native, "key", lambda: other)
    assert _native.read(str(path), name) is None


def test_the_file_name_follows_the_key(tmp_path, monkeypatch):
    before = _native.file_path(str(tmp_path), "x")
    other = dict(_native.key(), sources="0" * 32)
    monkeypatch.setattr(_native, "key", lambda: other)
    assert _native.file_path(str(tmp_path), "x") != before


def test_cached_entry_points_call_only_the_c_math_library():
    """What makes them linkable without Numba: no runtime, no Python API."""
    where = _native.cache_path()
    if where is None:
        pytest.skip("no disk cache here")
    seen = 0
    for kind, compute, bits in CPU_ENTRIES:
        name = cpu_entry_name(kind, compute, bits)
        got = _native.read(_native.file_path(where, name), name)
        if got is not None:
            seen += 1
            assert set(got[0]) <= {"sqrt", "sqrtf"}, (name, got[0])
    assert seen >= 6


def test_load_build_and_relink(tmp_path, monkeypatch):
    """Not cached: compiled and written; cached: linked (the same bytes); a cached
    file whose symbols cannot be resolved, or a damaged one: compiled again."""
    entry = ("normal", "float32", "uint32")
    name = cpu_entry_name(*entry)
    spec = DTYPES["float32"]
    ctl = C.ctl_words(7, 3, 5, spec.fmt, KINDS["normal"])
    params = C.normal_params(0.5, 2.0, np.float32)

    def run(address):
        out = np.zeros(3 * TILE + 5, np.uint32)
        _native.Kernel(*entry, address)(out, ctl, params)
        return _sha(out)

    before = dict(_native.LOADS)
    built = _native._address(*entry, str(tmp_path))
    path = _native.file_path(str(tmp_path), name)
    assert os.path.isfile(path)
    assert _native.LOADS["built"] == before.get("built", 0) + 1
    linked = _native._address(*entry, str(tmp_path))
    assert _native.LOADS["loaded"] == before.get("loaded", 0) + 1
    assert linked != built and run(linked) == run(built)
    reference = np.zeros(3 * TILE + 5, np.float32)
    fi.normal(reference, 0.5, 2.0, seed=7, stream=3, offset=5)
    assert run(linked) == _sha(reference)

    monkeypatch.setattr(_native, "_resolve", lambda ll, externals: False)
    _native._address(*entry, str(tmp_path))
    assert _native.LOADS["built"] == before.get("built", 0) + 2
    monkeypatch.undo()
    data = bytearray(open(path, "rb").read())
    data[-7] ^= 0xFF
    open(path, "wb").write(bytes(data))
    _native._address(*entry, str(tmp_path))
    assert _native.LOADS["built"] == before.get("built", 0) + 3
    assert _native.read(path, name) is not None          # replaced by a whole file


CHILD = r"""
import hashlib, json, sys
import numpy as np
import fastinit as fi
from fastinit.backends import _native
a = np.empty(300001, np.float32)
fi.truncated_normal(a, 0.1, 2.0, -1.0, 3.0, seed=11, offset=12345)
b = np.empty(9999, np.float64)
fi.uniform(b, -1.0, 2.0, seed=11)
print(json.dumps(dict(loads=dict(_native.LOADS), numba="numba" in sys.modules,
                      a=hashlib.sha256(a.view(np.uint8)).hexdigest(),
                      b=hashlib.sha256(b.view(np.uint8)).hexdigest())))
"""


def _child_json(code, cache_dir):
    """Run ``code`` in a fresh interpreter with ``cache_dir`` as the kernel cache;
    its last stdout line, as JSON."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_later_process_links_the_cache_without_numba(tmp_path):
    first, second = _child_json(CHILD, tmp_path), _child_json(CHILD, tmp_path)
    assert first["loads"] == {"built": 2} and first["numba"]
    assert second["loads"] == {"loaded": 2} and not second["numba"]
    a = np.empty(300001, np.float32)
    fi.truncated_normal(a, 0.1, 2.0, -1.0, 3.0, seed=11, offset=12345)
    b = np.empty(9999, np.float64)
    fi.uniform(b, -1.0, 2.0, seed=11)
    for got in (first, second):
        assert got["a"] == _sha(a) and got["b"] == _sha(b)


# -- the kernels and their entry points ---------------------------------------------------

def _dispatchers(module):
    return [obj for obj in vars(module).values() if isinstance(obj, Dispatcher)]


def test_no_kernel_uses_numbas_own_cache_or_runtime():
    from fastinit.kernels.cpu import philox
    every = _dispatchers(cpu) + _dispatchers(philox)
    assert set(cpu.KERNELS.values()) <= set(every) and len(every) >= 26
    for k in every:
        opts = k.targetoptions
        assert not opts.get("cache") and opts.get("_nrt") is False, k
        assert opts.get("no_cpython_wrapper"), k


def test_a_kernel_called_from_python_raises():
    """Without a Python wrapper such a call would jump to no code; it raises, also
    for a signature already compiled for jitted code."""
    import numba
    from fastinit.kernels.cpu import philox
    u = np.uint64(1)
    caller = numba.njit(lambda a, b, c, d, k0, k1: philox.philox4x32(a, b, c, d, k0, k1))
    assert caller(u, u, u, u, u, u)[0] > 0
    assert (numba.types.uint64,) * 6 in philox.philox4x32.overloads
    with pytest.raises(TypeError, match="philox4x32.*no Python entry point"):
        philox.philox4x32(u, u, u, u, u, u)
    vals = np.zeros(CPU_SCRATCH, np.float32)
    with pytest.raises(TypeError, match="store32"):
        cpu.store32(np.zeros(4, np.uint32), 0, 0, vals, 0, 4)
    with pytest.raises(TypeError, match="uniform32"):
        cpu.uniform32(np.zeros(4, np.uint32), np.zeros(7, np.uint64), np.zeros(5, np.float32),
                      vals, np.zeros(CPU_SCRATCH, np.uint32))


@pytest.mark.parametrize("bad", ["dtype", "strided", "readonly", "ctl", "params", "pdtype"])
def test_an_entry_point_refuses_arguments_it_would_overrun(bad):
    k = cpu_backend.kernel("uniform", "float32")
    out = np.zeros(64, np.uint32)
    ctl = C.ctl_words(1, 0, 0, DTYPES["float32"].fmt, KINDS["uniform"])
    params = C.uniform_params(-1.0, 1.0, 0.0, np.float32)
    args = dict(dtype=(out.view(np.uint16), ctl, params),
                strided=(out[::2], ctl, params),
                readonly=(np.frombuffer(bytes(256), np.uint32), ctl, params),
                ctl=(out, ctl[:6], params),
                params=(out, ctl, params[:4]),
                pdtype=(out, ctl, params.astype(np.float64)))[bad]
    with pytest.raises(TypeError):
        k(*args)
    assert not out.any()


EMPTY_CHILD = r"""
import numpy as np
from fastinit import _contract as C
from fastinit.backends import cpu
from fastinit.kernels._abi import DTYPES, KINDS
k = cpu.kernel("uniform", "float32")
guard = np.full(64, 7, np.uint32)
ctl = C.ctl_words(1, 0, 0, DTYPES["float32"].fmt, KINDS["uniform"])
params = C.uniform_params(-1.0, 1.0, 0.0, np.float32)
from fastinit.backends import _native
s = _native._scratch
s.ctl[:] = ctl
s.params[np.dtype(np.float32)][:5] = params
for n in (0, -1, -(1 << 62)):
    k._fn(guard.ctypes.data, n, s.ctl_at, s.params_at, s.vals_at, s.words_at)
assert (guard == 7).all()
print("ok")
"""


def test_an_entry_point_given_no_elements_writes_nothing(tmp_path):
    """The C entry point itself returns for n <= 0 (its loops assume n >= 1:
    n = 0 would wrap the last index and write past the buffer). In a child
    process, so that a missing check fails the test instead of the run."""
    proc = subprocess.run([sys.executable, "-c", EMPTY_CHILD], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


OPTIMIZE_ONCE_CHILD = r"""
import json
import numpy as np
import numba
from numba.core import codegen
from numba.core.registry import cpu_target
from fastinit.kernels.cpu import entry, philox

counts = {"optimize": [], "machine code": []}     # the libraries, by name
optimize, machine = codegen.CPUCodeLibrary._optimize_final_module, codegen.JITCodeLibrary._finalize_specific
def count_optimize(self):
    counts["optimize"].append(self.name)
    return optimize(self)
def count_machine(self):
    counts["machine code"].append(self.name)
    return machine(self)
codegen.CPUCodeLibrary._optimize_final_module = count_optimize
codegen.JITCodeLibrary._finalize_specific = count_machine
built = entry.build("trunc", "float32", "uint16")
after = {k: list(v) for k, v in counts.items()}
cg = cpu_target.target_context.codegen()
restored = cg._library_class is codegen.JITCodeLibrary and "set_env" not in vars(cg)
# Numba's runtime library, set up by the first compile of the process (this
# one), is an ordinary library whose functions run
from numba.core.runtime import nrt
runtime = (type(nrt.rtsys.library) is codegen.JITCodeLibrary
           and nrt.rtsys.library.get_pointer_to_function("nrt_unresolved_abort") != 0)

# the kernels' link-only code still links into an ordinary jitted function,
# which runs (and Numba sets its environment as usual)
@numba.njit
def blocks(n, k0):
    out = np.empty((n, 4), np.uint32)
    for i in range(n):
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = philox.philox4x32(
            np.uint32(i), np.uint32(0), np.uint32(0), np.uint32(0), k0, np.uint32(7))
    return out
print(json.dumps(dict(counts=after, restored=restored, runtime=runtime,
                      address=built.address != 0,
                      blocks=blocks(3, np.uint32(5)).tolist())))
"""


def test_an_entry_point_is_optimized_and_compiled_once(tmp_path):
    """Building an entry point runs LLVM's module passes and machine-code
    generation once, on the entry point's library; the kernel functions' own
    libraries are only linked (kernels/cpu/entry.py, _LinkOnlyLibrary). Numba's
    settings are put back afterwards, its runtime (set up by this first compile
    of the process) is compiled as usual, and a jitted function compiled later that
    calls a kernel function (compiled link-only) still works. In a child process,
    for an empty process-wide compile state."""
    got = _child_json(OPTIMIZE_ONCE_CHILD, tmp_path)
    name = cpu_entry_name("trunc", "float32", "uint16")
    for step in ("optimize", "machine code"):
        # the entry point once; besides it only Numba's runtime ("nrt")
        assert got["counts"][step].count(name) == 1, got["counts"]
        assert set(got["counts"][step]) <= {name, "nrt"}, got["counts"]
    assert got["restored"] and got["runtime"] and got["address"]
    counters = np.array([[i, 0, 0, 0] for i in range(3)], np.uint64)
    assert got["blocks"] == naive.philox4x32(counters, (5, 7)).tolist()
