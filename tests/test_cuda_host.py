"""The CUDA header and kernels, checked on the CPU against the Numba kernels.

No GPU is needed:

- ``kernels/cuda/fastinit_philox.cuh`` is compiled with the system C compiler
  into ``tests/c/host_fill.c`` (element by element, from the global index
  alone);
- ``kernels/cuda/fill.cu``'s ``__global__`` kernels are compiled as host C++
  through ``tests/c/cuda_host_shim.h`` (``tests/cuda_harness.py``): a launch
  runs every (block, thread) of its grid, grid-stride loops, vector stores
  and the ``__*_rn`` intrinsics included, and every store is checked for
  alignment and counted per element, so a test sees each element written
  exactly once and the guard elements around the buffer never.

Both must equal ``fi.uniform``, ``fi.masked_uniform``, ``fi.normal`` and
``fi.truncated_normal`` (the Numba kernels) bit for bit; the parameters come
from ``fastinit._contract`` exactly as the Numba path gets them, so the
comparison checks the kernels, not the host rounding. The launch geometry
is the CUDA backend's own (``fastinit.backends.cuda.launch_grid``, and the
backend itself on a fake CuPy for grids of 1, 2, 3, 7 and 31 blocks).
:func:`test_planted_bugs_are_caught` shows that an off-by-one in a tail
store, a stride that ignores ``gridDim`` and a row stride taken as the row
length make these checks fail.
"""

import ctypes
import math
import os
import shutil

import ml_dtypes
import numpy as np
import pytest

import fastinit as fi
from cuda_harness import (FakeCudaArray, FakeCupy, assert_same, assert_written_once, build,
                          build_shim, compiler, install, poisoned)
