"""The CUDA path: fastinit's fills on NVIDIA GPUs, through CuPy.

Nothing here runs at ``import fastinit``: the dispatcher imports this module
when a buffer says it lives on a CUDA device, and CuPy is imported only then.

- **Build.** ``kernels/cuda/fill.cu``, with ``kernels/cuda/fastinit_philox.cuh``
  inlined in place of its ``#include`` (:func:`kernel_source`), is compiled
  by NVRTC (``cupy.cuda.nvrtc``) with :data:`OPTIONS`: no fused
  multiply-add, no flush of subnormals, IEEE division and square root, to a
  cubin for the device's architecture (:func:`build_binary`). The header
  goes through the ``_rn`` intrinsics, so its values do not depend on
  ``-fmad``; flush-to-zero would change them, and ``cupy.RawModule(code=...)``
  always adds ``-ftz=true``, hence NVRTC directly.
- **Cache and load.** The binary is kept in :func:`cache_dir` under a name
  that hashes the source, the options, the architecture and NVRTC's
  version, so later processes skip NVRTC; it is loaded with
  ``cupy.RawModule(path=...)`` once per device per process, and a
  self-check kernel then confirms that subnormals survive and nothing was
  contracted (:func:`_selfcheck`).
- **Streams.** A torch CUDA tensor is filled on torch's current stream of
  its device; a CuPy array on CuPy's current stream; any other DLPack
  producer on CuPy's current stream, which is then synchronized before the
  call returns. The stream is passed to the producer's ``__dlpack__``, so
  the producer's pending work on the buffer is ordered before the fill.
- **Values.** The kernels implement docs/stream.md bit for bit, with the
  same host-side parameters (``fastinit._contract``) as the CPU kernels, so
  a GPU fill equals the CPU fill of the same (seed, stream, offset).

The buffer is read through fastinit's own DLPack reader (``_dlpack``)
rather than ``cupy.from_dlpack``: it keeps bfloat16 (which CuPy before v14
cannot hold), the DLPack 1.x read-only flag and the same checks as the CPU
path.
"""

import functools
import hashlib
import os
import sys
import tempfile
import threading
import warnings

import numpy as np

from .. import _contract, _dlpack
from ..kernels._abi import (CTL_K0, CTL_K1, CTL_OFFSET, CTL_S0, CTL_S1, CUDA_THREADS, DTYPES,
                            KINDS, PARAMS, cuda_kernel_name)
from . import FLOAT_NAMES, Target

HEADER = "fastinit_philox.cuh"
SOURCE = "fill.cu"
INCLUDE_LINE = '#include "fastinit_philox.cuh"'
OPTIONS = ("--std=c++14", "--fmad=false", "--ftz=false", "--prec-div=true",
           "--prec-sqrt=true")
THREADS = CUDA_THREADS   # threads per CUDA block
BLOCKS_PER_SM = 4        # resident blocks per multiprocessor if the occupancy query fails
PIP_HINT = ("pip install 'fastinit[cuda]' (CuPy for CUDA 12, cupy-cuda12x; "
            "use cupy-cuda13x for CUDA 13)")


class CudaUnavailableError(ValueError):
    """A CUDA buffer or device was asked for, and CuPy or a device is missing."""


# --- CuPy and devices ---------------------------------------------------------------
def _cupy():
    try:
        import cupy
    except Exception as exc:   # ImportError, or a broken CUDA installation
        raise CudaUnavailableError(
            f"fastinit's CUDA path needs CuPy, which could not be imported ({exc}): "
            f"{PIP_HINT}") from exc
    return cupy


def _check_device(cupy, device_id):
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:   # CUDARuntimeError: no driver, no device
        raise CudaUnavailableError(f"no CUDA device is available to CuPy ({exc})") from exc
    if not 0 <= device_id < count:
        raise CudaUnavailableError(f"CUDA device {device_id} does not exist "
                                   f"({count} device(s) present)")


def parse_device(device):
    """The device id of ``"cuda"`` (the current device) or ``"cuda:N"``."""
    if isinstance(device, str):
        if device == "cuda":
            return None
        if device.startswith("cuda:") and device[5:].isdigit():
            return int(device[5:])
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


# --- source and modules ---------------------------------------------------------------
def kernel_dir():
    """The folder holding fill.cu and the header (``cuda/`` of ``fastinit.kernels``)."""
    from .. import kernels
    return os.path.join(os.path.dirname(os.path.abspath(kernels.__file__)), "cuda")


