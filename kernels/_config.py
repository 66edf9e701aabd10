"""Numba settings for every fastinit CPU kernel, defined once.

- ``fastmath`` is off: the stream contract (docs/stream.md) forbids fused
  multiply-add contraction and reassociation, so values are bit-identical
  to the CUDA kernels and the plain-NumPy reference.
- ``error_model="numpy"``: a float division never raises, so loops that
  divide (log's ``f / (2 + f)``) still vectorize.
- ``cache`` is on: each kernel compiles on first use per dtype and is
  stored on disk, so later processes load it instead of compiling.
- The threading layer is TBB when its library can be found, because Numba's
  default ``workqueue`` layer aborts when two Python threads launch parallel
  kernels at once and GNU OpenMP is not fork-safe. Without TBB, fastinit
  serializes its own parallel launches with a lock (``KERNEL_LOCK``).
"""

import ctypes
import os
import site
import sys
import threading

import numba

SERIAL = dict(cache=True, fastmath=False, nogil=True, error_model="numpy")
PARALLEL = dict(SERIAL, parallel=True)
INLINE = dict(SERIAL, inline="always")


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
