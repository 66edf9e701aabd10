"""Buffers that once made a fill write outside them, and the refusals that
now name the argument (safety issue, parts 1 and 5).

Each test holds the buffer inside a larger array whose other elements are a
known pattern, so a write past either end shows as a changed guard."""

import ml_dtypes
import numpy as np
import pytest
import torch

import fastinit as fi
import fastinit.jax as fj
import fastinit.torch as ft

GUARD = 7.0


def guarded(n, dtype=np.float32, lead=16, tail=300):
    """(big, lo, hi): ``big[lo:hi]`` is a fresh n-element slot, every other element GUARD."""
    big = np.full(lead + n + tail, GUARD, dtype)
    return big, lead, lead + n


def reference(fill, shape, dtype, **kw):
    """The values ``fill`` gives a plain C-contiguous array of ``shape``."""
    out = np.zeros(shape, dtype)
    fill(out, **kw)
    return out


FILLS = [
    (fi.uniform, dict(seed=0)),
    (fi.normal, dict(seed=0)),
    (fi.truncated_normal, dict(seed=0)),
    (fi.masked_uniform, dict(low=-1.0, high=1.0, threshold=0.5, seed=0)),
    (fi.xavier_uniform, dict(seed=0)),
    (fi.kaiming_normal, dict(seed=0)),
    (fi.lecun_normal, dict(seed=0)),
    (fi.constant, dict(value=0.25)),
    (fi.zeros, {}),
    (fi.ones, {}),
]
IDS = [f.__name__ for f, _ in FILLS]


@pytest.mark.parametrize("fill,kw", FILLS, ids=IDS)
@pytest.mark.parametrize("shape", [(3, 4), (4, 5), (1, 7), (7, 1)])
def test_matrix_fills_exactly_its_elements(fill, kw, shape):
    n = int(np.prod(shape))
    big, lo, hi = guarded(n)
    m = big[lo:hi].reshape(shape).view(np.matrix)
    fill(m, **kw)
    assert (big[:lo] == GUARD).all() and (big[hi:] == GUARD).all(), "wrote outside the matrix"
    assert np.array_equal(np.asarray(m), reference(fill, shape, np.float32, **kw))


@pytest.mark.parametrize("fill,kw", [(fi.normal, dict(seed=0)), (fi.zeros, {})],
                         ids=["normal", "zeros"])
def test_large_matrix_parallel_path(fill, kw):
    """Sizes past the parallel threshold once crashed the process."""
    shape = (520, 520)
    n = shape[0] * shape[1]
    big, lo, hi = guarded(n, tail=4096)
    m = big[lo:hi].reshape(shape).view(np.matrix)
    fill(m, **kw)
    assert (big[:lo] == GUARD).all() and (big[hi:] == GUARD).all()
    assert np.array_equal(np.asarray(m), reference(fill, shape, np.float32, **kw))


class Sneaky(np.ndarray):
    """A subclass whose reshape and view keep a 2-D shape and whose ravel
    lies: the kernels must never see what these return."""

    def reshape(self, *args, **kwargs):
        return np.ndarray.reshape(self, (1, -1)) if self.ndim else self

    def view(self, *args, **kwargs):
        out = np.ndarray.view(self, *args, **kwargs)
        return np.ndarray.reshape(out, (1, -1)) if out.ndim else out

    def ravel(self, *args, **kwargs):
        return np.zeros(1, self.dtype)


class Stranger(np.ndarray):
    """A subclass whose reshape returns a different buffer altogether."""

    def reshape(self, *args, **kwargs):
        return np.zeros(4096, self.dtype)


@pytest.mark.parametrize("cls", [Sneaky, Stranger])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, ml_dtypes.bfloat16, np.float16])
def test_subclass_overriding_reshape_and_view(cls, dtype):
    big, lo, hi = guarded(12, dtype)
    x = np.ndarray.view(big[lo:hi], cls)
    x = np.ndarray.reshape(x, (3, 4))
    fi.uniform(x, -1, 1, seed=3)
    assert (big[:lo] == GUARD).all() and (big[hi:] == GUARD).all()
    expect = reference(fi.uniform, (3, 4), dtype, low=-1, high=1, seed=3)
    assert np.ndarray.view(x, np.ndarray).tobytes() == expect.tobytes()


