"""The CUDA kernels on a GPU: bit for bit equal to the CPU fills.

Skipped unless CuPy imports and a CUDA device is present. Checks:

- CuPy buffers (``fi.empty(..., device="cuda")`` and misaligned slices of
  them) for every distribution and dtype at odd offsets, seeds and streams
  near 2**64, equal the Numba fills of the same arguments;
- torch CUDA tensors are filled in place (same ``data_ptr``), also on a
  non-default torch stream, ordered after the work already queued there,
  and on the last device while device 0 is current;
- 2-D strided destinations (``RowsOf`` over CuPy slices, non-contiguous
  torch views) are one launch and equal the CPU path;
- fills are captured into a CUDA graph once the kernels are loaded, and the
  first fill inside capture raises CudaGraphCaptureError;
- the header's Philox words on the GPU equal cuRAND's Philox4_32_10 after
  ``curand_init(seed, subsequence, 0)`` then ``curand4``, and both equal the
  Numba generator. ``curand_kernel.h`` comes from a CUDA toolkit or, with
  wheels only, from the ``nvidia-curand-cu12`` (CUDA 12) / ``nvidia-curand``
  (CUDA 13) wheel's ``include`` folder; the CCCL headers it includes come
  with CuPy.

Every buffer is poisoned on the stream that fills it, or synchronized in
between, so no check can pass by a race.
"""

import glob
import os
import shutil
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

import fastinit as fi
from conftest import assert_same_bits, bits

try:
    import cupy
except Exception as exc:       # CuPy missing, or a broken installation
    cupy, HAVE_GPU, WHY = None, False, f"CuPy is missing ({exc})"
else:
    try:
        HAVE_GPU = cupy.cuda.runtime.getDeviceCount() > 0
        WHY = "no CUDA device"
    except Exception as exc:   # no driver, or a driver older than CuPy's CUDA
        HAVE_GPU, WHY = False, f"no usable CUDA device ({exc})"

pytestmark = pytest.mark.skipif(not HAVE_GPU, reason=WHY)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
U64 = 2 ** 64
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16,
          "float64": np.float64}
CASES = {
    "uniform": (fi.uniform, dict(low=-0.3, high=0.7)),
    "masked_uniform": (fi.masked_uniform, dict(low=-2.0, high=3.0, threshold=0.25)),
    "normal": (fi.normal, dict(mean=0.5, std=2.0)),
    "trunc_central": (fi.truncated_normal, dict(mean=0.1, std=1.5, a=-1.0, b=3.0)),
    "trunc_upper_tail": (fi.truncated_normal, dict(mean=1.0, std=0.5, a=3.0, b=4.0)),
    "trunc_lower_tail": (fi.truncated_normal, dict(mean=0.0, std=2.0, a=-9.0, b=-0.5)),
    # float32 subnormal values: a build that flushes them to zero fails these
    "uniform_subnormal": (fi.uniform, dict(low=-3e-39, high=5e-39)),
    "normal_subnormal": (fi.normal, dict(mean=1e-40, std=1e-39)),
}
N = 10 ** 6 + 3
WHERE = [(0, 0, 1), (U64 - 1, U64 - 1, 5), (67280421310721, 2 ** 63 + 5, 2 ** 34 - 7),
         (U64 - 3, 1, U64 - N - 2)]


def _cpu(case, dtype, n, seed, stream, offset):
    fill, kw = CASES[case]
    out = np.empty(n, dtype)
    fill(out, **kw, seed=seed, stream=stream, offset=offset)
    return bits(out)


def _cuda_buffer(n, dtype, shift=0):
    """A poisoned CuPy array of n elements starting ``shift`` elements into an
    allocation from fi.empty (so shift != 0 misaligns it for vector stores)."""
    try:
        base = fi.empty(n + shift, dtype, device="cuda")
    except TypeError as exc:           # bfloat16 before CuPy 14
        pytest.skip(str(exc))
    base.view(cupy.uint8).fill(0xA5)
    cupy.cuda.Device().synchronize()   # poisoned before any stream fills it
    return base[shift:shift + n]


