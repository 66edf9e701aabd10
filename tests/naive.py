"""A slow, plain-NumPy reference of the stream contract (docs/stream.md, v2).

Nothing here uses Numba or calls fastinit's own algorithms: every rule of the
contract is re-implemented on NumPy arrays, in the order the contract writes
it, so that the tests can compare the kernels against it bit for bit.

- 32-bit words are held in ``uint64`` arrays (products of two words are exact);
- every float operation runs on ``np.float32`` arrays for float16, bfloat16
  and float32 outputs and on ``np.float64`` arrays for float64, with
  constants of that same type (a float32 array times a float64 scalar would
  silently compute in float64);
- the only things taken from the kernels are Giles' published erfinv
  coefficients (``ERFINV_*``); every other constant is derived here from the
  contract's decimal literals or exact fractions, correctly rounded.

Public API: :func:`philox4x32`, :func:`blocks`, :func:`words`,
:func:`params`, :func:`reference`. ``reference(..., version=1)`` gives what
fastinit-philox v1 drew (no far-tail inversion, section 8), for the tests
that pin v2 to v1 wherever v1 was right.
"""

import math
from decimal import Decimal
from fractions import Fraction

import ml_dtypes
import numpy as np

from fastinit.kernels.cpu.philox import (ERFINV_A_F32, ERFINV_A_F64, ERFINV_B_F32,
                                     ERFINV_B_F64, ERFINV_C_F64)

F32, F64 = np.float32, np.float64
U64 = 1 << 64

# --- section 1: Philox4x32-10 --------------------------------------------------
MASK = np.uint64(0xFFFFFFFF)
S32 = np.uint64(32)
M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)


def philox4x32(counters, key):
    """Philox4x32-10 of each row of ``counters`` ((n, 4) words) under ``key`` (k0, k1).

    Returns an (n, 4) uint64 array of 32-bit output words.
    """
    c = np.asarray(counters, dtype=np.uint64).reshape(-1, 4)
    if np.any(c > MASK):
        raise ValueError("counter words must be 32-bit")
    c0, c1, c2, c3 = (c[:, j].copy() for j in range(4))
    k0, k1 = int(key[0]), int(key[1])
    if not (0 <= k0 < 2 ** 32 and 0 <= k1 < 2 ** 32):
        raise ValueError("key words must be 32-bit")
    k0, k1 = np.uint64(k0), np.uint64(k1)
    for rnd in range(10):
        if rnd:                                   # nine bumps between ten rounds
            k0 = (k0 + W0) & MASK
            k1 = (k1 + W1) & MASK
        p0 = M0 * c0                              # full 64-bit products, exact
        p1 = M1 * c2
        c0, c1, c2, c3 = (p1 >> S32) ^ c1 ^ k0, p1 & MASK, (p0 >> S32) ^ c3 ^ k1, p0 & MASK
    return np.stack([c0, c1, c2, c3], axis=1)


# --- section 2: seed, stream, words --------------------------------------------
def _check_u64(name, v):
    v = int(v)
    if not 0 <= v < U64:
        raise ValueError(f"{name} must be in [0, 2**64)")
    return v


def blocks(seed, stream, first_block, count):
    """Blocks ``first_block .. first_block + count - 1`` of ``stream``: (count, 4) words."""
    seed, stream = _check_u64("seed", seed), _check_u64("stream", stream)
    first_block = _check_u64("first_block", first_block)
    if count <= 0:
        return np.zeros((0, 4), np.uint64)
    if first_block + count > U64:
        raise ValueError("blocks past 2**64")
    j = np.uint64(first_block) + np.arange(count, dtype=np.uint64)
    ctr = np.empty((count, 4), np.uint64)
    ctr[:, 0] = j & MASK
    ctr[:, 1] = j >> S32
    ctr[:, 2] = stream & 0xFFFFFFFF
    ctr[:, 3] = stream >> 32
    return philox4x32(ctr, (seed & 0xFFFFFFFF, seed >> 32))


def words(seed, stream, first_word, count):
    """Words ``first_word ..`` (``count`` of them) of ``stream``, as uint64.

    Word n is lane n mod 4 of block n >> 2; ``first_word`` is a Python int
    (it may exceed 2**64: a float64 element i uses words 2i and 2i + 1).
    """
    first_word = int(first_word)
    if count <= 0:
        return np.zeros(0, np.uint64)
    fb, lb = first_word >> 2, (first_word + count - 1) >> 2
    w = blocks(seed, stream, fb, lb - fb + 1).reshape(-1)
    start = first_word - 4 * fb
    return w[start:start + count]


