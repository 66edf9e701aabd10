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

STREAM_VERSION = "fastinit-philox v1"
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


def ctl_words(seed, stream, offset, fmt, chunks, kind):
    """The uint64 control words of one launch, in the order of ``kernels._abi.CTL_*``."""
    ctl = np.array([offset, seed & MASK32, seed >> 32, stream & MASK32, stream >> 32,
                    fmt, chunks, kind], dtype=np.uint64)
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


def check_real(name, value):
    """``value`` as a finite Python float, or a clear error naming it."""
    if type(value) is float:                       # the common case, fast
        if math.isfinite(value):
            return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be finite, got an integer past the float range") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


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


@_param_cache
def truncated_normal_params(mean, std, a, b, t):
    """Kernel parameters (e0, de, mean, ss, a, b, tail, sign) of contract 3.6.

    An interval on one side of the mean is drawn in erfc space, where a deep
    tail keeps its relative precision; one around the mean in erf space.
    """
    if std <= 0:
        raise ValueError(f"std must be > 0 for a truncated normal, got {std}")
    if a >= b:
        raise ValueError(f"a must be < b, got a={a}, b={b}")
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
    name = np.dtype(t).name
    if not math.isfinite(float(ss)):
        raise ValueError(f"std = {std:g} overflows {name}")
    if not math.isfinite(float(rn(mean, t))):
        raise ValueError(f"mean = {mean:g} overflows {name}")
    if lo > hi:
        raise ValueError(f"no {name} value lies in [a, b] = [{a!r}, {b!r}]")
    if not e0 < e1 or (tail and e1 < np.finfo(t).tiny):
        raise ValueError(
            f"[a, b] = [{a}, {b}] lies too far in a tail of N({mean}, {std}**2) for "
            f"{np.dtype(t).name}: its probability mass is below the smallest normal "
            f"{np.dtype(t).name}")
    return np.array([e0, t(e1 - e0), rn(mean, t), ss, lo, hi, tail, sign], dtype=t)