# --- CuPy buffers ---------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_cupy_equals_cpu(case, dtype_name):
    dtype = DTYPES[dtype_name]
    fill, kw = CASES[case]
    lanes = 2 if dtype_name == "float64" else 4
    for i, (seed, stream, offset) in enumerate(WHERE):
        want = _cpu(case, dtype, N, seed, stream, offset)
        # even i: aligned for the vector stores; odd i: misaligned
        shift = (offset + (i % 2)) % lanes
        out = _cuda_buffer(N, dtype, shift)
        assert fill(out, **kw, seed=seed, stream=stream, offset=offset) is out
        cupy.cuda.get_current_stream().synchronize()
        assert_same_bits(bits(out), want, f"{case} {dtype_name} at {(seed, stream, offset)}")


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_cupy_short_fills_and_edges(dtype_name):
    """1..9 elements at every alignment, and the last elements of the counter space."""
    dtype = DTYPES[dtype_name]
    for n in range(1, 10):
        for shift in range(4):
            for offset in (0, 1, 2, 3, 2 ** 32 * 4 - 2, U64 - n):
                want = _cpu("normal", dtype, n, 9, 10, offset)
                out = _cuda_buffer(n, dtype, shift)
                fi.normal(out, **CASES["normal"][1], seed=9, stream=10, offset=offset)
                assert_same_bits(bits(out), want, f"n={n} shift={shift} offset={offset}")


def test_cupy_guard_bytes_untouched():
    base = _cuda_buffer(1000, np.float32)
    fi.uniform(base[3:997], seed=1, offset=3)
    host = bits(base)
    assert (host[:3] == 0xA5A5A5A5).all() and (host[997:] == 0xA5A5A5A5).all()
    assert_same_bits(host[3:997], _cpu("uniform", np.float32, 994, 1, 0, 3), "middle")


def test_cupy_non_default_stream():
    out = _cuda_buffer(N, np.float32)
    with cupy.cuda.Stream(non_blocking=True) as s:
        fi.truncated_normal(out, seed=4, stream=2, offset=11)
        s.synchronize()
    want = fi.truncated_normal(np.empty(N, np.float32), seed=4, stream=2, offset=11)
    assert_same_bits(bits(out), bits(want), "non-default CuPy stream")


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_cupy_constant(dtype_name):
    dtype = DTYPES[dtype_name]
    out = _cuda_buffer(1001, dtype)
    fi.constant(out, 0.1)
    cupy.cuda.get_current_stream().synchronize()
    assert_same_bits(bits(out), bits(fi.constant(np.empty(1001, dtype), 0.1)), "constant")


def test_empty_cuda_alignment():
    for align in (16, 256, 4096):
        x = fi.empty((3, 5), "float32", device="cuda", align=align)
        assert isinstance(x, cupy.ndarray) and x.shape == (3, 5) and x.data.ptr % align == 0


def test_cupy_rows():
    """RowsOf over a CuPy column slice: one row-strided fill, equal to the CPU
    rows at the same global indices; the columns outside untouched."""
    from fastinit.backends import cuda
    for dtype_name, dtype in DTYPES.items():
        base = _cuda_buffer(300 * 257, dtype).reshape(300, 257)
        view = base[:, 3:200]
        for row_step, offset in ((None, 5), (1000, U64 - 299 * 1000 - 197)):
            fi.normal(cuda.RowsOf(view, row_step), 0.5, 2.0, seed=U64 - 1, stream=2,
                      offset=offset)
            cupy.cuda.get_current_stream().synchronize()
            step = 197 if row_step is None else row_step
            want = np.stack([_cpu("normal", dtype, 197, U64 - 1, 2, offset + r * step)
                             for r in range(300)])
            host = bits(base)
            poison = np.iinfo(host.dtype).max // 255 * 0xA5
            assert_same_bits(host[:, 3:200], want, f"rows {dtype_name} {row_step}")
            assert (host[:, :3] == poison).all() and (host[:, 200:] == poison).all()


