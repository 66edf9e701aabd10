"""Statistics and ranges of the basic fills (docs/stream.md section 3)."""

import ml_dtypes
import numpy as np
import pytest
import scipy.stats as st

import fastinit as fi
from conftest import bits

N = 1 << 20                      # >= 10^6 samples for the KS tests
P_MIN = 1e-3
FLOATS = (np.float32, np.float64)
ALL_DTYPES = (np.float16, ml_dtypes.bfloat16, np.float32, np.float64)
HALVES = (np.float16, ml_dtypes.bfloat16)


def f64(x):
    return np.asarray(x).astype(np.float64)



def ids(dtype):
    return np.dtype(dtype).name


# --- Kolmogorov-Smirnov -------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS, ids=ids)
@pytest.mark.parametrize("low, high, seed", [(-1.0, 3.0, 11), (0.1, 0.3, 12)])
def test_uniform_ks(dtype, low, high, seed):
    x = fi.uniform(np.empty(N, dtype), low, high, seed=seed, stream=1)
    p = st.kstest(f64(x), st.uniform(loc=low, scale=high - low).cdf).pvalue
    assert p > P_MIN, (low, high, p)


@pytest.mark.parametrize("dtype", FLOATS, ids=ids)
@pytest.mark.parametrize("mean, std, seed", [(0.0, 1.0, 21), (-2.5, 0.3, 22)])
def test_normal_ks(dtype, mean, std, seed):
    x = fi.normal(np.empty(N, dtype), mean, std, seed=seed, stream=2)
    p = st.kstest(f64(x), st.norm(loc=mean, scale=std).cdf).pvalue
    assert p > P_MIN, (mean, std, p)


@pytest.mark.parametrize("dtype", FLOATS, ids=ids)
@pytest.mark.parametrize("mean, std, a, b, seed", [
    (0.0, 1.0, -2.0, 2.0, 31),
    (0.5, 2.0, -1.0, 4.0, 32),       # asymmetric bounds
    (1.0, 0.5, 1.2, 3.0, 33),        # one tail only
])
def test_truncated_normal_ks(dtype, mean, std, a, b, seed):
    x = fi.truncated_normal(np.empty(N, dtype), mean, std, a, b, seed=seed, stream=3)
    ref = st.truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)
    p = st.kstest(f64(x), ref.cdf).pvalue
    assert p > P_MIN, (mean, std, a, b, p)


def test_streams_and_seeds_differ():
    x = fi.uniform(np.empty(4096, np.float32), seed=1, stream=0)
    assert not np.array_equal(x, fi.uniform(np.empty(4096, np.float32), seed=1, stream=1))
    assert not np.array_equal(x, fi.uniform(np.empty(4096, np.float32), seed=2, stream=0))
    assert np.array_equal(x, fi.uniform(np.empty(4096, np.float32), seed=1, stream=0))


# --- ranges -------------------------------------------------------------------
EPS32, EPS64 = 2.0 ** -23, 2.0 ** -52


@pytest.mark.parametrize("dtype", FLOATS, ids=ids)
@pytest.mark.parametrize("low, high", [
    (0.1, 0.3),                      # neither bound is a float32
    (-0.3, -0.1),
    (-1.0, 1.0),
    (1.0, 1.0 + 3 * EPS32),          # a few float32 values: rounding would reach high
    (1.0, 1.0 + 3 * EPS64),          # a few float64 values; float32 holds only 1.0
    (1e-30, 3e-30),
])
def test_uniform_in_half_open_range(dtype, low, high):
    x = f64(fi.uniform(np.empty(1 << 17, dtype), low, high, seed=5, stream=7))
    assert x.min() >= low, (x.min(), low)
    assert x.max() < high, (x.max(), high)
    assert np.isfinite(x).all()


@pytest.mark.parametrize("dtype", FLOATS, ids=ids)
def test_uniform_low_equals_high(dtype):
    x = fi.uniform(np.empty(1000, dtype), 0.1, 0.1, seed=3)
    assert (x == dtype(0.1)).all()


@pytest.mark.parametrize("dtype", FLOATS, ids=ids)
@pytest.mark.parametrize("mean, std, a, b", [
    (0.2, 0.5, -0.3, 0.7),           # bounds that are not float32 values
    (0.2, 10.0, 0.1, 0.3),           # almost flat: many draws land on the clamps
    (0.0, 1.0, -1e-3, 1e-3),
    (0.0, 1.0, 2.5, 2.6),            # far in a tail
    (-1.0, 0.01, -1.1, -0.9),
])
def test_truncated_normal_within_bounds(dtype, mean, std, a, b):
    x = f64(fi.truncated_normal(np.empty(1 << 17, dtype), mean, std, a, b, seed=9, stream=4))
    assert np.isfinite(x).all()
    assert x.min() >= a, (x.min(), a)
    assert x.max() <= b, (x.max(), b)


