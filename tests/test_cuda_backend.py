"""fastinit/backends/cuda.py without a GPU: on a fake CuPy whose kernels are
kernels/cuda/fill.cu compiled as host C++ (tests/cuda_harness.py).

- what is missing (CuPy, NVRTC, a driver, a device) or does not match (a
  CuPy wheel newer than the driver) is a CudaUnavailableError that says
  which, with the exact install command, and the buffer is left untouched;
- a buffer on device 1 while device 0 is current: the stream is made inside
  device 1's context (the fake, like CuPy, refuses a stream of another
  device);
- the disk cache: files readable as the umask allows, a bad hit rebuilt,
  nothing left behind when the cache cannot be written, XDG_CACHE_HOME;
- CUDA-graph capture: the first fill inside capture says so, a fill after
  load_kernels is captured;
- the row-strided destination: RowsOf / as_rows_target / fill_rows, and
  fastinit.torch's views and DTensor column shards through it, each one
  launch, bit-equal to the CPU path;
- constant, fans and refusals through the CUDA backend.
"""

import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import torch

import fastinit as fi
from cuda_harness import FakeCudaArray, FakeCupy, assert_same, build_shim, install, poisoned
from fastinit import _dlpack
from fastinit.backends import cuda

U64 = 2 ** 64
DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16,
          "float64": np.float64}
