"""The CUDA header and kernels, checked on the CPU against the Numba kernels.

No GPU is needed: ``kernels/cuda/fastinit_philox.cuh`` is compiled with the
system C compiler into ``tests/c/host_fill.c`` (element by element, from the
global index alone), and ``kernels/cuda/fill.cu`` is compiled as plain C++, where
its kernel bodies run as emulated threads (block by block, grid-stride, with
the vector stores). Both must equal ``fi.uniform``, ``fi.masked_uniform``,
``fi.normal`` and ``fi.truncated_normal`` bit for bit; the parameters come
from ``fastinit._contract`` exactly as the Numba path gets them, so the
comparison checks the kernels, not the host rounding.

The last part checks the CUDA path's Python side where no GPU is present:
``import fastinit`` does not import CuPy, and a CUDA buffer without CuPy or a
device is refused with a clear error.
"""

import ctypes
import math
import os
import shutil
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

import fastinit as fi
from fastinit import _contract as C
from fastinit.kernels.cpu import philox as P

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "kernels", "cuda")
KAT = os.path.join(ROOT, "tests", "kat_vectors.txt")
CFLAGS = ["-O2", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC"]
U64 = 2 ** 64

DTYPES = {  # name -> (dtype, compute type, fmt code of fastinit/_dispatch.py)
    "float32": (np.float32, np.float32, 0),
    "bfloat16": (ml_dtypes.bfloat16, np.float32, 1),
    "float16": (np.float16, np.float32, 2),
    "float64": (np.float64, np.float64, 3),
}
KIND = {"uniform": 0, "normal": 1, "trunc": 2}

# id -> (kernel, public fill, its keyword parameters, the host parameter arrays)
CASES = {
    "uniform": ("uniform", fi.uniform, dict(low=-0.3, high=0.7),
                lambda t: C.uniform_params(-0.3, 0.7, 0.0, t)),
    "masked_uniform": ("uniform", fi.masked_uniform, dict(low=-2.0, high=3.0, threshold=0.25),
                       lambda t: C.uniform_params(-2.0, 3.0, 0.25, t)),
    "normal": ("normal", fi.normal, dict(mean=0.5, std=2.0),
               lambda t: C.normal_params(0.5, 2.0, t)),
    "trunc_central": ("trunc", fi.truncated_normal, dict(mean=0.1, std=1.5, a=-1.0, b=3.0),
                      lambda t: C.truncated_normal_params(0.1, 1.5, -1.0, 3.0, t)),
    "trunc_upper_tail": ("trunc", fi.truncated_normal, dict(mean=1.0, std=0.5, a=3.0, b=4.0),
                         lambda t: C.truncated_normal_params(1.0, 0.5, 3.0, 4.0, t)),
    "trunc_lower_tail": ("trunc", fi.truncated_normal, dict(mean=0.0, std=2.0, a=-9.0, b=-0.5),
                         lambda t: C.truncated_normal_params(0.0, 2.0, -9.0, -0.5, t)),
    # far tails (contract v2): elements past 2^-B in the tail form (float32
    # [5, 9], float64 [7.5, 40]); the far-tail form in log space (float32
    # [8, 9], both types [-41, -40]); infinite bounds
    "trunc_tail_mixed": ("trunc", fi.truncated_normal, dict(mean=0.0, std=1.0, a=5.0, b=9.0),
                         lambda t: C.truncated_normal_params(0.0, 1.0, 5.0, 9.0, t)),
    "trunc_far_upper": ("trunc", fi.truncated_normal, dict(mean=0.0, std=1.0, a=8.0, b=9.0),
                        lambda t: C.truncated_normal_params(0.0, 1.0, 8.0, 9.0, t)),
    "trunc_far_lower": ("trunc", fi.truncated_normal,
                        dict(mean=0.0, std=1.0, a=-41.0, b=-40.0),
                        lambda t: C.truncated_normal_params(0.0, 1.0, -41.0, -40.0, t)),
    "trunc_one_sided": ("trunc", fi.truncated_normal,
                        dict(mean=0.5, std=2.0, a=-math.inf, b=-15.0),
                        lambda t: C.truncated_normal_params(0.5, 2.0, -math.inf, -15.0, t)),
    "trunc_f64_mixed": ("trunc", fi.truncated_normal, dict(mean=0.0, std=1.0, a=7.5, b=40.0),
                        lambda t: C.truncated_normal_params(0.0, 1.0, 7.5, 40.0, t)),
    "trunc_unbounded": ("trunc", fi.truncated_normal,
                        dict(mean=0.0, std=1.0, a=-math.inf, b=math.inf),
                        lambda t: C.truncated_normal_params(0.0, 1.0, -math.inf, math.inf, t)),
    # float32 subnormal values (no flush to zero anywhere): bfloat16 keeps them too
    "uniform_subnormal": ("uniform", fi.uniform, dict(low=-3e-39, high=5e-39),
                          lambda t: C.uniform_params(-3e-39, 5e-39, 0.0, t)),
    "normal_subnormal": ("normal", fi.normal, dict(mean=1e-40, std=1e-39),
                         lambda t: C.normal_params(1e-40, 1e-39, t)),
}

# (seed, stream, offset): odd offsets, words near 2**64, a block index past 2**32
WHERE = [
    (0, 0, 1),
    (12345, 7, 3),
    (U64 - 1, U64 - 1, 5),
    (C.DEFAULT_SEED, 2 ** 63 + 5, 2 ** 34 - 7),
    (U64 - 3, 1, U64 - 10 ** 6 - 1),
]


# --- building ------------------------------------------------------------------------
def _compiler(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"no {name} on PATH")
    return path


def _build(args):
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """tests/c/host_fill.c (the header, element by element) through ctypes."""
    out = str(tmp_path_factory.mktemp("cuda_host") / "host_fill.so")
    _build([_compiler("cc"), "-std=c99", *CFLAGS, "-I", KERNELS,
            os.path.join(ROOT, "tests", "c", "host_fill.c"), "-o", out, "-lm"])
    lib = ctypes.CDLL(out)
    u32, u64, ptr = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_void_p
    lib.fastinit_host_fill.argtypes = [ctypes.c_int, ctypes.c_int, ptr, u64, u64,
                                       u32, u32, u32, u32, ptr]
    lib.fastinit_host_fill.restype = ctypes.c_int
    lib.fastinit_host_philox.argtypes = [ptr, u32, u32, ptr]
    lib.fastinit_host_philox.restype = None
    lib.fastinit_host_half_bits.argtypes = [ptr, u64, ctypes.c_int, ptr]
    lib.fastinit_host_half_bits.restype = None
    lib.fastinit_host_constants_f32.argtypes = [ptr]
    lib.fastinit_host_constants_f64.argtypes = [ptr]
    return lib


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """kernels/cuda/fill.cu compiled as C++: the kernel bodies as emulated threads."""
    out = str(tmp_path_factory.mktemp("cuda_emu") / "fill_emulated.so")
    _build([_compiler("c++"), "-std=c++11", *CFLAGS, "-x", "c++",
            os.path.join(KERNELS, "fill.cu"), "-o", out])
    lib = ctypes.CDLL(out)
    u32, u64, ptr = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_void_p
    lib.fastinit_emulate_fill.argtypes = [ctypes.c_int, ctypes.c_int, ptr, u64, u64,
                                          u32, u32, u32, u32, ptr, u64]
    lib.fastinit_emulate_fill.restype = ctypes.c_longlong
    return lib


def _words(seed, stream):
    return seed & 0xFFFFFFFF, seed >> 32, stream & 0xFFFFFFFF, stream >> 32


def _params(case, compute):
    kernel, _, _, make = CASES[case]
    p = np.ascontiguousarray(make(compute), dtype=compute)
    assert p.shape == ({"uniform": 5, "normal": 2, "trunc": 8}[kernel],), \
        f"the host parameters of {case} changed shape: update kernels/ and fastinit/cuda.py"
    return p


def _reference(case, dtype, n, seed, stream, offset):
    _, fill, kw, _ = CASES[case]
    out = np.empty(n, dtype)
    fill(out, **kw, seed=seed, stream=stream, offset=offset)
    return out


def _poisoned(n, dtype, shift=0, guard=16):
    """A poisoned length-n slice of a 64-byte aligned buffer, starting ``shift``
    elements in, with ``guard`` poisoned elements on each side; returns (slice, base)."""
    base = fi.empty(n + shift + 2 * guard, dtype)
    base.view(np.uint8)[:] = 0xA5
    return base[guard + shift:guard + shift + n], base


def _assert_same(got, ref, what):
    g = got.reshape(-1).view(np.uint8).reshape(got.size, -1)
    r = ref.reshape(-1).view(np.uint8).reshape(ref.size, -1)
    bad = np.nonzero((g != r).any(axis=1))[0]
    if bad.size:
        i = bad[:5]
        raise AssertionError(f"{what}: {bad.size} elements differ, first at {i.tolist()}: "
                             f"got {got[i]!r}, expected {ref[i]!r}")


# --- the generator and the constants -----------------------------------------------
def _kat_vectors():
    vectors = []
    with open(KAT) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            assert parts[:2] == ["philox4x32", "10"], line
            vectors.append([int(x, 16) for x in parts[2:]])
    return vectors


def test_known_answers(host):
    vectors = _kat_vectors()
    assert len(vectors) >= 3
    for v in vectors:
        ctr, (k0, k1), expected = v[:4], v[4:6], v[6:10]
        c = (ctypes.c_uint32 * 4)(*ctr)
        out = (ctypes.c_uint32 * 4)()
        host.fastinit_host_philox(c, k0, k1, out)
        assert list(out) == expected, f"counter {ctr} key {(k0, k1)}"


def test_constants_match_philox_py(host):
    """Every constant of the header has the bits of kernels/cpu/philox.py's."""
    from fastinit.kernels.cpu import fills as cpu
    f32 = [P.TWO_M24, P.LOG_SQRT2_F32, P.LOG_LN2_HI_F32, P.LOG_LN2_LO_F32, *P.LOG_L_F32,
           P.PIO2_F32, P.SC_X_F32, *P.SIN_F32, *P.COS_F32, *P.ERFINV_A_F32, *P.ERFINV_B_F32,
           P.ERFINV_SPLIT_F32, P.ERFINV_SHIFT_A_F32, P.ERFINV_SHIFT_B_F32,
           cpu.BELOW_ONE_F32, cpu.TINY_F32, P.FAR_C0_F32, P.FAR_K_F32, P.FAR_D3_F32]
    f64 = [P.TWO_M53, P.LOG_SQRT2_F64, P.LOG_LN2_HI_F64, P.LOG_LN2_LO_F64, *P.LOG_L_F64,
           P.PIO2_F64, P.SC_X_F64, *P.SIN_F64, *P.COS_F64, *P.ERFINV_A_F64, *P.ERFINV_B_F64,
           *P.ERFINV_C_F64, P.ERFINV_SPLIT1_F64, P.ERFINV_SPLIT2_F64, P.ERFINV_SHIFT_A_F64,
           P.ERFINV_SHIFT_B_F64, P.ERFINV_SHIFT_C_F64, cpu.BELOW_ONE_F64, cpu.TINY_F64,
           P.FAR_C0_F64, P.FAR_K_F64, P.FAR_D3_F64]
    for want, dtype, fn in ((f32, np.float32, host.fastinit_host_constants_f32),
                            (f64, np.float64, host.fastinit_host_constants_f64)):
        got = np.zeros(256, dtype)
        count = fn(got.ctypes.data)
        want = np.array(want, dtype)
        assert count == want.size
        _assert_same(got[:count], want, f"{np.dtype(dtype).name} constants")


def test_half_conversions(host):
    """bf16_bits and f16_bits round like ml_dtypes / NumPy: ties, subnormals, overflow."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2 ** 32, size=2 * 10 ** 6, dtype=np.uint64).astype(np.uint32)
    edge = np.array([0, 0x80000000, 1, 0x00800000, 0x33000000, 0x33000001, 0x337FFFFF,
                     0x38800000, 0x387FFFFF, 0x38FFE000, 0x477FEFFF, 0x477FF000, 0x477FFFFF,
                     0x47800000, 0x7F7FFFFF, 0x7F800000, 0xFF800000, 0x3F808000, 0x3F818000,
                     0x3F80FFFF, 0x7F7F8000], dtype=np.uint32)
    # float32 values that are exact ties of each half format, and one ulp either side
    m10, m7 = np.arange(2 ** 10, dtype=np.uint32), np.arange(2 ** 7, dtype=np.uint32)
    f16_ties = [(e << 23) | (m10 << 13) | d for e in range(113, 143)
                for d in (0xFFF, 0x1000, 0x1001)]
    bf16_ties = [(e << 23) | (m7 << 16) | d for e in range(0, 255)
                 for d in (0x7FFF, 0x8000, 0x8001)]
    # float16 subnormals: the points halfway between multiples of 2^-24
    halfway = (2 * np.arange(2 ** 11, dtype=np.float64) + 1) * 2.0 ** -25
    sub = halfway.astype(np.float32).view(np.uint32)
    ties = np.concatenate(f16_ties + bf16_ties + [sub - 1, sub, sub + 1]).astype(np.uint32)
    bits = np.concatenate([bits, edge, ties, ties | 0x80000000])
    v = bits.view(np.float32)
    v = v[~np.isnan(v)]
    for bf16, dtype in ((1, ml_dtypes.bfloat16), (0, np.float16)):
        out = np.empty(v.size, np.uint16)
        host.fastinit_host_half_bits(v.ctypes.data, v.size, bf16, out.ctypes.data)
        with np.errstate(over="ignore"):
            want = v.astype(dtype).view(np.uint16)
        _assert_same(out, want, np.dtype(dtype).name)


# --- the fills ------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_header_equals_numba_million(host, emulated, case, dtype_name):
    """10**6 elements at an odd offset near 2**64: element loop and kernel emulation."""
    dtype, compute, fmt = DTYPES[dtype_name]
    kernel = CASES[case][0]
    index = list(CASES).index(case) + list(DTYPES).index(dtype_name)
    seed, stream, offset = WHERE[2 + index % 3]
    n = 10 ** 6
    ref = _reference(case, dtype, n, seed, stream, offset)
    p = _params(case, compute)
    words = _words(seed, stream)

    got, base = _poisoned(n, dtype)
    assert host.fastinit_host_fill(KIND[kernel], fmt, got.ctypes.data, n, offset, *words,
                                   p.ctypes.data) == 0
    _assert_same(got, ref, f"host_fill.c {case} {dtype_name}")

    # the kernel body: aligned for the vector stores, and not
    lanes = 2 if dtype_name == "float64" else 4
    for shift, threads in ((offset % lanes, 1000), ((offset + 1) % lanes, 333)):
        got, base = _poisoned(n, dtype, shift=shift)
        before = base.view(np.uint8).copy()
        vec = emulated.fastinit_emulate_fill(KIND[kernel], fmt, got.ctypes.data, n, offset,
                                             *words, p.ctypes.data, threads)
        aligned = shift == offset % lanes
        assert vec >= 0
        assert (vec > 0) == aligned, f"vector stores {vec} for aligned={aligned}"
        _assert_same(got, ref, f"fill.cu (emulated, aligned={aligned}) {case} {dtype_name}")
        guard = base.view(np.uint8)
        lo = (16 + shift) * got.itemsize
        hi = lo + got.nbytes
        assert (guard[:lo] == before[:lo]).all() and (guard[hi:] == before[hi:]).all(), \
            "the kernel wrote outside the buffer"


@pytest.mark.parametrize("where", WHERE, ids=[f"w{i}" for i in range(len(WHERE))])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_header_equals_numba_edges(host, emulated, case, dtype_name, where):
    """Short fills (1 to 9 elements, and 4099) at every place: the edges of blocks."""
    dtype, compute, fmt = DTYPES[dtype_name]
    kernel = CASES[case][0]
    seed, stream, offset = where
    p = _params(case, compute)
    words = _words(seed, stream)
    for n in (1, 2, 3, 5, 8, 9, 4099):
        n = min(n, U64 - offset)
        ref = _reference(case, dtype, n, seed, stream, offset)
        got, _ = _poisoned(n, dtype)
        host.fastinit_host_fill(KIND[kernel], fmt, got.ctypes.data, n, offset, *words,
                                p.ctypes.data)
        _assert_same(got, ref, f"host_fill.c n={n}")
        for shift in range(2 if dtype_name == "float64" else 4):
            got, base = _poisoned(n, dtype, shift=shift)
            before = base.view(np.uint8).copy()
            emulated.fastinit_emulate_fill(KIND[kernel], fmt, got.ctypes.data, n, offset,
                                           *words, p.ctypes.data, 7)
            _assert_same(got, ref, f"fill.cu (emulated) n={n} shift={shift}")
            lo = (16 + shift) * got.itemsize
            assert (base.view(np.uint8)[:lo] == before[:lo]).all()
            assert (base.view(np.uint8)[lo + got.nbytes:] == before[lo + got.nbytes:]).all()


def test_last_element_of_the_stream(host, emulated):
    """offset + n == 2**64: the last block of the counter space."""
    for dtype_name, (dtype, compute, fmt) in DTYPES.items():
        for n in (1, 3, 6):
            offset = U64 - n
            ref = _reference("normal", dtype, n, 5, 6, offset)
            p = _params("normal", compute)
            for lib, extra in ((host.fastinit_host_fill, ()),
                               (emulated.fastinit_emulate_fill, (3,))):
                got, _ = _poisoned(n, dtype)
                lib(1, fmt, got.ctypes.data, n, offset, *_words(5, 6), p.ctypes.data, *extra)
                _assert_same(got, ref, f"{dtype_name} n={n}")


# --- the CUDA path's Python side, without a GPU --------------------------------------
def test_import_does_not_import_cupy():
    code = "import fastinit, sys; assert 'cupy' not in sys.modules, 'cupy imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


class _CudaProducer:
    """A DLPack producer that says it lives on CUDA device 0."""

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, **kw):
        return self.array.__dlpack__()

    def __dlpack_device__(self):
        return (2, 0)


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)     # import cupy -> ImportError


def test_cuda_buffer_without_cupy(no_cupy):
    from fastinit.backends import cuda
    x = np.full(8, 7.0, np.float32)
    with pytest.raises(cuda.CudaUnavailableError, match=r"fastinit\[cuda\]"):
        fi.uniform(_CudaProducer(x), seed=1)
    with pytest.raises(ValueError, match=r"CuPy"):
        fi.normal(_CudaProducer(x), seed=1)
    assert (x == 7.0).all()


def test_cuda_empty_without_cupy(no_cupy):
    from fastinit.backends import cuda
    with pytest.raises(cuda.CudaUnavailableError, match=r"device='cuda'.*fastinit\[cuda\]"):
        fi.empty((4, 4), device="cuda")
    with pytest.raises(ValueError, match=r"\bdevice\b"):
        fi.empty((4, 4), device="cuda:x")


def test_cuda_source_is_fill_cu_with_the_header(no_cupy):
    from fastinit.backends import cuda
    src = cuda.kernel_source()
    with open(os.path.join(KERNELS, "fastinit_philox.cuh")) as f:
        header = f.read()
    assert header in src and cuda.INCLUDE_LINE not in src
    from fastinit.kernels import _abi
    for kind in _abi.KINDS:
        for dtype in _abi.DTYPES:
            assert f"{_abi.cuda_kernel_name(kind, dtype)}(" in src
    with open(os.path.join(KERNELS, "fill.cu")) as f:
        assert f"#define FILL_THREADS {cuda.THREADS}\n" in f.read()
    assert "--fmad=false" in cuda.OPTIONS and not any("fast" in o for o in cuda.OPTIONS)


def test_ctl_words_follow_the_abi():
    from fastinit.kernels import _abi
    ctl = C.ctl_words(2 ** 64 - 2, 2 ** 40 + 3, 99, _abi.FMT_BF16, 7, _abi.KIND_TRUNC)
    assert ctl.size == _abi.CTL_WORDS
    got = {i: int(ctl[i]) for i in range(_abi.CTL_WORDS)}
    assert got == {_abi.CTL_OFFSET: 99, _abi.CTL_K0: 0xFFFFFFFE, _abi.CTL_K1: 0xFFFFFFFF,
                   _abi.CTL_S0: 3, _abi.CTL_S1: 2 ** 8, _abi.CTL_FMT: _abi.FMT_BF16,
                   _abi.CTL_CHUNKS: 7, _abi.CTL_KIND: _abi.KIND_TRUNC}


# --- the CUDA path end to end, on a fake CuPy that runs the emulated kernels ------------
class _FakeStream:
    def __init__(self, ptr=0):
        self.ptr, self.synced = ptr, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        self.synced += 1


class _FakeCupy:
    """What fastinit.cuda touches of CuPy, over host memory."""

    def __init__(self):
        import contextlib
        import types
        self.stream = _FakeStream()

        class ndarray:                                   # noqa: N801 (CuPy's name)
            def __new__(cls, shape, dtype, memptr):
                count = int(np.prod(shape))
                raw = (ctypes.c_uint8 * (count * np.dtype(dtype).itemsize)).from_address(
                    memptr.ptr)
                return np.frombuffer(raw, dtype).reshape(shape)

        self.ndarray = ndarray
        self.cuda = types.SimpleNamespace(
            runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, getDevice=lambda: 0),
            Device=lambda device_id=0: contextlib.nullcontext(),
            get_current_stream=lambda: self.stream,
            UnownedMemory=lambda ptr, size, owner, device_id: types.SimpleNamespace(ptr=ptr),
            MemoryPointer=lambda mem, offset: types.SimpleNamespace(ptr=mem.ptr + offset),
        )


class _FakeCudaArray:
    """A NumPy array that exports itself as DLPack device (CUDA, 0)."""

    def __init__(self, array):
        self.array, self.streams = array, []

    def __dlpack_device__(self):
        return (2, 0)

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
        if bf16:
            managed.dl_tensor.dtype.code = _dlpack.KDL_BFLOAT
        return capsule


@pytest.fixture
def fake_cuda(monkeypatch, emulated):
    """fastinit.cuda on a fake CuPy whose kernels are fill.cu's bodies on the host."""
    from fastinit.backends import cuda
    fake = _FakeCupy()
    calls = []
    kinds = {"uniform": 0, "normal": 1, "trunc": 2}
    fmts = {"f32": 0, "bf16": 1, "f16": 2, "f64": 3}

    def function(cupy, device_id, name):
        _, kernel, suffix = name.split("_")
        compute = np.float64 if suffix == "f64" else np.float32

        def launch(grid, block, args):
            ptr, n, offset, k0, k1, s0, s1, *params = args
            # CuPy marshals numpy scalars by their dtype: these must match fill.cu
            assert [type(a) for a in (ptr, n, offset)] == [np.uint64] * 3
            assert [type(a) for a in (k0, k1, s0, s1)] == [np.uint32] * 4
            assert all(type(p) is compute for p in params)
            assert block == (cuda.THREADS,) and len(grid) == 1 and grid[0] >= 1
            p = np.array(params, compute)
            calls.append((name, grid[0]))
            assert emulated.fastinit_emulate_fill(
                kinds[kernel], fmts[suffix], int(ptr), int(n), int(offset), int(k0), int(k1),
                int(s0), int(s1), p.ctypes.data, grid[0] * block[0]) >= 0
        return launch, 3                                   # a small grid: many strides

    monkeypatch.setattr(cuda, "_cupy", lambda: fake)
    monkeypatch.setattr(cuda, "_function", function)
    return fake, calls


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_cuda_path_end_to_end(fake_cuda, case, dtype_name):
    fake, calls = fake_cuda
    dtype = DTYPES[dtype_name][0]
    _, fill, kw, _ = CASES[case]
    seed, stream, offset = U64 - 1, U64 - 2, 2 ** 33 + 1
    n = 50_001
    ref = _reference(case, dtype, n, seed, stream, offset)
    got, _ = _poisoned(n, dtype)
    producer = _FakeCudaArray(got)
    assert fill(producer, **kw, seed=seed, stream=stream, offset=offset) is producer
    _assert_same(got, ref, f"{case} {dtype_name} through fastinit.cuda")
    assert producer.streams and set(producer.streams) == {1}   # legacy default stream
    assert fake.stream.synced >= 1                 # a foreign producer is synchronized
    assert calls and calls[-1][1] == 3


def test_cuda_path_constant_fans_and_refusals(fake_cuda):
    fake, _ = fake_cuda
    for dtype_name, (dtype, _, _) in DTYPES.items():
        got, _ = _poisoned(1001, dtype)
        fi.constant(_FakeCudaArray(got), 0.1)
        _assert_same(got, fi.constant(np.empty(1001, dtype), 0.1), f"constant {dtype_name}")
    w = np.empty((64, 48), np.float32)
    fi.kaiming_uniform(_FakeCudaArray(w), a=5 ** 0.5, seed=3)
    _assert_same(w, fi.kaiming_uniform(np.empty((64, 48), np.float32), a=5 ** 0.5, seed=3),
                 "kaiming_uniform (fans from the CUDA view)")
    x = np.full((8, 6), 7.0, np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        fi.uniform(_FakeCudaArray(x.T), seed=1)
    with pytest.raises(TypeError, match="float16, bfloat16"):
        fi.uniform(_FakeCudaArray(np.zeros(4, np.int32)), seed=1)
    with pytest.raises(ValueError, match=r"\blow\b"):
        fi.uniform(_FakeCudaArray(x), low=2.0, high=1.0, seed=1)
    assert (x == 7.0).all()
