"""fastinit.structured: orthogonal, delta_orthogonal, eye, dirac, sparse on plain buffers.

The constructions are checked against a plain-NumPy writing of the rules of
docs/stream.md ("Structured initializers"), the exact ones (eye, dirac)
against torch's own, and the random ones against torch's statistics.
"""

import math

import ml_dtypes
import numpy as np
import pytest
import torch
from scipy import stats

import fastinit as fi
from fastinit import structured as S
from conftest import ALL_DTYPES, assert_same_bits, bits, poison_fill

ORTHO_SHAPES = [(64, 128), (128, 64), (512, 512), (32, 16, 3, 3)]
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def max_gram_error(m):
    """‖QᵀQ − I‖∞ of the orthonormal side of matrix ``m`` (in its own precision)."""
    if m.shape[0] < m.shape[1]:
        m = m.T
    return float(np.abs(m.T @ m - np.eye(m.shape[1], dtype=m.dtype)).max())


def naive_orthogonal(rows, cols, dtype, seed, stream):
    """The rule of docs/stream.md, written from the text."""
    tall = np.empty((max(rows, cols), min(rows, cols)), dtype)
    fi.normal(tall, 0.0, 1.0, seed=seed, stream=stream)
    q, r = np.linalg.qr(tall)
    q = q * np.where(np.diag(r) < 0, -1.0, 1.0).astype(dtype)
    return q.T if rows < cols else q


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", ORTHO_SHAPES)
def test_orthogonality(shape, dtype):
    for layout in ("torch", "keras"):
        out = S.orthogonal(np.empty(shape, dtype), seed=3, stream=1, layout=layout)
        m = out.reshape(shape[0], -1) if layout == "torch" else out.reshape(-1, shape[-1])
        assert max_gram_error(m) < TOL[dtype], (layout, max_gram_error(m))


@pytest.mark.parametrize("shape", [(5, 7), (7, 5), (6, 2, 3), (2, 3, 4, 5)])
def test_orthogonal_construction(shape):
    """torch layout: out.view(shape[0], -1); keras: (prod(rest), shape[-1]); values
    gain * the naive construction, bit for bit on this machine."""
    out = S.orthogonal(np.empty(shape, np.float64), 0.5, seed=9, stream=4)
    want = naive_orthogonal(shape[0], math.prod(shape[1:]), np.float64, 9, 4) * 0.5
    assert_same_bits(out, want.reshape(shape), "torch")
    out = S.orthogonal(np.empty(shape, np.float32), 2.0, layout="keras", seed=9, stream=4)
    want = naive_orthogonal(math.prod(shape[:-1]), shape[-1], np.float32, 9, 4) * 2
    assert_same_bits(out, want.reshape(shape).astype(np.float32), "keras")


def test_orthogonal_column_axis():
    """JAX's column_axis: the matrix over the other axes, the column axis moved back."""
    shape = (3, 4, 5)
    out = S.orthogonal(np.empty(shape, np.float64), layout="keras", column_axis=0, seed=1)
    q = naive_orthogonal(20, 3, np.float64, 1, 0)
    assert_same_bits(out, np.moveaxis(q.reshape(4, 5, 3), -1, 0), "column_axis=0")
    m = np.moveaxis(out, 0, -1).reshape(-1, 3)
    assert max_gram_error(m) < 1e-12


def test_orthogonal_deterministic_and_streams():
    a = S.orthogonal(np.empty((40, 30), np.float32), seed=5, stream=2)
    b = S.orthogonal(np.empty((40, 30), np.float32), seed=5, stream=2)
    c = S.orthogonal(np.empty((40, 30), np.float32), seed=5, stream=3)
    assert np.array_equal(bits(a), bits(b))
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_orthogonal_half_is_float32_rounded(dtype):
    out = S.orthogonal(np.empty((24, 16), dtype), 1.5, seed=2)
    want = S.orthogonal(np.empty((24, 16), np.float32), 1.5, seed=2).astype(dtype)
    assert_same_bits(out, want, dtype.__name__ if hasattr(dtype, "__name__") else "half")


