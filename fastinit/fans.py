"""Layer 3: fan and gain rules, and the initializers built on them.

Formulas follow ``torch.nn.init`` (xavier, kaiming, calculate_gain) and
Keras (lecun, variance scaling, with its 0.87962566103423978 correction
for a normal truncated at two standard deviations).
"""

import math
import numbers

import numpy as np

from . import _contract as C
from ._dispatch import target_of
from .distributions import normal, truncated_normal, uniform

LAYOUTS = ("torch", "keras")
MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")
# std of a unit normal truncated to [-2, 2]; Keras divides by it.
TRUNCATED_STD = 0.87962566103423978
_LINEAR = ("linear", "identity", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
           "conv_transpose2d", "conv_transpose3d", "sigmoid")


def fans(shape, layout="torch"):
    """(fan_in, fan_out) of a weight of ``shape``.

    torch layout is (out, in, *kernel); keras layout is (*kernel, in, out).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    shape = tuple(shape)
    for d in shape:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Integral) or d < 0:
            raise ValueError(f"shape must hold non-negative integers, got {shape}")
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise ValueError(f"fans need a tensor of at least 2 dimensions, got shape {shape}; "
                         f"pass fans=(fan_in, fan_out) for a bias or a flat shard")
    if layout == "torch":
        receptive = math.prod(shape[2:])
        return shape[1] * receptive, shape[0] * receptive
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def calculate_gain(nonlinearity, param=None):
    """The gain torch.nn.init.calculate_gain gives for ``nonlinearity``."""
    if nonlinearity in _LINEAR:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, numbers.Real) and not isinstance(param, (bool, np.bool_)):
            slope = C.check_real("negative_slope", param)
        else:
            raise ValueError(f"negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def _shape(out):
    shape = getattr(out, "shape", None)
    if shape is None:
        shape = target_of(out)[1].shape
    return tuple(shape)


def _fans(out, fans_, layout):
    if fans_ is None:
        return fans(_shape(out), layout)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    try:
        fan_in, fan_out = fans_
    except (TypeError, ValueError):
        raise TypeError(f"fans must be a pair (fan_in, fan_out), got {fans_!r}") from None
    for name, v in (("fan_in", fan_in), ("fan_out", fan_out)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) \
                or not 1 <= v < C.U64:
            raise ValueError(f"fans: {name} must be a positive integer below 2**64, "
                             f"got {v!r}")
    return int(fan_in), int(fan_out)


def _fan(fan_in, fan_out, mode):
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    if mode == "fan_avg":
        return (fan_in + fan_out) / 2.0
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _gain(gain):
    gain = C.check_real("gain", gain)
    if gain < 0:
        raise ValueError(f"gain must be >= 0, got {gain}")
    return gain


def xavier_uniform(out, gain=1.0, *, fans=None, layout="torch", seed=None, stream=0, offset=0):
    """U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""
    gain = _gain(gain)
    fan_in, fan_out = _fans(out, fans, layout)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out)) if fan_in + fan_out else 0.0
    return uniform(out, -bound, bound, seed=seed, stream=stream, offset=offset)


def xavier_normal(out, gain=1.0, *, fans=None, layout="torch", seed=None, stream=0, offset=0):
    """N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    gain = _gain(gain)
    fan_in, fan_out = _fans(out, fans, layout)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out)) if fan_in + fan_out else 0.0
    return normal(out, 0.0, std, seed=seed, stream=stream, offset=offset)


def _kaiming_std(out, a, mode, nonlinearity, fans_, layout):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    if isinstance(a, numbers.Real) and not isinstance(a, (bool, np.bool_)):
        a = C.check_real("a", a)     # others get calculate_gain's ValueError, as torch
    gain = calculate_gain(nonlinearity, a)
    fan_in, fan_out = _fans(out, fans_, layout)
    fan = _fan(fan_in, fan_out, mode)
    return gain / math.sqrt(fan) if fan else 0.0       # fan 0: an empty tensor, a no-op


def kaiming_uniform(out, a=0.0, mode="fan_in", nonlinearity="leaky_relu", *, fans=None,
                    layout="torch", seed=None, stream=0, offset=0):
    """U(-b, b), b = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a)."""
    std = _kaiming_std(out, a, mode, nonlinearity, fans, layout)
    bound = math.sqrt(3.0) * std
    return uniform(out, -bound, bound, seed=seed, stream=stream, offset=offset)


def kaiming_normal(out, a=0.0, mode="fan_in", nonlinearity="leaky_relu", *, fans=None,
                   layout="torch", seed=None, stream=0, offset=0):
    """N(0, std^2), std = gain / sqrt(fan)."""
    std = _kaiming_std(out, a, mode, nonlinearity, fans, layout)
    return normal(out, 0.0, std, seed=seed, stream=stream, offset=offset)


def variance_scaling(out, scale=1.0, mode="fan_in", distribution="truncated_normal", *,
                     fans=None, layout="torch", seed=None, stream=0, offset=0):
    """Keras VarianceScaling: variance scale / n, n the fan ``mode`` picks.

    ``truncated_normal`` cuts at two stddev and divides the stddev by
    0.87962566103423978 so the variance is exactly scale / n.
    """
    scale = C.check_real("scale", scale)
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    fan_in, fan_out = _fans(out, fans, layout)
    variance = scale / max(1.0, _fan(fan_in, fan_out, mode))
    kw = dict(seed=seed, stream=stream, offset=offset)
    if distribution == "uniform":
        limit = math.sqrt(3.0 * variance)
        return uniform(out, -limit, limit, **kw)
    if distribution == "untruncated_normal":
        return normal(out, 0.0, math.sqrt(variance), **kw)
    std = math.sqrt(variance) / TRUNCATED_STD
    return truncated_normal(out, 0.0, std, -2.0 * std, 2.0 * std, **kw)


def lecun_uniform(out, *, fans=None, layout="torch", seed=None, stream=0, offset=0):
    """U(-l, l), l = sqrt(3 / fan_in) (Keras LecunUniform)."""
    return variance_scaling(out, 1.0, "fan_in", "uniform", fans=fans, layout=layout,
                            seed=seed, stream=stream, offset=offset)


def lecun_normal(out, *, fans=None, layout="torch", seed=None, stream=0, offset=0):
    """Truncated normal with variance 1 / fan_in (Keras LecunNormal)."""
    return variance_scaling(out, 1.0, "fan_in", "truncated_normal", fans=fans, layout=layout,
                            seed=seed, stream=stream, offset=offset)
