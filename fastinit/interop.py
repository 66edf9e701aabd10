"""Zero-copy handoff of a filled buffer to TensorFlow and JAX, through DLPack.

``to_tensorflow(x)`` and ``to_jax(x)`` give a framework tensor over ``x``'s
own memory. ``x`` is a NumPy array (bfloat16 included), any CPU object with
``__dlpack__`` (a torch tensor, ...), or a cupy array (a GPU tensor).

XLA hands over only buffers whose data starts on a 64-byte boundary (it
copies the others), and TensorFlow's Eigen kernels assume the same
alignment, so a misaligned, non-contiguous or read-only buffer is copied
once into an aligned one, with a :class:`HandoffCopyWarning`. ``fi.empty``
buffers are 64-byte aligned and always go through without a copy.

The tensor shares memory with ``x``: TensorFlow and JAX treat it as
immutable, so do not refill ``x`` while the tensor is alive. The tensor
keeps the memory alive, so ``x`` itself may be dropped.
"""

import ctypes
import math
import warnings

import numpy as np

from . import _dlpack

ALIGN = 64


class HandoffCopyWarning(UserWarning):
    """The buffer could not be handed over as it is, so it was copied once."""


# --- the host side -------------------------------------------------------------
def _strided(view):
    """A NumPy array over a non-contiguous DLPack view (strides in elements)."""
    size, dtype = view.itemsize, _dlpack.numpy_dtype(view.dtype)
    if 0 in view.shape:
        return np.empty(view.shape, dtype=dtype)
    lo = sum(min(0, (n - 1) * s) for n, s in zip(view.shape, view.strides))
    hi = sum(max(0, (n - 1) * s) for n, s in zip(view.shape, view.strides))
    raw = (ctypes.c_uint8 * ((hi - lo + 1) * size)).from_address(view.pointer + lo * size)
    raw._fastinit_owner = view.owner      # keeps the producer's memory alive
    arr = np.ndarray(view.shape, dtype=dtype, buffer=raw, offset=-lo * size,
                     strides=tuple(s * size for s in view.strides))
    if view.read_only:
        arr.flags.writeable = False
    return arr


def host_array(x, what="x"):
    """``x`` (NumPy, or a CPU object with ``__dlpack__``) as a NumPy array, no copy."""
    if isinstance(x, np.ndarray):
        return x
    if not hasattr(x, "__dlpack__"):
        raise TypeError(f"{what} must be a NumPy array, a cupy array or an object with "
                        f"__dlpack__, got {type(x).__name__}")
    if hasattr(x, "__dlpack_device__"):
        device_type = x.__dlpack_device__()[0]
        if device_type not in (_dlpack.KDL_CPU, _dlpack.KDL_CUDA_HOST):
            raise ValueError(f"{what} lives on DLPack device type {device_type}; pass a CPU "
                             f"buffer, or a cupy array for a GPU tensor")
    view = _dlpack.consume(x)
    return view.numpy() if view.c_contiguous else _strided(view)


def _aligned_empty(shape, dtype):
    # np.ndarray(buffer=, offset=) keeps the offset for a size-0 array too; a
    # size-0 slice of a larger buffer would point at the buffer's start.
    raw = np.empty(math.prod(shape) * dtype.itemsize + ALIGN, dtype=np.uint8)
    return np.ndarray(shape, dtype=dtype, buffer=raw, offset=(-raw.ctypes.data) % ALIGN)


def handoff_ready(arr, what, stacklevel=3):
    """``arr`` itself if it can be handed over zero copy, else one aligned copy of it."""
    if arr.size == 0:         # nothing to copy; XLA still wants an aligned address
        ready = arr.ctypes.data % ALIGN == 0 and arr.flags.writeable
        return arr if ready else _aligned_empty(arr.shape, arr.dtype)
    reasons = []
    if not arr.flags.c_contiguous:
        reasons.append(f"not C-contiguous (strides {arr.strides} for shape {arr.shape})")
    elif arr.ctypes.data % ALIGN:
        reasons.append(f"at address {arr.ctypes.data:#x}, not {ALIGN}-byte aligned")
    if not arr.flags.writeable:
        reasons.append("read-only (a DLPack 0.x capsule cannot say so)")
    if not reasons:
        return arr
    warnings.warn(f"{what}: the buffer is {' and '.join(reasons)}; it was copied once "
                  f"into a {ALIGN}-byte aligned buffer (fill a fastinit.empty buffer to "
                  f"hand it over zero copy)", HandoffCopyWarning, stacklevel=stacklevel)
    out = _aligned_empty(arr.shape, arr.dtype)
    np.copyto(out, arr)
    return out