@functools.lru_cache(maxsize=None)
def kernel_source():
    """fill.cu with the header inlined: the exact text NVRTC compiles.

    Inlining (rather than an include path) needs no include path at run
    time and makes the cache key (:func:`_module_file`) cover the header.
    """
    folder = kernel_dir()
    with open(os.path.join(folder, HEADER), encoding="utf-8") as f:
        header = f.read()
    with open(os.path.join(folder, SOURCE), encoding="utf-8") as f:
        fill = f.read()
    if fill.count(INCLUDE_LINE) != 1:
        raise RuntimeError(f"{SOURCE} must include {HEADER} exactly once")
    return fill.replace(INCLUDE_LINE,
                        f"/* ---- {HEADER}, inlined by fastinit/cuda.py ---- */\n{header}\n"
                        f"/* ---- end of {HEADER} ---- */", 1)


_lock = threading.Lock()
_modules = {}            # device id -> cupy.RawModule
_functions = {}          # (device id, kernel name) -> (cupy.RawKernel, grid cap)


def build_binary(arch, target="cubin"):
    """Compile :func:`kernel_source` with NVRTC for compute capability ``arch`` ("90").

    Returns (bytes, "cubin" or "ptx"). ``target="cubin"`` falls back to PTX
    for the newest architecture NVRTC knows when it does not know ``arch``
    (the driver then compiles the PTX). Needs CuPy, not a GPU.

    NVRTC is called directly, not through ``cupy.RawModule(code=...)``:
    CuPy appends ``-ftz=true`` to the options of every module it compiles,
    which would flush subnormals and break the contract.
    """
    cupy = _cupy()
    nvrtc = cupy.cuda.nvrtc
    arch = int(arch)
    attempts = [(f"-arch=sm_{arch}", "cubin")] if target == "cubin" else []
    try:
        known = [a for a in nvrtc.getSupportedArchs() if a <= arch]
    except Exception:
        known = []
    attempts.append((f"-arch=compute_{max(known) if known else arch}", "ptx"))
    errors = []
    for arch_option, kind in attempts:
        prog = nvrtc.createProgram(kernel_source(), SOURCE, (), ())
        try:
            nvrtc.compileProgram(prog, list(OPTIONS) + [arch_option])
            return (nvrtc.getCUBIN(prog) if kind == "cubin" else nvrtc.getPTX(prog)), kind
        except nvrtc.NVRTCError as exc:
            try:
                log = nvrtc.getProgramLog(prog)
            except Exception:
                log = ""
            errors.append(f"{arch_option}: {exc}\n{log}")
        finally:
            nvrtc.destroyProgram(prog)
    raise RuntimeError("NVRTC could not compile fastinit's CUDA kernels:\n" + "\n".join(errors))


def cache_dir():
    """Where compiled kernels are kept: $FASTINIT_CACHE_DIR, else ~/.cache/fastinit/cuda."""
    root = os.environ.get("FASTINIT_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                 ".cache")
        root = os.path.join(base, "fastinit", "cuda")
    return root


def _module_file(cupy, arch):
    """The compiled module for ``arch``: from the disk cache, or built and stored there.

    The file name hashes the source (header included), the options, the
    architecture and NVRTC's version.
    """
    try:
        version = cupy.cuda.nvrtc.getVersion()
    except Exception:
        version = None
    key = hashlib.sha256(repr((kernel_source(), OPTIONS, str(arch), version))
                         .encode()).hexdigest()[:32]
    folder = cache_dir()
    for kind in ("cubin", "ptx"):
        path = os.path.join(folder, f"fill-{arch}-{key}.{kind}")
        if os.path.exists(path):
            return path
    data, kind = build_binary(arch)
    name = f"fill-{arch}-{key}.{kind}"
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=name, dir=folder)
    except OSError:                      # no writable cache: keep it for this process
        folder = tempfile.mkdtemp(prefix="fastinit-cuda-")
        fd, tmp = tempfile.mkstemp(prefix=name, dir=folder)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    path = os.path.join(folder, name)
    os.replace(tmp, path)                # atomic: a concurrent process sees all or nothing
    return path


SELFCHECK = [2, 3, 1, 0, 0x80000001]     # kernels/cuda/fill.cu, fastinit_selfcheck


def _selfcheck(cupy, module):
    """Refuse a module built with flush-to-zero or contraction (see fill.cu)."""
    out = cupy.zeros(8, dtype=cupy.uint32)
    tiny = np.array(1, np.uint32).view(np.float32)[()]
    a, c = np.float32(1 + 2.0 ** -12), np.float32(-(1 + 2.0 ** -11))
    module.get_function("fastinit_selfcheck")((1,), (1,), (tiny, a, c, out))
    got = [int(v) for v in cupy.asnumpy(out)[:len(SELFCHECK)]]
    if got != SELFCHECK:
        raise RuntimeError(f"fastinit's CUDA kernels were built with flush-to-zero or fused "
                           f"multiply-add (self-check {got} != {SELFCHECK}); remove "
                           f"{cache_dir()} and report this")