def test_orthogonal_unseeded_takes_one_stream():
    fi.manual_seed(11)
    a = S.orthogonal(np.empty((8, 8), np.float64))
    b = S.orthogonal(np.empty((8, 8), np.float64))
    assert_same_bits(a, S.orthogonal(np.empty((8, 8)), seed=11, stream=0))
    assert_same_bits(b, S.orthogonal(np.empty((8, 8)), seed=11, stream=1))


def test_orthogonal_statistics_against_torch():
    """1M entries of a 2048 x 512 matrix: the same law as torch.nn.init.orthogonal_'s
    (entries of a Haar semi-orthogonal matrix; columns of unit norm)."""
    ours = S.orthogonal(np.empty((2048, 512), np.float32), seed=0).reshape(-1)
    g = torch.Generator().manual_seed(0)
    theirs = torch.nn.init.orthogonal_(torch.empty(2048, 512), generator=g).numpy().reshape(-1)
    assert ours.size >= 1_000_000
    assert abs(ours.std() - theirs.std()) < 2e-3 * theirs.std()
    assert abs(ours.mean()) < 5 * theirs.std() / math.sqrt(ours.size)
    assert stats.ks_2samp(ours, theirs).pvalue > 1e-4


def test_delta_orthogonal():
    shape = (2, 5, 4, 6)                       # JAX's centre: ((2 - 1) // 2, (5 - 1) // 2)
    out = S.delta_orthogonal(poison_fill(np.empty(shape, np.float64)), 2.0, seed=7, stream=1)
    centre = out[0, 2]
    assert_same_bits(centre, S.orthogonal(np.empty((4, 6)), 2.0, layout="keras", seed=7,
                                          stream=1), "centre")
    rest = out.copy()
    rest[0, 2] = 0
    assert np.array_equal(bits(rest), np.zeros(shape, np.uint64))
    assert max_gram_error(centre / 2) < 1e-12
    with pytest.raises(ValueError, match="3D, 4D or 5D"):
        S.delta_orthogonal(np.empty((4, 6)), seed=0)
    with pytest.raises(ValueError, match="fan_in"):
        S.delta_orthogonal(np.empty((3, 6, 4)), seed=0)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_eye_equals_torch(dtype):
    for shape in ((3, 5), (6, 2), (4, 4)):
        got = S.eye(poison_fill(np.empty(shape, dtype)))
        want = torch.nn.init.eye_(torch.empty(shape, dtype=torch.float32)).numpy().astype(dtype)
        assert_same_bits(got, want, str(shape))
    got = S.eye(np.empty((3, 4), dtype), -0.5)          # Keras's gain * eye, -0.0 included
    assert_same_bits(got, (np.float32(-0.5) * np.eye(3, 4, dtype=np.float32)).astype(dtype))


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_dirac_equals_torch(dtype):
    tdt = {np.float16: torch.float16, ml_dtypes.bfloat16: torch.bfloat16,
           np.float32: torch.float32, np.float64: torch.float64}[dtype]
    for shape, groups in (((6, 4, 3), 1), ((8, 3, 3, 3), 2), ((4, 6, 2, 3, 3), 1),
                          ((6, 2, 5, 4), 3)):
        got = S.dirac(poison_fill(np.empty(shape, dtype)), groups)
        want = torch.nn.init.dirac_(torch.empty(shape, dtype=tdt), groups)
        assert_same_bits(got, want, f"{shape} groups={groups}")


def naive_sparse_mask(rows, cols, sparsity, seed, stream):
    keys = np.empty(rows * cols, np.float64)
    fi.uniform(keys, 0.0, 1.0, seed=seed, stream=stream, offset=rows * cols)
    mask = np.zeros((rows, cols), bool)
    nz = math.ceil(sparsity * rows)
    for j in range(cols):
        col = keys[j * rows:(j + 1) * rows]
        order = sorted(range(rows), key=lambda i: (col[i], i))
        mask[order[:nz], j] = True
    return mask


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_sparse_rule(dtype):
    rows, cols = 37, 11
    out = S.sparse(np.empty((rows, cols), dtype), 0.3, 0.5, seed=4, stream=6)
    mask = naive_sparse_mask(rows, cols, 0.3, 4, 6)
    dense = fi.normal(np.empty((rows, cols), dtype), 0.0, 0.5, seed=4, stream=6)
    dense[mask] = 0
    assert_same_bits(out, dense)
    assert ((out == 0).sum(axis=0) == math.ceil(0.3 * rows)).all()


