"""The truncated normal far out in a tail (docs/stream.md 3.6, 4.4, 8).

- Statistics: intervals [k, k+1] and [k, k+3] standard deviations out, both
  signs, k = 3..12 in float32 and 3..35 in float64, 2^18 draws each: a
  Kolmogorov-Smirnov test against the truncated normal (p > 1e-3), and the
  mean and standard deviation within 6 standard errors of scipy's;
- one-sided and unbounded intervals (a = -inf, b = +inf), intervals whose
  mass underflows the compute type, a mean far outside [a, b] (torch warns
  and samples), and the refusals that are left, each naming its argument;
- v2 keeps v1's values wherever v1 drew from Giles' fitted range: fills
  pinned by digests of the v1 kernels, and element by element against the
  v1 rules of the reference (tests/naive.py, ``version=1``);
- the torch and JAX adapters pass infinite bounds and far tails through.

The truncated normal's CDF comes from ``scipy.special.log_ndtr`` in log
space (checked against ``scipy.stats.truncnorm.cdf`` below): truncnorm.cdf
takes half a second a call out there. The reference mean, standard deviation
and kurtosis are ``scipy.stats.truncnorm.stats`` of the upper-tail interval,
mirrored for a lower tail: scipy 1.17 gets the lower-tail moments wrong near
[-16, -15] (the standard deviation off by 98%), the upper-tail ones agree
with the closed form to 1e-7 of a standard deviation for every interval here.
"""

import hashlib
import math
import warnings

import ml_dtypes
import numpy as np
import pytest
import scipy.special as sp
import scipy.stats as st

import fastinit as fi

import naive
from conftest import bits

N = 1 << 18
P_MIN = 1e-3
SE_MAX = 6.0
INF = math.inf


# --- the reference law ----------------------------------------------------------
def _upper_cdf(alpha, beta):
    """CDF of N(0, 1) cut to [alpha, beta], 0 <= alpha < beta <= inf, in log space."""
    la = sp.log_ndtr(-alpha)
    lb = sp.log_ndtr(-beta) if beta < INF else -INF
    den = -np.expm1(lb - la)

    def cdf(z):
        z = np.clip(np.asarray(z, np.float64), alpha, beta)
        return -np.expm1(sp.log_ndtr(-z) - la) / den
    return cdf


def standard_law(alpha, beta):
    """(cdf, mean, sd, excess kurtosis) of N(0, 1) cut to [alpha, beta]."""
    if alpha >= 0 or beta <= 0:
        sign = 1.0 if alpha >= 0 else -1.0
        lo, hi = (alpha, beta) if sign > 0 else (-beta, -alpha)
        upper = _upper_cdf(lo, hi)
        m, v, k = (float(x) for x in st.truncnorm.stats(lo, hi, moments="mvk"))
        if sign > 0:
            return upper, m, math.sqrt(v), k
        return (lambda z: 1.0 - upper(-np.asarray(z, np.float64))), -m, math.sqrt(v), k
    ref = st.truncnorm(alpha, beta)
    m, v, k = (float(x) for x in ref.stats(moments="mvk"))
    return ref.cdf, m, math.sqrt(v), k


def check_law(x, mean, std, a, b, what):
    """KS, mean and sd of the draws ``x`` against N(mean, std^2) cut to [a, b]."""
    v = np.asarray(x).astype(np.float64)
    assert np.isfinite(v).all(), what
    assert v.min() >= a and v.max() <= b, (what, v.min(), v.max())
    z = (v - mean) / std
    cdf, m, sd, kurt = standard_law((a - mean) / std, (b - mean) / std)
    p = st.kstest(z, cdf).pvalue
    n = z.size
    se_mean = sd / math.sqrt(n)
    se_sd = sd * math.sqrt(max(kurt + 2.0, 0.0) / (4.0 * n))
    dm = (z.mean() - m) / se_mean
    ds = (z.std() - sd) / se_sd
    assert p > P_MIN, f"{what}: KS p = {p:.3g}"
    assert abs(dm) < SE_MAX, f"{what}: mean {z.mean()!r} vs {m!r} ({dm:+.1f} SE)"
    assert abs(ds) < SE_MAX, f"{what}: sd {z.std()!r} vs {sd!r} ({ds:+.1f} SE)"
    return p, dm, ds