def bfloat16_bits(arr):
    """The uint16 bits of the NumPy bfloat16 array ``arr`` (same memory), else None.

    Neither NumPy's DLPack export nor ``torch.from_numpy`` knows ml_dtypes'
    bfloat16, so such an array goes out as these bits, relabelled on the other side.
    """
    # an array can only hold ml_dtypes' bfloat16 once ml_dtypes is imported, so
    # the name is checked first and ml_dtypes imported only then
    if arr.dtype.name != "bfloat16" or arr.dtype != _dlpack.numpy_dtype("bfloat16"):
        return None
    return arr.view(np.uint16)


def capsule(arr):
    """A legacy ("dltensor") DLPack capsule over ``arr``'s memory; it keeps ``arr`` alive.

    A bfloat16 array goes out as its :func:`bfloat16_bits`, with the
    capsule's dtype code set to kDLBfloat.
    """
    bits = bfloat16_bits(arr)
    if bits is None:
        return arr.__dlpack__()
    cap = bits.__dlpack__()
    address = _dlpack._api.PyCapsule_GetPointer(cap, b"dltensor")
    _dlpack._Managed.from_address(address).dl_tensor.dtype.code = _dlpack.KDL_BFLOAT
    return cap


class Export:
    """``arr`` as a DLPack producer (``__dlpack__``/``__dlpack_device__``) on the CPU."""

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        if copy:
            raise BufferError("fastinit hands buffers over zero copy; copy=True is refused")
        return capsule(self.array)

    def __dlpack_device__(self):
        return (_dlpack.KDL_CPU, 0)


# --- cupy -----------------------------------------------------------------------
def _is_cupy(x):
    return type(x).__module__.split(".")[0] == "cupy"


def _cupy_ready(x, what):
    import cupy
    reasons = []
    if not x.flags.c_contiguous:
        reasons.append("not C-contiguous")
    elif x.size and x.data.ptr % ALIGN:
        reasons.append(f"not {ALIGN}-byte aligned")
    if not reasons:
        return x
    warnings.warn(f"{what}: the cupy buffer is {' and '.join(reasons)}; it was copied once "
                  f"into an aligned buffer", HandoffCopyWarning, stacklevel=3)
    return cupy.array(x, copy=True, order="C")     # a fresh memory-pool block: aligned


# --- the frameworks -------------------------------------------------------------
def to_tensorflow(x):
    """A ``tf.Tensor`` over ``x``'s memory, zero copy (see the module docstring)."""
    import tensorflow as tf
    if _is_cupy(x):
        import cupy
        if not tf.config.list_physical_devices("GPU"):
            raise ValueError("to_tensorflow: x is a cupy (GPU) array but TensorFlow sees no "
                             "GPU; pass x.get() for a CPU tensor")
        x = _cupy_ready(x, "to_tensorflow")
        # TensorFlow's DLPack import takes no stream: the fill must be finished first.
        cupy.cuda.get_current_stream().synchronize()
        return tf.experimental.dlpack.from_dlpack(x.toDlpack())
    arr = handoff_ready(host_array(x), "to_tensorflow")
    return tf.experimental.dlpack.from_dlpack(capsule(arr))


def to_jax(x):
    """A ``jax.Array`` over ``x``'s memory, zero copy (see the module docstring).

    With ``jax_enable_x64`` off, JAX turns float64 into float32 (a copy),
    which is said with a :class:`HandoffCopyWarning`.
    """
    import jax
    if _is_cupy(x):
        # JAX passes its stream to cupy's __dlpack__, which orders the two streams.
        return jax.dlpack.from_dlpack(_cupy_ready(x, "to_jax"), copy=False)
    arr = handoff_ready(host_array(x), "to_jax")
    narrow = jax.dtypes.canonicalize_dtype(arr.dtype)
    if narrow != arr.dtype:
        warnings.warn(f"to_jax: jax_enable_x64 is off, so JAX converts {arr.dtype} to "
                      f"{narrow} (a copy)", HandoffCopyWarning, stacklevel=2)
    return jax.dlpack.from_dlpack(Export(arr), copy=False)