# --- exact rounding of the contract's constants ---------------------------------
def round_exact(value, t):
    """``value`` (a Fraction, or a decimal string) rounded to nearest ``t``, ties to even."""
    if isinstance(value, str):
        value = Fraction(Decimal(value))
    value = Fraction(value)
    v = t(float(value))            # within one ulp of the answer in t
    cands = {v, np.nextafter(v, t(-np.inf)), np.nextafter(v, t(np.inf))}
    best = None
    for c in cands:
        err = abs(Fraction(float(c)) - value)
        key = (err, int(np.array(c).view(np.uint32 if t is F32 else np.uint64)) & 1)
        if best is None or key < best[0]:
            best = (key, c)
    return t(best[1])


def _factorial(n):
    return math.factorial(n)


class _Consts:
    """All constants of section 4 in one compute type."""

    def __init__(self, t):
        self.t = t
        if t is F32:
            self.B = 24
            self.sqrt2 = round_exact("1.41421356", t)
            self.ln2_hi = round_exact("0.693359375", t)
            self.ln2_lo = round_exact("-2.12194440e-4", t)
            self.L = [round_exact(s, t) for s in
                      ("0.666666667", "0.4", "0.285714286", "0.222222222")]
            nsin, ncos = 4, 5
            self.erfinv = (tuple(ERFINV_A_F32), tuple(ERFINV_B_F32))
            self.erfinv_split = (t(5.0),)
            self.erfinv_shift = (t(2.5), t(3.0))
            self.far_depth, self.far_steps = 3, 1
        else:
            self.B = 53
            self.sqrt2 = round_exact("1.4142135623730951", t)
            self.ln2_hi = round_exact("6.93147180369123816490e-01", t)
            self.ln2_lo = round_exact("1.90821492927058770002e-10", t)
            # 2 / (2j + 1) to 17 significant digits
            self.L = [round_exact(format(Decimal(2) / Decimal(2 * j + 1), ".16e"), t)
                      for j in range(1, 10)]
            nsin, ncos = 8, 9
            self.erfinv = (tuple(ERFINV_A_F64), tuple(ERFINV_B_F64), tuple(ERFINV_C_F64))
            self.erfinv_split = (t(6.25), t(16.0))
            self.erfinv_shift = (t(3.125), t(3.25), t(5.0))
            self.far_depth, self.far_steps = 6, 2
        # section 4.4: 4 / pi, 16 / pi and 5/4; the continued fraction's terms
        # (4k - 3, (2k - 1) 2k), k = N .. 1, and its innermost 4N + 1
        self.far_c0 = round_exact("1.2732395447351627", t)
        self.far_k = round_exact("5.0929581789406507", t)
        self.far_d3 = round_exact("1.25", t)
        n = self.far_depth
        self.far_cf = [(t(4 * k - 3), t((2 * k - 1) * 2 * k)) for k in range(n, 0, -1)]
        self.far_cf0 = t(4 * n + 1)
        self.far_y = t(2.0 ** -(24 if t is F32 else 53))      # 2^-B
        # S_n = (-1)^n / (2n+1)!, n = 1..nsin; C_n = (-1)^n / (2n)!, n = 2..ncos
        self.S = [round_exact(Fraction((-1) ** n, _factorial(2 * n + 1)), t)
                  for n in range(1, nsin + 1)]
        self.C = [round_exact(Fraction((-1) ** n, _factorial(2 * n)), t)
                  for n in range(2, ncos + 1)]
        self.pio2 = round_exact("1.5707963267948966", t)
        # PIO2 rounded to T, then scaled by 2^-(B-2): exact
        self.pio2_scaled = t(self.pio2 * t(2.0 ** -(self.B - 2)))
        assert Fraction(float(self.pio2_scaled)) == \
            Fraction(float(self.pio2)) * Fraction(1, 2 ** (self.B - 2))
        self.scale = t(2.0 ** -self.B)
        self.zero, self.half, self.one, self.two = t(0.0), t(0.5), t(1.0), t(2.0)
        self.minus2 = t(-2.0)


CONSTS = {F32: _Consts(F32), F64: _Consts(F64)}