@pytest.mark.parametrize("mean, std, a, b", [
    (0.1, 1.0, 0.1, 0.1 + 1e-12),
    (0.1, 1e-9, 0.1, 0.1 + 1e-9),          # upper-tail form, half the mass inside
    (0.1 + 5e-10, 1e-9, 0.1, 0.1 + 1e-9),  # central form
    (0.1 + 1e-9, 1e-9, 0.1, 0.1 + 1e-9),   # lower-tail form
])
def test_truncated_normal_bounds_without_a_float32_between(mean, std, a, b):
    """No float32 lies in [a, b]: the fill must refuse, as uniform does, or stay in [a, b]."""
    x = np.zeros(256, np.float32)
    try:
        fi.truncated_normal(x, mean, std, a, b, seed=1)
    except ValueError:
        return
    v = f64(x)
    assert v.min() >= a and v.max() <= b, (v.min(), v.max(), a, b)


def test_truncated_normal_std_past_float32():
    """std = 3e38 overflows float32's std * sqrt(2): refuse, or give the right law.

    N(0, (3e38)^2) cut to [-1, 1] is uniform on [-1, 1] to within 1e-77.
    """
    x = np.zeros(1 << 16, np.float32)
    try:
        with np.errstate(over="ignore"):
            fi.truncated_normal(x, 0.0, 3e38, -1.0, 1.0, seed=1)
    except ValueError:
        return
    p = st.kstest(f64(x), st.uniform(loc=-1.0, scale=2.0).cdf).pvalue
    assert p > P_MIN, (np.unique(x)[:5], p)


# --- masked_uniform -------------------------------------------------------------
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=ids)
@pytest.mark.parametrize("low, high, threshold", [
    (-1.0, 1.0, 0.3),
    (-0.5, 2.0, 0.1),
    (0.2, 1.0, 0.5),
])
def test_masked_uniform_matches_uniform(dtype, low, high, threshold):
    n, kw = (1 << 16) + 3, dict(seed=7, stream=3, offset=12345)   # parallel path
    m = fi.masked_uniform(np.empty(n, dtype), low, high, threshold, **kw)
    # The mask is applied to the compute-type value, then rounded (section 3.4, 3.8).
    compute = np.float64 if dtype == np.float64 else np.float32
    u = fi.uniform(np.empty(n, compute), low, high, **kw)
    expected = np.where(np.abs(f64(u)) < threshold, compute(0), u).astype(dtype)
    assert np.array_equal(bits(m), bits(expected))
    if dtype == compute:
        assert np.array_equal(m == 0, np.abs(f64(u)) < threshold)
    assert (m == 0).any() and (m != 0).any()


@pytest.mark.parametrize("dtype", FLOATS, ids=ids)
def test_masked_uniform_zero_threshold_is_uniform(dtype):
    m = fi.masked_uniform(np.empty(5000, dtype), -1.0, 1.0, 0.0, seed=4)
    u = fi.uniform(np.empty(5000, dtype), -1.0, 1.0, seed=4)
    assert np.array_equal(bits(m), bits(u))


# --- constant, zeros, ones ----------------------------------------------------
def expected_constant(shape, value, dtype):
    if dtype in HALVES:
        return np.full(shape, np.float32(value), np.float32).astype(dtype)
    return np.full(shape, value, dtype)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=ids)
@pytest.mark.parametrize("value", [0.1, -3.0, 1e-5, 2.0 ** -20, 1e30, 12345.678])
def test_constant(dtype, value, poisoned):
    if dtype == np.float16 and abs(value) > 65504:
        pytest.skip("float16 refuses it (tests/test_errors.py)")
    for shape in [(3, 5), (1 << 16,), ()]:
        x = poisoned(shape, dtype)
        assert fi.constant(x, value) is x
        assert np.array_equal(bits(x), bits(expected_constant(shape, value, dtype)))


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=ids)
def test_large_constant_runs_on_every_thread_and_stays_in_bounds(dtype):
    """From 2^17 elements the fill runs in pieces on every thread: every element
    of the view is set, and nothing beyond it, on 1, 2 and 3 threads."""
    from fastinit.backends.cpu import PARALLEL_MIN
    n = PARALLEL_MIN * 3 + 7                      # pieces of unequal length
    item = np.dtype(dtype).itemsize
    before = fi.get_num_threads()
    try:
        for k in (1, 2, 3):
            fi.set_num_threads(k)
            raw = np.full((n + 40) * item, 0xA5, np.uint8)
            whole = raw.view(dtype)
            view = whole[17:17 + n]
            assert fi.constant(view, -2.5) is view
            assert np.array_equal(bits(view), bits(expected_constant((n,), -2.5, dtype)))
            assert (raw[:17 * item] == 0xA5).all() and (raw[(17 + n) * item:] == 0xA5).all()
            grid = np.full((600, 300), 7, dtype)         # 2-D, above the threshold too
            fi.constant(grid, 0.75)
            assert np.array_equal(bits(grid), bits(expected_constant((600, 300), 0.75, dtype)))
    finally:
        fi.set_num_threads(before)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=ids)
def test_zeros_and_ones(dtype, poisoned):
    x = poisoned((7, 9), dtype)
    assert fi.zeros(x) is x
    assert (bits(x) == 0).all()                   # +0.0 exactly
    assert fi.ones(x) is x
    assert np.array_equal(bits(x), bits(np.ones((7, 9), dtype)))
