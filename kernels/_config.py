"""Numba settings for every fastinit CPU kernel, defined once.

- ``fastmath`` is off: the stream contract (docs/stream.md) forbids fused
  multiply-add contraction and reassociation, so values are bit-identical
  to the CUDA kernels and the plain-NumPy reference.
- ``error_model="numpy"``: a float division never raises, so loops that
  divide (log's ``f / (2 + f)``) still vectorize.
- ``cache`` is on: each kernel compiles on first use per dtype and is
  stored on disk, so later processes load it instead of compiling. Numba
  checks a cached kernel only against its own file, but the kernels of
  cpu.py inline philox.py; ``_KernelsLocator`` stamps every cached kernel
  of this package with a digest of all its Python sources, so an edit to
  any of them recompiles them all.
- The threading layer is TBB when its library can be found, because Numba's
  default ``workqueue`` layer aborts when two Python threads launch parallel
  kernels at once and GNU OpenMP is not fork-safe. Without TBB, fastinit
  serializes its own parallel launches with a lock (``KERNEL_LOCK``).
"""

import ctypes
import functools
import hashlib
import os
import site
import sys
import threading

import numba
from numba.core import caching

SERIAL = dict(cache=True, fastmath=False, nogil=True, error_model="numpy")
PARALLEL = dict(SERIAL, parallel=True)
INLINE = dict(SERIAL, inline="always")


KERNELS_DIR = os.path.dirname(os.path.abspath(__file__))


def sources_digest(directory=KERNELS_DIR):
    """BLAKE2b of the ``.py`` files of ``directory`` (names and contents)."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(os.listdir(directory)):
        if name.endswith(".py"):
            h.update(name.encode() + b"\0")
            with open(os.path.join(directory, name), "rb") as f:
                h.update(f.read())
            h.update(b"\0")
    return h.hexdigest()


_digest_once = functools.lru_cache(maxsize=None)(sources_digest)


class _KernelsLocator:
    """Numba cache locator for this package's kernels.

    Wraps the locator Numba would have chosen (so the cache stays where
    Numba puts it, NUMBA_CACHE_DIR included) and adds the digest of every
    kernel source file to the function's own source stamp.
    """

    def __init__(self, inner):
        self._inner = inner

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != KERNELS_DIR:
            return None
        for other in caching.CacheImpl._locator_classes:
            if other is not cls:
                inner = other.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner)
        return None

    def ensure_cache_path(self):
        self._inner.ensure_cache_path()

    def get_cache_path(self):
        return self._inner.get_cache_path()

    def get_disambiguator(self):
        return self._inner.get_disambiguator()

    def get_source_stamp(self):
        return (self._inner.get_source_stamp(), _digest_once(KERNELS_DIR))


if _KernelsLocator not in caching.CacheImpl._locator_classes:
    caching.CacheImpl._locator_classes.insert(0, _KernelsLocator)


def _load_tbb():
    """Make the TBB runtime from the ``tbb`` wheel visible to Numba.

    The wheel puts ``libtbb.so.12`` in ``<prefix>/lib``, which the dynamic
    loader does not search; loading it with RTLD_GLOBAL first lets Numba's
    ``tbbpool`` extension resolve it.
    """
    if sys.platform != "linux":
        return True  # conda and the macOS/Windows wheels place it on the path
    names = ("libtbb.so.12",)
    roots = {sys.prefix, sys.base_prefix, getattr(site, "USER_BASE", None) or ""}
    for root in roots:
        for name in names:
            path = os.path.join(root, "lib", name)
            if os.path.exists(path):
                try:
                    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                    return True
                except OSError:
                    continue
    try:
        ctypes.CDLL("libtbb.so.12", mode=ctypes.RTLD_GLOBAL)
        return True
    except OSError:
        return False


def _choose_threading_layer():
    requested = os.environ.get("NUMBA_THREADING_LAYER", "")
    if requested not in ("", "default", "tbb", "safe", "threadsafe", "forksafe"):
        return requested                  # the user chose omp or workqueue
    if _load_tbb():
        try:
            from numba.np.ufunc import tbbpool  # noqa: F401
        except ImportError:
            pass
        else:
            numba.config.THREADING_LAYER = "tbb"
            return "tbb"
    return numba.config.THREADING_LAYER


THREADING_LAYER = _choose_threading_layer()
THREAD_SAFE = THREADING_LAYER in ("tbb", "omp")
KERNEL_LOCK = threading.Lock()