def _grid_cap(cupy, device, fn):
    """Blocks that fill every multiprocessor once (a full wave): the grid-stride
    loop then gives every thread the same number of Philox blocks, give or take one."""
    sms = int(device.attributes["MultiProcessorCount"])
    try:
        resident = cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(
            fn.kernel.ptr, THREADS, 0)
    except Exception:
        resident = 0
    return max(1, sms * (int(resident) if resident > 0 else BLOCKS_PER_SM))


def _function(cupy, device_id, name):
    """(kernel ``name`` on ``device_id``, its grid cap); the module loads once per device."""
    key = (device_id, name)
    hit = _functions.get(key)
    if hit is not None:
        return hit
    with _lock:
        hit = _functions.get(key)
        if hit is None:
            with cupy.cuda.Device(device_id):
                device = cupy.cuda.Device(device_id)
                module = _modules.get(device_id)
                if module is None:
                    module = cupy.RawModule(path=_module_file(cupy, device.compute_capability))
                    _selfcheck(cupy, module)
                    _modules[device_id] = module
                fn = module.get_function(name)
                hit = (fn, _grid_cap(cupy, device, fn))
            _functions[key] = hit
    return hit


# --- launching --------------------------------------------------------------------------
def fill_cuda(kind, ptr, n, dtype_name, ctl, params, *, device_id, stream):
    """Launch the ``kind`` kernel over ``n`` elements of ``dtype_name`` at device pointer ``ptr``.

    ``ctl`` holds the control words of ``fastinit._contract.ctl_words``
    (offset, key and stream words), ``params`` the distribution's parameters
    in the compute type, as the CPU kernels take them; ``stream`` is the
    CuPy stream to launch on. Returns without waiting for the kernel.
    """
    cupy = _cupy()
    n = int(n)
    if n <= 0:
        return
    name = cuda_kernel_name(kind, dtype_name)
    compute = np.dtype(DTYPES[dtype_name].compute)
    params = np.asarray(params)
    if params.dtype != compute or params.shape != (len(PARAMS[kind]),):
        raise RuntimeError(f"{kind} expects {len(PARAMS[kind])} {compute.name} "
                           f"parameters, got {params.dtype} {params.shape}: the host "
                           f"contract and cuda/fill.cu disagree")
    offset = int(ctl[CTL_OFFSET])
    lanes = 2 if dtype_name == "float64" else 4
    blocks = (offset + n - 1) // lanes - offset // lanes + 1
    args = (np.uint64(ptr), np.uint64(n), np.uint64(offset),
            np.uint32(ctl[CTL_K0]), np.uint32(ctl[CTL_K1]),
            np.uint32(ctl[CTL_S0]), np.uint32(ctl[CTL_S1])) + tuple(params)
    with cupy.cuda.Device(device_id):
        fn, cap = _function(cupy, device_id, name)
        grid = max(1, min(-(-blocks // THREADS), cap))
        with stream:
            fn((grid,), (THREADS,), args)


def fill(target, kind, seed, stream, offset, params):
    """The backend's fill (see ``fastinit.backends``) for a :class:`CudaTarget`."""
    ctl = _contract.ctl_words(seed, stream, offset, DTYPES[target.name].fmt, 1, KINDS[kind])
    fill_cuda(kind, target.ptr, target.size, target.name, ctl, params,
              device_id=target.device_id, stream=target.stream)
    if target.sync:
        target.stream.synchronize()


def fill_constant(target, bits):
    """Every element of ``target`` = ``bits``, with CuPy's own fill on the target's stream."""
    cupy = _cupy()
    dtype = np.dtype(DTYPES[target.name].bits)
    with cupy.cuda.Device(target.device_id):
        mem = cupy.cuda.UnownedMemory(target.ptr, target.size * dtype.itemsize, target.owner,
                                      target.device_id)
        arr = cupy.ndarray((target.size,), dtype=dtype, memptr=cupy.cuda.MemoryPointer(mem, 0))
        with target.stream:
            arr.fill(dtype.type(bits))
    if target.sync:
        target.stream.synchronize()


# --- buffers ------------------------------------------------------------------------------
class _StreamHandle:
    """A raw stream pointer, as the CUDA stream protocol (``__cuda_stream__``) wants it."""

    def __init__(self, ptr):
        self.ptr = ptr

    def __cuda_stream__(self):
        return (0, self.ptr)


def _external_stream(cupy, ptr, device_id):
    """A CuPy stream object for a stream pointer that another library owns."""
    if ptr == 0:
        return cupy.cuda.Stream.null
    from_external = getattr(cupy.cuda.Stream, "from_external", None)    # CuPy >= 14
    if from_external is not None:
        try:
            return from_external(_StreamHandle(ptr))
        except Exception:
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # deprecated in CuPy 14 for from_external
        return cupy.cuda.ExternalStream(ptr, device_id)


def _launch_stream(cupy, out, device_id):
    """(CuPy stream to fill on, the ``stream`` for ``__dlpack__``, sync after the fill)."""
    if _dlpack.is_torch_tensor(out):
        torch = sys.modules["torch"]
        ptr = torch.cuda.current_stream(device_id).cuda_stream
        return _external_stream(cupy, ptr, device_id), (ptr or 1), False
    with cupy.cuda.Device(device_id):
        stream = cupy.cuda.get_current_stream()
    # 0 is the legacy default stream, which DLPack spells 1
    return stream, (stream.ptr or 1), not isinstance(out, cupy.ndarray)


class _ExportFailed(Exception):
    pass


class _Export:
    """``out`` with ``stream`` passed to its ``__dlpack__`` (for ``_dlpack.consume``)."""

    def __init__(self, obj, stream):
        self._obj, self._stream = obj, stream

    def __dlpack__(self, max_version=None):
        if max_version is not None:
            try:
                return self._obj.__dlpack__(stream=self._stream, max_version=max_version)
            except TypeError:
                pass           # a producer older than DLPack 1.0: no max_version
            except Exception as exc:
                raise _ExportFailed(exc) from exc
        try:
            return self._obj.__dlpack__(stream=self._stream)
        except Exception as exc:
            raise _ExportFailed(exc) from exc


class CudaTarget(Target):
    """A :class:`~fastinit.backends.Target` in CUDA memory, filled on ``stream``."""

    __slots__ = ("ptr", "device_id", "stream", "sync", "owner")

    def __init__(self, view, device_id, stream, sync):
        super().__init__(view.dtype, view.shape)
        self.ptr, self.device_id, self.stream, self.sync = view.pointer, device_id, stream, sync
        self.owner = view.owner          # keeps the producer's export alive


def as_target(out):
    """The checked :class:`CudaTarget` over a CUDA DLPack producer; raises before any write."""
    cupy = _cupy()
    device_type, device_id = out.__dlpack_device__()
    device_id = int(device_id)
    _check_device(cupy, device_id)
    stream, stream_arg, sync = _launch_stream(cupy, out, device_id)
    try:
        view = _dlpack.consume(_Export(out, stream_arg))
    except _ExportFailed as exc:
        raise ValueError(f"out (a CUDA buffer) could not be exported through DLPack: "
                         f"{exc.__cause__}") from exc.__cause__
    if view.device_type not in (_dlpack.KDL_CUDA, _dlpack.KDL_CUDA_MANAGED):
        raise ValueError(f"out says it lives on CUDA device {device_id}, but exported "
                         f"memory of DLPack device type {view.device_type}")
    view.check(FLOAT_NAMES)
    return CudaTarget(view, device_id, stream, sync)


def empty(shape, dtype, device, align):
    """``fastinit.empty(..., device="cuda")``: an uninitialized CuPy array.

    ``shape`` (a tuple), ``dtype`` (a NumPy dtype) and ``align`` are checked
    by the caller. CuPy's allocations start on 512-byte boundaries; a larger
    ``align`` is met by over-allocating.
    """
    device_id = parse_device(device)
    try:
        cupy = _cupy()
    except CudaUnavailableError as exc:
        raise CudaUnavailableError(f"device={device!r}: {exc}") from exc
    if device_id is None:
        try:
            device_id = cupy.cuda.runtime.getDevice()
        except Exception as exc:
            raise CudaUnavailableError(f"device={device!r}: no CUDA device is available "
                                       f"to CuPy ({exc})") from exc
    try:
        _check_device(cupy, device_id)
    except CudaUnavailableError as exc:
        raise CudaUnavailableError(f"device={device!r}: {exc}") from exc
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    with cupy.cuda.Device(device_id):
        raw = cupy.empty(nbytes, dtype=cupy.uint8)
        if raw.data.ptr % align:
            raw = cupy.empty(nbytes + align, dtype=cupy.uint8)
            start = (-raw.data.ptr) % align
            raw = raw[start:start + nbytes]
        try:
            arr = raw.view(dtype)
        except Exception as exc:   # bfloat16 before CuPy 14
            raise TypeError(f"CuPy {cupy.__version__} cannot hold {dtype.name} arrays; "
                            f"use CuPy >= 14, or a torch tensor "
                            f"(torch.empty(..., device='cuda'))") from exc
        return arr.reshape(shape)
