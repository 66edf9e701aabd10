"""The CUDA path on the host, for the tests: no GPU, no CuPy needed.

- :func:`build_shim` compiles kernels/cuda/fill.cu's ``__global__`` kernels as
  host C++ through tests/c/cuda_host_shim.h (tests/c/cuda_host.cpp) and
  loads them with ctypes as a :class:`Shim`: a launch runs every
  (block, thread) of its grid on the CPU, and every store is checked for
  alignment and counted per element of a watched buffer.
- :class:`FakeCupy` is what fastinit/backends/cuda.py touches of CuPy
  (devices, streams, modules, launches, arrays), over host memory, with the
  kernels of a :class:`Shim`. It keeps CuPy's rules that matter here: a
  stream belongs to the device current when it was made, and using it under
  another device raises; a blocking copy during graph capture raises.
"""

import contextlib
import ctypes
import os
import shutil
import subprocess
import types

import ml_dtypes
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "kernels", "cuda")
TESTS_C = os.path.join(ROOT, "tests", "c")
CXXFLAGS = ["-std=c++14", "-O2", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC",
            "-Wall", "-Wextra", "-Werror"]

# ctypes type of each signature letter of tests/c/cuda_host.cpp, and the NumPy
# scalar type CuPy would need to marshal that parameter right
LETTERS = {"Q": (ctypes.c_uint64, np.uint64), "I": (ctypes.c_uint32, np.uint32),
           "f": (ctypes.c_float, np.float32), "d": (ctypes.c_double, np.float64)}


def compiler(name="c++"):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"no {name} on PATH")
    return path


def build(args):
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout}\n{proc.stderr}"


_built = {}     # the Shim of kernels/cuda, built once per process


def build_shim(out_dir, kernel_dir=KERNELS):
    """fill.cu (from ``kernel_dir``) as host C++, loaded: a :class:`Shim`. The
    project's own fill.cu is built once per process (test files share it)."""
    if str(kernel_dir) == KERNELS and KERNELS in _built:
        return _built[KERNELS]
    out = os.path.join(str(out_dir), "cuda_host.so")
    build([compiler(), *CXXFLAGS, "-I", TESTS_C, "-I", str(kernel_dir),
           os.path.join(TESTS_C, "cuda_host.cpp"), "-o", out])
    shim = Shim(out)
    if str(kernel_dir) == KERNELS:
        _built[KERNELS] = shim
    return shim