def test_graph_capture():
    """After load_kernels, a fill is captured (torch.cuda.graph) and replays the
    same values; the first fill on a device inside capture is refused clearly."""
    from fastinit.backends import cuda
    if torch is None or not torch.cuda.is_available():
        pytest.skip("torch with CUDA is not installed")
    t = torch.zeros(N, device="cuda")
    cuda.load_kernels(t.device.index)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fi.normal(t, 0.5, 2.0, seed=6, stream=1, offset=3)
    t.zero_()
    g.replay()
    torch.cuda.synchronize()
    assert_same_bits(bits(t), _cpu("normal", np.float32, N, 6, 1, 3), "graph replay")

    saved = dict(cuda._modules), dict(cuda._functions)
    cuda._modules.clear()
    cuda._functions.clear()
    out = cupy.zeros(1000, cupy.float32)
    s = cupy.cuda.Stream(non_blocking=True)
    try:
        with s:
            s.begin_capture()
            try:
                with pytest.raises(cuda.CudaGraphCaptureError, match="load_kernels"):
                    fi.uniform(out, seed=1)
            finally:
                s.end_capture()
    finally:
        cuda._modules.update(saved[0])
        cuda._functions.update(saved[1])
    assert int(cupy.count_nonzero(out)) == 0


# --- torch ----------------------------------------------------------------------------
try:
    import torch
except ImportError:
    torch = None
TORCH = {}
if torch is not None:
    TORCH = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
             "float64": torch.float64}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_torch_in_place(case, dtype_name):
    if torch is None or not torch.cuda.is_available():
        pytest.skip("torch with CUDA is not installed")
    fill, kw = CASES[case]
    seed, stream, offset = WHERE[1]
    t = torch.empty(N, dtype=TORCH[dtype_name], device="cuda")
    ptr = t.data_ptr()
    assert fill(t, **kw, seed=seed, stream=stream, offset=offset) is t
    assert t.data_ptr() == ptr
    assert_same_bits(bits(t), _cpu(case, DTYPES[dtype_name], N, seed, stream, offset),
                 f"torch {case} {dtype_name}")


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_torch_non_default_stream(dtype_name):
    """The fill runs on torch's current stream, after what is queued there."""
    if torch is None or not torch.cuda.is_available():
        pytest.skip("torch with CUDA is not installed")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        t = torch.empty((1000, 1003), dtype=TORCH[dtype_name], device="cuda")
        ptr = t.data_ptr()
        if hasattr(torch.cuda, "_sleep"):
            torch.cuda._sleep(50_000_000)     # keep the stream busy ...
        t.fill_(3.0)                          # ... so this would land after a racing fill
        fi.normal(t, mean=0.5, std=2.0, seed=2, stream=3, offset=7)
        got = bits(t.reshape(-1))            # copied on s, after the fill
    s.synchronize()
    assert t.data_ptr() == ptr
    assert_same_bits(got, _cpu("normal", DTYPES[dtype_name], t.numel(), 2, 3, 7),
                 f"torch stream {dtype_name}")


def test_torch_stream_on_last_device():
    """A tensor on the last device, filled on a non-default stream of it while
    device 0 is current (the stream is wrapped inside its device's context)."""
    if torch is None or not torch.cuda.is_available():
        pytest.skip("torch with CUDA is not installed")
    last = torch.cuda.device_count() - 1
    torch.cuda.set_device(0)
    s = torch.cuda.Stream(device=last)
    t = torch.full((513, 1001), 3.0, device=f"cuda:{last}")
    torch.cuda.synchronize(last)
    prev = torch.cuda.current_stream(last)
    torch.cuda.set_stream(s)            # may make `last` current: make device 0 current again
    torch.cuda.set_device(0)
    try:
        assert torch.cuda.current_device() == 0 and torch.cuda.current_stream(last) == s
        fi.uniform(t, -1.0, 1.0, seed=U64 - 7, stream=5)
    finally:
        torch.cuda.set_stream(prev)
        torch.cuda.set_device(0)
    s.synchronize()
    got = bits(t.reshape(-1))
    want = fi.uniform(np.empty(t.numel(), np.float32), -1.0, 1.0, seed=U64 - 7, stream=5)
    assert_same_bits(got, bits(want), f"cuda:{last} stream")


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_torch_column_view_one_fill(dtype_name):
    """fastinit.torch on a CUDA column slice: one row-strided fill in place, the
    values of the same call on a CPU view, the other columns untouched."""
    if torch is None or not torch.cuda.is_available():
        pytest.skip("torch with CUDA is not installed")
    import fastinit.torch as ft
    dt = TORCH[dtype_name]
    g = torch.full((700, 900), 9.0, dtype=dt, device="cuda")
    c = torch.full((700, 900), 9.0, dtype=dt)
    ft.trunc_normal_(g[:, 100:750], 0.0, 0.02, -0.04, 0.04, seed=21, stream=4)
    ft.trunc_normal_(c[:, 100:750], 0.0, 0.02, -0.04, 0.04, seed=21, stream=4)
    bits_t = torch.int16 if dt == torch.bfloat16 else torch.int32
    assert torch.equal(g.cpu().view(bits_t), c.view(bits_t))


