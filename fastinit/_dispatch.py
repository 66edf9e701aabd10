"""Layer 2: a buffer in, a kernel out.

``as_target`` turns the caller's buffer (a NumPy array, or any object with
``__dlpack__``) into a view of its bits without copying, and checks it;
``launch`` picks the CPU kernel for the dtype and runs it, serially for
small fills and on every core for large ones.
"""

import sys

import ml_dtypes
import numba
import numpy as np

from . import _dlpack
from .kernels import _config   # picks the threading layer before anyone starts Numba's

FLOAT_DTYPES = {
    np.dtype(np.float32): ("float32", np.float32, np.uint32),
    np.dtype(ml_dtypes.bfloat16): ("bfloat16", np.float32, np.uint16),
    np.dtype(np.float16): ("float16", np.float32, np.uint16),
    np.dtype(np.float64): ("float64", np.float64, np.uint64),
}
KINDS = {"uniform": 0, "normal": 1, "trunc": 2}                  # kernels.cpu.KIND_*
FMT = {"float32": 0, "bfloat16": 1, "float16": 2, "float64": 3}  # kernels.cpu.FMT_*
PARALLEL_MIN = 1 << 17      # below this, one thread: waking the pool costs 20-300 us
CHUNKS_PER_THREAD = 8       # tiles are dealt out in this many chunks per thread


class Target:
    """A checked, writable, C-contiguous float buffer, seen as its bits.

    ``bits`` is always a flat, base-class ``numpy.ndarray`` of ``size``
    elements over the caller's memory, whatever subclass came in: the
    kernels index it without bounds checks, so a subclass whose
    ``reshape``/``view`` keep more than one dimension (``np.matrix``) or
    return something else must never reach them.
    """

    __slots__ = ("array", "bits", "name", "compute", "size", "shape", "dtype")

    def __init__(self, array):
        self.array = array                    # a base-class ndarray (see _check_array)
        self.name, self.compute, bits_type = FLOAT_DTYPES[array.dtype]
        bits = np.ndarray.view(np.ndarray.reshape(array, array.size), bits_type)
        assert bits.ndim == 1 and bits.size == array.size
        self.bits = bits
        self.size, self.shape, self.dtype = array.size, array.shape, array.dtype


def _base_array(arr, what):
    """``arr`` as a base-class ndarray over the same memory.

    Subclass methods are never called: ``np.ndarray.view`` is the base
    class's own. A masked array is refused: a fill would write the masked
    elements too, so the caller says so by passing ``arr.data``.
    """
    if isinstance(arr, np.ma.MaskedArray):
        raise TypeError(f"{what} is a numpy.ma.MaskedArray; fastinit fills every element "
                        f"of a buffer, masked or not: pass {what}.data to fill the data "
                        f"(the mask stays as it is)")
    return np.ndarray.view(arr, np.ndarray) if type(arr) is not np.ndarray else arr


def _check_array(arr, what="out"):
    arr = _base_array(arr, what)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{what} must hold float16, bfloat16, float32 or float64, "
                        f"got {arr.dtype}")
    if not arr.flags.writeable:
        raise ValueError(f"{what} is read-only")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous (strides {arr.strides} for shape "
                         f"{arr.shape}); fill a contiguous buffer, or use a framework "
                         f"adapter such as fastinit.torch for views")
    if not arr.flags.aligned:
        raise ValueError(f"{what} is not aligned to its {arr.dtype.itemsize}-byte elements "
                         f"(data at address {arr.ctypes.data:#x}); fill an aligned buffer "
                         f"such as fastinit.empty(...) and copy it")
    return Target(arr)


def _torch_tensor_class():
    """torch.Tensor if torch is loaded (a torch tensor can only exist then), else None."""
    torch = sys.modules.get("torch")
    return getattr(torch, "Tensor", None) if torch is not None else None


def _check_torch(out):
    """The refusals torch itself makes for an in-place write, with ``out`` named."""
    import torch
    if out.is_meta:
        raise ValueError("out is a meta tensor: it has no storage to fill; allocate it "
                         "first (Tensor.to_empty, or fastinit.torch.materialize for a "
                         "model built on the meta device)")
    if out.is_inference() and not torch.is_inference_mode_enabled():
        raise ValueError("out is an inference tensor (made under torch.inference_mode()); "
                         "torch allows no in-place update of it outside inference mode: "
                         "fill a .clone() of it, or fill it inside torch.inference_mode()")
    if out.is_neg() or out.is_conj():
        raise ValueError("out is a lazily negated or conjugated torch view; "
                         "call .resolve_neg() / .resolve_conj() and fill that")


