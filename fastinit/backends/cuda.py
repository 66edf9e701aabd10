"""The CUDA backend: fastinit's fills on NVIDIA GPUs, through CuPy and NVRTC.

Imported only when a buffer lives on a CUDA device. ``kernels/cuda/fill.cu``
(header inlined, :func:`kernel_source`) is built by NVRTC with no fused
multiply-add and no flush-to-zero (:func:`build_binary`), cached on disk by a
hash of source, options, architecture and NVRTC version, loaded once per
device and self-checked. A missing CuPy, NVRTC, driver or device raises
:class:`CudaUnavailableError` with what to install. Installation, cache,
streams, 2-D destinations (:class:`RowsOf`) and the host emulation:
docs/cuda.md.
"""

import functools
import hashlib
import os
import sys
import threading
import warnings

import numpy as np

from .. import _contract, _dlpack
from ..kernels._abi import (CTL_K0, CTL_K1, CTL_OFFSET, CTL_S0, CTL_S1, CUDA_THREADS, DTYPES,
                            KINDS, PARAMS, cuda_kernel_name)
from . import FLOAT_LIST, FLOAT_NAMES, Target

HEADER = "fastinit_philox.cuh"
SOURCE = "fill.cu"
INCLUDE_LINE = '#include "fastinit_philox.cuh"'
OPTIONS = ("--std=c++14", "--fmad=false", "--ftz=false", "--prec-div=true",
           "--prec-sqrt=true")
THREADS = CUDA_THREADS   # threads per CUDA block
BLOCKS_PER_SM = 4        # resident blocks per multiprocessor if the occupancy query fails
ROWS_SUFFIX = "_rows"    # fill.cu's 2-D kernels: cuda_kernel_name(...) + ROWS_SUFFIX
# what to install, by the CUDA major version of the driver or of the CuPy wheel
INSTALL = {12: "pip install 'fastinit[cuda12]'", 13: "pip install 'fastinit[cuda13]'"}
INSTALL_ANY = (f"{INSTALL[12]} (CuPy and NVRTC for CUDA 12: drivers >= 525), or "
               f"{INSTALL[13]} (CUDA 13: drivers >= 580)")
ERR_INSUFFICIENT_DRIVER = 35   # cudaErrorInsufficientDriver
ERR_NO_DEVICE = 100            # cudaErrorNoDevice


class CudaUnavailableError(ValueError):
    """A CUDA buffer or device was asked for, and CuPy, NVRTC, a driver or a
    device is missing or does not match; the message says which and what to do."""


class CudaGraphCaptureError(RuntimeError):
    """The first fill on a device ran inside CUDA-graph capture, where its
    one-time kernel load and self-check cannot run."""


# --- CuPy, NVRTC, driver and devices ------------------------------------------------
def _cupy():
    try:
        import cupy
    except Exception as exc:   # ImportError, or a broken CUDA installation
        raise CudaUnavailableError(
            f"fastinit's CUDA path needs CuPy, which could not be imported ({exc}): "
            f"{INSTALL_ANY}") from exc
    return cupy


def _version(v):
    """CUDA's integer version (12040) as text ("12.4")."""
    return f"{v // 1000}.{v % 1000 // 10}"


def _cupy_cuda_version(cupy):
    """The CUDA version CuPy was built for (12080), or None if it cannot tell."""
    try:
        return int(cupy.cuda.runtime.runtimeGetVersion())
    except Exception:
        return None


def _install_for(major):
    return INSTALL.get(major, INSTALL_ANY)


def _why_no_device(cupy, exc):
    """What a failed device query means, and what to do, as one message.

    CUDA reports cudaErrorInsufficientDriver both when the driver is older
    than the CUDA runtime CuPy was built for and when there is no driver at
    all; the driver's version (0 without a driver) tells the two apart.
    """
    status = getattr(exc, "status", None)
    try:
        driver = int(cupy.cuda.runtime.driverGetVersion())
    except Exception:
        driver = None
    runtime = _cupy_cuda_version(cupy)
    if driver == 0:
        return ("no NVIDIA driver was found on this machine (CUDA says "
                "cudaErrorInsufficientDriver, as it does when there is no driver at all): "
                "install the NVIDIA driver on a machine with a GPU, or fill CPU buffers")
    if status == ERR_INSUFFICIENT_DRIVER or (driver and runtime and driver < runtime):
        built = f"CUDA {_version(runtime)}" if runtime else "a newer CUDA"
        have = f"CUDA {_version(driver)}" if driver else "an older CUDA"
        return (f"the NVIDIA driver supports {have}, but this CuPy wheel was built for "
                f"{built} (cudaErrorInsufficientDriver): pip uninstall the CuPy wheel and "
                f"{_install_for(driver // 1000) if driver else INSTALL_ANY}, or update the "
                f"driver")
    if status == ERR_NO_DEVICE:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return ("the NVIDIA driver is installed but sees no CUDA device (cudaErrorNoDevice"
                + (f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "")
                + ")")
    return f"no CUDA device is available to CuPy ({exc})"


