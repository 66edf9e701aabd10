"""The CPU backend: the kernels of ``fastinit.kernels.cpu`` over host memory.

A buffer (a NumPy array of any subclass, a torch CPU tensor, or any CPU
DLPack producer) becomes a :class:`CpuTarget`: a flat, base-class array of
unsigned integers over the same memory, one per element. The kernels index
it without bounds checks, so nothing else ever reaches them. Small fills
run on the calling thread; a fill of ``PARALLEL_MIN`` elements or more is
cut into pieces of at least ``PIECE_MIN`` run on every core (``_threads``).
"""

import numpy as np

from .. import _contract, _dlpack
from ..kernels._abi import DTYPES, KINDS, TILE
from . import FLOAT_LIST, FLOAT_NAMES, Target, _native, _threads

PIECE_MIN = 1 << 16         # the smallest piece a thread is woken for (docs/design.md)
PARALLEL_MIN = 2 * PIECE_MIN   # below this, one thread


class CpuTarget(Target):
    """A :class:`~fastinit.backends.Target` in host memory; ``bits`` is its flat view."""

    __slots__ = ("bits",)

    def __init__(self, bits, name, shape):
        super().__init__(name, shape)
        if bits.ndim != 1 or bits.size != self.size or type(bits) is not np.ndarray:
            raise AssertionError("a CPU target must be a flat ndarray of its elements")
        self.bits = bits


_NAMES = {}                 # NumPy dtype -> its fill dtype name or None (dtype.name is slow)


def dtype_name(dtype):
    """The fill dtype name of NumPy ``dtype`` ("bfloat16", ...), or None."""
    try:
        return _NAMES[dtype]
    except KeyError:
        pass
    name = dtype.name
    spec = DTYPES.get(name)
    if spec is None or not dtype.isnative or dtype.itemsize != spec.itemsize:
        name = None
    if len(_NAMES) < 256:
        _NAMES[dtype] = name
    return name


def _flat_bits(arr, what):
    """A checked :class:`CpuTarget` over the NumPy array ``arr`` (any subclass).

    Subclass methods are never called: ``np.ndarray.view`` and
    ``np.ndarray.reshape`` are the base class's own. A masked array is
    refused: a fill would write the masked elements too, so the caller says
    so by passing ``arr.data``.
    """
    if type(arr) is np.ndarray:
        base = arr
    else:
        if isinstance(arr, np.ma.MaskedArray):
            raise TypeError(f"{what} is a numpy.ma.MaskedArray; fastinit fills every "
                            f"element of a buffer, masked or not: pass {what}.data to fill "
                            f"the data (the mask stays as it is)")
        base = np.ndarray.view(arr, np.ndarray)
    name = dtype_name(base.dtype)
    if name is None:
        raise TypeError(f"{what} must hold {FLOAT_LIST}, got {base.dtype}")
    flags = base.flags
    if not flags.writeable:
        raise ValueError(f"{what} is read-only")
    if not flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous (strides {base.strides} for shape "
                         f"{base.shape}); fill a contiguous buffer, or use a framework "
                         f"adapter such as fastinit.torch for views")
    if not flags.aligned:
        raise ValueError(f"{what} is not aligned to its {base.dtype.itemsize}-byte elements "
                         f"(data at address {base.ctypes.data:#x}); fill an aligned buffer "
                         f"such as fastinit.empty(...) and copy it")
    flat = np.ndarray.reshape(base, base.size)
    return CpuTarget(np.ndarray.view(flat, DTYPES[name].bits), name, base.shape)


_TORCH_BITS = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}
_TORCH_KINDS = {}           # torch dtype -> (fill name or None, torch dtype of its bits)


def _torch_kind(dtype):
    import torch
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        return None, None
    return name, getattr(torch, _TORCH_BITS[dtype.itemsize])


def _torch_target(out, what):
    """A :class:`CpuTarget` over a torch CPU tensor, through ``Tensor.numpy()`` of
    its bits (cheaper than a DLPack round trip through torch: docs/design.md).
    None for a tensor that takes the DLPack path (one that requires grad)."""
    if out.requires_grad:
        return None
    kind = _TORCH_KINDS.get(out.dtype)
    if kind is None:
        kind = _TORCH_KINDS[out.dtype] = _torch_kind(out.dtype)
    name, int_dtype = kind
    if name is None:
        raise TypeError(f"{what} must hold {FLOAT_LIST}, got {out.dtype}")
    if not out.is_contiguous():
        raise ValueError(f"{what} must be C-contiguous (strides {tuple(out.stride())} for "
                         f"shape {tuple(out.shape)}); use fastinit.torch for views")
    bits = out.view(int_dtype).numpy()
    flat = np.ndarray.reshape(bits, bits.size)
    return CpuTarget(np.ndarray.view(flat, DTYPES[name].bits), name, out.shape)


def as_target(out, what="out"):
    """The checked :class:`CpuTarget` over ``out``'s memory; raises before any write."""
    if isinstance(out, np.ndarray):
        return _flat_bits(out, what)
    if _dlpack.is_torch_tensor(out):
        target = _torch_target(out, what)
        if target is not None:
            return target
    try:
        view = _dlpack.consume(out)
    except (RuntimeError, BufferError, TypeError) as exc:
        raise TypeError(f"{what} could not be exported through DLPack: {exc}") from exc
    view.check(FLOAT_NAMES, what)
    flat = view.bits()
    return CpuTarget(np.ndarray.view(flat, DTYPES[view.dtype].bits), view.dtype, view.shape)


# --- launching -------------------------------------------------------------------------
def kernel(kind, name):
    """The entry point (a ``_native.Kernel``) that draws ``kind`` into dtype ``name``:
    loaded from the disk cache, or compiled on first use (Numba is imported
    only then)."""
    spec = DTYPES[name]
    return _native.kernel(kind, spec.compute, spec.bits)


def fill(target, kind, seed, stream, offset, params):
    code, spec, bits = KINDS[kind], DTYPES[target.name], target.bits
    run = _native.kernel(kind, spec.compute, spec.bits)
    at = _threads.cuts(target.size, offset, TILE, PIECE_MIN)
    if len(at) == 2:
        run(bits, _contract.ctl_words(seed, stream, offset, spec.fmt, code), params)
        return
    ctls = [_contract.ctl_words(seed, stream, offset + a, spec.fmt, code) for a in at[:-1]]
    _threads.run(lambda i: run(bits[at[i]:at[i + 1]], ctls[i], params), len(ctls))


def fill_constant(target, bits):
    value, flat = target.bits.dtype.type(bits), target.bits
    at = _threads.cuts(target.size, 0, 1, PIECE_MIN)       # NumPy's fill releases the GIL
    if len(at) == 2:
        flat.fill(value)
        return
    _threads.run(lambda i: flat[at[i]:at[i + 1]].fill(value), len(at) - 1)
