"""fi.empty: aligned, C-contiguous, writable buffers of the four float dtypes."""

import ml_dtypes
import numpy as np
import pytest

import fastinit as fi

NAMES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32,
         "float64": np.float64}


@pytest.mark.parametrize("align", [16, 64, 4096])
@pytest.mark.parametrize("dtype", list(NAMES))
@pytest.mark.parametrize("shape", [(1,), (3, 5), (7, 1, 9), (4096,), ()])
def test_alignment_shape_dtype(shape, dtype, align):
    for _ in range(4):                        # different allocations, different offsets
        x = fi.empty(shape, dtype, align=align)
        assert x.ctypes.data % align == 0
        assert x.shape == shape
        assert x.dtype == np.dtype(NAMES[dtype])
        assert x.flags.c_contiguous and x.flags.writeable
        assert x.nbytes == int(np.prod(shape)) * np.dtype(NAMES[dtype]).itemsize


@pytest.mark.parametrize("align", [16, 64, 4096])
@pytest.mark.parametrize("shape", [(0,), (2, 0, 3)])
def test_empty_buffer_shape_and_alignment(shape, align):
    """A zero-size buffer has the shape asked for, and its data pointer is aligned too."""
    x = fi.empty(shape, "float32", align=align)
    assert x.shape == shape and x.dtype == np.float32 and x.flags.c_contiguous
    assert x.ctypes.data % align == 0


def test_default_alignment_and_dtype():
    for _ in range(8):
        x = fi.empty((33, 17))
        assert x.dtype == np.float32
        assert x.ctypes.data % 64 == 0


@pytest.mark.parametrize("align", [1, 2, 8, 128, 1 << 16])
def test_other_powers_of_two(align):
    x = fi.empty(100, "float16", align=align)
    assert x.ctypes.data % align == 0


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32, np.float64,
                                   np.dtype("float32"), np.dtype(ml_dtypes.bfloat16), float])
def test_dtype_by_numpy_dtype(dtype):
    x = fi.empty((2, 3), dtype)
    assert x.dtype == np.dtype(dtype)


@pytest.mark.parametrize("shape, expected", [(5, (5,)), (np.int64(4), (4,)), ([2, 3], (2, 3)),
                                             ((np.int32(2), 3), (2, 3))])
def test_shape_forms(shape, expected):
    assert fi.empty(shape).shape == expected


def test_buffers_are_independent_and_fillable():
    a, b = fi.empty((64, 64), "bfloat16"), fi.empty((64, 64), "bfloat16")
    assert not np.shares_memory(a, b)
    fi.normal(a, seed=1)
    fi.zeros(b)
    assert (b.astype(np.float32) == 0).all()
    ref = fi.normal(np.empty((64, 64), ml_dtypes.bfloat16), seed=1)
    assert np.array_equal(a.view(np.uint16), ref.view(np.uint16))


@pytest.mark.parametrize("shape", [(-1,), (2, -3), -1, (2.0, 3), (True, 2), ("3",), 3.0,
                                   None])
def test_bad_shape(shape):
    with pytest.raises((ValueError, TypeError), match=r"\bshape\b"):
        fi.empty(shape)


@pytest.mark.parametrize("dtype", ["int32", "float", "float128", "bf16", "", np.int32,
                                   np.uint16, np.bool_, np.complex64, "complex64"])
def test_bad_dtype(dtype):
    with pytest.raises((ValueError, TypeError), match=r"\bdtype\b"):
        fi.empty((2, 2), dtype)


@pytest.mark.parametrize("dtype", [object(), "not a dtype at all"])
def test_unparseable_dtype(dtype):
    with pytest.raises((ValueError, TypeError), match=r"\bdtype\b"):
        fi.empty((2, 2), dtype)


@pytest.mark.parametrize("align", [0, -64, 3, 48, 100, 1.0, 64.0, True, "64", None])
def test_bad_align(align):
    with pytest.raises((ValueError, TypeError), match=r"\balign\b"):
        fi.empty((2, 2), align=align)


def _gpu_present():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "gpu", "", None, 0])
def test_bad_device(device):
    """Refused with a message naming device: without CuPy or a GPU for "cuda"
    (the message says what to install), always for the others."""
    if str(device).startswith("cuda") and _gpu_present():
        pytest.skip("a CUDA device is present: device='cuda' is valid here")
    with pytest.raises((ValueError, TypeError), match=r"\bdevice\b"):
        fi.empty((2, 2), device=device)