def _check_device(cupy, device_id):
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:   # CUDARuntimeError: no driver, an old driver, no device
        raise CudaUnavailableError(_why_no_device(cupy, exc)) from exc
    if not 0 <= device_id < count:
        raise CudaUnavailableError(f"CUDA device {device_id} does not exist "
                                   f"({count} device(s) present)")


def _nvrtc(cupy):
    """CuPy's NVRTC module, checked to load; raises CudaUnavailableError if it does not."""
    nvrtc = cupy.cuda.nvrtc
    try:
        nvrtc.getVersion()
    except Exception as exc:   # DynamicLibNotFoundError (CuPy 14), RuntimeError (13)
        runtime = _cupy_cuda_version(cupy)
        major = runtime // 1000 if runtime else None
        wheel = {12: "nvidia-cuda-nvrtc-cu12", 13: "nvidia-cuda-nvrtc"}.get(major,
                                                                           "nvidia-cuda-nvrtc")
        raise CudaUnavailableError(
            f"NVRTC, the CUDA compiler that builds fastinit's kernels on first use, could "
            f"not be loaded ({type(exc).__name__}: {exc}): {_install_for(major)} (CuPy >= 14 "
            f"and the {wheel} wheel, which CuPy finds by itself; with an older CuPy or "
            f"a CUDA toolkit, put the toolkit's libnvrtc on the library path)") from exc
    return nvrtc


def parse_device(device):
    """The device id of ``"cuda"`` (the current device) or ``"cuda:N"``."""
    if isinstance(device, str):
        if device == "cuda":
            return None
        if device.startswith("cuda:") and device[5:].isdigit():
            return int(device[5:])
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def _device_id(cupy, device, what="device"):
    """The checked device id of ``device`` (None, "cuda", "cuda:N" or an int)."""
    if isinstance(device, (int, np.integer)) and not isinstance(device, bool):
        device_id = int(device)
    else:
        device_id = parse_device("cuda" if device is None else device)
    if device_id is None:
        try:
            device_id = cupy.cuda.runtime.getDevice()
        except Exception as exc:
            raise CudaUnavailableError(_why_no_device(cupy, exc)) from exc
    _check_device(cupy, device_id)
    return device_id


# --- source and modules ---------------------------------------------------------------
def kernel_dir():
    """The folder holding fill.cu and the header (``cuda/`` of ``fastinit.kernels``)."""
    from .. import kernels
    return os.path.join(os.path.dirname(os.path.abspath(kernels.__file__)), "cuda")


@functools.lru_cache(maxsize=None)
def kernel_source():
    """fill.cu with the header inlined: the exact text NVRTC compiles.

    Inlining (rather than an include path) needs no include path at run
    time and makes the cache key (:func:`_cache_key`) cover the header.
    """
    folder = kernel_dir()
    with open(os.path.join(folder, HEADER), encoding="utf-8") as f:
        header = f.read()
    with open(os.path.join(folder, SOURCE), encoding="utf-8") as f:
        fill = f.read()
    if fill.count(INCLUDE_LINE) != 1:
        raise RuntimeError(f"{SOURCE} must include {HEADER} exactly once")
    return fill.replace(INCLUDE_LINE,
                        f"/* ---- {HEADER}, inlined by fastinit/backends/cuda.py ---- */\n"
                        f"{header}\n/* ---- end of {HEADER} ---- */", 1)


_lock = threading.Lock()
_modules = {}            # device id -> cupy.cuda.function.Module
_functions = {}          # (device id, kernel name) -> (cupy.cuda.function.Function, grid cap)