from fastinit import _contract as C
from fastinit.backends import cuda
from fastinit.kernels import _abi
from fastinit.kernels.cpu import philox as P

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "kernels", "cuda")
KAT = os.path.join(ROOT, "tests", "kat_vectors.txt")
CFLAGS = ["-O2", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC"]
U64 = 2 ** 64

DTYPES = {  # name -> (dtype, compute type, fmt code of kernels/_abi.py)
    "float32": (np.float32, np.float32, _abi.FMT_F32),
    "bfloat16": (ml_dtypes.bfloat16, np.float32, _abi.FMT_BF16),
    "float16": (np.float16, np.float32, _abi.FMT_F16),
    "float64": (np.float64, np.float64, _abi.FMT_F64),
}
KIND = dict(_abi.KINDS)
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
@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """tests/c/host_fill.c (the header, element by element) through ctypes."""
    out = str(tmp_path_factory.mktemp("cuda_host") / "host_fill.so")
    build([compiler("cc"), "-std=c99", *CFLAGS, "-I", KERNELS,
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
def shim(tmp_path_factory):
    """kernels/cuda/fill.cu's kernels as host C++ (tests/cuda_harness.py)."""
    return build_shim(tmp_path_factory.mktemp("cuda_shim"))


def _words(seed, stream):
    return seed & 0xFFFFFFFF, seed >> 32, stream & 0xFFFFFFFF, stream >> 32


def _params(case, compute):
    kernel, _, _, make = CASES[case]
    p = np.ascontiguousarray(make(compute), dtype=compute)
    assert p.shape == (len(_abi.PARAMS[kernel]),), \
        f"the host parameters of {case} changed shape: update kernels/ and backends/cuda.py"
    return p


def _reference(case, dtype, n, seed, stream, offset):
    _, fill, kw, _ = CASES[case]
    out = np.empty(n, dtype)
    fill(out, **kw, seed=seed, stream=stream, offset=offset)
    return out


def _lanes(dtype_name):
    return 2 if dtype_name == "float64" else 4


def _launch_flat(shim, case, dtype_name, out, n, offset, seed, stream, cap):
    """Kernel fastinit_<kind>_<suffix> over ``out`` as the backend launches it: its
    argument order and types, THREADS per block, launch_grid(...) blocks."""
    dtype, compute, _ = DTYPES[dtype_name]
    kernel = CASES[case][0]
    lanes = _lanes(dtype_name)
    blocks = (offset + n - 1) // lanes - offset // lanes + 1
    grid = cuda.launch_grid(blocks, cap)
    args = (out.ctypes.data, np.uint64(n), np.uint64(offset),
            *map(np.uint32, _words(seed, stream)), *_params(case, compute))
    shim.launch(_abi.cuda_kernel_name(kernel, dtype_name), grid, cuda.THREADS, args)
    return grid


def _launch_rows(shim, case, dtype_name, ptr, rows, cols, ld, offset, row_step, seed, stream,
                 cap):
    dtype, compute, _ = DTYPES[dtype_name]
    kernel = CASES[case][0]
    lanes = _lanes(dtype_name)
    per_row = (cols + lanes - 2) // lanes + 1
    grid = cuda.launch_grid(rows * per_row, cap)
    args = (ptr, np.uint64(rows), np.uint64(cols), np.uint64(ld), np.uint64(offset),
            np.uint64(row_step), *map(np.uint32, _words(seed, stream)),
            *_params(case, compute))
    shim.launch(_abi.cuda_kernel_name(kernel, dtype_name) + cuda.ROWS_SUFFIX, grid,
                cuda.THREADS, args)
    return grid


def _checked_flat(shim, case, dtype_name, n, seed, stream, offset, shift, cap, guard=16):
    """One flat launch into a poisoned, watched buffer, checked against the Numba
    fill: values, each element stored once, guards untouched, vector stores
    exactly when aligned. Returns the grid."""
    dtype = DTYPES[dtype_name][0]
    ref = _reference(case, dtype, n, seed, stream, offset)
    got, base = poisoned(n, dtype, shift=shift, guard=guard)
    before = base.copy()
    counts = shim.watch(base)
    try:
        grid = _launch_flat(shim, case, dtype_name, got, n, offset, seed, stream, cap)
        stats = shim.stats()
    finally:
        shim.unwatch()
    what = f"{case} {dtype_name} n={n} offset={offset} shift={shift} grid={grid}"
    assert_same(got, ref, what)
    inside = np.zeros(base.size, bool)
    inside[guard + shift:guard + shift + n] = True
    lanes = _lanes(dtype_name)
    aligned = (shift - offset) % lanes == 0
    full = (offset + n) // lanes - -(-offset // lanes) > 0     # a whole block inside
    assert_written_once(counts, inside, stats, what, vector=aligned and full)
    assert_same(base[~inside], before[~inside], f"{what}: guard elements")
    return grid


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
        assert_same(got[:count], want, f"{np.dtype(dtype).name} constants")


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
        assert_same(out, want, np.dtype(dtype).name)


# --- the kernels -----------------------------------------------------------------------
def test_shim_has_every_kernel(shim):
    """The kernels the backend launches exist, with the argument types it passes."""
    letter = {"float32": "f", "float64": "d"}
    want = {"fastinit_selfcheck": "fffp"}
    for kind, names in _abi.PARAMS.items():
        for dtype_name, d in _abi.DTYPES.items():
            p = letter[d.compute] * len(names)
            name = _abi.cuda_kernel_name(kind, dtype_name)
            want[name] = "pQQIIII" + p
            want[name + cuda.ROWS_SUFFIX] = "pQQQQQIIII" + p
    assert set(shim.names()) == set(want)
    assert {name: shim.signature(name) for name in want} == want


def test_selfcheck_kernel(shim):
    """fastinit_selfcheck, built as the contract wants, gives the backend's SELFCHECK."""
    out = np.zeros(8, np.uint32)
    tiny = np.array(1, np.uint32).view(np.float32)[()]
    shim.launch("fastinit_selfcheck", 1, 1,
                (tiny, np.float32(1 + 2.0 ** -12), np.float32(-(1 + 2.0 ** -11)), out))
    assert out[:len(cuda.SELFCHECK)].tolist() == cuda.SELFCHECK


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_header_equals_numba_million(host, shim, case, dtype_name):
    """10**6 elements at an odd offset near 2**64: element loop and the kernels."""
    dtype, compute, fmt = DTYPES[dtype_name]
    kernel = CASES[case][0]
    index = list(CASES).index(case) + list(DTYPES).index(dtype_name)
    seed, stream, offset = WHERE[2 + index % 3]
    n = 10 ** 6
    ref = _reference(case, dtype, n, seed, stream, offset)
    p = _params(case, compute)

    got, base = poisoned(n, dtype)
    assert host.fastinit_host_fill(KIND[kernel], fmt, got.ctypes.data, n, offset,
                                   *_words(seed, stream), p.ctypes.data) == 0
    _assert_host(got, ref, f"host_fill.c {case} {dtype_name}")

    # the kernels, a 4-block grid striding: aligned for the vector stores or not
    # (alternating; test_header_equals_numba_edges has both everywhere)
    shift = (offset + index % 2) % _lanes(dtype_name)
    assert _checked_flat(shim, case, dtype_name, n, seed, stream, offset, shift, 4) == 4


def _assert_host(got, ref, what):
    assert_same(got, ref, what)


@pytest.mark.parametrize("where", WHERE, ids=[f"w{i}" for i in range(len(WHERE))])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_header_equals_numba_edges(host, shim, case, dtype_name, where):
    """Short fills (1 to 9 elements, and 4099) at every place: the edges of blocks."""
    dtype, compute, fmt = DTYPES[dtype_name]
    kernel = CASES[case][0]
    seed, stream, offset = where
    p = _params(case, compute)
    for n in (1, 2, 3, 5, 8, 9, 4099):
        n = min(n, U64 - offset)
        ref = _reference(case, dtype, n, seed, stream, offset)
        got, _ = poisoned(n, dtype)
        host.fastinit_host_fill(KIND[kernel], fmt, got.ctypes.data, n, offset,
                                *_words(seed, stream), p.ctypes.data)
        _assert_host(got, ref, f"host_fill.c n={n}")
        for shift in range(_lanes(dtype_name)):
            _checked_flat(shim, case, dtype_name, n, seed, stream, offset, shift, 7)


def test_last_element_of_the_stream(host, shim):
    """offset + n == 2**64: the last block of the counter space."""
    for dtype_name, (dtype, compute, fmt) in DTYPES.items():
        for n in (1, 3, 6):
            offset = U64 - n
            ref = _reference("normal", dtype, n, 5, 6, offset)
            got, _ = poisoned(n, dtype)
            host.fastinit_host_fill(1, fmt, got.ctypes.data, n, offset, *_words(5, 6),
                                    _params("normal", compute).ctypes.data)
            _assert_host(got, ref, f"host_fill.c {dtype_name} n={n}")
            for shift in range(_lanes(dtype_name)):
                _checked_flat(shim, "normal", dtype_name, n, 5, 6, offset, shift, 2)


# --- the backend's launch geometry ----------------------------------------------------------
# (seed, stream, offset) for the geometry checks: near 0, near 2**34, near 2**64
GEOMETRY_WHERE = [(3, 1, 5), (U64 - 1, U64 - 2, 2 ** 34 - 3), (U64 - 2, U64 - 1, None)]


@pytest.mark.parametrize("grid", [1, 2, 3, 7, 31])
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_launch_geometry(monkeypatch, shim, dtype_name, grid):
    """Through the backend on a fake CuPy whose device has ``grid`` multiprocessors
    (one resident block each: a wave of ``grid`` blocks): every size residue mod 8,
    fills shorter than a block, of a few blocks, and beyond one wave (grid-stride
    loops), at offsets near 0, 2**34 and 2**64, seeds and streams near 2**64,
    aligned and not; every distribution; guard elements on both sides."""
    fake = FakeCupy(shim, sms=grid)
    install(monkeypatch, fake)
    dtype = DTYPES[dtype_name][0]
    lanes = _lanes(dtype_name)
    wave = grid * cuda.THREADS * lanes                     # elements of one full wave
    names = list(CASES)
    seen = set()
    for size_i, base_n in enumerate((0, 16 * lanes, wave, 2 * wave + 5 * lanes)):
        for residue in range(8):
            n = max(1, base_n + residue)
            i = size_i * 8 + residue
            case = names[i % len(names)]
            seed, stream, offset = GEOMETRY_WHERE[i % 3]
            offset = U64 - n - residue if offset is None else offset
            shift = i % lanes
            _, fill, kw, _ = CASES[case]
            ref = _reference(case, dtype, n, seed, stream, offset)
            got, base = poisoned(n, dtype, shift=shift)
            before = base.copy()
            counts = shim.watch(base)
            fake.launches.clear()
            try:
                fill(FakeCudaArray(got), **kw, seed=seed, stream=stream, offset=offset)
                stats = shim.stats()
            finally:
                shim.unwatch()
            what = f"{case} {dtype_name} n={n} offset={offset} shift={shift} grid cap {grid}"
            assert_same(got, ref, what)
            inside = np.zeros(base.size, bool)
            inside[16 + shift:16 + shift + n] = True
            assert_written_once(counts, inside, stats, what)
            assert_same(base[~inside], before[~inside], f"{what}: guards")
            (name, launched, block, _), = [x for x in fake.launches
                                           if x[0] != "fastinit_selfcheck"]
            blocks = (offset + n - 1) // lanes - offset // lanes + 1
            assert block == (cuda.THREADS,) and launched == (cuda.launch_grid(blocks, grid),)
            seen.add((launched[0], blocks > launched[0] * cuda.THREADS))
            seen.add(case)
    assert (grid, True) in seen, "no fill went beyond one wave"
    assert seen >= set(CASES)


# --- the 2-D (row-strided) kernels -----------------------------------------------------------
ROWS_SHAPES = [  # (rows, cols, ld - cols, row_step - cols)
    (1, 1, 0, 0), (3, 5, 2, 0), (7, 9, 3, 11), (5, 4, 0, 1), (13, 33, 7, 1000),
    (2, 1000, 13, 2 ** 40), (40, 6, 1, 0), (9, 2, 5, 3),
]


def _rows_reference(case, dtype, rows, cols, offset, row_step, seed, stream):
    out = np.empty((rows, cols), dtype)
    for r in range(rows):
        out[r] = _reference(case, dtype, cols, seed, stream, offset + r * row_step)
    return out


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_rows_kernels(shim, dtype_name):
    """Element (r, c) at out[r * ld + c] has global index offset + r * row_step + c:
    rows of any length at any stride, aligned or not, offsets near 2**64, small
    grids (many rows per thread); the gaps between rows are never stored."""
    dtype = DTYPES[dtype_name][0]
    names = list(CASES)
    for i, (rows, cols, pad, extra) in enumerate(ROWS_SHAPES):
        ld, row_step = cols + pad, cols + extra
        case = names[(i + len(dtype_name)) % len(names)]
        seed, stream = (U64 - 1 - i, i) if i % 2 else (i, U64 - 1)
        offset = U64 - (rows - 1) * row_step - cols - i if i % 3 == 1 else 3 * i + 1
        for shift in (0, 1):
            for cap in (1, 3):
                ref = _rows_reference(case, dtype, rows, cols, offset, row_step, seed, stream)
                span = (rows - 1) * ld + cols
                got, base = poisoned(span, dtype, shift=shift)
                before = base.copy()
                counts = shim.watch(base)
                try:
                    _launch_rows(shim, case, dtype_name, got.ctypes.data, rows, cols, ld, offset,
                                 row_step, seed, stream, cap)
                    stats = shim.stats()
                finally:
                    shim.unwatch()
                what = (f"{case} {dtype_name} rows={rows} cols={cols} ld={ld} "
                        f"row_step={row_step} offset={offset} shift={shift} cap={cap}")
                view = np.lib.stride_tricks.as_strided(got, (rows, cols),
                                                       (ld * got.itemsize, got.itemsize))
                assert_same(view.copy(), ref, what)
                inside = np.zeros(base.size, bool)
                idx = 16 + shift + (np.arange(rows)[:, None] * ld + np.arange(cols)).reshape(-1)
                inside[idx] = True
                assert_written_once(counts, inside, stats, what)
                assert_same(base[~inside], before[~inside], f"{what}: gaps and guards")


# --- the checks can fail ------------------------------------------------------------------
MUTANTS = {
    # a tail store one element too far
    "tail_off_by_one": ("if (k + 3 < n) st.one(k + 3, v[3]);",
                        "if (k + 3 <= n) st.one(k + 3, v[3]);"),
    # a grid-stride loop that strides by one block, ignoring gridDim
    "stride_ignores_griddim": ("#define FI_NTHREADS ((fi_u64)gridDim.x * blockDim.x)",
                               "#define FI_NTHREADS ((fi_u64)blockDim.x)"),
    # rows placed at the row length instead of the row stride
    "row_stride_as_length": ("const Store st = {out + r * ld};",
                             "(void)ld; const Store st = {out + r * cols};"),
}


def _geometry_checks(shim):
    """A compact run of the checks above: flat fills of every residue mod 8 around a
    wave of 3 blocks, and a strided 2-D fill."""
    for n in range(3 * cuda.THREADS * 4 + 1, 3 * cuda.THREADS * 4 + 9):
        _checked_flat(shim, "uniform", "float32", n, 1, 2, 5, 1, 3)
    rows, cols, ld = 9, 10, 13
    ref = _rows_reference("normal", np.float32, rows, cols, 7, cols, 1, 2)
    got, base = poisoned((rows - 1) * ld + cols, np.float32)
    counts = shim.watch(base)
    try:
        _launch_rows(shim, "normal", "float32", got.ctypes.data, rows, cols, ld, 7, cols, 1, 2,
                     2)
        stats = shim.stats()
    finally:
        shim.unwatch()
    inside = np.zeros(base.size, bool)
    inside[16 + (np.arange(rows)[:, None] * ld + np.arange(cols)).reshape(-1)] = True
    assert_written_once(counts, inside, stats, "rows")
    assert_same(np.lib.stride_tricks.as_strided(got, (rows, cols), (ld * 4, 4)).copy(), ref,
                "rows")


def test_planted_bugs_are_caught(tmp_path, shim):
    """fill.cu with an off-by-one in a tail store, a grid stride that ignores gridDim
    (which writes the right values, several times over) or a row stride taken as
    the row length: the checks of this file fail for each, and pass for fill.cu."""
    _geometry_checks(shim)
    with open(os.path.join(KERNELS, "fill.cu")) as f:
        source = f.read()
    for name, (old, new) in MUTANTS.items():
        assert source.count(old) == 1, f"{name}: fill.cu changed; update MUTANTS"
        folder = tmp_path / name
        folder.mkdir()
        (folder / "fill.cu").write_text(source.replace(old, new))
        shutil.copy(os.path.join(KERNELS, "fastinit_philox.cuh"), folder)
        mutant = build_shim(folder, kernel_dir=folder)
        with pytest.raises(AssertionError):
            _geometry_checks(mutant)