def test_log_space_cdf_is_scipys():
    """The log-space CDF used here equals scipy.stats.truncnorm.cdf."""
    for alpha, beta in ((3.0, 4.0), (12.0, 15.0), (35.0, 38.0), (20.0, INF), (0.0, INF)):
        cdf, *_ = standard_law(alpha, beta)
        width = min(beta - alpha, 8.0 / max(alpha, 1.0))
        z = alpha + width * np.linspace(0.0, 1.0, 9)
        np.testing.assert_allclose(cdf(z), st.truncnorm(alpha, beta).cdf(z), rtol=1e-9,
                                   atol=1e-12)
        lower, *_ = standard_law(-beta, -alpha)
        np.testing.assert_allclose(lower(-z), 1.0 - cdf(z), rtol=1e-12, atol=1e-15)


# --- 1. the grid of tail intervals ------------------------------------------------
def _grid():
    out = []
    for dtype, ks in (("float32", range(3, 13)), ("float64", range(3, 36))):
        for k in ks:
            for width in (1, 3):
                out.append(pytest.param(dtype, float(k), float(k + width),
                                        id=f"{dtype}-[{k},{k + width}]"))
                out.append(pytest.param(dtype, float(-k - width), float(-k),
                                        id=f"{dtype}-[{-k - width},{-k}]"))
    return out


@pytest.mark.parametrize("dtype, a, b", _grid())
def test_tail_interval_law(dtype, a, b):
    seed = 1000 + int(abs(a)) * 8 + int(b - a) * 2 + (a < 0)
    x = fi.truncated_normal(np.empty(N, dtype), 0.0, 1.0, a, b, seed=seed, stream=3)
    check_law(x, 0.0, 1.0, a, b, f"{dtype} [{a}, {b}]")


# --- 2. one-sided, unbounded, underflowing, mean far outside --------------------
@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("mean, std, a, b", [
    (0.0, 1.0, 0.0, INF),            # half-normal
    (1.0, 2.0, -INF, -1.0),          # lower tail, one-sided
    (0.0, 1.0, -INF, INF),           # no truncation: N(0, 1) by inverse CDF
    (0.5, 1.0, -INF, 1.5),           # central form, one side open
    (0.0, 1.0, 6.0, INF),            # far-tail form, one-sided
    (0.0, 1.0, -INF, -40.0),         # mass below float64's smallest normal
    (0.0, 1.0, 40.0, 41.0),
    (0.0, 1.0, 5.0, 9.0),            # mixed: y on both sides of 2^-B
    (10.0, 1.0, -2.0, 2.0),          # mean 8 sd above b (torch warns and samples)
    (-3.0, 0.1, -1.0, 0.0),          # 20 sd below a
])
def test_special_interval_law(dtype, mean, std, a, b):
    x = fi.truncated_normal(np.empty(N, dtype), mean, std, a, b, seed=77, stream=5)
    check_law(x, mean, std, a, b, f"{dtype} N({mean}, {std}^2) on [{a}, {b}]")


@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("alpha", [200.0, 1e3, 1e5, 1e9])
def test_very_far_interval_is_exponential_above_a(dtype, alpha):
    """Far out the law on [a, b] is a + Exp(rate alpha) to O(1/alpha^2):
    float64 holds it finely enough for a KS test up to 1e5 sd; float32 holds
    a few hundred values at 200 sd and fewer further, so there the bounds and
    the draws within a few 1/alpha of a."""
    a, b = alpha, alpha + 1.0
    x = fi.truncated_normal(np.empty(N, dtype), 0.0, 1.0, a, b, seed=5).astype(np.float64)
    assert x.min() >= a and x.max() <= b
    spread = x - a
    if dtype == "float64" and alpha <= 200:       # scipy's moments fail further out
        check_law(x, 0.0, 1.0, a, b, f"float64 [{a}, {b}]")
    elif dtype == "float64" and alpha <= 1e5:
        d = st.kstest(spread * alpha, st.expon.cdf).pvalue
        assert d > P_MIN, (alpha, d)
    else:
        ulp = float(np.spacing(np.dtype(dtype).type(a)))
        assert spread.max() <= 20.0 / alpha + 2 * ulp, (alpha, spread.max())