def test_torch_kaiming_on_cuda_matches_cpu():
    if torch is None or not torch.cuda.is_available():
        pytest.skip("torch with CUDA is not installed")
    t = torch.empty((256, 300), dtype=torch.bfloat16, device="cuda")
    fi.kaiming_uniform(t, a=5 ** 0.5, seed=3)
    ref = torch.empty((256, 300), dtype=torch.bfloat16)
    fi.kaiming_uniform(ref, a=5 ** 0.5, seed=3)
    assert torch.equal(t.cpu().view(torch.int16), ref.view(torch.int16))


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_torch_twin_on_large_cuda_view_matches_cpu(dtype_name):
    """fastinit.torch on a non-contiguous CUDA view above the scratch size:
    the bands are drawn on the GPU and copied into the view, and the values
    equal the same call on a CPU view."""
    if torch is None or not torch.cuda.is_available():
        pytest.skip("torch with CUDA is not installed")
    import fastinit.torch as ft
    dt = TORCH[dtype_name]
    g = torch.full((700, 900), 9.0, dtype=dt, device="cuda")
    c = torch.full((700, 900), 9.0, dtype=dt)
    assert g.t().numel() > ft.SCRATCH_ELEMENTS
    ft.normal_(g.t(), 0.5, 2.0, seed=21, stream=4)
    ft.normal_(c.t(), 0.5, 2.0, seed=21, stream=4)
    bits = torch.int16 if dt == torch.bfloat16 else torch.int32
    assert torch.equal(g.cpu().view(bits), c.view(bits))


# --- the generator against cuRAND ---------------------------------------------------------
CURAND_SRC = r"""
#include <curand_kernel.h>
extern "C" __global__ void curand_words(unsigned long long seed,
                                        const unsigned long long* subsequences,
                                        unsigned int nblocks, unsigned int* out)
{
    const unsigned int t = blockIdx.x * blockDim.x + threadIdx.x;
    curandStatePhilox4_32_10_t st;
    curand_init(seed, subsequences[t], 0, &st);
    for (unsigned int i = 0; i < nblocks; ++i) {
        const uint4 r = curand4(&st);
        unsigned int* o = out + 4ull * ((unsigned long long)t * nblocks + i);
        o[0] = r.x; o[1] = r.y; o[2] = r.z; o[3] = r.w;
    }
}
"""

HEADER_SRC = r"""
extern "C" __global__ void header_words(unsigned long long seed,
                                        const unsigned long long* subsequences,
                                        unsigned int nblocks, unsigned int* out)
{
    const unsigned int t = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned long long s = subsequences[t];
    for (unsigned int i = 0; i < nblocks; ++i) {
        const philox4x32_block b = philox_stream_block(i, (fi_u32)seed, (fi_u32)(seed >> 32),
                                                       (fi_u32)s, (fi_u32)(s >> 32));
        unsigned int* o = out + 4ull * ((unsigned long long)t * nblocks + i);
        o[0] = b.x0; o[1] = b.x1; o[2] = b.x2; o[3] = b.x3;
    }
}
"""


def _include_dirs(*markers):
    """Folders that hold every one of ``markers``: CuPy's bundled CCCL headers,
    the CUDA toolkit's, and those of the nvidia-* wheels."""
    roots = [os.environ.get("CUDA_PATH", ""), os.environ.get("CUDA_HOME", ""),
             "/usr/local/cuda"]
    try:
        roots.append(cupy.cuda.get_cuda_path() or "")
    except Exception:
        pass
    dirs = [os.path.join(os.path.dirname(cupy.__file__), "_core", "include", "cupy",
                         "_cccl", "libcudacxx")]
    for root in filter(None, roots):
        dirs += [os.path.join(root, "include"), os.path.join(root, "include", "cccl")]
    for site in sys.path:
        dirs += glob.glob(os.path.join(site, "nvidia", "*", "include"))
        dirs += glob.glob(os.path.join(site, "nvidia", "*", "include", "cccl"))
    return [d for d in dict.fromkeys(dirs)
            if all(os.path.exists(os.path.join(d, m)) for m in markers)]