def _torch_cpu_view(out):
    """NumPy view of a plain torch CPU tensor, or None.

    ``Tensor.numpy()`` shares the tensor's memory and costs about 2 us,
    where a DLPack round trip through torch costs about 40 us. Anything
    unusual (grad, CUDA) takes the DLPack path instead.
    """
    if out.device.type != "cpu" or out.requires_grad:
        return None
    import torch
    try:
        if out.dtype == torch.bfloat16:
            return out.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return out.numpy()
    except (AttributeError, RuntimeError, TypeError):
        return None


def as_target(out):
    """The checked :class:`Target` over ``out``'s memory; raises before any write."""
    if isinstance(out, np.ndarray):
        return _check_array(out)
    tensor_class = _torch_tensor_class()
    if tensor_class is not None and isinstance(out, tensor_class):
        _check_torch(out)
        view = _torch_cpu_view(out)
        if view is not None:
            return _check_array(view)
    if not hasattr(out, "__dlpack__"):
        raise TypeError(f"out must be a NumPy array or an object with __dlpack__, "
                        f"got {type(out).__name__}")
    if hasattr(out, "__dlpack_device__"):
        device_type, _ = out.__dlpack_device__()
        if device_type in (_dlpack.KDL_CUDA, _dlpack.KDL_CUDA_MANAGED):
            from . import cuda            # imports CuPy; only for CUDA buffers
            return cuda.as_target(out)
        if device_type not in (_dlpack.KDL_CPU, _dlpack.KDL_CUDA_HOST):
            raise ValueError(f"out lives on DLPack device type {device_type}; "
                             f"fastinit fills CPU buffers")
    try:
        view = _dlpack.consume(out)
    except (RuntimeError, BufferError, TypeError) as exc:
        raise TypeError(f"out could not be exported through DLPack: {exc}") from exc
    check_view(view)
    return _check_array(view.numpy())


def check_view(view):
    """The checks of a DLPack view that every device shares; raises."""
    if view.dtype not in FLOAT_DTYPES:
        raise TypeError(f"out must hold float16, bfloat16, float32 or float64, "
                        f"got {view.dtype}")
    if view.read_only:
        raise ValueError("out is read-only")
    if not view.c_contiguous:
        raise ValueError(f"out must be C-contiguous (element strides {view.strides} for "
                         f"shape {view.shape}); use a framework adapter such as "
                         f"fastinit.torch for views")


_cpu = None


def _kernels():
    global _cpu
    if _cpu is None:
        from .kernels import cpu      # imported on first fill: Numba setup is not free
        _cpu = cpu
    return _cpu


def _thread_safe():
    """Whether parallel launches may run concurrently.

    If something started Numba's thread pool before fastinit chose TBB, the
    layer actually running decides; an unsafe one gets the lock.
    """
    if not _config.THREAD_SAFE:
        return False
    try:
        layer = numba.threading_layer()
    except ValueError:                 # no parallel launch yet: ours will be used
        return True
    return layer in ("tbb", "omp")


def _parallel_chunks():
    return numba.get_num_threads() * CHUNKS_PER_THREAD


def _run_parallel(kernel, *args):
    """Run a parallel Numba kernel, under the launch lock when the threading
    layer is not safe for concurrent launches."""
    if _thread_safe():
        kernel(*args)
    else:
        with _config.KERNEL_LOCK:
            kernel(*args)


def fill_constant(target, bits):
    """Set every element of ``target`` to ``bits`` (a scalar of target.bits' dtype)."""
    if type(target) is not Target or target.size < PARALLEL_MIN:
        target.bits.fill(bits)          # CuPy's own fill on a GPU; small CPU fills
        return
    _run_parallel(_kernels().fill_constant, target.bits, bits, _parallel_chunks())


def launch(kernel, target, ctl_for, params):
    """Run ``kernel`` (``"uniform"``, ``"normal"`` or ``"trunc"``) over ``target``.

    ``ctl_for(fmt, chunks, kind)`` builds the control words, so the caller's
    stream bookkeeping stays in layer 1.
    """
    if type(target) is not Target:       # a fastinit.cuda.CudaTarget
        from . import cuda
        cuda.launch(kernel, target, ctl_for, params)
        return
    cpu = _kernels()
    kind = KINDS[kernel]
    if target.size < PARALLEL_MIN:
        cpu.fill_serial(target.bits, ctl_for(FMT[target.name], 1, kind), params)
        return
    ctl = ctl_for(FMT[target.name], _parallel_chunks(), kind)
    _run_parallel(cpu.fill_parallel, target.bits, ctl, params)
