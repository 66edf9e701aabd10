"""Aligned buffers to fill."""

import numbers

import numpy as np

from ._dlpack import numpy_dtype
from .kernels._abi import DTYPES as _DTYPES


def dtype_of(dtype):
    """The NumPy dtype for a name ("bfloat16", ...) or a dtype-like object.

    ``None`` means float32, as torch's default dtype (NumPy would read it
    as float64).
    """
    if dtype is None:
        return np.dtype(np.float32)
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {tuple(_DTYPES)}, got {dtype!r}")
        return numpy_dtype(dtype)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a dtype name or a NumPy dtype, got {dtype!r}") from None
    if dt.name not in _DTYPES or not dt.isnative:
        raise ValueError(f"dtype must be one of {tuple(_DTYPES)}, got {dt.name}")
    return dt


def empty(shape, dtype="float32", device="cpu", align=64):
    """An uninitialized C-contiguous array whose data starts on an ``align``-byte boundary.

    ``dtype`` is a name ("float16", "bfloat16", "float32", "float64"), a
    NumPy dtype, or None for float32 (torch's default, not NumPy's).
    """
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"shape must be an int or a sequence of ints, got {shape!r}")
    shape = tuple(shape)
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 0:
            raise ValueError(f"shape must hold non-negative integers, got {shape}")
    dt = dtype_of(dtype)
    if isinstance(align, bool) or not isinstance(align, numbers.Integral) or align < 1 \
            or align & (align - 1):
        raise ValueError(f"align must be a power of two, got {align!r}")
    if device != "cpu":
        from .backends import cuda        # imports CuPy; only for device="cuda"
        return cuda.empty(shape, dt, device, align)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    raw = np.empty(nbytes + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    return np.ndarray(shape, dtype=dt, buffer=raw, offset=start)