def test_memmap_filled_in_place(tmp_path):
    path = tmp_path / "w.bin"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(64, 33))
    fi.normal(mm, 0, 0.02, seed=9)
    mm.flush()
    expect = reference(fi.normal, (64, 33), np.float32, mean=0, std=0.02, seed=9)
    assert np.array_equal(np.fromfile(path, np.float32).reshape(64, 33), expect)
    assert path.stat().st_size == expect.nbytes


def test_read_only_memmap_refused(tmp_path):
    path = tmp_path / "w.bin"
    np.zeros(10, np.float32).tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r")
    with pytest.raises(ValueError, match=r"\bout\b.*read-only"):
        fi.uniform(mm, seed=0)


def test_masked_array_refused_with_type_error():
    data = np.full(10, GUARD, np.float32)
    ma = np.ma.MaskedArray(data, mask=[0, 1] * 5)
    with pytest.raises(TypeError, match=r"MaskedArray.*out\.data"):
        fi.uniform(ma, seed=0)
    assert (data == GUARD).all()
    fi.uniform(ma.data, seed=0)                     # the documented way
    assert np.array_equal(ma.data, reference(fi.uniform, 10, np.float32, seed=0))
    assert list(ma.mask) == [False, True] * 5


def test_misaligned_buffer_refused():
    raw = np.zeros(4 * 9, np.uint8)
    arr = np.ndarray((8,), np.float32, buffer=raw, offset=1)
    assert not arr.flags.aligned
    before = raw.copy()
    with pytest.raises(ValueError, match=r"\bout\b.*aligned"):
        fi.uniform(arr, seed=0)
    assert np.array_equal(raw, before)


# --- part 5: smaller refusals ------------------------------------------------------
def _inference_tensor():
    with torch.inference_mode():
        return torch.zeros(16)


@pytest.mark.parametrize("call", [
    lambda t: fi.uniform(t, seed=0),
    lambda t: fi.zeros(t),
    lambda t: ft.uniform_(t, seed=0),
    lambda t: ft.normal_(t, seed=0),
    lambda t: ft.zeros_(t),
    lambda t: ft.constant_(t, 2.0),
], ids=["fi.uniform", "fi.zeros", "ft.uniform_", "ft.normal_", "ft.zeros_", "ft.constant_"])
def test_inference_tensor_refused_as_torch_refuses(call):
    with pytest.raises(RuntimeError):
        _inference_tensor().uniform_()              # torch's own refusal
    t = _inference_tensor()
    with pytest.raises(ValueError, match="inference tensor"):
        call(t)
    assert (t == 0).all()


def test_inference_tensor_filled_inside_inference_mode():
    t = _inference_tensor()
    with torch.inference_mode():
        ft.uniform_(t, seed=0)
    assert np.array_equal(t.numpy(), reference(fi.uniform, 16, np.float32, seed=0))


def test_meta_tensor_named():
    with pytest.raises(ValueError, match=r"\bout\b is a meta tensor"):
        fi.uniform(torch.empty(3, device="meta"), seed=0)


def test_meta_tensor_twin_is_a_no_op_as_torch():
    t = torch.empty(3, device="meta")
    assert torch.nn.init.uniform_(t) is t
    assert ft.uniform_(t, seed=0) is t


@pytest.mark.parametrize("fans", [(10 ** 400, 1), (1, 10 ** 400), (2 ** 64, 1)])
@pytest.mark.parametrize("rule", [fi.lecun_normal, fi.xavier_uniform, fi.variance_scaling])
def test_huge_fans_named(rule, fans):
    w = np.full((4, 5), GUARD, np.float32)
    with pytest.raises(ValueError, match=r"fans: fan_(in|out)"):
        rule(w, fans=fans, seed=0)
    assert (w == GUARD).all()


@pytest.mark.parametrize("dist", ["uniform", "normal", "truncated_normal"])
def test_jax_negative_variance_scale_named(dist):
    with pytest.raises(ValueError, match=r"\bscale\b"):
        fj.variance_scaling(-1.0, "fan_in", dist)


@pytest.mark.parametrize("dist", ["uniform", "normal", "truncated_normal"])
def test_jax_zero_variance_scale_is_zeros(dist):
    import jax
    w = fj.variance_scaling(0.0, "fan_in", dist)(jax.random.key(0), (3, 4))
    assert np.array_equal(np.asarray(w), np.zeros((3, 4), np.float32))


def test_empty_with_dtype_none_is_float32_as_torch():
    assert fi.empty(3, None).dtype == np.float32
    assert torch.empty(3).dtype == torch.float32
    assert fi.empty((2, 2)).dtype == fi.empty((2, 2), None).dtype
