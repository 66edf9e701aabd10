"""fastinit.interop: zero-copy handoff to TensorFlow and JAX through DLPack."""

import contextlib
import gc
import warnings

import numpy as np
import pytest

import fastinit as fi
from conftest import bits
from fastinit import _dlpack
from fastinit.interop import ALIGN, HandoffCopyWarning, to_jax, to_tensorflow

DTYPES = ("float16", "bfloat16", "float32", "float64")



def filled(shape, dtype, seed=1):
    return fi.normal(fi.empty(shape, dtype), 0.0, 2.0, seed=seed)


def tf_address(t):
    """The data address of a tf.Tensor, read through a DLPack round trip."""
    return _dlpack.consume(t).pointer


def jax_x64():
    import jax
    return bool(jax.config.jax_enable_x64)


def x64_for(jax, dtype):
    """float64 needs jax_enable_x64; without it see test_jax_float64_without_x64."""
    if dtype == "float64" and hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    if dtype == "float64" and not jax_x64():
        pytest.skip("this JAX has no enable_x64 context and x64 is off")
    return contextlib.nullcontext()


@pytest.fixture
def tf():
    return pytest.importorskip("tensorflow")


@pytest.fixture
def jax():
    return pytest.importorskip("jax")


@pytest.fixture
def no_copy_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", HandoffCopyWarning)
        yield


# --- zero copy ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_tensorflow_zero_copy(tf, dtype, no_copy_warning):
    buf = filled((33, 65), dtype)
    t = to_tensorflow(buf)
    assert tf_address(t) == buf.ctypes.data
    assert t.shape == buf.shape and t.dtype.name == np.dtype(dtype).name
    assert np.array_equal(bits(t.numpy()), bits(buf))


@pytest.mark.parametrize("dtype", DTYPES)
def test_jax_zero_copy(jax, dtype, no_copy_warning):
    buf = filled((33, 65), dtype)
    with x64_for(jax, dtype):
        x = to_jax(buf)
    assert x.unsafe_buffer_pointer() == buf.ctypes.data
    assert x.shape == buf.shape and x.dtype == buf.dtype
    assert np.array_equal(bits(np.asarray(x)), bits(buf))


def test_scalar_and_empty(tf, jax, no_copy_warning):
    for buf in (filled((), "float32"), fi.empty((0, 7), "bfloat16")):
        t, x = to_tensorflow(buf), to_jax(buf)
        assert t.shape == buf.shape and x.shape == buf.shape
        assert np.array_equal(bits(t.numpy()), bits(buf))
        assert np.array_equal(bits(np.asarray(x)), bits(buf))


def test_tensor_keeps_memory_alive(tf, jax):
    buf = filled((257, 129), "bfloat16", seed=5)
    want = buf.copy()
    t, x = to_tensorflow(buf), to_jax(buf)
    del buf
    gc.collect()
    others = [filled((257, 129), "bfloat16", seed=6) for _ in range(4)]  # reuse freed memory
    assert np.array_equal(bits(t.numpy()), bits(want))
    assert np.array_equal(bits(np.asarray(x)), bits(want))
    del others


def test_shares_memory_with_the_buffer(tf, jax):
    """Zero copy, seen from the values: a later write to the buffer shows through."""
    buf = fi.zeros(fi.empty((64,), "float32"))
    t, x = to_tensorflow(buf), to_jax(buf)
    buf[3] = 7.0
    assert t.numpy()[3] == 7.0 and float(x[3]) == 7.0


# --- copies, with a warning -----------------------------------------------------
def misaligned(dtype):
    raw = filled(1000, dtype)
    buf = raw[1:1 + 999]
    assert buf.ctypes.data % ALIGN
    return buf


@pytest.mark.parametrize("dtype", ("bfloat16", "float32"))
def test_misaligned_is_copied_with_warning(tf, jax, dtype):
    buf = misaligned(dtype)
    with pytest.warns(HandoffCopyWarning, match="aligned"):
        t = to_tensorflow(buf)
    with pytest.warns(HandoffCopyWarning, match="aligned"):
        x = to_jax(buf)
    assert tf_address(t) != buf.ctypes.data and tf_address(t) % ALIGN == 0
    assert x.unsafe_buffer_pointer() % ALIGN == 0
    assert np.array_equal(bits(t.numpy()), bits(buf))
    assert np.array_equal(bits(np.asarray(x)), bits(buf))