TORCH = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
         "float64": torch.float64}


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    return build_shim(tmp_path_factory.mktemp("cuda_backend_shim"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("FASTINIT_CACHE_DIR", str(folder))
    return folder


def _fake(monkeypatch, shim, **kw):
    fake = FakeCupy(shim, **kw)
    builds = install(monkeypatch, fake)
    return fake, builds


def _fills(fake):
    return [x for x in fake.launches if x[0] != "fastinit_selfcheck"]


def _untouched(got, what):
    assert (got.view(np.uint8) == 0xA5).all(), f"{what}: the buffer was written"


# --- what is missing, and what to install ----------------------------------------------
def test_import_does_not_import_cupy():
    code = "import fastinit, sys; assert 'cupy' not in sys.modules, 'cupy imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)          # import cupy -> ImportError
    got, _ = poisoned(8, np.float32)
    with pytest.raises(cuda.CudaUnavailableError,
                       match=r"needs CuPy.*pip install 'fastinit\[cuda12\]'.*"
                             r"pip install 'fastinit\[cuda13\]'"):
        fi.uniform(FakeCudaArray(got), seed=1)
    _untouched(got, "no CuPy")
    with pytest.raises(cuda.CudaUnavailableError, match=r"device='cuda'.*fastinit\[cuda12\]"):
        fi.empty((4, 4), device="cuda")


@pytest.mark.parametrize("runtime, extra, wheel", [(12080, "cuda12", "nvidia-cuda-nvrtc-cu12"),
                                                   (13000, "cuda13", "nvidia-cuda-nvrtc")])
def test_missing_nvrtc(monkeypatch, shim, cache, runtime, extra, wheel):
    """The CuPy wheel's CUDA major picks the command and the NVRTC wheel."""
    fake, builds = _fake(monkeypatch, shim, nvrtc=False, runtime=runtime, driver=13000)
    got, _ = poisoned(100, np.float32)
    with pytest.raises(cuda.CudaUnavailableError) as err:
        fi.normal(FakeCudaArray(got), seed=1)
    msg = str(err.value)
    assert "NVRTC" in msg and f"pip install 'fastinit[{extra}]'" in msg, msg
    assert f"the {wheel} wheel" in msg, msg
    assert "libnvrtc.so" in msg, msg                         # CuPy's own words are kept
    assert builds == [] and _fills(fake) == []
    _untouched(got, "no NVRTC")


HIDE_NVRTC = r"""
import cuda.pathfinder as pf
load = pf.load_nvidia_dynamic_lib
def refuse(name, *args, **kwargs):
    if name == "nvrtc":
        raise pf.DynamicLibNotFoundError('Failure finding "libnvrtc.so*" (hidden by the test)')
    return load(name, *args, **kwargs)
pf.load_nvidia_dynamic_lib = refuse
from fastinit.backends import cuda
try:
    cuda.build_binary("90")
except cuda.CudaUnavailableError as exc:
    print(str(exc))
"""


def test_real_cupy_without_nvrtc():
    """The installed CuPy (>= 14) with its NVRTC not found, in a fresh process:
    CuPy's DynamicLibNotFoundError becomes a CudaUnavailableError with the
    command for CuPy's CUDA major, where the kernels are built."""
    cupy = pytest.importorskip("cupy")
    pytest.importorskip("cuda.pathfinder")
    major = cupy.cuda.runtime.runtimeGetVersion() // 1000
    proc = subprocess.run([sys.executable, "-c", HIDE_NVRTC], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "could not be loaded (DynamicLibNotFoundError" in proc.stdout, proc.stdout
    assert f"pip install 'fastinit[cuda{major}]'" in proc.stdout, proc.stdout


@pytest.mark.parametrize("driver, runtime, devices, pattern", [
    (0, 12080, 1, r"no NVIDIA driver was found.*cudaErrorInsufficientDriver.*no driver at all"),
    (12040, 13000, 1, r"driver supports CUDA 12\.4, but this CuPy wheel was built for CUDA "
                      r"13\.0 \(cudaErrorInsufficientDriver\): pip uninstall the CuPy wheel "
                      r"and pip install 'fastinit\[cuda12\]'"),
    (13000, 13000, 0, r"driver is installed but sees no CUDA device \(cudaErrorNoDevice"),
])
def test_driver_and_device(monkeypatch, shim, driver, runtime, devices, pattern):
    """cudaErrorInsufficientDriver with no driver at all is told apart from an
    old driver; no device is a third case."""
    fake, builds = _fake(monkeypatch, shim, driver=driver, runtime=runtime, devices=devices)
    got, _ = poisoned(64, np.float32)
    with pytest.raises(cuda.CudaUnavailableError, match=pattern):
        fi.uniform(FakeCudaArray(got), seed=2)
    _untouched(got, pattern)
    assert builds == [] and fake.launches == []


def test_device_that_does_not_exist(monkeypatch, shim):
    _fake(monkeypatch, shim, devices=1)
    got, _ = poisoned(64, np.float32)
    with pytest.raises(cuda.CudaUnavailableError, match=r"device 1 does not exist"):
        fi.uniform(FakeCudaArray(got, device_id=1), seed=2)
    _untouched(got, "device 1")


def test_real_cupy_without_a_driver():
    """The installed CuPy (the test extra's) on this machine: if it sees no
    device, a CUDA buffer gets a CudaUnavailableError naming the cause."""
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("a CUDA device is present")
    except Exception:
        pass
    got, _ = poisoned(16, np.float32)
    with pytest.raises(cuda.CudaUnavailableError,
                       match=r"no NVIDIA driver|driver supports|sees no CUDA device"):
        fi.uniform(FakeCudaArray(got), seed=1)
    _untouched(got, "real CuPy, no device")


# --- streams on a second GPU -------------------------------------------------------------
class TorchLike(FakeCudaArray):
    """Stands for a torch CUDA tensor: fastinit fills it on torch's current stream."""

    is_meta = False
    device = type("Device", (), {"type": "cuda"})()

    def is_inference(self):
        return False

    def is_neg(self):
        return False

    def is_conj(self):
        return False


@pytest.fixture
def torch_streams(monkeypatch):
    """torch.cuda.current_stream(d) gives stream pointer 0x1000 + d; TorchLike
    buffers count as torch tensors."""
    is_torch = _dlpack.is_torch_tensor
    monkeypatch.setattr(_dlpack, "is_torch_tensor",
                        lambda obj: isinstance(obj, TorchLike) or is_torch(obj))
    asked = []

    def current_stream(device=None):
        asked.append(device)
        return type("S", (), {"cuda_stream": 0x1000 + int(device)})()

    monkeypatch.setattr(torch.cuda, "current_stream", current_stream)
    return asked


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_second_gpu_torch_stream(monkeypatch, shim, cache, torch_streams, dtype_name):
    """A torch tensor on cuda:1 with device 0 current: filled on torch's stream of
    device 1, made and launched inside device 1's context."""
    fake, _ = _fake(monkeypatch, shim, devices=2)
    dtype = DTYPES[dtype_name]
    got, _ = poisoned(1001, dtype, shift=1)
    out = TorchLike(got, device_id=1)
    assert fi.normal(out, mean=0.5, std=2.0, seed=U64 - 1, stream=3, offset=7) is out
    assert_same(got, fi.normal(np.empty(1001, dtype), 0.5, 2.0, seed=U64 - 1, stream=3,
                               offset=7), f"cuda:1 {dtype_name}")
    (name, _, _, stream), = _fills(fake)
    assert stream.ptr == 0x1001 and stream.device_id == 1 and torch_streams == [1]
    assert out.streams == [0x1001] and stream.synced == 0      # ordered, not synchronized
    assert fake.current == 0
    fi.constant(out, 0.5)                    # CuPy's fill, under `with stream:` on device 1
    assert_same(got, fi.constant(np.empty(1001, dtype), 0.5), f"constant cuda:1 {dtype_name}")
    assert out.streams == [0x1001, 0x1001] and fake.current == 0


def test_second_gpu_cupy_stream(monkeypatch, shim, cache):
    """A CuPy array on device 1: CuPy's current stream of device 1; any other
    producer: that stream too, synchronized before the fill returns."""
    fake, _ = _fake(monkeypatch, shim, devices=2)
    s1 = fake.streams[1]
    got, _ = poisoned(333, np.float32)
    fi.uniform(FakeCudaArray(got, device_id=1), seed=4)
    assert_same(got, fi.uniform(np.empty(333, np.float32), seed=4), "cuda:1 producer")
    (_, _, _, stream), = _fills(fake)
    assert stream is s1 and s1.synced == 1 and fake.current == 0


# --- the disk cache ---------------------------------------------------------------------
def _cached(folder):
    return sorted(p for p in os.listdir(folder)) if os.path.isdir(folder) else []


def _fresh_process(monkeypatch):
    monkeypatch.setattr(cuda, "_modules", {})
    monkeypatch.setattr(cuda, "_functions", {})


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_cache_file_mode_follows_the_umask(monkeypatch, shim, cache, umask, mode):
    """A shared FASTINIT_CACHE_DIR stays readable: files are 0666 less the umask."""
    fake, builds = _fake(monkeypatch, shim)
    old = os.umask(umask)
    try:
        fi.uniform(FakeCudaArray(np.empty(10, np.float32)), seed=1)
    finally:
        os.umask(old)
    (name,) = _cached(cache)
    assert name.startswith("fill-90-") and name.endswith(".cubin")
    assert os.stat(cache / name).st_mode & 0o777 == mode
    assert (cache / name).read_bytes() == FakeCupy.BINARY and builds == ["90"]
    _fresh_process(monkeypatch)                       # a later process: a cache hit
    fi.uniform(FakeCudaArray(np.empty(10, np.float32)), seed=1)
    assert builds == ["90"] and fake.loads == 2


@pytest.mark.parametrize("bad", [b"", b"\x7fELF truncated", b"garbage" * 100])
def test_bad_cache_hit_is_rebuilt(monkeypatch, shim, cache, bad):
    fake, builds = _fake(monkeypatch, shim)
    fi.uniform(FakeCudaArray(np.empty(10, np.float32)), seed=1)
    (name,) = _cached(cache)
    (cache / name).write_bytes(bad)
    _fresh_process(monkeypatch)
    got, _ = poisoned(50, np.float32)
    fi.uniform(FakeCudaArray(got), seed=1)
    assert_same(got, fi.uniform(np.empty(50, np.float32), seed=1), "after a rebuild")
    assert builds == ["90", "90"] and _cached(cache) == [name]
    assert (cache / name).read_bytes() == FakeCupy.BINARY


def test_unwritable_cache_leaves_nothing(monkeypatch, shim, tmp_path):
    """A cache under a file (cannot be made) or whose file name is taken by a
    folder (cannot be replaced): the kernels load from memory, and no file or
    folder is left behind, in the cache or in the temporary folder."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("FASTINIT_CACHE_DIR", str(tmp_path / "a_file" / "cuda"))
    fake, builds = _fake(monkeypatch, shim)
    got, _ = poisoned(20, np.float32)
    fi.uniform(FakeCudaArray(got), seed=1)
    assert_same(got, fi.uniform(np.empty(20, np.float32), seed=1), "cache under a file")
    assert builds == ["90"] and sorted(os.listdir(tmp_path)) == ["a_file", "tmp"]
    assert os.listdir(scratch) == []

    blocked = tmp_path / "blocked"
    monkeypatch.setenv("FASTINIT_CACHE_DIR", str(blocked))
    stem = cuda._cache_key(fake, "90")
    (blocked / f"{stem}.cubin").mkdir(parents=True)     # os.replace onto it fails
    _fresh_process(monkeypatch)
    fi.uniform(FakeCudaArray(got), seed=1)
    assert builds == ["90", "90"] and _cached(blocked) == [f"{stem}.cubin"]
    assert os.listdir(scratch) == []


def test_cache_dir_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTINIT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cuda.cache_dir() == str(tmp_path / "xdg" / "fastinit" / "cuda")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cuda.cache_dir() == str(tmp_path / "home" / ".cache" / "fastinit" / "cuda")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("FASTINIT_CACHE_DIR", str(tmp_path / "mine"))
    assert cuda.cache_dir() == str(tmp_path / "mine")


# --- CUDA-graph capture -----------------------------------------------------------------
def test_graph_capture(monkeypatch, shim, cache, torch_streams):
    """The first fill on a device inside capture (its load does a blocking copy)
    says what to do instead, and writes nothing; after load_kernels the fill is
    captured as one launch, with no copy and no synchronization."""
    fake, builds = _fake(monkeypatch, shim)
    fake.capturing.add(0x1000)
    got, _ = poisoned(100, np.float32)
    with pytest.raises(cuda.CudaGraphCaptureError, match=r"load_kernels\(0\)"):
        fi.uniform(TorchLike(got), seed=3)
    _untouched(got, "capture")
    assert fake.loads == 0 and fake.launches == []
    fake.capturing.clear()
    cuda.load_kernels("cuda:0")                           # outside capture
    fake.capturing.add(0x1000)
    fi.uniform(TorchLike(got), seed=3)
    assert_same(got, fi.uniform(np.empty(100, np.float32), seed=3), "captured fill")
    (_, _, _, stream), = _fills(fake)
    assert stream.ptr == 0x1000 and stream.synced == 0 and fake.loads == 1


def test_capture_query_that_fails_counts_as_capture(monkeypatch, shim, cache, torch_streams):
    """CUDA refuses the query while another stream captures in global mode."""
    fake, _ = _fake(monkeypatch, shim)

    def refuse(self):
        raise RuntimeError("cudaErrorStreamCaptureImplicit")

    monkeypatch.setattr(type(fake.streams[0]), "is_capturing", refuse)
    with pytest.raises(cuda.CudaGraphCaptureError):
        fi.uniform(TorchLike(np.empty(8, np.float32)), seed=3)


# --- the row-strided destination ------------------------------------------------------------
def _strided(rows, cols, ld, dtype, shift=0):
    """A poisoned (rows, cols) view with row stride ld, and its base."""
    flat, base = poisoned((rows - 1) * ld + cols, dtype, shift=shift)
    view = np.lib.stride_tricks.as_strided(flat, (rows, cols), (ld * flat.itemsize,
                                                               flat.itemsize))
    return view, base


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_rows_of(monkeypatch, shim, cache, dtype_name):
    """RowsOf through the public fills: one launch; element (r, c) from global
    index offset + r * row_step + c (default: the row length, the values of a
    contiguous buffer); the gaps between rows untouched."""
    fake, _ = _fake(monkeypatch, shim, sms=2)
    dtype = DTYPES[dtype_name]
    rows, cols, ld = 37, 50, 61
    for row_step, offset, seed in ((None, 3, 1), (1000, U64 - 36 * 1000 - 50, U64 - 1),
                                   (0, 2 ** 34 + 1, 5)):
        view, base = _strided(rows, cols, ld, dtype, shift=1)
        before = base.copy()
        fake.launches.clear()
        fi.truncated_normal(cuda.RowsOf(FakeCudaArray(view), row_step), 0.0, 1.0, -2.0, 2.0,
                            seed=seed, stream=2, offset=offset)
        step = cols if row_step is None else row_step
        want = np.stack([fi.truncated_normal(np.empty(cols, dtype), 0.0, 1.0, -2.0, 2.0,
                                             seed=seed, stream=2, offset=offset + r * step)
                         for r in range(rows)])
        assert_same(view.copy(), want, f"rows {dtype_name} row_step={row_step}")
        inside = np.zeros(base.size, bool)
        inside[16 + 1 + (np.arange(rows)[:, None] * ld + np.arange(cols)).reshape(-1)] = True
        assert_same(base[~inside], before[~inside], "gaps and guards")
        (name, grid, block, _), = _fills(fake)
        assert name.endswith(cuda.ROWS_SUFFIX) and block == (cuda.THREADS,)
    got, _ = _strided(4, 6, 9, dtype)
    fi.constant(cuda.RowsOf(FakeCudaArray(got)), 0.25)
    assert_same(got.copy(), fi.constant(np.empty((4, 6), dtype), 0.25), "constant rows")


def test_rows_refusals(monkeypatch, shim, cache):
    """Refused before any write, naming out or row_step."""
    fake, _ = _fake(monkeypatch, shim)
    view, base = _strided(5, 8, 8, np.float32)
    cases = [
        (cuda.RowsOf(FakeCudaArray(base[:24].reshape(2, 3, 4))), ValueError, r"out must be 2-D"),
        (cuda.RowsOf(FakeCudaArray(view[:, ::2])), ValueError, r"column stride 1"),
        (cuda.RowsOf(FakeCudaArray(np.lib.stride_tricks.as_strided(
            base, (5, 8), (4 * 4, 4)))), ValueError, r"out's rows overlap"),
        (cuda.RowsOf(FakeCudaArray(np.zeros((3, 4), np.int32))), TypeError, r"out must hold"),
        (cuda.RowsOf(FakeCudaArray(view), -1), ValueError, r"row_step"),
        (cuda.RowsOf(FakeCudaArray(view), U64), ValueError, r"row_step"),
        (cuda.RowsOf(FakeCudaArray(view), 2.5), TypeError, r"row_step"),
    ]
    for out, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            fi.uniform(out, seed=1)
    with pytest.raises(ValueError, match=r"offset \+ \(rows - 1\) \* row_step \+ cols"):
        fi.uniform(cuda.RowsOf(FakeCudaArray(view), 2 ** 62), seed=1, offset=2 ** 63)
    _untouched(base, "refused rows")
    assert _fills(fake) == []


def _torch_as_fake(t):
    """A FakeCudaArray over a CPU torch tensor's memory (bf16 through its bits)."""
    if t.dtype == torch.bfloat16:
        return FakeCudaArray(t.view(torch.int16).numpy().view(ml_dtypes.bfloat16))
    return FakeCudaArray(t.numpy())


@pytest.fixture
def torch_rows(monkeypatch, shim, cache):
    """fastinit.torch as on CUDA: CPU tensors take the row-strided path
    (views.ROW_FILL_DEVICES), their RowsOf going to the CUDA backend on the fake."""
    from fastinit.torch import views
    fake, _ = _fake(monkeypatch, shim, sms=3)
    monkeypatch.setattr(views, "ROW_FILL_DEVICES", ("cpu",))

    class RowsOfFake(cuda.RowsOf):
        __slots__ = ()

        def __init__(self, buffer, row_step=None):
            super().__init__(_torch_as_fake(buffer), row_step)

    monkeypatch.setattr(cuda, "RowsOf", RowsOfFake)
    return fake


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_torch_views_in_one_launch(monkeypatch, torch_rows, dtype_name):
    """Non-contiguous views whose last dimension is contiguous: one launch each,
    the values of fastinit.torch's CPU path (a contiguous tensor of the view's
    shape), nothing outside the view written. A view that is not rows at one
    stride takes the scratch path (no row launch), with the same values."""
    import fastinit.torch as ft
    from fastinit.torch import views
    dt = TORCH[dtype_name]
    for make, launches in ((lambda w: w[:, 3:40], 1), (lambda w: w[2:9, 1:], 1),
                           (lambda w: w.view(6, 10, 50)[:, :, 5:20], 1),
                           (lambda w: w.view(6, 10, 50)[:, 2:7], 0)):   # not one row stride
        w = torch.full((60, 50), 9.0, dtype=dt)
        ref = torch.full((60, 50), 9.0, dtype=dt)
        torch_rows.launches.clear()
        ft.normal_(make(w), 0.5, 2.0, seed=U64 - 2, stream=7)
        with monkeypatch.context() as m:
            m.setattr(views, "ROW_FILL_DEVICES", ())
            ft.normal_(make(ref), 0.5, 2.0, seed=U64 - 2, stream=7)
        assert torch.equal(w.view(torch.int8), ref.view(torch.int8)), dtype_name
        fills = _fills(torch_rows)
        assert len(fills) == launches and all(f[0].endswith(cuda.ROWS_SUFFIX) for f in fills)


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_dtensor_column_shards_in_one_launch(monkeypatch, torch_rows, dtype_name):
    """fastinit.torch.dtensor.block_fill of column shards (and a block split along
    two dimensions): one launch per run of rows, the values of the CPU path."""
    from fastinit.torch import dtensor, views

    def draw(buf, offset, seed, stream):
        fi.uniform(buf, -1.0, 1.0, seed=seed, stream=stream, offset=offset)

    dt = TORCH[dtype_name]
    for gshape, starts, lshape, launches in (((64, 48), (0, 12), (64, 12), 1),
                                             ((8, 10, 12), (0, 0, 5), (8, 10, 4), 1),
                                             ((8, 10, 12), (2, 3, 5), (3, 4, 4), 3)):
        got = torch.full(lshape, 9.0, dtype=dt)
        ref = torch.full(lshape, 9.0, dtype=dt)
        torch_rows.launches.clear()
        dtensor.block_fill(got, gshape, starts, lshape, draw, U64 - 5, 3)
        with monkeypatch.context() as m:
            m.setattr(views, "ROW_FILL_DEVICES", ())
            dtensor.block_fill(ref, gshape, starts, lshape, draw, U64 - 5, 3)
        full = torch.empty(gshape, dtype=dt)
        draw(full, 0, U64 - 5, 3)
        block = full[tuple(slice(s, s + n) for s, n in zip(starts, lshape))]
        assert torch.equal(got.view(torch.int8), ref.view(torch.int8))
        assert torch.equal(got.view(torch.int8), block.contiguous().view(torch.int8))
        fills = _fills(torch_rows)
        assert len(fills) == launches and all(f[0].endswith(cuda.ROWS_SUFFIX) for f in fills)


# --- constant, fans and refusals through the CUDA backend ---------------------------------
def test_constant_fans_and_refusals(monkeypatch, shim, cache):
    fake, _ = _fake(monkeypatch, shim)
    for dtype_name, dtype in DTYPES.items():
        got, _ = poisoned(1001, dtype)
        fi.constant(FakeCudaArray(got), 0.1)
        assert_same(got, fi.constant(np.empty(1001, dtype), 0.1), f"constant {dtype_name}")
    w = np.empty((64, 48), np.float32)
    fi.kaiming_uniform(FakeCudaArray(w), a=5 ** 0.5, seed=3)
    assert_same(w, fi.kaiming_uniform(np.empty((64, 48), np.float32), a=5 ** 0.5, seed=3),
                "kaiming_uniform (fans from the CUDA view)")
    x = np.full((8, 6), 7.0, np.float32)
    with pytest.raises(ValueError, match="contiguous"):
        fi.uniform(FakeCudaArray(x.T), seed=1)
    with pytest.raises(TypeError, match="float16, bfloat16"):
        fi.uniform(FakeCudaArray(np.zeros(4, np.int32)), seed=1)
    with pytest.raises(ValueError, match=r"\blow\b"):
        fi.uniform(FakeCudaArray(x), low=2.0, high=1.0, seed=1)
    assert (x == 7.0).all()


def test_kernel_source_is_fill_cu_with_the_header():
    src = cuda.kernel_source()
    folder = cuda.kernel_dir()
    with open(os.path.join(folder, "fastinit_philox.cuh")) as f:
        assert f.read() in src and cuda.INCLUDE_LINE not in src
    with open(os.path.join(folder, "fill.cu")) as f:
        assert f"#define FILL_THREADS {cuda.THREADS}\n" in f.read()
    assert "--fmad=false" in cuda.OPTIONS and "--ftz=false" in cuda.OPTIONS
    assert not any("fast" in o for o in cuda.OPTIONS)