def test_mass_underflow_was_refused_and_is_drawn():
    """v1 refused [50, 60] (its erfc underflows); v2 draws it, near 50."""
    for dtype in ("float32", "float64"):
        x = fi.truncated_normal(np.empty(4096, dtype), 0.0, 1.0, 50.0, 60.0, seed=1)
        x = x.astype(np.float64)
        assert 50.0 <= x.min() and x.max() < 50.5 and abs(x.mean() - 50.02) < 0.002


@pytest.mark.parametrize("dtype, a, b, name", [
    ("float32", 2.0 ** 61, INF, "a"),
    ("float32", -INF, -(2.0 ** 61), "b"),
    ("float64", 1e160, 2e160, "a"),
    ("float64", -2e160, -1e160, "b"),
])
def test_refused_past_the_far_limit(dtype, a, b, name):
    x = np.full(16, 7.0, dtype)
    with pytest.raises(ValueError, match=rf"\b{name}\b is .* standard deviations"):
        fi.truncated_normal(x, 0.0, 1.0, a, b, seed=1)
    assert (x == 7.0).all()


def test_the_far_limit_itself_is_drawn():
    for dtype, alpha in (("float32", 2.0 ** 60), ("float64", 2.0 ** 500)):
        x = fi.truncated_normal(np.empty(1000, dtype), 0.0, 1.0, alpha, INF, seed=2)
        assert (x.astype(np.float64) >= alpha).all() and np.isfinite(x).all()


@pytest.mark.parametrize("a, b, name", [(float("nan"), 1.0, "a"), (0.0, float("nan"), "b"),
                                        (INF, INF, "a"), (-INF, -INF, "a"), (1.0, -INF, "a"),
                                        (INF, 5.0, "a")])
def test_bad_infinite_bounds(a, b, name):
    x = np.full(16, 7.0, np.float32)
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        fi.truncated_normal(x, 0.0, 1.0, a, b, seed=1)
    assert (x == 7.0).all()


def test_infinite_bound_past_float16():
    """b = inf: the values reach ~13 sd (float32 y >= the smallest normal), so
    std = 1e4 could pass 65504 in float16: refused, naming b; std = 1 is fine."""
    x = np.full(16, 7.0, np.float16)
    with pytest.raises(ValueError, match=r"\bb\b.*float16"):
        fi.truncated_normal(x, 0.0, 1e4, 0.0, INF, seed=1)
    with pytest.raises(ValueError, match=r"\ba\b.*float16"):
        fi.truncated_normal(x, 0.0, 1e4, -INF, 0.0, seed=1)
    assert (x == 7.0).all()
    fi.truncated_normal(x, 0.0, 1.0, 0.0, INF, seed=1)
    assert (x >= 0).all() and np.isfinite(x).all()