def build_binary(arch, target="cubin"):
    """Compile :func:`kernel_source` with NVRTC for compute capability ``arch`` ("90").

    Returns (bytes, "cubin" or "ptx"). ``target="cubin"`` falls back to PTX
    for the newest architecture NVRTC knows when it does not know ``arch``
    (the driver then compiles the PTX). Needs CuPy and NVRTC, not a GPU.

    NVRTC is called directly, not through ``cupy.RawModule(code=...)``:
    CuPy appends ``-ftz=true`` to the options of every module it compiles,
    which would flush subnormals and break the contract.
    """
    nvrtc = _nvrtc(_cupy())
    arch = int(arch)
    attempts = [(f"-arch=sm_{arch}", "cubin")] if target == "cubin" else []
    try:
        known = [a for a in nvrtc.getSupportedArchs() if a <= arch]
    except Exception:
        known = []
    attempts.append((f"-arch=compute_{max(known) if known else arch}", "ptx"))
    errors = []
    for arch_option, kind in attempts:
        try:
            return nvrtc_compile(arch_option, (kind,))[kind], kind
        except _CompileError as exc:
            errors.append(str(exc))
    raise RuntimeError("NVRTC could not compile fastinit's CUDA kernels:\n" + "\n".join(errors))


class _CompileError(Exception):
    pass


def nvrtc_compile(arch_option, outputs=("cubin",)):
    """{output: bytes} of one NVRTC compile of :func:`kernel_source` with
    :data:`OPTIONS` and ``arch_option`` ("-arch=sm_90": a cubin and its PTX;
    "-arch=compute_90": PTX only); ``outputs`` from "cubin", "ptx"."""
    nvrtc = _nvrtc(_cupy())
    prog = nvrtc.createProgram(kernel_source(), SOURCE, (), ())
    try:
        nvrtc.compileProgram(prog, list(OPTIONS) + [arch_option])
        get = {"cubin": nvrtc.getCUBIN, "ptx": nvrtc.getPTX}
        return {kind: get[kind](prog) for kind in outputs}
    except nvrtc.NVRTCError as exc:
        try:
            log = nvrtc.getProgramLog(prog)
        except Exception:
            log = ""
        raise _CompileError(f"{arch_option}: {exc}\n{log}") from exc
    finally:
        nvrtc.destroyProgram(prog)


