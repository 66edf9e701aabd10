"""Layer 3: the fills. Each validates everything, then runs one kernel.

A public function checks its arguments and leaves ``out`` untouched when
anything is wrong; only then does it draw its stream and launch.
"""

import numpy as np

from . import _contract as C
from ._dispatch import as_target, fill_constant, launch


def _fill(out, kernel, params_for, seed, stream, offset):
    target = as_target(out)
    seed, stream = C.resolve_stream(seed, stream)
    offset = C.check_range(offset, target.size)
    params = params_for(target)
    if target.size == 0:
        return out
    if seed is None:
        seed, stream = C.take_stream()

    def ctl_for(fmt, chunks, kind):
        return C.ctl_words(seed, stream, offset, fmt, chunks, kind)

    launch(kernel, target, ctl_for, params)
    return out


def uniform(out, low=0.0, high=1.0, *, seed=None, stream=0, offset=0):
    """Fill ``out`` with U[low, high): ``low + (high - low) * u``, u = k 2^-24 (2^-53).

    float16 and bfloat16 hold the float32 values rounded, so they can equal
    ``high`` (docs/stream.md 3.8).
    """
    low, high = C.check_real("low", low), C.check_real("high", high)

    def params(t):
        C.check_fits("low", low, t.dtype)
        C.check_fits("high", high, t.dtype)
        return C.uniform_params(low, high, 0.0, t.compute)
    return _fill(out, "uniform", params, seed, stream, offset)


def masked_uniform(out, low, high, threshold, *, seed=None, stream=0, offset=0):
    """Uniform on [low, high), then 0 where |x| < threshold, in one pass."""
    low, high = C.check_real("low", low), C.check_real("high", high)
    threshold = C.check_real("threshold", threshold)
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")

    def params(t):
        C.check_fits("low", low, t.dtype)
        C.check_fits("high", high, t.dtype)
        return C.uniform_params(low, high, threshold, t.compute)
    return _fill(out, "uniform", params, seed, stream, offset)


def normal(out, mean=0.0, std=1.0, *, seed=None, stream=0, offset=0):
    """Fill ``out`` with N(mean, std^2) by Box-Muller on element pairs (2m, 2m+1)."""
    mean, std = C.check_real("mean", mean), C.check_real("std", std)
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")

    def params(t):
        C.check_fits("mean and std", abs(mean) + std * C.NORMAL_RADIUS[t.compute], t.dtype)
        return C.normal_params(mean, std, t.compute)
    return _fill(out, "normal", params, seed, stream, offset)


def truncated_normal(out, mean=0.0, std=1.0, a=-2.0, b=2.0, *, seed=None, stream=0, offset=0):
    """N(mean, std^2) restricted to the absolute bounds [a, b], by inverse CDF.

    ``a`` may be -inf and ``b`` +inf (one-sided or no truncation), and
    [a, b] may lie any distance from the mean (docs/stream.md 3.6)."""
    mean, std = C.check_real("mean", mean), C.check_real("std", std)
    a, b = C.check_real("a", a, infinite=True), C.check_real("b", b, infinite=True)
    if std <= 0:
        raise ValueError(f"std must be > 0, got {std}")
    if a >= b:
        raise ValueError(f"a must be < b, got a={a}, b={b}")

    def params(t):
        lo, hi = C.truncated_normal_reach(mean, std, a, b, t.compute)
        C.check_fits("a", lo, t.dtype)
        C.check_fits("b", hi, t.dtype)
        return C.truncated_normal_params(mean, std, a, b, t.compute)
    return _fill(out, "trunc", params, seed, stream, offset)


def constant(out, value):
    """Fill ``out`` with ``value`` (rounded to float32 first for the half types)."""
    value = C.check_real("value", value)
    target = as_target(out)
    C.check_fits("value", value, target.dtype)
    if target.size:
        v = np.array(target.compute(value)).astype(target.dtype)
        fill_constant(target, v.view(target.bits.dtype)[()])
    return out


def zeros(out):
    """Fill ``out`` with 0."""
    return constant(out, 0.0)


def ones(out):
    """Fill ``out`` with 1."""
    return constant(out, 1.0)