# --- section 3.1: bits to uniforms ----------------------------------------------
def uniform_ints(seed, stream, first, count, t):
    """The integers k of elements ``first .. first + count - 1`` (int64 array)."""
    if t is F32:
        w = words(seed, stream, first, count)
        return (w >> np.uint64(8)).astype(np.int64)
    w = words(seed, stream, 2 * first, 2 * count)
    b = w[0::2] | (w[1::2] << S32)
    return (b >> np.uint64(11)).astype(np.int64)


def _to_t(k, t):
    """T(k) for integers k that T holds exactly."""
    bound = 2 ** (24 if t is F32 else 53)
    assert np.all(np.abs(k) <= bound)
    return k.astype(t)


def U(k, t):
    return _to_t(k, t) * CONSTS[t].scale


def U1(k, t):
    return _to_t(k + 1, t) * CONSTS[t].scale


def Um(k, t):
    return _to_t(k | 1, t) * CONSTS[t].scale


# --- section 4.1: log -------------------------------------------------------------
def _horner_tail(z, coeffs):
    """c1 + z * (c2 + z * (... + z * cN)), innermost first."""
    p = coeffs[-1]
    for c in reversed(coeffs[:-1]):
        p = c + z * p
    return p


def log(x):
    """The contract's log of normal x in (0, 1], elementwise, in x's type."""
    x = np.asarray(x)
    t = x.dtype.type
    k = CONSTS[t]
    if t is F32:
        b = x.view(np.uint32).astype(np.int64)
        e = ((b >> 23) & 0xFF) - 127
        m = ((b & 0x7FFFFF) | 0x3F800000).astype(np.uint32).view(F32)
    else:
        b = x.view(np.uint64)
        e = ((b >> np.uint64(52)) & np.uint64(0x7FF)).astype(np.int64) - 1023
        m = ((b & np.uint64(0xFFFFFFFFFFFFF)) | np.uint64(0x3FF0000000000000)).view(F64)
    big = m > k.sqrt2
    m = np.where(big, m * k.half, m)
    e = e + big.astype(np.int64)
    f = m - k.one
    s = f / (k.two + f)
    z = s * s
    R = z * _horner_tail(z, k.L)
    hfsq = k.half * f * f
    lm = f - (hfsq - s * (hfsq + R))
    ef = _to_t(e, t)
    out = ef * k.ln2_hi + (lm + ef * k.ln2_lo)
    assert out.dtype == t
    return out


