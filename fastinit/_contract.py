"""Layer 1: the stream contract's host side and the parameter checks.

Everything here runs once per call, before any kernel touches the buffer:
seeds, streams and offsets are checked and split into Philox words, and
float parameters are rounded into the compute type exactly as
docs/stream.md (section 3.2) says.
"""

import functools
import hashlib
import math
import numbers
import threading

import numpy as np

from .kernels._abi import CTL_WORDS, DTYPES

STREAM_VERSION = "fastinit-philox v2"
DEFAULT_SEED = 67280421310721          # torch's default seed, for familiarity
U64 = 1 << 64
MASK32 = 0xFFFFFFFF

_state_lock = threading.Lock()
_state = {"seed": DEFAULT_SEED, "next_stream": 0}


# --- integers -----------------------------------------------------------------
def check_u64(name, value):
    """``value`` as a Python int in [0, 2^64), or a clear error naming it."""
    if type(value) is int and 0 <= value < U64:      # the common case, fast
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer in [0, 2**64), got {type(value).__name__}")
    value = int(value)
    if not 0 <= value < U64:
        raise ValueError(f"{name} must be in [0, 2**64), got {value}")
    return value


def manual_seed(seed):
    """Set the process-wide seed for unseeded calls and restart their streams."""
    seed = check_u64("seed", seed)
    with _state_lock:
        _state["seed"] = seed
        _state["next_stream"] = 0
    return seed


def initial_seed():
    """The process-wide seed that unseeded calls use."""
    return _state["seed"]


def resolve_stream(seed, stream):
    """The (seed, stream) of one call.

    An explicit seed is stateless. ``seed=None`` takes the process-wide seed
    and the next stream of the process-wide counter; the counter is only
    advanced once the caller commits (see :func:`take_stream`).
    """
    if seed is None:
        if stream is not None and check_u64("stream", stream) != 0:
            raise ValueError("stream needs an explicit seed: with seed=None each call "
                             "takes the next stream of the process-wide generator")
        return None, None
    return check_u64("seed", seed), check_u64("stream", 0 if stream is None else stream)


def take_stream():
    """Advance the process-wide counter; returns (seed, stream)."""
    with _state_lock:
        s = _state["next_stream"]
        if s >= U64:
            raise OverflowError("the process-wide generator has used all 2**64 streams")
        _state["next_stream"] = s + 1
        return _state["seed"], s


