"""The stream contract (docs/stream.md), checked bit for bit.

- Philox4x32-10 against Random123's published known answers
  (tests/kat_vectors.txt), in the plain-NumPy reference and in the Numba
  kernel;
- every fill (uniform, masked_uniform, normal, truncated_normal) x every
  dtype against the reference of tests/naive.py, compared as raw bits;
- invariance: sub-range fills, half types vs float32, thread counts;
- unseeded calls (manual_seed / initial_seed / the stream counter).
"""

import json
import os
import pathlib
import subprocess
import sys

import ml_dtypes
import numba
import numpy as np
import pytest

import fastinit as fi
from fastinit.kernels.cpu import philox as kphilox

import naive
from conftest import UINT, assert_same_bits, bits

HERE = pathlib.Path(__file__).resolve().parent

DISTS = ("uniform", "masked_uniform", "normal", "truncated_normal")
DTYPES = ("float16", "bfloat16", "float32", "float64")
U64 = 1 << 64


def fill(dist, n, dtype, seed, stream, offset, **kw):
    out = fi.empty(n, dtype)
    getattr(fi, dist)(out, seed=seed, stream=stream, offset=offset, **kw)
    return out


# --- 1. known answers ------------------------------------------------------------
def _read_kats():
    vecs = []
    for line in (HERE / "kat_vectors.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        f = line.split()
        if f[0] != "philox4x32" or int(f[1]) != 10:
            continue
        nums = [int(x, 16) for x in f[2:]]
        assert len(nums) == 10, line
        vecs.append((tuple(nums[0:4]), tuple(nums[4:6]), tuple(nums[6:10])))
    return vecs


KATS = _read_kats()


@numba.njit
def _nb_philox(c0, c1, c2, c3, k0, k1):
    return kphilox.philox4x32(c0, c1, c2, c3, k0, k1)


@numba.njit
def _nb_philox_many(ctr, keys):
    out = np.empty_like(ctr)
    for i in range(ctr.shape[0]):
        o0, o1, o2, o3 = kphilox.philox4x32(ctr[i, 0], ctr[i, 1], ctr[i, 2], ctr[i, 3],
                                            keys[i, 0], keys[i, 1])
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = o0, o1, o2, o3
    return out


def test_kat_file():
    assert len(KATS) >= 3
    assert len({k[0] for k in KATS}) == len(KATS)


@pytest.mark.parametrize("ctr,key,want", KATS, ids=[f"kat{i}" for i in range(len(KATS))])
def test_kat_reference(ctr, key, want):
    got = naive.philox4x32(np.array([ctr], np.uint64), key)
    assert got.dtype == np.uint64
    assert [int(v) for v in got[0]] == list(want)


@pytest.mark.parametrize("ctr,key,want", KATS, ids=[f"kat{i}" for i in range(len(KATS))])
def test_kat_numba(ctr, key, want):
    got = _nb_philox(*(np.uint64(v) for v in ctr), np.uint64(key[0]), np.uint64(key[1]))
    assert [int(v) for v in got] == list(want)


def test_kat_stream_words():
    """Section 2: block j of stream s is philox((j lo, j hi, s lo, s hi), (seed lo, seed hi))."""
    for ctr, key, want in KATS:
        seed = key[0] | (key[1] << 32)
        j = ctr[0] | (ctr[1] << 32)
        s = ctr[2] | (ctr[3] << 32)
        assert [int(w) for w in naive.words(seed, s, 4 * j, 4)] == list(want)
        assert [int(w) for w in naive.blocks(seed, s, j, 1)[0]] == list(want)


def test_numba_philox_matches_reference_on_random_inputs():
    rng = np.random.default_rng(20240601)
    n = 20000
    ctr = rng.integers(0, 2 ** 32, size=(n, 4), dtype=np.uint64)
    keys = rng.integers(0, 2 ** 32, size=(n, 2), dtype=np.uint64)
    ctr[:8] = np.uint64(0xFFFFFFFF)
    keys[:4] = np.uint64(0xFFFFFFFF)
    got = _nb_philox_many(ctr, keys)
    for key in np.unique(keys[:50], axis=0):       # the reference takes one key a call
        sel = np.flatnonzero((keys == key).all(axis=1))
        want = naive.philox4x32(ctr[sel], (int(key[0]), int(key[1])))
        np.testing.assert_array_equal(got[sel], want)


def test_kernel_constants_are_the_contract_literals():
    """The kernels' LOG/SIN/COS/PIO2 constants equal the contract's, rounded once."""
    for t, sfx in ((np.float32, "F32"), (np.float64, "F64")):
        c = naive.CONSTS[t]
        assert getattr(kphilox, "LOG_SQRT2_" + sfx) == c.sqrt2
        assert getattr(kphilox, "LOG_LN2_HI_" + sfx) == c.ln2_hi
        assert getattr(kphilox, "LOG_LN2_LO_" + sfx) == c.ln2_lo
        assert list(getattr(kphilox, "LOG_L_" + sfx)) == c.L
        assert list(getattr(kphilox, "SIN_" + sfx)) == c.S
        assert list(getattr(kphilox, "COS_" + sfx)) == c.C
        assert getattr(kphilox, "SC_X_" + sfx) == c.pio2_scaled
        for v in (*c.L, *c.S, *c.C):
            assert type(v) is t


# --- 2. fills against the reference, bit for bit --------------------------------
PARAMS = {
    "uniform": [dict(low=-0.3, high=0.7), dict(low=0.1, high=0.30000000000000004),
                dict(low=-2.5, high=17.0), dict(low=2.0, high=2.0),
                dict(low=1.0, high=2.0)],     # lo + d * u rounds up to high: clamped
    "masked_uniform": [dict(low=-1.0, high=1.0, threshold=0.3),
                       dict(low=-0.5, high=2.0, threshold=0.1),
                       dict(low=-3.0, high=3.0, threshold=0.0),
                       dict(low=-0.2, high=0.2, threshold=0.15)],
    "normal": [dict(mean=0.5, std=2.0), dict(mean=-3.0, std=1e-3), dict(mean=0.0, std=1.0),
               dict(mean=1.0, std=0.0)],
    "truncated_normal": [dict(mean=0.2, std=1.5, a=-1.0, b=3.0),
                         dict(mean=0.0, std=1.0, a=-2.0, b=2.0),
                         dict(mean=1.0, std=0.5, a=1.1, b=5.0),
                         dict(mean=-0.1, std=0.02, a=-0.2, b=0.05)],
}

# Parameters that stress one output type: subnormals, the top of float16, ...
STRESS = {
    ("uniform", "float16"): [dict(low=-3e-5, high=5e-5), dict(low=60000.0, high=65504.0)],
    ("uniform", "bfloat16"): [dict(low=-1e-38, high=1e-38), dict(low=1e38, high=3e38)],
    ("uniform", "float32"): [dict(low=-1e-38, high=1e-38)],
    ("uniform", "float64"): [dict(low=-1e-308, high=1e-308)],
    ("masked_uniform", "float16"): [dict(low=-1e-4, high=1e-4, threshold=3e-5)],
    ("normal", "float16"): [dict(mean=0.0, std=1e-6), dict(mean=100.0, std=0.01)],
    ("normal", "bfloat16"): [dict(mean=0.0, std=1e-39)],
    ("normal", "float64"): [dict(mean=0.0, std=1e-310)],
    ("truncated_normal", "float16"): [dict(mean=0.0, std=1e-5, a=-2e-5, b=2e-5)],
}

# (seed, stream, offset, n): odd offsets; seeds and streams near 2^64; offsets
# where the block counter carries into its high word (float32: element 2^34,
# float64: element 2^33), and a fill that ends at the last element 2^64 - 1.
CASES = [
    (0x243F6A8885A308D3, 7, 12345, 1_000_003),
    (2 ** 64 - 1, 2 ** 64 - 1, 2 ** 34 - 3, 40_001),
    (2 ** 63 + 12345, 2 ** 64 - 2, 2 ** 33 - 3, 40_003),
    (1, 2 ** 32, 2 ** 64 - 70_001, 70_001),
    (2 ** 32 + 1, 5, 7, 3_001),
]


def _cases_for(dist, dtype):
    params = PARAMS[dist]
    out = [(*case, params[i % len(params)]) for i, case in enumerate(CASES)]
    for j, p in enumerate(STRESS.get((dist, dtype), [])):
        out.append((1000 + j, 3, 101, 100_001, p))
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dist", DISTS)
def test_fill_matches_reference(dist, dtype):
    for seed, stream, offset, n, p in _cases_for(dist, dtype):
        got = fill(dist, n, dtype, seed, stream, offset, **p)
        want = naive.reference(dist, n, dtype, seed, stream, offset, **p)
        assert_same_bits(got, want, f"{dist} {dtype} seed={seed} stream={stream} "
                                    f"offset={offset} n={n} {p}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_uniform_bits_are_the_stream_words(dtype):
    """Section 3.1 directly: U(i) = (word i >> 8) 2^-24, or (b >> 11) 2^-53."""
    seed, stream, offset, n = 2 ** 64 - 1, 2 ** 63 + 12345, 2 ** 34 - 3, 50_001
    got = fill("uniform", n, dtype, seed, stream, offset)
    if dtype == "float64":
        w = naive.words(seed, stream, 2 * offset, 2 * n)
        k = (w[0::2] | (w[1::2] << np.uint64(32))) >> np.uint64(11)
        want = k.astype(np.float64) * 2.0 ** -53            # exact
    else:
        k = naive.words(seed, stream, offset, n) >> np.uint64(8)
        want = (k.astype(np.float64) * 2.0 ** -24).astype(np.float32)   # exact
        want = want.astype(got.dtype)
    assert_same_bits(got, want, f"uniform {dtype}")


@pytest.mark.parametrize("dtype", ("float32", "float64"))
def test_properties(dtype):
    """Contract promises: uniform in [low, high), trunc in [a, b], masked |v| >= thr or 0."""
    n = 200_001
    for low, high in ((0.1, 0.3), (-1.0, 1e-3), (1.0, 1.0000001)):
        v = fill("uniform", n, dtype, 3, 1, 5, low=low, high=high).astype(np.float64)
        assert v.min() >= low and v.max() < high, (low, high, v.min(), v.max())
    for a, b in ((-0.3, 0.7), (0.1, 0.2)):
        v = fill("truncated_normal", n, dtype, 3, 2, 5, mean=0.15, std=0.4, a=a, b=b)
        v = v.astype(np.float64)
        assert v.min() >= a and v.max() <= b, (a, b, v.min(), v.max())
    v = fill("masked_uniform", n, dtype, 3, 3, 5, low=-1.0, high=1.0, threshold=0.1)
    v = v.astype(np.float64)
    assert np.all((v == 0) | (np.abs(v) >= 0.1))
    assert 0.05 < np.mean(v == 0) < 0.15
    v = fill("normal", n, dtype, 3, 4, 5, mean=0.0, std=1.0).astype(np.float64)
    radius = np.sqrt(2 * (24 if dtype == "float32" else 53) * np.log(2))
    assert np.abs(v).max() <= radius * (1 + 1e-6)
    assert abs(v.mean()) < 0.01 and abs(v.std() - 1) < 0.01


# Intervals deep in a tail once broke this: in erf space x could round to
# exactly +-1, log(0) took its bit path and erfinv returned a value of the
# wrong sign, clamped onto the opposite bound. Contract 3.6 now draws tails in
# erfc space and clamps y, and these tests keep it so.
@pytest.mark.parametrize("a,b", [(-2.0, 2.0), (0.5, 10.0), (-9.0, 1.5),
                                 (4.0, 6.0), (-6.0, -4.0), (5.0, 9.0)])
def test_truncated_normal_monotone_in_uniform(a, b):
    """The inverse CDF is monotone in Um: increasing in the central form,
    decreasing in the upper-tail form (y = 1 - x grows with Um), increasing
    in the mirrored lower-tail form. A value on the wrong side breaks it."""
    n, seed = 1_000_000, 1
    v = fill("truncated_normal", n, "float32", seed, 0, 0, mean=0.0, std=1.0, a=a, b=b)
    k = naive.uniform_ints(seed, 0, 0, n, np.float32)
    order = np.argsort(k | 1, kind="stable")
    s = v[order].astype(np.float64)
    if a >= 0:                      # upper-tail form: decreasing in Um
        s = -s
    drop = np.maximum.accumulate(s) - s
    worst = int(np.argmax(drop))
    assert drop[worst] <= 1e-4 * (b - a), (
        f"trunc float32 [{a}, {b}]: value {s[worst]} at a larger Um than a value "
        f"{np.maximum.accumulate(s)[worst]}; {int(np.sum(drop > 1e-4 * (b - a)))} elements "
        f"out of order")


@pytest.mark.parametrize("a,b", [(4.0, 6.0), (-6.0, -4.0), (5.0, 9.0)])
def test_truncated_normal_deep_tail_resolution(a, b):
    """A tail interval keeps its precision in float32: many distinct values,
    and none stuck on a bound (erf space gives a few hundred values there)."""
    n = 1_000_000
    v = fill("truncated_normal", n, "float32", 5, 0, 0, mean=0.0, std=1.0, a=a, b=b)
    assert np.unique(v).size > n // 4
    assert np.sum(v == np.float32(a)) + np.sum(v == np.float32(b)) < 20


# Far tails (contract v2: 3.6 and 4.4): tail forms with elements past 2^-B
# (float32 [5, 9], float64 [7.5, 40]), the far-tail form in log space (float32
# [8, 9]; [-41, -40], whose mass underflows even float64), infinite bounds, and
# a mean far outside [a, b].
FAR_TAILS = [dict(mean=0.0, std=1.0, a=5.0, b=9.0),
             dict(mean=0.0, std=1.0, a=8.0, b=9.0),
             dict(mean=0.0, std=1.0, a=-41.0, b=-40.0),
             dict(mean=0.0, std=1.0, a=0.0, b=float("inf")),
             dict(mean=0.5, std=2.0, a=float("-inf"), b=-15.0),
             dict(mean=10.0, std=1.0, a=-2.0, b=2.0),
             dict(mean=0.0, std=1.0, a=float("-inf"), b=float("inf")),
             dict(mean=0.0, std=1.0, a=7.5, b=40.0)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_far_tail_fills_match_reference(dtype):
    for i, p in enumerate(FAR_TAILS):
        seed, stream, offset, n = CASES[i % len(CASES)]
        n = min(n, 200_003)
        got = fill("truncated_normal", n, dtype, seed, stream, offset, **p)
        want = naive.reference("truncated_normal", n, dtype, seed, stream, offset, **p)
        assert_same_bits(got, want, f"truncated_normal {dtype} seed={seed} stream={stream} "
                                    f"offset={offset} n={n} {p}")


@pytest.mark.parametrize("p", [FAR_TAILS[0], FAR_TAILS[1], FAR_TAILS[7]],
                         ids=["5-9", "8-9", "7.5-40"])
@pytest.mark.parametrize("dtype", ("float32", "float64"))
def test_far_tail_subranges_and_threads(dtype, p):
    """The far elements of a tile are gathered, redone and scattered back:
    a slice, a view and another thread count give the same values."""
    seed, stream = 99, 2 ** 40 + 3
    full = fill("truncated_normal", N_FULL, dtype, seed, stream, 0, **p)
    for a, b in SLICES:
        part = fill("truncated_normal", b - a, dtype, seed, stream, a, **p)
        assert_same_bits(part, full[a:b], f"{dtype} {p} [{a}:{b}]")
    before = fi.set_num_threads(1)
    try:
        one = fill("truncated_normal", N_FULL, dtype, seed, stream, 0, **p)
    finally:
        fi.set_num_threads(before)
    assert_same_bits(one, full, f"{dtype} {p} 1 thread")


# --- 3. invariance ---------------------------------------------------------------
N_FULL = 2 ** 17 + 3                                   # takes the parallel path
SLICES = [(1, 2), (3, 4101), (2047, 2049), (4097, N_FULL - 2), (N_FULL - 3, N_FULL)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dist", DISTS)
def test_subrange_fills_equal_slices(dist, dtype):
    p = PARAMS[dist][0]
    seed, stream = 99, 2 ** 40 + 3
    full = fill(dist, N_FULL, dtype, seed, stream, 0, **p)
    for a, b in SLICES:
        part = fill(dist, b - a, dtype, seed, stream, a, **p)
        assert_same_bits(part, full[a:b], f"{dist} {dtype} [{a}:{b}]")
    # in place, into a view of a bigger buffer: the rest of the buffer is untouched
    a, b = 2049, 2 ** 16 + 1
    buf = fi.empty(N_FULL, dtype)
    bits(buf)[:] = UINT[buf.itemsize](0x7C01 if buf.itemsize == 2 else 0x7FF00001)
    sentinel = bits(buf).copy()
    getattr(fi, dist)(buf[a:b], seed=seed, stream=stream, offset=a, **p)
    assert_same_bits(buf[a:b], full[a:b], f"{dist} {dtype} view [{a}:{b}]")
    np.testing.assert_array_equal(bits(buf)[:a], sentinel[:a])
    np.testing.assert_array_equal(bits(buf)[b:], sentinel[b:])
    # shape does not matter: C order
    shaped = fi.empty((3, 7, 11), dtype)
    getattr(fi, dist)(shaped, seed=seed, stream=stream, offset=5, **p)
    assert_same_bits(shaped.reshape(-1), full[5:5 + shaped.size], f"{dist} {dtype} shaped")


@pytest.mark.parametrize("dist", DISTS)
def test_half_fills_are_float32_rounded(dist):
    p = PARAMS[dist][2]
    n, seed, stream, offset = 2 ** 20 + 1, 2 ** 63 + 12345, 11, 2 ** 34 - 3
    f32 = fill(dist, n, "float32", seed, stream, offset, **p)
    for dt in (ml_dtypes.bfloat16, np.float16):
        half = fill(dist, n, np.dtype(dt).name, seed, stream, offset, **p)
        assert_same_bits(half, f32.astype(dt), f"{dist} {np.dtype(dt).name}")


def test_half_rounding_formula():
    """Section 5: the bfloat16 bit formula is round-to-nearest-even, as ml_dtypes does."""
    f = fill("normal", 2 ** 16, "float32", 5, 5, 0, mean=0.0, std=10.0)
    edge = np.array([0x3F808000, 0x3F818000, 0x3F807FFF, 0xBF808000, 0x00008000,
                     0x7F7F8000, 0x00000001, 0x80000000], np.uint32).view(np.float32)
    f = np.concatenate([f, edge])
    b = f.view(np.uint32).astype(np.int64)
    want = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    np.testing.assert_array_equal(f.astype(ml_dtypes.bfloat16).view(np.uint16), want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dist", DISTS)
def test_thread_count_does_not_matter(dist, dtype):
    p = PARAMS[dist][1]
    n, seed, stream, offset = 2 ** 20 + 3, 7, 2 ** 64 - 5, 2 ** 34 - 3
    before = fi.set_num_threads(1)         # threads need not be cores: 3 on any machine
    try:
        one = fill(dist, n, dtype, seed, stream, offset, **p)
        fi.set_num_threads(3)
        three = fill(dist, n, dtype, seed, stream, offset, **p)
    finally:
        fi.set_num_threads(before)
    assert_same_bits(one, three, f"{dist} {dtype} 1 vs 3 threads")
    # ... and the serial path (below cpu_backend.PARALLEL_MIN elements) agrees with both
    part = fill(dist, 20_001, dtype, seed, stream, offset + 500_001, **p)
    assert_same_bits(part, three[500_001:520_002], f"{dist} {dtype} serial vs parallel")


# --- 4. unseeded calls -------------------------------------------------------------
def _unseeded(dist, n, dtype, **kw):
    out = fi.empty(n, dtype)
    getattr(fi, dist)(out, **kw)
    return out


SEQUENCE = [("normal", "float32", dict(mean=0.0, std=1.0)),
            ("uniform", "bfloat16", dict(low=-1.0, high=1.0)),
            ("truncated_normal", "float64", dict(std=0.02, a=-0.04, b=0.04)),
            ("masked_uniform", "float16", dict(low=-1.0, high=1.0, threshold=0.5)),
            ("normal", "float32", dict(mean=0.0, std=1.0))]


def test_unseeded_calls_take_consecutive_streams():
    s = 2 ** 64 - 12345
    assert fi.manual_seed(s) == s
    assert fi.initial_seed() == s
    got = [_unseeded(d, 1001, dt, **p) for d, dt, p in SEQUENCE]
    for k, ((d, dt, p), g) in enumerate(zip(SEQUENCE, got)):
        want = fill(d, 1001, dt, fi.initial_seed(), k, 0, **p)
        assert_same_bits(g, want, f"unseeded call {k}")
        assert_same_bits(g, naive.reference(d, 1001, dt, s, k, 0, **p), f"unseeded call {k}")
    assert not np.array_equal(bits(got[0]), bits(got[4]))   # same call, next stream


def test_unseeded_reproducible_by_call_order():
    runs = []
    for _ in range(2):
        fi.manual_seed(424242)
        runs.append([_unseeded(d, 777, dt, **p) for d, dt, p in SEQUENCE])
    for a, b in zip(*runs):
        assert_same_bits(a, b, "rerun after manual_seed")
    fi.manual_seed(424243)
    d, dt, p = SEQUENCE[0]
    other = _unseeded(d, 777, dt, **p)
    assert not np.array_equal(bits(other), bits(runs[0][0]))


def test_manual_seed_restarts_the_streams():
    fi.manual_seed(5)
    first = _unseeded("uniform", 333, "float32")
    _unseeded("uniform", 333, "float32")
    _unseeded("uniform", 333, "float32")
    fi.manual_seed(5)
    assert_same_bits(_unseeded("uniform", 333, "float32"), first, "after manual_seed")


def test_explicit_seed_is_stateless():
    explicit = dict(seed=31337, stream=3, offset=9)
    fi.manual_seed(77)
    a0 = _unseeded("normal", 513, "float32")
    e1 = _unseeded("normal", 513, "float32", **explicit)
    a1 = _unseeded("normal", 513, "float32")
    fi.manual_seed(78)
    e2 = _unseeded("normal", 513, "float32", **explicit)
    assert_same_bits(e1, e2, "explicit seed after manual_seed")
    assert_same_bits(e1, naive.reference("normal", 513, "float32", 31337, 3, 9), "explicit")
    # the explicit call did not advance the process-wide counter
    assert_same_bits(a0, fill("normal", 513, "float32", 77, 0, 0), "unseeded 0")
    assert_same_bits(a1, fill("normal", 513, "float32", 77, 1, 0), "unseeded 1")


def test_refused_unseeded_call_takes_no_stream():
    """distributions.py: a call that fails validation leaves ``out`` and the counter alone."""
    fi.manual_seed(8)
    out = fi.empty(100, "float32")
    out[:] = 3.0
    with pytest.raises(ValueError):
        fi.uniform(out, low=1.0, high=0.0)
    with pytest.raises(ValueError):
        fi.truncated_normal(out, a=1.0, b=-1.0)
    assert np.all(out == 3.0)
    got = _unseeded("uniform", 100, "float32")
    assert_same_bits(got, fill("uniform", 100, "float32", 8, 0, 0), "after refused calls")


def test_default_seed_in_a_fresh_process():
    """Section 6: default process seed 67280421310721; the first unseeded call is stream 0."""
    code = ("import fastinit as fi, numpy as np\n"
            "x = fi.empty(257, 'float32'); fi.normal(x)\n"
            "y = fi.empty(257, 'float32'); fi.normal(y, seed=fi.initial_seed(), stream=0)\n"
            "print(fi.initial_seed(), fi.DEFAULT_SEED, bool((x.view(np.uint32) == "
            "y.view(np.uint32)).all()), x.view(np.uint32)[:4].tolist())\n")
    env = dict(os.environ)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    seed, default, same, head = res.stdout.split(maxsplit=3)
    assert int(seed) == int(default) == 67280421310721
    assert same == "True"
    want = naive.reference("normal", 257, "float32", 67280421310721, 0, 0)
    assert json.loads(head) == bits(want)[:4].tolist()