# --- 3. v1's values are kept ---------------------------------------------------------
# sha256 (first 32 hex digits) of fills of 2^16 + 3 elements, seed 20240917,
# stream 3, offset 12345, made by the fastinit-philox v1 kernels (commit
# 4327557 of main, before v2); none of these fills has an element with
# y < 2^-B, which test_v1_digests checks with the reference.
V1_DIGESTS = {
    (0.0, 1.0, -2.0, 2.0, "float32"): "75c73d5e7f0ed614efe12955e771d0b9",
    (0.0, 1.0, -2.0, 2.0, "float64"): "9aa13b1139d55a4084944a707eeecf71",
    (0.0, 1.0, -2.0, 2.0, "bfloat16"): "47283197546383e03f700e60c6b6abd7",
    (0.0, 1.0, -2.0, 2.0, "float16"): "74c233a1a94e7d2ab0f8b49bd69d71df",
    (0.0, 1.0, 0.0, 1.0, "float32"): "3e56327e54477a4d1104207d7b3f25e8",
    (0.0, 1.0, 0.0, 1.0, "float64"): "cb3890ad975c11051fa2e9a3b610f0cc",
    (0.0, 1.0, 0.0, 1.0, "bfloat16"): "141b3a2a8d40f15004fe34397bab7369",
    (0.0, 1.0, 0.0, 1.0, "float16"): "f003bdb7de400e745f08c6213587255e",
    (0.2, 1.5, -1.0, 3.0, "float32"): "827a964848dfa7a1aa8175fed0a65f23",
    (0.2, 1.5, -1.0, 3.0, "float64"): "2fa192592600373af0910dce10892539",
    (0.2, 1.5, -1.0, 3.0, "bfloat16"): "e1dae575bd6f40d2e241679157c797f1",
    (0.2, 1.5, -1.0, 3.0, "float16"): "74c9c5578a75848562382aa2a634f2d4",
    (0.0, 1.0, 3.0, 4.0, "float32"): "61bff01d6eaae7aa445065b918aa2996",
    (0.0, 1.0, 3.0, 4.0, "bfloat16"): "33d79faac8b6c8cdf3b8c374e14e2685",
    (0.0, 1.0, 3.0, 4.0, "float16"): "7eb1cfc250386f6d44716c1ffc0f748d",
    (0.0, 1.0, -4.0, -3.0, "float32"): "20b49d9cfb0af5f98d0cee4ab82b1dd5",
    (0.0, 1.0, 4.0, 6.0, "float64"): "0460726b67e326f448e3f8c6e9baf38a",
    (0.0, 1.0, -6.0, -4.0, "float64"): "3df25264470818f33588be89302678b0",
    (0.0, 1.0, 5.0, 9.0, "float64"): "364ec46a5181c39a46443a22b8da90f9",
    (0.0, 0.02, -0.04, 0.04, "float32"): "1b19984581b7b2687e634010d44c68bb",
    (0.0, 0.02, -0.04, 0.04, "float64"): "42c083a756cbdb2bedb4dfc92907f70c",
    (0.0, 0.02, -0.04, 0.04, "bfloat16"): "651e309b935281cde57d14dd81a453ab",
    (0.0, 0.02, -0.04, 0.04, "float16"): "dac5128fe9045ccad2c4572170c4e359",
}
PIN_N, PIN_SEED, PIN_STREAM, PIN_OFFSET = 2 ** 16 + 3, 20240917, 3, 12345


def far_mask(n, dtype, seed, stream, offset, **kw):
    """Which elements of a fill are past Giles' range (section 3.6: y < 2^-B)."""
    t = naive.compute_type(naive.DTYPES[dtype])
    p = naive.params("truncated_normal", t, **kw)
    if p["tail"] == 0:
        return np.zeros(n, bool)
    if p["tail"] == 2:
        return np.ones(n, bool)
    k = naive.uniform_ints(seed, stream, offset, n, t)
    y = np.maximum(p["e0"] + p["de"] * naive.Um(k, t), t(np.finfo(t).tiny))
    return y < naive.CONSTS[t].far_y


@pytest.mark.parametrize("case", list(V1_DIGESTS), ids=[str(c) for c in V1_DIGESTS])
def test_v1_digests(case):
    mean, std, a, b, dtype = case
    kw = dict(mean=mean, std=std, a=a, b=b)
    assert not far_mask(PIN_N, dtype, PIN_SEED, PIN_STREAM, PIN_OFFSET, **kw).any()
    out = fi.empty(PIN_N, dtype)
    fi.truncated_normal(out, seed=PIN_SEED, stream=PIN_STREAM, offset=PIN_OFFSET, **kw)
    digest = hashlib.sha256(bits(out).tobytes()).hexdigest()[:32]
    assert digest == V1_DIGESTS[case], f"{case}: the values v1 drew changed"


# Intervals that reach past 2^-B: v2 must equal v1 on every element that is not.
MIXED = [
    ("float32", 0.0, 1.0, 5.0, 9.0),
    ("float32", 0.0, 1.0, 4.0, 6.0),
    ("float32", 0.0, 1.0, -6.0, -4.0),
    ("float32", 0.5, 2.0, 9.0, 40.0),
    ("bfloat16", 0.0, 1.0, 5.0, 9.0),
    ("float16", 0.0, 1.0, -9.0, -5.0),
    ("float64", 0.0, 1.0, 8.0, 9.0),
    ("float64", 0.0, 1.0, -40.0, -7.5),
]