# --- section 4.2: sin2pi / cos2pi ---------------------------------------------------
def cossin2pi(kint, t):
    """(cos, sin) of 2 pi k 2^-B for an int64 array k in [0, 2^B)."""
    c = CONSTS[t]
    B = c.B
    Q = 1 << (B - 2)
    q = (kint + Q // 2) >> (B - 2)
    j = kint - q * Q
    assert np.all(np.abs(j) <= Q // 2)
    x = _to_t(j, t) * c.pio2_scaled
    z = x * x
    S = x + (x * z) * _horner_tail(z, c.S)
    C = (c.one - c.half * z) + (z * z) * _horner_tail(z, c.C)
    q4 = q % 4
    cos = np.select([q4 == 0, q4 == 1, q4 == 2, q4 == 3], [C, -S, -C, S])
    sin = np.select([q4 == 0, q4 == 1, q4 == 2, q4 == 3], [S, C, -S, -C])
    assert cos.dtype == t and sin.dtype == t
    return cos, sin


# --- section 4.3: erfinv ------------------------------------------------------------
def _horner(coeffs, x):
    """Horner, coefficients highest degree first."""
    p = np.full_like(x, coeffs[0])
    for cf in coeffs[1:]:
        p = cf + p * x
    return p


def erfinv(x, tt=None):
    """erfinv(x); ``tt`` = (1 - x)(1 + x) when the caller knows it better."""
    x = np.asarray(x)
    t = x.dtype.type
    c = CONSTS[t]
    w = -log((c.one - x) * (c.one + x) if tt is None else tt)
    with np.errstate(invalid="ignore"):
        sw = np.sqrt(w)
    if t is F32:
        (A, Bc), (split,), (sa, sb) = c.erfinv, c.erfinv_split, c.erfinv_shift
        p = np.where(w < split, _horner(A, w - sa), _horner(Bc, sw - sb))
    else:
        (A, Bc, Cc), (s1, s2), (sa, sb, sc) = c.erfinv, c.erfinv_split, c.erfinv_shift
        p = np.where(w < s1, _horner(A, w - sa),
                     np.where(w < s2, _horner(Bc, sw - sb), _horner(Cc, sw - sc)))
    out = p * x
    assert out.dtype == t
    return out


# --- section 4.4: the far tail ---------------------------------------------------------
def erfcinv_far(w):
    """x with -log(2 erfc(x)) = w, for w past Giles' range, elementwise, in w's type."""
    w = np.asarray(w)
    t = w.dtype.type
    c = CONSTS[t]
    a = c.half * log(c.far_c0 / w)
    u = (w + a) - (a + c.one) / (w + w)
    for _ in range(c.far_steps):
        v = u + u
        d = v + c.far_cf0
        for off, num in c.far_cf:
            d = (v + off) - num / d
        h = (c.far_k * (u / d)) / d
        g = (u - w) - c.half * log(h)
        iu = c.one / u
        u = u - g / (c.one + iu * (c.half - iu * (c.half - c.far_d3 * iu)))
    out = np.sqrt(u)
    assert out.dtype == t
    return out


# --- section 3.2: parameters --------------------------------------------------------
def rn(x, t):
    return t(x)


def up(x, t):
    """Smallest t >= x."""
    if math.isinf(x):
        return t(x)
    v = t(x)
    while float(v) < x:
        v = np.nextafter(v, t(np.inf))
    while float(np.nextafter(v, t(-np.inf))) >= x:
        v = np.nextafter(v, t(-np.inf))
    return v


def down(x, t):
    """Largest t <= x."""
    if math.isinf(x):
        return t(x)
    v = t(x)
    while float(v) > x:
        v = np.nextafter(v, t(-np.inf))
    while float(np.nextafter(v, t(np.inf))) <= x:
        v = np.nextafter(v, t(np.inf))
    return v


def below(x, t):
    """Largest t < x."""
    v = down(x, t)
    return np.nextafter(v, t(-np.inf)) if float(v) == x else v


def params(dist, t, **kw):
    """The host-rounded parameters of ``dist`` in compute type ``t`` (a dict)."""
    if dist in ("uniform", "masked_uniform"):
        low, high = float(kw.get("low", 0.0)), float(kw.get("high", 1.0))
        lo = rn(low, t)
        d = rn(high, t) - lo
        if low == high:
            floor = top = rn(low, t)
        else:
            floor, top = up(low, t), below(high, t)
        out = dict(lo=lo, d=d, floor=floor, top=top)
        if dist == "masked_uniform":
            out["thr"] = up(float(kw["threshold"]), t)
        return out
    if dist == "normal":
        return dict(mean=rn(float(kw.get("mean", 0.0)), t), std=rn(float(kw.get("std", 1.0)), t))
    if dist == "truncated_normal":
        mean, std = float(kw.get("mean", 0.0)), float(kw.get("std", 1.0))
        a, b = float(kw.get("a", -2.0)), float(kw.get("b", 2.0))
        alpha, beta = (a - mean) / std, (b - mean) / std
        r2 = math.sqrt(2)
        if alpha >= 0:            # upper tail, erfc space
            tail, sign, e0, e1 = 1, 1, math.erfc(beta / r2), math.erfc(alpha / r2)
        elif beta <= 0:           # lower tail, mirrored
            tail, sign, e0, e1 = 1, -1, math.erfc(-alpha / r2), math.erfc(-beta / r2)
        else:                     # around the mean, erf space
            tail, sign, e0, e1 = 0, 1, math.erf(alpha / r2), math.erf(beta / r2)
        e0, e1 = rn(e0, t), rn(e1, t)
        out = dict(e0=e0, de=e1 - e0, mean=rn(mean, t), ss=rn(std * r2, t),
                   a=up(a, t), b=down(b, t), tail=tail, sign=t(sign))
        if tail and e1 < CONSTS[t].far_y and kw.get("version", 2) == 2:
            # far-tail form: near and far bound in standard deviations
            near, far = (alpha, beta) if sign > 0 else (-beta, -alpha)
            w1, q0 = _far_terms(near, far, (b - a) / std)
            out.update(tail=2, q0=rn(q0, t), w1=rn(w1, t))
        return out
    raise ValueError(f"unknown distribution {dist!r}")


def _log_s(x):
    """log S(x) in float64 (section 3.6): S = v / D, v = 2 x^2, D the even
    continued fraction of erfc with 24 levels, innermost v + 97."""
    v = 2.0 * x * x
    d = v + 97.0
    for k in range(24, 0, -1):
        d = v + float(4 * k - 3) - float((2 * k - 1) * (2 * k)) / d
    return math.log(v / d)


def _far_terms(near, far, width):
    """(w1, q0) of the far-tail form in float64, as section 3.6 writes them."""
    xn = near / math.sqrt(2)
    w1 = xn * xn + math.log(xn * math.sqrt(math.pi) / 2.0) - _log_s(xn)
    if far == math.inf:
        return w1, 0.0
    xf, dx = far / math.sqrt(2), width / math.sqrt(2)
    sq = dx * (xf + xn)
    if not sq <= 800.0:
        return w1, 0.0
    return w1, math.exp(-(sq + math.log1p(dx / xn) - (_log_s(xf) - _log_s(xn))))


# --- the elements ---------------------------------------------------------------------
DTYPES = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16),
          "float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def compute_type(dtype):
    return F64 if np.dtype(dtype) == np.dtype(np.float64) else F32


def _check_all(v, t):
    assert v.dtype == t, (v.dtype, t)
    return v


def values(dist, n, t, seed, stream, offset, version=2, **kw):
    """The compute-type values of elements ``offset .. offset + n - 1``."""
    p = params(dist, t, version=version, **kw)
    c = CONSTS[t]
    if dist in ("uniform", "masked_uniform"):
        k = uniform_ints(seed, stream, offset, n, t)
        v = p["lo"] + p["d"] * U(k, t)
        v = np.minimum(np.maximum(v, p["floor"]), p["top"])
        if dist == "masked_uniform":
            v = np.where(np.abs(v) < p["thr"], c.zero, v)
        return _check_all(v, t)
    if dist == "normal":
        m0, m1 = offset // 2, (offset + n - 1) // 2
        k = uniform_ints(seed, stream, 2 * m0, 2 * (m1 - m0 + 1), t)
        u1 = U1(k[0::2], t)
        r = np.sqrt(c.minus2 * log(u1))
        cos, sin = cossin2pi(k[1::2], t)
        pair = np.empty(2 * (m1 - m0 + 1), t)
        pair[0::2] = p["mean"] + p["std"] * (r * cos)
        pair[1::2] = p["mean"] + p["std"] * (r * sin)
        start = offset - 2 * m0
        return _check_all(pair[start:start + n], t)
    if dist == "truncated_normal":
        k = uniform_ints(seed, stream, offset, n, t)
        tiny = t(np.finfo(t).tiny)
        if p["tail"] == 2:        # far tail: q = y / e1, w = -log(2y) = w1 - log(q)
            q = p["q0"] + (c.one - p["q0"]) * Um(k, t)
            q = np.minimum(np.maximum(q, tiny), c.one)
            z = erfcinv_far(p["w1"] - log(q))
        elif p["tail"]:
            y = p["e0"] + p["de"] * Um(k, t)
            y = np.minimum(np.maximum(y, tiny), c.one)
            tt = y * (t(2) - y)
            z = erfinv(c.one - y, tt)
            if version == 2:      # past Giles' range: section 4.4
                far = y < c.far_y
                z[far] = erfcinv_far(-log(tt[far]))
        else:
            y = p["e0"] + p["de"] * Um(k, t)
            below_one = np.nextafter(c.one, t(0))
            y = np.minimum(np.maximum(y, -below_one), below_one)
            z = erfinv(y)
        v = p["mean"] + p["ss"] * (z * p["sign"])
        v = np.minimum(np.maximum(v, p["a"]), p["b"])
        return _check_all(v, t)
    raise ValueError(f"unknown distribution {dist!r}")


def reference(dist, n, dtype, seed, stream, offset, version=2, **kw):
    """What a fill of ``n`` elements of ``dtype`` at ``offset`` must hold (section 3).

    ``version=1``: what fastinit-philox v1 drew (its tail form had no far-tail
    inversion and no far-tail form)."""
    dtype = DTYPES[dtype] if isinstance(dtype, str) else np.dtype(dtype)
    if int(offset) + n > U64:
        raise ValueError("offset + n past 2**64")
    v = values(dist, n, compute_type(dtype), int(seed), int(stream), int(offset),
               version=version, **kw)
    return v.astype(dtype)       # half types: float32 rounded to nearest even (section 5)
