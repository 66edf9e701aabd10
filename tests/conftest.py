"""Shared helpers of the fastinit tests: bit comparisons and poisoned buffers.

Test modules import the plain helpers with ``from conftest import ...``
(pytest puts this folder on ``sys.path``, as it does for ``naive``); the
fixtures are found by name.
"""

import ml_dtypes
import numpy as np
import pytest

# Every float dtype fastinit fills, and the two it computes in.
ALL_DTYPES = (np.float16, ml_dtypes.bfloat16, np.float32, np.float64)
UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
POISON = bytes.fromhex("ADDEC07F")        # little-endian float32 0x7FC0DEAD (a NaN)


def host(x):
    """``x`` as a NumPy array on the host: NumPy, torch (any device, bfloat16
    included), cupy, JAX, TensorFlow or Keras values."""
    if isinstance(x, np.ndarray):
        return x
    module = type(x).__module__.split(".")[0]
    if module == "torch":
        import torch
        t = x.detach()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).cpu().numpy().view(ml_dtypes.bfloat16)
        return t.cpu().numpy()
    if module == "cupy":
        return x.get()
    return np.asarray(x)


def bits(x):
    """The elements of ``x`` (see :func:`host`) as unsigned integers of their
    width, C-contiguous: equal bits compare equal, NaNs and -0.0 included."""
    a = np.ascontiguousarray(host(x))
    return a.view(UINT[a.dtype.itemsize])


def same_bits(got, want):
    """Whether ``got`` and ``want`` have one shape and dtype and equal bits."""
    got, want = host(got), host(want)
    return (got.shape == want.shape and got.dtype == want.dtype
            and np.array_equal(bits(got), bits(want)))


def assert_same_bits(got, want, what=""):
    """Assert equal shape, dtype and bits; the message shows the first mismatches."""
    got, want = host(got), host(want)
    assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    gb, wb = bits(got).reshape(-1), bits(want).reshape(-1)
    bad = np.flatnonzero(gb != wb)
    if bad.size:
        i = bad[:5]
        raise AssertionError(
            f"{what}: {bad.size} of {gb.size} elements differ; first at {i.tolist()}: "
            f"got bits {[hex(int(v)) for v in gb[i]]} ({got.reshape(-1)[i].tolist()}), "
            f"want {[hex(int(v)) for v in wb[i]]} ({want.reshape(-1)[i].tolist()})")


def poison_fill(arr):
    """Overwrite every byte of a contiguous array with the poison pattern."""
    raw = arr.reshape(-1).view(np.uint8)
    reps = -(-raw.size // len(POISON))
    raw[:] = np.frombuffer(POISON * reps, dtype=np.uint8)[:raw.size]
    return arr


@pytest.fixture
def poisoned():
    """``poisoned(shape, dtype)``: a C-contiguous array full of the poison pattern."""
    def make(shape, dtype=np.float32):
        return poison_fill(np.empty(shape, dtype=dtype))
    return make


@pytest.fixture
def poison():
    """``poison(arr)``: overwrite ``arr`` (contiguous) with the poison pattern; returns it."""
    return poison_fill


@pytest.fixture
def empty_like_shapes(monkeypatch):
    """The shapes ``torch.empty_like`` allocates from now on (``Module.to_empty``
    allocates through it); ``monkeypatch.undo()`` stops the count."""
    import torch
    shapes = []
    real = torch.empty_like

    def counting(t, *args, **kw):
        shapes.append(tuple(t.shape))
        return real(t, *args, **kw)
    monkeypatch.setattr(torch, "empty_like", counting)
    return shapes


def flip_bit(path, pos):
    """Flip the lowest bit of byte ``pos`` of the file ``path`` (a corrupted file)."""
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x01]))