def stream_for(name):
    """The stream of a named tensor: BLAKE2b with an 8-byte digest of the
    UTF-8 name, read as a little-endian unsigned integer. Used wherever a
    tensor's values must not depend on the order tensors are filled in."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def check_range(offset, size):
    offset = check_u64("offset", offset)
    if offset + size > U64:
        raise ValueError(f"offset + size must be at most 2**64, got {offset} + {size}")
    return offset


def ctl_words(seed, stream, offset, fmt, kind):
    """The uint64 control words of one launch, in the order of ``kernels._abi.CTL_*``."""
    ctl = np.array([offset, seed & MASK32, seed >> 32, stream & MASK32, stream >> 32,
                    fmt, kind], dtype=np.uint64)
    assert ctl.size == CTL_WORDS
    return ctl


# --- floats ---
def _param_cache(build):
    """Memoize a parameter builder on the exact bits of its float arguments.

    The arrays are read-only to the kernels, and a model's init calls the
    same initializer many times. Keys use ``float.hex`` so -0.0 and 0.0 stay
    apart (functools.lru_cache would merge them).
    """
    cache = {}

    @functools.wraps(build)
    def cached(*args):
        key = tuple(a.hex() if type(a) is float else a for a in args)
        hit = cache.get(key)
        if hit is None:
            hit = build(*args)
            if len(cache) < 4096:
                cache[key] = hit
        return hit
    return cached


def number_of(value, name, *, to_numpy=np.asarray, error=TypeError, kind="a 0-d array"):
    """A Python number from a number, a NumPy scalar or a 0-d array-like that
    ``to_numpy`` converts (a framework's scalar tensor); anything else raises
    ``error`` naming ``name``. The adapters convert once, when an initializer is built."""
    if isinstance(value, numbers.Number) and not isinstance(value, np.ndarray):
        return value.item() if isinstance(value, np.generic) else value
    try:
        arr = np.asarray(to_numpy(value))
    except Exception as exc:
        raise error(f"{name} must be a number or {kind}, got {type(value).__name__}") from exc
    if arr.ndim != 0 or arr.dtype.kind not in "biuf":
        raise error(f"{name} must be a number or {kind}, got shape {arr.shape} of {arr.dtype}")
    return arr.item()


def check_real(name, value, infinite=False):
    """``value`` as a finite Python float, or a clear error naming it.

    ``infinite=True`` also lets +-inf through (never NaN): the bounds of a
    truncated normal may be one-sided."""
    if type(value) is float:                       # the common case, fast
        if math.isfinite(value):
            return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be finite, got an integer past the float range") from None
    if math.isfinite(value) or (infinite and not math.isnan(value)):
        return value
    raise ValueError(f"{name} must be {'a number' if infinite else 'finite'}, got {value}")


def rn(x, t):
    """Nearest value of float type ``t`` (ties to even)."""
    return t(x)


def up(x, t):
    """Smallest value of ``t`` that is >= x."""
    v = t(x)
    return np.nextafter(v, t(np.inf)) if float(v) < x else v


def down(x, t):
    """Largest value of ``t`` that is <= x."""
    v = t(x)
    return np.nextafter(v, t(-np.inf)) if float(v) > x else v


def below(x, t):
    """Largest value of ``t`` that is < x."""
    v = down(x, t)
    return np.nextafter(v, t(-np.inf)) if float(v) == x else v


def check_fits(name, bound, dtype):
    """Refuse parameters whose values would overflow the output dtype (a name)."""
    limit = DTYPES[dtype].max
    if not abs(bound) <= limit:
        raise ValueError(f"{name} gives values up to {bound:g} in magnitude, past the "
                         f"largest {dtype} ({limit:g})")


def constant_bits(value, dtype):
    """The bits of ``value`` stored as ``dtype`` (a name): rn in the compute type,
    then, for the half types, the float32 value rounded to nearest even
    (docs/stream.md 3.7 and 5), as an int."""
    if dtype == "float64":
        return int(np.float64(value).view(np.uint64))
    f32 = np.float32(value)
    if dtype == "float32":
        return int(f32.view(np.uint32))
    if dtype == "float16":
        return int(f32.astype(np.float16).view(np.uint16))
    b = int(f32.view(np.uint32))                         # bfloat16: contract section 5
    return (b + 0x7FFF + ((b >> 16) & 1)) >> 16


# Largest |r| of Box-Muller: sqrt(-2 log 2^-B), B = 24 or 53 (docs/stream.md 3.5).
NORMAL_RADIUS = {np.float32: math.sqrt(2 * 24 * math.log(2)),
                 np.float64: math.sqrt(2 * 53 * math.log(2))}


@_param_cache
def uniform_params(low, high, threshold, t):
    """Kernel parameters (lo, d, floor, top, thr) of contract 3.3 and 3.4."""
    if low > high:
        raise ValueError(f"low must be <= high, got low={low}, high={high}")
    lo = rn(low, t)
    with np.errstate(over="ignore"):
        d = t(rn(high, t) - lo)
    if not math.isfinite(float(d)):
        raise ValueError(f"high - low = {high - low:g} overflows {np.dtype(t).name}")
    if low == high:
        floor = top = lo
    else:
        floor, top = up(low, t), below(high, t)
        if floor > top:
            raise ValueError(f"no {np.dtype(t).name} value lies in [low, high) = "
                             f"[{low!r}, {high!r})")
    thr = up(threshold, t)
    return np.array([lo, d, floor, top, thr], dtype=t)


@_param_cache
def normal_params(mean, std, t):
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    return np.array([rn(mean, t), rn(std, t)], dtype=t)


# --- truncated normal (contract 3.6) -------------------------------------------
# The far-tail form: intervals whose every y = 1 - |x| lies below 2^-B,
# past the range of Giles' polynomials, are drawn in log space.
FAR_Y = {np.float32: 2.0 ** -24, np.float64: 2.0 ** -53}
# The largest distance |a - mean| / std (or |b - mean| / std) of the near bound
# in the far-tail form: past it w1 ~ alpha^2 / 2 leaves the normal range of
# erfcinv_far's logs (4 / (pi w) would be subnormal).
FAR_ALPHA_MAX = {np.float32: 2.0 ** 60, np.float64: 2.0 ** 500}
_CF_DEPTH = 24                     # full float64 precision for x >= 3


def _log_s(x):
    """log(S(x)), S(x) = x sqrt(pi) exp(x^2) erfc(x), for x >= 3, in float64:
    the even continued fraction of erfc, 24 levels (converged to rounding)."""
    v = 2.0 * x * x
    d = v + (4 * _CF_DEPTH + 1)
    for k in range(_CF_DEPTH, 0, -1):
        d = v + (4 * k - 3) - (2 * k - 1) * (2 * k) / d
    return math.log(v / d)


def far_tail_terms(near, far, width):
    """(w1, r) of the far-tail form, in float64.

    ``near`` and ``far`` are the bounds' distances from the mean in
    standard deviations (near >= 3 sqrt 2, far > near, possibly inf),
    ``width = far - near``, computed by the caller without cancellation.
    w1 = -log(2 erfc(near / sqrt2)) and r = erfc(far / sqrt2) / erfc(near / sqrt2),
    from -log erfc(x) = x^2 + log(x sqrt(pi)) - log S(x): no erfc is formed, so
    nothing underflows however far the interval lies.
    """
    r2 = math.sqrt(2.0)
    xn = near / r2
    w1 = xn * xn + math.log(xn * math.sqrt(math.pi) / 2.0) - _log_s(xn)
    if math.isinf(far):
        return w1, 0.0
    xf = far / r2
    dx = width / r2
    # -log r = xf^2 - xn^2 + log(xf / xn) - (log S(xf) - log S(xn)), where
    # 0 < log S(xf) - log S(xn) < 0.03: past 800 r is 0 in float64
    sq = dx * (xf + xn)
    if not sq <= 800.0:
        return w1, 0.0
    d = sq + math.log1p(dx / xn) - (_log_s(xf) - _log_s(xn))
    return w1, math.exp(-d)


def truncated_normal_reach(mean, std, a, b, t):
    """The smallest and largest value a fill can hold, for the overflow
    checks: [a, b] itself where a bound is finite; where it is infinite, the
    farthest the inverse CDF can reach (y >= the smallest normal T, or
    q >= 2^-B in the far-tail form)."""
    if math.isfinite(a) and math.isfinite(b):
        return a, b
    p = truncated_normal_params(mean, std, a, b, t)
    w = -math.log(2.0 * float(np.finfo(t).tiny))   # y >= TINY: w = -log(2y) at most
    if p[6] > 1:                                   # far-tail form: q >= about 2^-B
        w = float(p[1]) - math.log(FAR_Y[t]) + 1.0
    z = math.sqrt(2.0 * w) * std                   # x^2 <= w, z = sqrt2 x
    return (a if math.isfinite(a) else mean - z), (b if math.isfinite(b) else mean + z)


@_param_cache
def truncated_normal_params(mean, std, a, b, t):
    """Kernel parameters of contract 3.6, by form: central and tail
    (e0, de, mean, ss, a, b, tail, sign); far tail (r, w1, mean, ss, a, b, 2, sign).

    An interval on one side of the mean is drawn in erfc space, where a deep
    tail keeps its relative precision; one around the mean in erf space; one
    wholly past 2^-B in erfc space (past Giles' polynomials) in log space.
    ``a`` may be -inf and ``b`` +inf.
    """
    if std <= 0:
        raise ValueError(f"std must be > 0 for a truncated normal, got {std}")
    if a >= b:
        raise ValueError(f"a must be < b, got a={a}, b={b}")
    name = np.dtype(t).name
    alpha, beta = (a - mean) / std, (b - mean) / std
    r2 = math.sqrt(2.0)
    if alpha >= 0:
        tail, sign, e0, e1 = 1, 1, math.erfc(beta / r2), math.erfc(alpha / r2)
    elif beta <= 0:
        tail, sign, e0, e1 = 1, -1, math.erfc(-alpha / r2), math.erfc(-beta / r2)
    else:
        tail, sign, e0, e1 = 0, 1, math.erf(alpha / r2), math.erf(beta / r2)
    e0, e1 = rn(e0, t), rn(e1, t)
    ss, lo, hi = rn(std * r2, t), up(a, t), down(b, t)
    if not math.isfinite(float(ss)):
        raise ValueError(f"std = {std:g} overflows {name}")
    if not math.isfinite(float(rn(mean, t))):
        raise ValueError(f"mean = {mean:g} overflows {name}")
    if lo > hi:
        raise ValueError(f"no {name} value lies in [a, b] = [{a!r}, {b!r}]")
    if tail and e1 < FAR_Y[t]:
        # far-tail form: every y would be below 2^-B
        near_name, near, far = ("a", alpha, beta) if sign > 0 else ("b", -beta, -alpha)
        if not near <= FAR_ALPHA_MAX[t]:
            raise ValueError(
                f"{near_name} is {near:g} standard deviations from the mean ({mean}, std "
                f"{std}); the {name} truncated normal reaches at most "
                f"{FAR_ALPHA_MAX[t]:g} (2**{int(math.log2(FAR_ALPHA_MAX[t]))})")
        w1, r = far_tail_terms(near, far, (b - a) / std)
        return np.array([rn(r, t), rn(w1, t), rn(mean, t), ss, lo, hi, 2, sign], dtype=t)
    if not e0 < e1:
        raise ValueError(
            f"[a, b] = [{a}, {b}] is too narrow for N({mean}, {std}**2) in {name}: its "
            f"probability mass rounds to 0 (e0 = e1 = {float(e1):g})")
    return np.array([e0, t(e1 - e0), rn(mean, t), ss, lo, hi, tail, sign], dtype=t)
