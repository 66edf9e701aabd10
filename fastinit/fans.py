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
from .distributions import _doc, normal, truncated_normal, uniform

LAYOUTS = ("torch", "keras")
MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")
# std of a unit normal truncated to [-2, 2]; Keras divides by it.
TRUNCATED_STD = 0.87962566103423978
_LINEAR = ("linear", "identity", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
           "conv_transpose2d", "conv_transpose3d", "sigmoid")


# (input axes, output axes) of each layout; every other axis is the receptive field
LAYOUT_AXES = {"torch": ((1,), (0,)), "keras": ((-2,), (-1,))}


def _axes(axes, ndim):
    """``axes`` (an int or a sequence of ints, negative from the end) as a list of
    non-negative axes; IndexError for one outside the shape, as ``shape[axis]``."""
    if isinstance(axes, numbers.Integral):
        axes = (axes,)
    return [range(ndim)[a] for a in axes]


def axes_size(shape, axes):
    """How many elements ``shape`` has along ``axes`` (an int or a sequence of ints)."""
    return math.prod([shape[a] for a in _axes(axes, len(shape))])


def fans_by_axes(shape, in_axes, out_axes, batch_axes=()):
    """(fan_in, fan_out) of a weight whose input units lie along ``in_axes``, its
    output units along ``out_axes`` and independent copies along ``batch_axes``.

    fan_in = in size * receptive field, fan_out = out size * receptive field.
    The receptive field is the product of every other axis (exact integers,
    zero-size axes included). An axis named twice (JAX allows a 1-D weight
    with ``in_axis=out_axis=0``) makes it JAX's quotient
    ``prod(shape) / in size / out size / batch size`` (floats).
    """
    ndim = len(shape)
    ins, outs, batch = _axes(in_axes, ndim), _axes(out_axes, ndim), _axes(batch_axes, ndim)
    in_size = math.prod([shape[a] for a in ins])
    out_size = math.prod([shape[a] for a in outs])
    named = ins + outs + batch
    if len(set(named)) == len(named):
        receptive = math.prod([d for a, d in enumerate(shape) if a not in named])
    else:
        batch_size = math.prod([shape[a] for a in batch])
        receptive = math.prod(shape) / in_size / out_size / batch_size
    return in_size * receptive, out_size * receptive


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
    return fans_by_axes(shape, *LAYOUT_AXES[layout])


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
        if abs(slope) < 1e150:
            return math.sqrt(2.0 / (1 + slope ** 2))
        # slope ** 2 would overflow (torch raises OverflowError); 1 + slope**2 rounds
        # to slope**2 long before, so this is the same value
        return math.sqrt(2.0) / abs(slope)
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


@_doc
def xavier_uniform(out, gain=1.0, *, fans=None, layout="torch", seed=None, stream=0, offset=0):
    """Glorot/Xavier uniform: U(-b, b), ``b = gain * sqrt(6 / (fan_in + fan_out))``.

    Parameters
    ----------
    {out}
    gain : float, optional
        ``gain >= 0`` (see :func:`calculate_gain`).
    {fans}
    {stream}

    {returns}

    Examples
    --------
    >>> fastinit.xavier_uniform(w, seed=0)            # torch layout: w is (out, in)
    """
    gain = _gain(gain)
    fan_in, fan_out = _fans(out, fans, layout)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out)) if fan_in + fan_out else 0.0
    return uniform(out, -bound, bound, seed=seed, stream=stream, offset=offset)


@_doc
def xavier_normal(out, gain=1.0, *, fans=None, layout="torch", seed=None, stream=0, offset=0):
    """Glorot/Xavier normal: N(0, std**2), ``std = gain * sqrt(2 / (fan_in + fan_out))``.

    Parameters
    ----------
    {out}
    gain : float, optional
        ``gain >= 0``.
    {fans}
    {stream}

    {returns}

    Examples
    --------
    >>> fastinit.xavier_normal(w, gain=0.5, seed=0)
    """
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