def curand_options():
    """NVRTC options for CURAND_SRC: cuRAND's headers, and the CCCL headers that
    curand_kernel.h includes (<nv/target>, <cuda/std/...>; CCCL wants C++17).
    None if cuRAND's headers are missing."""
    curand = _include_dirs("curand_kernel.h")
    if not curand:
        return None
    cccl = [d for d in _include_dirs(os.path.join("nv", "target"),
                                     os.path.join("cuda", "std", "type_traits"))
            if d != curand[0]]
    return ("--std=c++17", f"-I{curand[0]}") + tuple(f"-I{d}" for d in cccl[:1])


def _curand_kernel():
    """cuRAND's kernel: NVRTC first, then nvcc to a cubin; skips if neither builds."""
    options = curand_options()
    if options is None:
        pytest.skip("curand_kernel.h not found (no CUDA toolkit or nvidia-curand headers)")
    errors = []
    try:
        return cupy.RawModule(code=CURAND_SRC, options=options).get_function("curand_words")
    except Exception as exc:
        errors.append(f"NVRTC {options}: {exc}")
    nvcc = shutil.which("nvcc")
    if nvcc:
        import tempfile
        arch = f"sm_{cupy.cuda.Device().compute_capability}"     # e.g. "90"
        with tempfile.TemporaryDirectory() as tmp:
            src, cubin = os.path.join(tmp, "curand_words.cu"), os.path.join(tmp, "c.cubin")
            with open(src, "w") as f:
                f.write(CURAND_SRC)
            proc = subprocess.run([nvcc, "-cubin", f"-arch={arch}", options[1], src,
                                   "-o", cubin], capture_output=True, text=True)
            if proc.returncode == 0:
                return cupy.RawModule(path=cubin).get_function("curand_words")
            errors.append(f"nvcc: {proc.stderr[-2000:]}")
    pytest.skip("could not build the cuRAND kernel: " + " | ".join(errors))


def test_philox_words_equal_curand():
    from fastinit.backends import cuda
    import numba
    from fastinit.kernels.cpu.philox import philox4x32 as inner
    # the kernels' helpers have no Python entry point of their own
    philox4x32 = numba.njit(lambda c0, c1, c2, c3, k0, k1: inner(c0, c1, c2, c3, k0, k1))
    with open(os.path.join(ROOT, "kernels", "cuda", "fastinit_philox.cuh")) as f:
        header = f.read()
    # integer operations only, so CuPy's -ftz=true does not matter here
    ours = cupy.RawModule(code=header + HEADER_SRC, options=cuda.OPTIONS)
    ours = ours.get_function("header_words")
    theirs = _curand_kernel()
    subs = np.array([0, 1, 2, 0xFFFFFFFF, 2 ** 32, 2 ** 40 + 12345, 2 ** 63, U64 - 2, U64 - 1,
                     0x243F6A8885A308D3, 0x13198A2E03707344, 7], dtype=np.uint64)
    nblocks = 6
    for seed in (0, 1, 67280421310721, 2 ** 32 - 1, 2 ** 32, 0xA4093822299F31D0, U64 - 1):
        d_subs = cupy.asarray(subs)
        got = {}
        for name, fn in (("header", ours), ("curand", theirs)):
            out = cupy.zeros(subs.size * nblocks * 4, dtype=cupy.uint32)
            fn((1,), (subs.size,), (np.uint64(seed), d_subs, np.uint32(nblocks), out))
            got[name] = cupy.asnumpy(out).reshape(subs.size, nblocks, 4)
        want = np.zeros_like(got["header"])
        key = (np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32))
        for i, s in enumerate(subs.tolist()):
            for j in range(nblocks):
                words = philox4x32(np.uint64(j), np.uint64(0), np.uint64(s & 0xFFFFFFFF),
                                   np.uint64(s >> 32), *key)
                want[i, j] = [int(w) for w in words]
        assert (got["header"] == want).all(), f"header != Numba for seed {seed}"
        assert (got["curand"] == want).all(), f"cuRAND != Numba for seed {seed}"