class Shim:
    """fill.cu's kernels on the host (tests/c/cuda_host.cpp) through ctypes."""

    def __init__(self, path):
        self.path = path
        lib = self.lib = ctypes.CDLL(path)
        lib.fastinit_shim_names.restype = ctypes.c_char_p
        lib.fastinit_shim_signature.argtypes = [ctypes.c_char_p]
        lib.fastinit_shim_signature.restype = ctypes.c_char_p
        lib.fastinit_shim_launch.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint,
                                             ctypes.POINTER(ctypes.c_void_p)]
        lib.fastinit_shim_launch.restype = ctypes.c_int
        lib.fastinit_shim_watch.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64,
                                            ctypes.c_void_p]
        lib.fastinit_shim_stats.argtypes = [ctypes.POINTER(ctypes.c_uint64)]
        self._counts = None
        self.launches = []                    # (name, grid, block) of every launch

    def names(self):
        return self.lib.fastinit_shim_names().decode().split()

    def signature(self, name):
        sig = self.lib.fastinit_shim_signature(name.encode())
        assert sig is not None, f"fill.cu has no kernel {name}"
        return sig.decode()

    def launch(self, name, grid, block, args):
        """Run kernel ``name`` over (grid, block), as CuPy would launch it with ``args``:
        NumPy scalars of exactly the kernel's parameter types, and pointers (ints,
        or arrays with ``.ctypes``)."""
        sig = self.signature(name)
        assert len(args) == len(sig), f"{name} takes {len(sig)} arguments, got {len(args)}"
        values = []
        for i, (letter, a) in enumerate(zip(sig, args)):
            if letter == "p":
                ptr = a.ctypes.data if isinstance(a, np.ndarray) else int(a)
                values.append(ctypes.c_void_p(ptr))
            else:
                ctype, scalar = LETTERS[letter]
                assert type(a) is scalar, (f"{name} argument {i} is {scalar.__name__}; CuPy "
                                           f"would marshal the {type(a).__name__} passed "
                                           f"with another width")
                values.append(ctype(a))
        ptrs = (ctypes.c_void_p * len(values))(
            *[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        self.launches.append((name, grid, block))
        assert self.lib.fastinit_shim_launch(name.encode(), grid, block, ptrs) == 0

    def watch(self, base):
        """Count stores per element of ``base`` (a C-contiguous array) from now on;
        returns the counts (one byte per element)."""
        self._counts = np.zeros(base.size, np.uint8)
        self.lib.fastinit_shim_watch(base.ctypes.data, base.nbytes, base.itemsize,
                                     self._counts.ctypes.data)
        self.stats()                          # reset
        return self._counts

    def unwatch(self):
        self.lib.fastinit_shim_watch(None, 0, 0, None)
        self._counts = None

    def stats(self):
        """{scalar, vector, misaligned, wild} store counts since the last call."""
        out = (ctypes.c_uint64 * 4)()
        self.lib.fastinit_shim_stats(out)
        return dict(zip(("scalar", "vector", "misaligned", "wild"), map(int, out)))


# --- buffers ------------------------------------------------------------------------------
def poisoned(n, dtype, shift=0, guard=16):
    """(a length-n slice starting ``shift`` elements into a 64-byte aligned buffer,
    the buffer): ``guard`` poisoned elements on each side of the slice."""
    import fastinit as fi
    base = fi.empty(n + shift + 2 * guard, dtype)
    base.view(np.uint8)[:] = 0xA5
    return base[guard + shift:guard + shift + n], base


def assert_same(got, ref, what):
    g = got.reshape(-1).view(np.uint8).reshape(got.size, -1)
    r = ref.reshape(-1).view(np.uint8).reshape(ref.size, -1)
    bad = np.nonzero((g != r).any(axis=1))[0]
    if bad.size:
        i = bad[:5]
        raise AssertionError(f"{what}: {bad.size} elements differ, first at {i.tolist()}: "
                             f"got {got.reshape(-1)[i]!r}, expected {ref.reshape(-1)[i]!r}")


def assert_written_once(counts, inside, stats, what, vector=None):
    """Each element where ``inside`` is True stored exactly once, nothing else
    stored, no misaligned or wild store; ``vector``: whether vector stores were
    (True) or were not (False) used."""
    assert stats["misaligned"] == 0, f"{what}: {stats['misaligned']} misaligned vector stores"
    assert stats["wild"] == 0, f"{what}: {stats['wild']} stores outside the buffer"
    twice = np.flatnonzero(inside & (counts > 1))
    assert twice.size == 0, (f"{what}: {twice.size} elements stored more than once, first "
                             f"at {twice[:5].tolist()} (a launch that overlaps its threads)")
    missed = np.flatnonzero(inside & (counts == 0))
    assert missed.size == 0, f"{what}: {missed.size} elements never stored: {missed[:5]}"
    stray = np.flatnonzero(~inside & (counts > 0))
    assert stray.size == 0, f"{what}: {stray.size} guard elements stored: {stray[:5]}"
    if vector is not None:
        assert (stats["vector"] > 0) == vector, f"{what}: vector stores {stats}"


# --- a fake CuPy over host memory ------------------------------------------------------------
class CudaRuntimeError(RuntimeError):
    """As cupy_backends' CUDARuntimeError: ``status`` is the cudaError_t."""

    def __init__(self, status, msg):
        super().__init__(msg)
        self.status = status


class FakeStream:
    def __init__(self, cupy, ptr, device_id=-1):
        # older CuPy records the current device when device_id is unknown
        self.cupy, self.ptr = cupy, ptr
        self.device_id = cupy.current if device_id == -1 else device_id
        self.synced = 0

    @property
    def capturing(self):
        return self.ptr in self.cupy.capturing

    def _check(self):
        if self.device_id != self.cupy.current:
            raise RuntimeError(f"The device that the stream is created on ({self.device_id}) "
                               f"does not match with the current device ({self.cupy.current})")

    def __enter__(self):
        self._check()
        self.cupy.stream_stack.append(self)
        return self

    def __exit__(self, *exc):
        self.cupy.stream_stack.pop()
        return False

    def synchronize(self):
        if self.capturing:
            raise CudaRuntimeError(900, "cudaErrorStreamCaptureUnsupported")
        self.synced += 1

    def is_capturing(self):
        return self.capturing


class FakeFunction:
    def __init__(self, cupy, shim, name):
        self.cupy, self.shim, self.name = cupy, shim, name
        self.ptr = hash(name) & 0xFFFFFFFF

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        stream = stream if stream is not None else self.cupy.current_stream()
        if stream.device_id != self.cupy.current:
            raise CudaRuntimeError(400, "cudaErrorInvalidResourceHandle: a stream of device "
                                        f"{stream.device_id} used on device {self.cupy.current}")
        self.cupy.launches.append((self.name, grid, block, stream))
        self.shim.launch(self.name, int(grid[0]), int(block[0]), args)


class FakeModule:
    """A module 'loaded' from the bytes :data:`FakeCupy.BINARY` (anything else
    fails, as a corrupt cubin does)."""

    def __init__(self, cupy):
        self.cupy, self.loaded = cupy, False

    def load(self, data):
        if data != FakeCupy.BINARY:
            raise CudaRuntimeError(200, "CUDA_ERROR_INVALID_IMAGE: device kernel image is "
                                        "invalid")
        self.cupy.loads += 1
        self.loaded = True

    def get_function(self, name):
        assert self.loaded
        return FakeFunction(self.cupy, self.cupy.shim, name)


class FakeCupy:
    """What fastinit.backends.cuda touches of CuPy, over host memory."""

    BINARY = b"fake cubin of fill.cu"

    def __init__(self, shim, devices=1, sms=31, driver=13000, runtime=13000, nvrtc=True):
        self.shim, self.devices, self.sms = shim, devices, sms
        self.driver, self.runtime = driver, runtime
        self.current = 0
        self.stream_stack = []
        self.launches, self.loads = [], 0
        self.capturing = set()                # stream pointers being captured
        self.streams = {d: FakeStream(self, 0, d) for d in range(max(devices, 1))}
        self.uint32, self.uint8 = np.uint32, np.uint8
        fake = self

        class ndarray(np.ndarray):                      # noqa: N801 (CuPy's name)
            def __new__(cls, shape, dtype, memptr, strides=None):
                dtype = np.dtype(dtype)
                span = memptr.mem.size
                raw = (ctypes.c_uint8 * max(span, 1)).from_address(memptr.ptr)
                flat = np.frombuffer(raw, np.uint8)[:span]
                return np.lib.stride_tricks.as_strided(flat.view(dtype), shape, strides)

        self.ndarray = ndarray

        @contextlib.contextmanager
        def device_context(device_id):
            previous, fake.current = fake.current, device_id
            try:
                yield
            finally:
                fake.current = previous

        class Device:
            def __init__(self, device_id=None):
                self.id = fake.current if device_id is None else device_id
                self.compute_capability = "90"
                self.attributes = {"MultiProcessorCount": fake.sms}

            def __enter__(self):
                self._ctx = device_context(self.id)
                self._ctx.__enter__()
                return self

            def __exit__(self, *exc):
                return self._ctx.__exit__(*exc)

        class Stream:
            null = FakeStream(fake, 0, -1)

            @staticmethod
            def from_external(obj):
                _, ptr = obj.__cuda_stream__()
                return FakeStream(fake, ptr)

        def device_count():
            if fake.driver == 0 or fake.driver < fake.runtime:
                raise CudaRuntimeError(35, "cudaErrorInsufficientDriver: CUDA driver version "
                                           "is insufficient for CUDA runtime version")
            if fake.devices == 0:
                raise CudaRuntimeError(100, "cudaErrorNoDevice: no CUDA-capable device is "
                                            "detected")
            return fake.devices

        def nvrtc_version():
            if not fake.nvrtc:
                raise RuntimeError('Failure finding "libnvrtc.so.13 or libnvrtc.so.12"')
            return (13, 0)

        self.nvrtc = nvrtc
        self.cuda = types.SimpleNamespace(
            runtime=types.SimpleNamespace(
                getDeviceCount=device_count, getDevice=lambda: fake.current,
                driverGetVersion=lambda: fake.driver, runtimeGetVersion=lambda: fake.runtime),
            Device=Device,
            Stream=Stream,
            ExternalStream=lambda ptr, device_id=-1: FakeStream(fake, ptr, device_id),
            get_current_stream=self.current_stream,
            UnownedMemory=lambda ptr, size, owner, device_id: types.SimpleNamespace(
                ptr=ptr, size=size),
            MemoryPointer=lambda mem, offset: types.SimpleNamespace(ptr=mem.ptr + offset,
                                                                    mem=mem),
            function=types.SimpleNamespace(Module=lambda: FakeModule(fake)),
            driver=types.SimpleNamespace(
                occupancyMaxActiveBlocksPerMultiprocessor=lambda ptr, threads, smem: 1),
            nvrtc=types.SimpleNamespace(getVersion=nvrtc_version),
        )

    def current_stream(self):
        for s in reversed(self.stream_stack):
            if s.device_id == self.current:
                return s
        return self.streams[self.current]

    def zeros(self, n, dtype):
        return np.zeros(n, dtype)

    def asnumpy(self, x):
        if self.current_stream().capturing:
            raise CudaRuntimeError(900, "cudaErrorStreamCaptureUnsupported: a blocking copy "
                                        "during capture")
        return np.array(x)


class FakeCudaArray:
    """A NumPy array that exports itself as DLPack device (CUDA, ``device_id``)."""

    def __init__(self, array, device_id=0):
        self.array, self.device_id, self.streams = array, device_id, []

    def __dlpack_device__(self):
        return (2, self.device_id)

    def __dlpack__(self, stream=None, max_version=None):
        from fastinit import _dlpack
        self.streams.append(stream)
        api = _dlpack._api
        bf16 = self.array.dtype == ml_dtypes.bfloat16      # NumPy exports no bfloat16
        source = self.array.view(np.uint16) if bf16 else self.array
        capsule = source.__dlpack__(max_version=max_version)
        if api.PyCapsule_IsValid(capsule, b"dltensor_versioned"):
            managed = _dlpack._ManagedVersioned.from_address(
                api.PyCapsule_GetPointer(capsule, b"dltensor_versioned"))
        else:
            managed = _dlpack._Managed.from_address(api.PyCapsule_GetPointer(capsule,
                                                                               b"dltensor"))
        managed.dl_tensor.device.device_type = 2
        managed.dl_tensor.device.device_id = self.device_id
        if bf16:
            managed.dl_tensor.dtype.code = _dlpack.KDL_BFLOAT
        return capsule


def install(monkeypatch, fake):
    """Make fastinit.backends.cuda use ``fake`` (a fresh module state) and build
    ``FakeCupy.BINARY`` instead of calling NVRTC; returns the list of builds."""
    from fastinit.backends import cuda
    builds = []

    def build_binary(arch, target="cubin"):
        cuda._nvrtc(fake)                  # NVRTC missing: the real error
        builds.append(arch)
        return FakeCupy.BINARY, "cubin"

    monkeypatch.setattr(cuda, "_cupy", lambda: fake)
    monkeypatch.setattr(cuda, "build_binary", build_binary)
    monkeypatch.setattr(cuda, "_modules", {})
    monkeypatch.setattr(cuda, "_functions", {})
    return builds