@pytest.mark.parametrize("dtype, mean, std, a, b", MIXED)
def test_v1_values_kept_below_the_switch(dtype, mean, std, a, b):
    n, seed, stream, offset = 300_001, 2 ** 64 - 5, 9, 2 ** 34 - 3
    kw = dict(mean=mean, std=std, a=a, b=b)
    out = fi.empty(n, dtype)
    fi.truncated_normal(out, seed=seed, stream=stream, offset=offset, **kw)
    v1 = naive.reference("truncated_normal", n, dtype, seed, stream, offset, version=1, **kw)
    far = far_mask(n, dtype, seed, stream, offset, **kw)
    assert 0 < far.sum() < n, "the case must mix both kinds of element"
    np.testing.assert_array_equal(bits(out)[~far], bits(v1)[~far])


# --- 4. the framework adapters ----------------------------------------------------------
def test_torch_trunc_normal_far_tail_and_infinite_bounds():
    torch = pytest.importorskip("torch")
    import fastinit.torch as ft

    with pytest.warns(UserWarning, match="more than 2 std"):      # as torch does
        t = ft.trunc_normal_(torch.empty(N), 0.0, 1.0, 8.0, 9.0, seed=0)   # the case
    check_law(t.numpy(), 0.0, 1.0, 8.0, 9.0, "torch float32 [8, 9]")
    with pytest.warns(UserWarning, match="more than 2 std"):
        t = ft.trunc_normal_(torch.empty(N, dtype=torch.float64), 0.0, 1.0, 20.0, 21.0, seed=0)
    check_law(t.numpy(), 0.0, 1.0, 20.0, 21.0, "torch float64 [20, 21]")
    t = ft.trunc_normal_(torch.empty(N), 0.0, 1.0, 0.0, INF, seed=1)
    check_law(t.numpy(), 0.0, 1.0, 0.0, INF, "torch [0, inf)")
    with pytest.warns(UserWarning, match="more than 2 std"):
        t = ft.trunc_normal_(torch.empty(N), mean=10.0, std=1.0, a=-2.0, b=2.0, seed=1)
    check_law(t.numpy(), 10.0, 1.0, -2.0, 2.0, "torch mean 10 on [-2, 2]")
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # mean within 2 std of [a, inf): no warning
        h = ft.trunc_normal_(torch.empty(4099, dtype=torch.bfloat16), 0.0, 1.0, -1.0, INF,
                             seed=1)
    assert bool((h.float() >= -1.0).all()) and bool(h.float().isfinite().all())
    with pytest.warns(UserWarning, match="more than 2 std"):     # b = -7 < mean - 2 std
        h = ft.trunc_normal_(torch.empty(4099, dtype=torch.bfloat16), 0.0, 1.0, -INF, -7.0,
                             seed=1)
    assert bool((h.float() <= -7.0).all()) and bool(h.float().isfinite().all())


def test_jax_truncated_normal_far_tail():
    jax = pytest.importorskip("jax")
    fj = pytest.importorskip("fastinit.jax")
    x = fj.truncated_normal(1.0, lower=7.0, upper=9.0)(jax.random.key(3), (N,), "float32")
    check_law(np.asarray(x), 0.0, 1.0, 7.0, 9.0, "jax float32 [7, 9]")
    x = fj.truncated_normal(0.5, lower=-INF, upper=-6.0)(jax.random.key(4), (N,), "float32")
    check_law(np.asarray(x), 0.0, 0.5, -INF, -3.0, "jax float32 (-inf, -6 sd]")
    init = fj.truncated_normal(1.0, lower=7.0, upper=9.0)
    f32 = np.asarray(init(jax.random.key(3), (4099,), "float32"))
    h = np.asarray(init(jax.random.key(3), (4099,), "bfloat16"))
    assert h.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(bits(h), bits(f32.astype(ml_dtypes.bfloat16)))