def cache_dir():
    """Where compiled kernels are kept: ``$FASTINIT_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/fastinit/cuda``, else ``~/.cache/fastinit/cuda``."""
    root = os.environ.get("FASTINIT_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                 ".cache")
        root = os.path.join(base, "fastinit", "cuda")
    return root


def _cache_key(cupy, arch):
    """The cache's file stem for ``arch``: it hashes the source (header included),
    the options, the architecture and NVRTC's version."""
    try:
        version = tuple(cupy.cuda.nvrtc.getVersion())
    except Exception:
        version = None
    key = hashlib.sha256(repr((kernel_source(), OPTIONS, str(arch), version))
                         .encode()).hexdigest()[:32]
    return f"fill-{arch}-{key}"


def _read_cached(stem):
    """[(path, bytes)] of the cached binaries for ``stem`` (cubin first); none if unreadable."""
    found = []
    for kind in ("cubin", "ptx"):
        path = os.path.join(cache_dir(), f"{stem}.{kind}")
        try:
            with open(path, "rb") as f:
                found.append((path, f.read()))
        except OSError:
            pass
    return found


def _store(stem, kind, data):
    """Write ``data`` to the cache atomically, mode 0666 less the umask (so a
    shared cache stays readable to its other users); the path, or None when the
    cache cannot be written (nothing is left behind)."""
    folder = cache_dir()
    path = os.path.join(folder, f"{stem}.{kind}")
    tmp = os.path.join(folder, f".{stem}.{kind}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)          # atomic: a concurrent process sees all or nothing
        return path
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return None


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


def _loaded(cupy, data):
    """A module loaded from ``data`` (a cubin or PTX) and self-checked."""
    module = cupy.cuda.function.Module()
    module.load(bytes(data))
    _selfcheck(cupy, module)
    return module


def _load_module(cupy, arch):
    """The self-checked module for ``arch``: from the disk cache, or built (and
    stored there when it can be). A cached file that fails to load or to pass
    the self-check (truncated, corrupt, from another build) is rebuilt."""
    stem = _cache_key(cupy, arch)
    for path, data in _read_cached(stem):
        try:
            return _loaded(cupy, data)
        except Exception:
            try:
                os.unlink(path)          # replaced below, if the cache is writable
            except OSError:
                pass
    data, kind = build_binary(arch)
    _store(stem, kind, data)
    return _loaded(cupy, data)


def _capturing(stream):
    """Whether ``stream`` is being captured into a CUDA graph. A query that
    fails (CUDA refuses it while another stream captures in global mode)
    counts as capture."""
    try:
        return bool(stream.is_capturing())
    except Exception:
        return True


def _module(cupy, device_id, stream=None):
    """The module on ``device_id`` (call inside its device context), loaded on first use."""
    module = _modules.get(device_id)
    if module is not None:
        return module
    if stream is not None and _capturing(stream):
        raise CudaGraphCaptureError(
            f"the first fastinit fill on CUDA device {device_id} ran inside CUDA-graph "
            f"capture: it loads and self-checks the kernels once per device, with a copy "
            f"to the host, which capture does not allow. Call "
            f"fastinit.backends.cuda.load_kernels({device_id}) (or do one fill on the "
            f"device) before capturing; later fills are captured as one kernel launch")
    with _lock:
        module = _modules.get(device_id)
        if module is None:
            module = _load_module(cupy, cupy.cuda.Device(device_id).compute_capability)
            _modules[device_id] = module
    return module


def load_kernels(device=None):
    """Load and self-check fastinit's kernels on ``device`` (None or "cuda": the
    current device; "cuda:N" or N) now, building them if the cache has none:
    do this before capturing fills into a CUDA graph."""
    cupy = _cupy()
    device_id = _device_id(cupy, device)
    with cupy.cuda.Device(device_id):
        _module(cupy, device_id)


def _grid_cap(cupy, device_id, fn):
    """Blocks that fill every multiprocessor once (a full wave): the grid-stride
    loop then gives every thread the same number of Philox blocks, give or take one."""
    sms = int(cupy.cuda.Device(device_id).attributes["MultiProcessorCount"])
    try:
        resident = cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(
            fn.ptr, THREADS, 0)
    except Exception:
        resident = 0
    return max(1, sms * (int(resident) if resident > 0 else BLOCKS_PER_SM))


def _function(cupy, device_id, name, stream=None):
    """(kernel ``name`` on ``device_id``, its grid cap); call inside the device context."""
    key = (device_id, name)
    hit = _functions.get(key)
    if hit is None:
        fn = _module(cupy, device_id, stream).get_function(name)
        hit = _functions.setdefault(key, (fn, _grid_cap(cupy, device_id, fn)))
    return hit


# --- launching --------------------------------------------------------------------------
def launch_grid(work, cap):
    """CUDA blocks for ``work`` items (Philox blocks, or (row, block) pairs) of one
    launch: enough for one item per thread, at most ``cap`` (one full wave)."""
    return max(1, min(-(-int(work) // THREADS), int(cap)))


def _checked_params(kind, dtype_name, params):
    compute = np.dtype(DTYPES[dtype_name].compute)
    params = np.asarray(params)
    if params.dtype != compute or params.shape != (len(PARAMS[kind]),):
        raise RuntimeError(f"{kind} expects {len(PARAMS[kind])} {compute.name} "
                           f"parameters, got {params.dtype} {params.shape}: the host "
                           f"contract and cuda/fill.cu disagree")
    return tuple(params)


def _keys(ctl):
    return (np.uint32(ctl[CTL_K0]), np.uint32(ctl[CTL_K1]), np.uint32(ctl[CTL_S0]),
            np.uint32(ctl[CTL_S1]))


def _launch(name, work, args, device_id, stream):
    cupy = _cupy()
    with cupy.cuda.Device(device_id):
        fn, cap = _function(cupy, device_id, name, stream)
        fn((launch_grid(work, cap),), (THREADS,), args, stream=stream)


def _lanes(dtype_name):
    return 2 if DTYPES[dtype_name].compute == "float64" else 4


def fill_cuda(kind, ptr, n, dtype_name, ctl, params, *, device_id, stream):
    """Launch the ``kind`` kernel over ``n`` elements of ``dtype_name`` at device pointer ``ptr``.

    ``ctl`` holds the control words of ``fastinit._contract.ctl_words``
    (offset, key and stream words), ``params`` the distribution's parameters
    in the compute type, as the CPU kernels take them; ``stream`` is the
    CuPy stream to launch on. Returns without waiting for the kernel.
    """
    n = int(n)
    if n <= 0:
        return
    params = _checked_params(kind, dtype_name, params)
    offset = int(ctl[CTL_OFFSET])
    lanes = _lanes(dtype_name)
    blocks = (offset + n - 1) // lanes - offset // lanes + 1
    args = (np.uint64(ptr), np.uint64(n), np.uint64(offset)) + _keys(ctl) + params
    _launch(cuda_kernel_name(kind, dtype_name), blocks, args, device_id, stream)


def fill_rows_cuda(kind, ptr, rows, cols, ld, dtype_name, ctl, row_step, params, *,
                   device_id, stream):
    """Launch the ``kind`` row kernel: element (r, c) at ``ptr + (r * ld + c)`` elements
    gets global index ``offset + r * row_step + c`` (offset from ``ctl``)."""
    rows, cols = int(rows), int(cols)
    if rows <= 0 or cols <= 0:
        return
    params = _checked_params(kind, dtype_name, params)
    lanes = _lanes(dtype_name)
    per_row = (cols + lanes - 2) // lanes + 1          # as fill.cu's fill_rows
    args = (np.uint64(ptr), np.uint64(rows), np.uint64(cols), np.uint64(ld),
            np.uint64(int(ctl[CTL_OFFSET])), np.uint64(row_step)) + _keys(ctl) + params
    _launch(cuda_kernel_name(kind, dtype_name) + ROWS_SUFFIX, rows * per_row, args, device_id,
            stream)


def fill(target, kind, seed, stream, offset, params):
    """The backend's fill (see ``fastinit.backends``) for a :class:`CudaTarget`;
    a :class:`CudaRowsTarget` is filled by :func:`fill_rows` with its ``row_step``."""
    if isinstance(target, CudaRowsTarget):
        fill_rows(target, kind, seed, stream, offset, target.row_step, params)
        return
    ctl = _contract.ctl_words(seed, stream, offset, DTYPES[target.name].fmt, KINDS[kind])
    fill_cuda(kind, target.ptr, target.size, target.name, ctl, params,
              device_id=target.device_id, stream=target.stream)
    if target.sync:
        target.stream.synchronize()


def fill_rows(target, kind, seed, stream, offset, row_step, params):
    """Fill the 2-D :class:`CudaRowsTarget` in one launch: element (r, c) gets the
    stream's value for global index ``offset + r * row_step + c``.

    Raises ValueError (nothing written) when the last index passes 2**64.
    """
    row_step = _contract.check_u64("row_step", row_step)
    rows, cols = target.shape
    if rows and cols and offset + (rows - 1) * row_step + cols > _contract.U64:
        raise ValueError(f"offset + (rows - 1) * row_step + cols must be at most 2**64, got "
                         f"{offset} + {rows - 1} * {row_step} + {cols}")
    ctl = _contract.ctl_words(seed, stream, offset, DTYPES[target.name].fmt, KINDS[kind])
    fill_rows_cuda(kind, target.ptr, rows, cols, target.ld, target.name, ctl, row_step, params,
                   device_id=target.device_id, stream=target.stream)
    if target.sync:
        target.stream.synchronize()


def fill_constant(target, bits):
    """Every element of ``target`` = ``bits``, with CuPy's own fill on the target's stream."""
    cupy = _cupy()
    dtype = np.dtype(DTYPES[target.name].bits)
    if isinstance(target, CudaRowsTarget):
        rows, cols = target.shape
        shape, strides = (rows, cols), (target.ld * dtype.itemsize, dtype.itemsize)
        span = ((rows - 1) * target.ld + cols) if rows and cols else 0
    else:
        shape, strides, span = (target.size,), (dtype.itemsize,), target.size
    with cupy.cuda.Device(target.device_id):
        mem = cupy.cuda.UnownedMemory(target.ptr, span * dtype.itemsize, target.owner,
                                      target.device_id)
        arr = cupy.ndarray(shape, dtype=dtype, memptr=cupy.cuda.MemoryPointer(mem, 0),
                           strides=strides)
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
    """A CuPy stream object for a stream pointer of ``device_id`` that another
    library owns; call inside that device's context (older CuPy records the
    current device as the stream's)."""
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
    with cupy.cuda.Device(device_id):
        if _dlpack.is_torch_tensor(out):
            torch = sys.modules["torch"]
            ptr = torch.cuda.current_stream(device_id).cuda_stream
            return _external_stream(cupy, ptr, device_id), (ptr or 1), False
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


class CudaRowsTarget(CudaTarget):
    """A 2-D (rows, cols) :class:`CudaTarget` whose rows are contiguous, ``ld``
    elements apart (``ld >= cols``); its fill gives element (r, c) the global
    index ``offset + r * row_step + c``."""

    __slots__ = ("ld", "row_step")

    def __init__(self, view, device_id, stream, sync, ld, row_step):
        super().__init__(view, device_id, stream, sync)
        self.ld, self.row_step = ld, row_step


class RowsOf:
    """``buffer``, a 2-D CUDA buffer whose rows are contiguous (see
    :func:`as_rows_target`), to be filled row-strided: handed to any public
    fill in place of ``out``, element (r, c) gets global index
    ``offset + r * row_step + c`` (``row_step=None``: the row length, the
    values of a contiguous buffer of its shape). One launch for all rows.
    Only the CUDA backend takes it; fastinit.torch uses it for CUDA views and
    DTensor column shards."""

    __slots__ = ("buffer", "row_step")

    def __init__(self, buffer, row_step=None):
        self.buffer, self.row_step = buffer, row_step

    def __dlpack__(self, *args, **kwargs):
        return self.buffer.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.buffer.__dlpack_device__()


def _consume(cupy, out):
    """(DLPack view of CUDA buffer ``out``, device id, stream, sync); raises before any write."""
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
    return view, device_id, stream, sync


def as_target(out):
    """The checked :class:`CudaTarget` over a CUDA DLPack producer; raises before any
    write. A :class:`RowsOf` gives a :class:`CudaRowsTarget` (:func:`as_rows_target`)."""
    if isinstance(out, RowsOf):
        return as_rows_target(out.buffer, out.row_step)
    cupy = _cupy()
    view, device_id, stream, sync = _consume(cupy, out)
    view.check(FLOAT_NAMES)
    return CudaTarget(view, device_id, stream, sync)


def as_rows_target(out, row_step=None):
    """The checked :class:`CudaRowsTarget` over ``out``, a 2-D CUDA buffer (rows,
    cols) whose rows are contiguous (column stride 1) at a row stride ``ld >=
    cols`` elements, so no two elements share memory; ``row_step`` (default:
    cols) is the global-index distance of consecutive rows. Raises
    ValueError/TypeError naming ``out`` or ``row_step`` before any write."""
    if row_step is not None:
        row_step = _contract.check_u64("row_step", row_step)
    cupy = _cupy()
    view, device_id, stream, sync = _consume(cupy, out)
    if view.dtype not in FLOAT_NAMES:
        raise TypeError(f"out must hold {FLOAT_LIST}, got {view.dtype}")
    if view.read_only:
        raise ValueError("out is read-only")
    if len(view.shape) != 2:
        raise ValueError(f"out must be 2-D (rows, cols) for a row-strided fill, got shape "
                         f"{view.shape}")
    rows, cols = view.shape
    ld, col_stride = view.strides
    if rows <= 1:
        ld = cols                        # one row: its stride is never used
    if cols > 1 and col_stride != 1:
        raise ValueError(f"out's rows must be contiguous (column stride 1) for a "
                         f"row-strided fill, got element strides {view.strides}")
    if rows > 1 and cols > 0 and ld < cols:
        raise ValueError(f"out's rows overlap or run backwards (row stride {ld} < "
                         f"{cols} columns): its elements cannot hold independent values")
    if view.pointer % view.itemsize:
        raise ValueError(f"out's data pointer {view.pointer:#x} is not aligned to "
                         f"its {view.itemsize}-byte elements")
    return CudaRowsTarget(view, device_id, stream, sync, int(ld),
                          cols if row_step is None else row_step)


def empty(shape, dtype, device, align):
    """``fastinit.empty(..., device="cuda")``: an uninitialized CuPy array.

    ``shape`` (a tuple), ``dtype`` (a NumPy dtype) and ``align`` are checked
    by the caller. CuPy's allocations start on 512-byte boundaries; a larger
    ``align`` is met by over-allocating.
    """
    parse_device(device)
    try:
        cupy = _cupy()
        device_id = _device_id(cupy, device)
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