@_doc
def kaiming_uniform(out, a=0.0, mode="fan_in", nonlinearity="leaky_relu", *, fans=None,
                    layout="torch", seed=None, stream=0, offset=0):
    """He/Kaiming uniform: U(-b, b), ``b = gain * sqrt(3 / fan)``.

    ``gain = calculate_gain(nonlinearity, a)``; ``fan`` is fan_in or fan_out as
    ``mode`` says. torch's nn.Linear default is ``a=sqrt(5)``.

    Parameters
    ----------
    {out}
    a : float, optional
        The negative slope of leaky_relu.
    mode : {{"fan_in", "fan_out"}}, optional
    nonlinearity : str, optional
        A name :func:`calculate_gain` knows.
    {fans}
    {stream}

    {returns}

    Examples
    --------
    >>> fastinit.kaiming_uniform(w, a=5 ** 0.5, seed=0)
    """
    std = _kaiming_std(out, a, mode, nonlinearity, fans, layout)
    bound = math.sqrt(3.0) * std
    return uniform(out, -bound, bound, seed=seed, stream=stream, offset=offset)


@_doc
def kaiming_normal(out, a=0.0, mode="fan_in", nonlinearity="leaky_relu", *, fans=None,
                   layout="torch", seed=None, stream=0, offset=0):
    """He/Kaiming normal: N(0, std**2), ``std = gain / sqrt(fan)``.

    Parameters
    ----------
    {out}
    a : float, optional
        The negative slope of leaky_relu.
    mode : {{"fan_in", "fan_out"}}, optional
    nonlinearity : str, optional
        A name :func:`calculate_gain` knows.
    {fans}
    {stream}

    {returns}

    Examples
    --------
    >>> fastinit.kaiming_normal(w, mode="fan_out", nonlinearity="relu", seed=0)
    """
    std = _kaiming_std(out, a, mode, nonlinearity, fans, layout)
    return normal(out, 0.0, std, seed=seed, stream=stream, offset=offset)


@_doc
def variance_scaling(out, scale=1.0, mode="fan_in", distribution="truncated_normal", *,
                     fans=None, layout="torch", seed=None, stream=0, offset=0):
    """Keras VarianceScaling: variance ``scale / n``, n the fan ``mode`` picks.

    ``"uniform"`` draws U(-l, l), ``l = sqrt(3 * scale / n)``;
    ``"untruncated_normal"`` N(0, scale / n); ``"truncated_normal"`` cuts at
    two standard deviations and divides the std by 0.87962566103423978, so
    the variance is exactly ``scale / n``. ``n = max(1, fan)``.

    Parameters
    ----------
    {out}
    scale : float, optional
        ``scale > 0``.
    mode : {{"fan_in", "fan_out", "fan_avg"}}, optional
    distribution : {{"truncated_normal", "untruncated_normal", "uniform"}}, optional
    {fans}
    {stream}

    {returns}

    Examples
    --------
    >>> fastinit.variance_scaling(w, 2.0, "fan_in", "truncated_normal", layout="keras", seed=0)
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


@_doc
def lecun_uniform(out, *, fans=None, layout="torch", seed=None, stream=0, offset=0):
    """LeCun uniform: U(-l, l), ``l = sqrt(3 / fan_in)`` (Keras LecunUniform).

    Parameters
    ----------
    {out}
    {fans}
    {stream}

    {returns}
    """
    return variance_scaling(out, 1.0, "fan_in", "uniform", fans=fans, layout=layout,
                            seed=seed, stream=stream, offset=offset)


@_doc
def lecun_normal(out, *, fans=None, layout="torch", seed=None, stream=0, offset=0):
    """LeCun normal: a truncated normal with variance ``1 / fan_in`` (Keras LecunNormal).

    ``variance_scaling(out, 1.0, "fan_in", "truncated_normal")``.

    Parameters
    ----------
    {out}
    {fans}
    {stream}

    {returns}
    """
    return variance_scaling(out, 1.0, "fan_in", "truncated_normal", fans=fans, layout=layout,
                            seed=seed, stream=stream, offset=offset)
