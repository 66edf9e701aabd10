"""The Numba disk cache of fastinit.kernels follows every kernel source file.

The kernels of cpu.py inline philox.py, but Numba checks a cached kernel
only against its own file's stamp: without the package's locator, an edit
to philox.py alone would keep serving kernels built from the old transforms.
"""

import os
import shutil

import numpy as np
import pytest
from numba.core.caching import NullCache
from numba.core.dispatcher import Dispatcher

import fastinit as fi
from fastinit.kernels.cpu import _config
from fastinit.kernels.cpu import fills as cpu


@pytest.fixture(scope="module", autouse=True)
def compiled():
    for dt in ("float32", "float64"):
        fi.uniform(fi.empty(8, dt), seed=1)
        fi.uniform(fi.empty(1 << 18, dt), seed=1)


@pytest.mark.parametrize("kernel", [cpu.uniform32, cpu.uniform64, cpu.normal64, cpu.trunc32])
def test_every_kernel_uses_the_package_locator(kernel):
    loc = kernel._cache._impl._locator
    assert isinstance(loc, _config._KernelsLocator)
    # the cache stays where Numba's own choice put it
    assert os.path.isdir(loc.get_cache_path())
    own, digest = loc.get_source_stamp()
    assert own == loc._inner.get_source_stamp()
    assert digest == _config.sources_digest()


def test_functions_outside_the_package_keep_numba_locators(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text("def f():\n    return 1\n")
    assert _config._KernelsLocator.from_function(None, str(src)) is None


def test_digest_changes_with_any_kernel_source(tmp_path):
    for name in os.listdir(_config.KERNELS_DIR):
        if name.endswith(".py"):
            shutil.copy(os.path.join(_config.KERNELS_DIR, name), tmp_path / name)
    d0 = _config.sources_digest(str(tmp_path))
    assert d0 == _config.sources_digest()
    (tmp_path / "notes.txt").write_text("not a source")
    assert _config.sources_digest(str(tmp_path)) == d0
    philox = tmp_path / "philox.py"
    text = philox.read_text()
    philox.write_text(text.replace("PHILOX_ROUNDS = 10", "PHILOX_ROUNDS = 7"))
    assert _config.sources_digest(str(tmp_path)) != d0
    philox.write_text(text)
    assert _config.sources_digest(str(tmp_path)) == d0
    (tmp_path / "extra.py").write_text("")
    assert _config.sources_digest(str(tmp_path)) != d0



def test_digest_follows_the_abi(tmp_path):
    """The kernels compile kernels/_abi.py's integers in: an edit there recompiles them."""
    abi = tmp_path / "_abi.py"
    text = open(_config.ABI_FILE).read()
    abi.write_text(text)
    d0 = _config.sources_digest(shared=(str(abi),))
    assert d0 == _config.sources_digest()
    abi.write_text(text.replace("CTL_WORDS = 7", "CTL_WORDS = 8"))
    assert _config.sources_digest(shared=(str(abi),)) != d0


# -- writes to the disk cache are serialized across processes ----------------

def _dispatchers(module):
    return [obj for obj in vars(module).values() if isinstance(obj, Dispatcher)]


def test_every_kernel_writes_its_cache_under_a_lock():
    entries = set(cpu.ENTRY_KERNELS)
    cached = [k for k in _dispatchers(cpu) if not isinstance(k._cache, NullCache)]
    assert set(cached) == entries
    for k in cached:
        assert type(k._cache._cache_file) is _config.LockedIndexDataCacheFile, k


def test_only_the_entry_kernels_are_cached():
    """Functions called only from other kernels are compiled into them (and cached
    inside them): they write no cache entry and have no Python wrapper of their own."""
    from fastinit.kernels.cpu import philox
    entries = set(cpu.ENTRY_KERNELS)
    assert entries == set(cpu.KERNELS.values()) and len(entries) == 6
    inner = [k for k in _dispatchers(cpu) + _dispatchers(philox) if k not in entries]
    assert len(inner) >= 20
    for k in inner:
        assert isinstance(k._cache, NullCache), k
        assert k.targetoptions.get("no_cpython_wrapper"), k


def test_a_kernel_helper_called_from_python_raises():
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
    vals = np.zeros(2 * cpu.TILE, np.float32)
    with pytest.raises(TypeError, match="store32"):
        cpu.store32(np.zeros(4, np.uint32), 0, 0, vals, 0, 4)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX flock")
def test_a_save_waits_for_the_lock_and_keeps_the_other_entry(tmp_path):
    """Numba's save reads the index, adds its entry and rewrites it; two
    processes doing that at once lose an entry or point it at the other's
    data. Under the lock a save waits, then sees the entry saved before it."""
    import fcntl
    import threading

    def cache_file():
        return _config.LockedIndexDataCacheFile(cache_path=str(tmp_path), filename_base="k",
                                                source_stamp="stamp")

    first, second = cache_file(), cache_file()
    first.save("sig-a", "code for a")
    fd = os.open(first._index_path + ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)             # another process saving right now
    waiter = threading.Thread(target=second.save, args=("sig-b", "code for b"))
    try:
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive()               # it waits for the lock
    finally:
        os.close(fd)                           # releases it
    waiter.join(10)
    assert not waiter.is_alive()
    check = cache_file()
    assert check.load("sig-a") == "code for a" and check.load("sig-b") == "code for b"