@pytest.mark.parametrize("view", ["transpose", "step", "negative"])
def test_non_contiguous_is_copied_with_warning(tf, jax, view):
    full = filled((24, 40), "bfloat16")
    buf = {"transpose": full.T, "step": full[:, ::3], "negative": full[::-2]}[view]
    with pytest.warns(HandoffCopyWarning, match="contiguous"):
        t = to_tensorflow(buf)
    with pytest.warns(HandoffCopyWarning, match="contiguous"):
        x = to_jax(buf)
    assert t.shape == buf.shape and x.shape == buf.shape
    assert np.array_equal(bits(t.numpy()), bits(np.ascontiguousarray(buf)))
    assert np.array_equal(bits(np.asarray(x)), bits(np.ascontiguousarray(buf)))


def test_read_only_is_copied_with_warning(tf, jax):
    buf = filled((8, 8), "float32")
    buf.flags.writeable = False
    with pytest.warns(HandoffCopyWarning, match="read-only"):
        t = to_tensorflow(buf)
    with pytest.warns(HandoffCopyWarning, match="read-only"):
        x = to_jax(buf)
    assert np.array_equal(t.numpy(), buf) and np.array_equal(np.asarray(x), buf)


def test_jax_float64_without_x64(jax):
    if jax_x64():
        pytest.skip("jax_enable_x64 is on")
    buf = filled((16, 16), "float64")
    with pytest.warns(HandoffCopyWarning, match="x64"):
        x = to_jax(buf)
    assert x.dtype == np.float32
    assert np.array_equal(np.asarray(x), buf.astype(np.float32))


# --- other producers ------------------------------------------------------------
def test_dlpack_producer_zero_copy(tf, jax, no_copy_warning):
    torch = pytest.importorskip("torch")
    for dtype in (torch.float32, torch.bfloat16):
        src = torch.empty(64, 96, dtype=dtype)
        if src.data_ptr() % ALIGN:
            pytest.skip("torch gave a misaligned tensor")
        fi.uniform(src, -1, 1, seed=3)
        t, x = to_tensorflow(src), to_jax(src)
        assert tf_address(t) == src.data_ptr()
        assert x.unsafe_buffer_pointer() == src.data_ptr()
        want = bits(src.view(torch.int16 if dtype == torch.bfloat16 else torch.int32).numpy())
        assert np.array_equal(bits(t.numpy()).view(want.dtype), want)
        assert np.array_equal(bits(np.asarray(x)).view(want.dtype), want)


def test_dlpack_producer_non_contiguous(tf, jax):
    torch = pytest.importorskip("torch")
    src = torch.arange(12 * 10, dtype=torch.float32).reshape(12, 10)
    view = src.t()[::2]
    with pytest.warns(HandoffCopyWarning, match="contiguous"):
        t = to_tensorflow(view)
    with pytest.warns(HandoffCopyWarning, match="contiguous"):
        x = to_jax(view)
    assert np.array_equal(t.numpy(), view.numpy())
    assert np.array_equal(np.asarray(x), view.numpy())


def test_refuses_non_buffers(tf, jax):
    for bad in ([1.0, 2.0], 3.0, "x"):
        with pytest.raises(TypeError, match="__dlpack__"):
            to_tensorflow(bad)
        with pytest.raises(TypeError, match="__dlpack__"):
            to_jax(bad)


def test_export_refuses_copy():
    from fastinit.interop import Export
    with pytest.raises(BufferError):
        Export(filled(4, "float32")).__dlpack__(copy=True)


# --- cupy (GPU) -----------------------------------------------------------------
def gpu_cupy():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError
    except Exception:
        pytest.skip("no CUDA device")
    return cupy


def test_cupy_to_tensorflow_gpu(tf):
    cupy = gpu_cupy()
    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("this TensorFlow sees no GPU")
    x = cupy.arange(4096, dtype=cupy.float32).reshape(64, 64)
    t = to_tensorflow(x)
    assert "GPU" in t.device
    assert _dlpack.consume(t).pointer == x.data.ptr
    assert np.array_equal(t.numpy(), x.get())


def test_cupy_to_jax_gpu(jax):
    cupy = gpu_cupy()
    if not any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("this JAX sees no GPU")
    x = cupy.arange(4096, dtype=cupy.float32).reshape(64, 64)
    y = to_jax(x)
    assert y.unsafe_buffer_pointer() == x.data.ptr
    assert np.array_equal(np.asarray(y), x.get())