def test_sparse_zero_count_and_statistics_against_torch():
    """1M samples: exactly ceil(sparsity * rows) zeros per column, as torch; the
    non-zeros N(0, std^2) with torch's spread."""
    rows, cols, sparsity, std = 1000, 1000, 0.1, 0.02
    ours = S.sparse(np.empty((rows, cols), np.float32), sparsity, std, seed=1)
    theirs = torch.nn.init.sparse_(torch.empty(rows, cols), sparsity, std,
                                   generator=torch.Generator().manual_seed(1)).numpy()
    need = math.ceil(sparsity * rows)
    assert ((ours == 0).sum(axis=0) == need).all()
    assert ((theirs == 0).sum(axis=0) == need).all()
    a, b = ours[ours != 0], theirs[theirs != 0]
    assert abs(a.std() - b.std()) < 3e-3 * std
    assert stats.ks_2samp(a, b).pvalue > 1e-4
    rows_hit = (ours == 0).sum(axis=1)                 # zeros spread over every row
    assert rows_hit.min() > 0 and abs(rows_hit.mean() - need * cols / rows) < 1e-9


def test_sparse_edges():
    assert not (S.sparse(np.empty((10, 3)), 0.0, seed=0) == 0).any()
    assert (S.sparse(np.empty((10, 3)), 1.0, seed=0) == 0).all()
    assert ((S.sparse(np.empty((10, 3)), 0.01, seed=0) == 0).sum(axis=0) == 1).all()


@pytest.mark.parametrize("call, exc, match", [
    (lambda b: S.orthogonal(b[0], seed=0), ValueError, "at least 2 dimensions"),
    (lambda b: S.orthogonal(b, layout="jax", seed=0), ValueError, "layout"),
    (lambda b: S.orthogonal(b, layout="keras", column_axis=2, seed=0), ValueError,
     "column_axis"),
    (lambda b: S.orthogonal(b, "x", seed=0), TypeError, "gain"),
    (lambda b: S.orthogonal(b, math.inf, seed=0), ValueError, "gain"),
    (lambda b: S.orthogonal(b.view(np.float16), 1e6, seed=0), ValueError, "gain"),
    (lambda b: S.orthogonal(b, seed=-1), ValueError, "seed"),
    (lambda b: S.eye(b[0]), ValueError, "2 dimensions"),
    (lambda b: S.dirac(b), ValueError, "3, 4, or 5"),
    (lambda b: S.dirac(b.reshape(4, 3, 1), groups=3), ValueError, "divisible"),
    (lambda b: S.dirac(b.reshape(4, 3, 1), groups=0), ValueError, "groups"),
    (lambda b: S.sparse(b, 1.5, seed=0), ValueError, "sparsity"),
    (lambda b: S.sparse(b, 0.1, -1.0, seed=0), ValueError, "std"),
    (lambda b: S.sparse(b, "0.1", seed=0), TypeError, "sparsity"),
    (lambda b: S.sparse(b[0], 0.1, seed=0), ValueError, "2 dimensions"),
])
def test_refusals_leave_out_untouched(call, exc, match):
    buf = poison_fill(np.empty((4, 3), np.float64))
    before = bits(buf).copy()
    with pytest.raises(exc, match=match):
        call(buf)
    assert np.array_equal(bits(buf), before)


def test_torch_cpu_tensor_and_zero_size():
    t = torch.empty(6, 4)
    S.orthogonal(t, seed=1)
    assert_same_bits(t, S.orthogonal(np.empty((6, 4), np.float32), seed=1))
    assert S.orthogonal(np.empty((0, 4)), seed=1).shape == (0, 4)
    assert S.sparse(np.empty((0, 4)), 0.5, seed=1).shape == (0, 4)
