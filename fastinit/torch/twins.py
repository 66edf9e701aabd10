"""Twins of ``torch.nn.init``, drawn from fastinit's Philox stream.

Same names, arguments, defaults, checks and warnings as torch's, plus
keyword-only ``seed`` and ``stream``; each fills through the ``fastinit``
call that fills a NumPy buffer, so a tensor gets bit for bit what a NumPy
buffer of its shape gets. docs/torch.md, section 1.
"""

import math
import numbers
import warnings

import numpy as np
import torch
from torch import nn

from .. import _contract
from ..distributions import constant, masked_uniform, normal, truncated_normal, uniform
from ..fans import (LAYOUT_AXES, fans_by_axes, kaiming_normal, kaiming_uniform,
                    xavier_normal, xavier_uniform)
from .dtensor import fill_dtensor, is_dtensor
from .views import fill_view

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def is_uninitialized(t):
    """Whether ``t`` is a lazy module's parameter that has no shape yet."""
    return isinstance(t, nn.parameter.UninitializedTensorMixin)


def _check_generator(generator, fn):
    if generator is not None:
        raise TypeError(
            f"fastinit.torch.{fn}: a torch.Generator is not supported: fastinit draws "
            f"from its own counter-based Philox stream, so a value depends only on "
            f"(seed, stream, element index). Pass seed= (and stream=) instead of "
            f"generator=, or generator=None.")


def _check_tensor(tensor, fn):
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"fastinit.torch.{fn}: expected a torch.Tensor, "
                        f"got {type(tensor).__name__}")
    if is_uninitialized(tensor):
        raise ValueError(
            f"fastinit.torch.{fn}: the tensor is an uninitialized lazy parameter "
            f"(torch.nn.parameter.UninitializedParameter) with no shape yet; run a dry "
            f"forward pass first (module(example_input)) so it materializes, or use "
            f"fastinit.torch.init_module(..., on_lazy='defer')")
    if tensor.dtype not in FLOAT_DTYPES:
        raise TypeError(f"fastinit.torch.{fn}: the tensor must be float16, bfloat16, "
                        f"float32 or float64, got {tensor.dtype}")
    if tensor.is_inference() and not torch.is_inference_mode_enabled():
        raise ValueError(f"fastinit.torch.{fn}: the tensor is an inference tensor (made "
                         f"under torch.inference_mode()); torch allows no in-place update "
                         f"of it outside inference mode: fill a .clone() of it, or call "
                         f"{fn} inside torch.inference_mode()")


def scalar(value, name, fn, integer=False):
    """The Python number a 0-d tensor, NumPy scalar or 0-d array holds, where torch
    takes a number (bools as 0 and 1, as torch reads them); other values are left to
    the core's checks. A tensor or array of other shapes is a TypeError naming
    ``name``; so is a non-integer when ``integer``."""
    if isinstance(value, torch.Tensor) or isinstance(value, (np.ndarray, np.generic)):
        if value.ndim != 0:
            raise TypeError(f"fastinit.torch.{fn}: {name} must be a number or a 0-d "
                            f"tensor, got shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool):
        value = int(value)
    if integer and not isinstance(value, numbers.Integral):
        raise TypeError(f"fastinit.torch.{fn}: {name} must be an int, got "
                        f"{type(value).__name__}")
    return value


def fans(shape):
    """(fan_in, fan_out) as torch.nn.init._calculate_fan_in_and_fan_out, with its error."""
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer "
                         "than 2 dimensions")
    return fans_by_axes(shape, *LAYOUT_AXES["torch"])


def _fill(tensor, draw, seed, stream, fn):
    """Run ``draw(buf, offset, seed, stream)`` over ``tensor``'s memory (see
    views.fill_view): nothing on the meta device (as torch.nn.init), a DTensor
    by the block of the full tensor it holds, any other tensor in place;
    ``draw=None`` (a zero-element no-op) leaves it as it is."""
    if draw is None or tensor.is_meta:
        return tensor
    if is_dtensor(tensor):
        with torch.no_grad():
            fill_dtensor(tensor, draw, seed, stream)
        return tensor
    return fill_view(tensor, draw, seed, stream, fn)


# Texts the twins' docstrings share: each ``{name}`` in them is filled by _doc.
_DOC = {
    "tensor": """tensor : torch.Tensor
        float16, bfloat16, float32 or float64: any view, a DTensor, or a meta
        tensor (left as it is, as torch does).""",
    "matrix": """tensor : torch.Tensor
        As for uniform_, at least 2-D. fan_in = size(1) * receptive field,
        fan_out = size(0) * receptive field, of the (global) shape.""",
    "generator": """generator : None
        Must be None: the values come from fastinit's stream.""",
    "seed_stream": """seed, stream : int, optional
        The stream; ``seed=None`` takes the process-wide seed and its next stream.""",
    "returns": """Returns
    -------
    torch.Tensor
        ``tensor``, filled in place.""",
    "raises": """TypeError
        Not a float tensor, or a generator.
    ValueError
        An expanded or self-overlapping view, an uninitialized lazy parameter,""",
}


def _doc(fn):
    fn.__doc__ = fn.__doc__.format(**_DOC)
    return fn


def calculate_gain(nonlinearity, param=None):
    """torch.nn.init.calculate_gain itself (same values, same errors)."""
    return torch.nn.init.calculate_gain(nonlinearity, param)


@_doc
def uniform_(tensor, a=0.0, b=1.0, generator=None, *, seed=None, stream=0):
    """Fill ``tensor`` with U[a, b), as ``torch.nn.init.uniform_``.

    Parameters
    ----------
    {tensor}
    a, b : float
        The bounds, a < b.
    {generator}
    {seed_stream}

    {returns}

    Raises
    ------
    {raises}
        a > b; nothing is written.

    Example: ``ft.uniform_(torch.empty(3, 5), -0.1, 0.1, seed=0)``
    """
    return _fill(tensor, uniform_draw(tensor, a, b, generator), seed, stream, "uniform_")


def uniform_draw(tensor, a=0.0, b=1.0, generator=None):
    """uniform_'s checks, then its ``draw(buf, offset, seed, stream)``."""
    _check_generator(generator, "uniform_")
    _check_tensor(tensor, "uniform_")
    a, b = scalar(a, "a", "uniform_"), scalar(b, "b", "uniform_")

    def draw(buf, offset, seed, stream):
        uniform(buf, a, b, seed=seed, stream=stream, offset=offset)
    return draw


@_doc
def normal_(tensor, mean=0.0, std=1.0, generator=None, *, seed=None, stream=0):
    """Fill ``tensor`` with N(mean, std^2), as ``torch.nn.init.normal_``.

    Parameters
    ----------
    {tensor}
    mean, std : float
        Mean and standard deviation, std >= 0.
    {generator}
    {seed_stream}

    {returns}

    Raises
    ------
    {raises}
        std < 0; nothing is written.

    Example: ``ft.normal_(torch.empty(3, 5), 0.0, 0.02, seed=0)``
    """
    return _fill(tensor, normal_draw(tensor, mean, std, generator), seed, stream, "normal_")


def normal_draw(tensor, mean=0.0, std=1.0, generator=None):
    """normal_'s checks, then its draw."""
    _check_generator(generator, "normal_")
    _check_tensor(tensor, "normal_")
    mean, std = scalar(mean, "mean", "normal_"), scalar(std, "std", "normal_")

    def draw(buf, offset, seed, stream):
        normal(buf, mean, std, seed=seed, stream=stream, offset=offset)
    return draw


@_doc
def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None, *,
                  seed=None, stream=0):
    """Fill ``tensor`` with N(mean, std^2) restricted to [a, b], as torch's ``trunc_normal_``.

    ``a`` and ``b`` are absolute bounds; fastinit draws by inverse CDF, never by
    rejection. As torch, ``a = -inf`` / ``b = inf`` are one-sided bounds, and a
    mean more than 2 std outside [a, b] warns, then samples (correctly, however
    far out [a, b] lies: docs/stream.md 3.6).

    Parameters
    ----------
    {tensor}
    mean, std : float
        Of the normal before truncation, std > 0.
    a, b : float
        The bounds, a < b.
    {generator}
    {seed_stream}

    {returns}

    Raises
    ------
    {raises}
        std <= 0, a >= b; nothing is written.

    Example: ``ft.trunc_normal_(torch.empty(3, 5), std=0.02, a=-0.04, b=0.04, seed=0)``
    """
    return _fill(tensor, trunc_normal_draw(tensor, mean, std, a, b, generator), seed, stream,
                 "trunc_normal_")


def trunc_normal_draw(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None, *,
                      stacklevel=3):
    """trunc_normal_'s checks and warning, then its draw."""
    _check_generator(generator, "trunc_normal_")
    _check_tensor(tensor, "trunc_normal_")
    mean, std = scalar(mean, "mean", "trunc_normal_"), scalar(std, "std", "trunc_normal_")
    a, b = scalar(a, "a", "trunc_normal_"), scalar(b, "b", "trunc_normal_")
    if (mean < a - 2 * std) or (mean > b + 2 * std):
        warnings.warn("mean is more than 2 std from [a, b] in nn.init.trunc_normal_. "
                      "The distribution of values may be incorrect.", stacklevel=stacklevel)

    def draw(buf, offset, seed, stream):
        truncated_normal(buf, mean, std, a, b, seed=seed, stream=stream, offset=offset)
    return draw


@_doc
def masked_uniform_(tensor, low, high, threshold, *, seed=None, stream=0):
    """Fill ``tensor`` with U[low, high), then 0 where |x| < threshold, in one pass.

    Parameters
    ----------
    {tensor}
    low, high : float
        The bounds, low < high.
    threshold : float
        Values of smaller magnitude become 0; threshold >= 0.
    {seed_stream}

    {returns}

    Raises
    ------
    {raises}
        low > high, threshold < 0; nothing is written.

    Example: ``ft.masked_uniform_(torch.empty(3, 5), -1, 1, 0.5, seed=0)``
    """
    return _fill(tensor, masked_uniform_draw(tensor, low, high, threshold), seed, stream,
                 "masked_uniform_")


def masked_uniform_draw(tensor, low, high, threshold):
    """masked_uniform_'s checks, then its draw."""
    _check_tensor(tensor, "masked_uniform_")
    low, high = scalar(low, "low", "masked_uniform_"), scalar(high, "high", "masked_uniform_")
    threshold = scalar(threshold, "threshold", "masked_uniform_")

    def draw(buf, offset, seed, stream):
        masked_uniform(buf, low, high, threshold, seed=seed, stream=stream, offset=offset)
    return draw


@_doc
def constant_(tensor, val, *, seed=None, stream=0):
    """Set every element of ``tensor`` to ``val``, as ``torch.nn.init.constant_``.

    Parameters
    ----------
    {tensor}
    val : float
        The value (rounded to float32 first for the half types).
    seed, stream : int, optional
        Checked and ignored, so that it fits as an init_module rule.

    {returns}

    Raises
    ------
    {raises}
        a value the dtype cannot hold; nothing is written.

    Example: ``ft.constant_(torch.empty(3, 5), 0.3)``
    """
    _contract.resolve_stream(seed, stream)
    return _fill(tensor, constant_draw(tensor, val), 0, 0, "constant_")


def constant_draw(tensor, val):
    """constant_'s checks, then its draw (seed and stream unused)."""
    _check_tensor(tensor, "constant_")
    val = scalar(val, "val", "constant_")
    if isinstance(val, numbers.Real) and not math.isfinite(val):
        val = float(val)                   # nan and +-inf: torch's own fill, exactly

        def draw(buf, offset, seed, stream):
            with torch.no_grad():
                (buf if isinstance(buf, torch.Tensor) else buf.buffer).fill_(val)
        return draw

    def draw(buf, offset, seed, stream):
        constant(buf, val)
    return draw


def zeros_(tensor, *, seed=None, stream=0):
    """Set every element of ``tensor`` to 0, as ``torch.nn.init.zeros_``.

    Parameters, returns and errors as :func:`constant_` with ``val=0.0``.

    Example: ``ft.zeros_(torch.empty(5))``
    """
    return constant_(tensor, 0.0, seed=seed, stream=stream)


def ones_(tensor, *, seed=None, stream=0):
    """Set every element of ``tensor`` to 1, as ``torch.nn.init.ones_``.

    Parameters, returns and errors as :func:`constant_` with ``val=1.0``.

    Example: ``ft.ones_(torch.empty(5))``
    """
    return constant_(tensor, 1.0, seed=seed, stream=stream)


def _xavier(tensor, gain, generator, fn, fill):
    """The xavier twins' checks (fans from the tensor's global shape), then the draw;
    None for a zero-element tensor (left as it is)."""
    _check_generator(generator, fn)
    _check_tensor(tensor, fn)
    gain = scalar(gain, "gain", fn)
    fans_ = fans(tuple(tensor.shape))
    if tensor.numel() == 0:
        return None

    def draw(buf, offset, seed, stream):
        fill(buf, gain, fans=fans_, seed=seed, stream=stream, offset=offset)
    return draw


def xavier_uniform_draw(tensor, gain=1.0, generator=None):
    return _xavier(tensor, gain, generator, "xavier_uniform_", xavier_uniform)


def xavier_normal_draw(tensor, gain=1.0, generator=None):
    return _xavier(tensor, gain, generator, "xavier_normal_", xavier_normal)


@_doc
def xavier_uniform_(tensor, gain=1.0, generator=None, *, seed=None, stream=0):
    """Fill ``tensor`` with U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)).

    As ``torch.nn.init.xavier_uniform_``.

    Parameters
    ----------
    {matrix}
    gain : float
        Scaling factor, >= 0.
    {generator}
    {seed_stream}

    {returns}

    Raises
    ------
    {raises}
        fewer than 2 dimensions (torch's message), gain < 0.

    Example: ``ft.xavier_uniform_(torch.empty(3, 5), gain=ft.calculate_gain("relu"), seed=0)``
    """
    return _fill(tensor, xavier_uniform_draw(tensor, gain, generator), seed, stream,
                 "xavier_uniform_")


@_doc
def xavier_normal_(tensor, gain=1.0, generator=None, *, seed=None, stream=0):
    """Fill ``tensor`` with N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out)).

    As ``torch.nn.init.xavier_normal_``; parameters, returns and errors as
    :func:`xavier_uniform_`.

    Example: ``ft.xavier_normal_(torch.empty(3, 5), seed=0)``
    """
    return _fill(tensor, xavier_normal_draw(tensor, gain, generator), seed, stream,
                 "xavier_normal_")


def _kaiming(tensor, a, mode, nonlinearity, generator, fn, fill, stacklevel):
    """The kaiming twins' checks and warning, then the draw (None: a no-op)."""
    _check_generator(generator, fn)
    _check_tensor(tensor, fn)
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=stacklevel)
        return None
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of "
                         f"['fan_in', 'fan_out']")
    fans_ = fans(tuple(tensor.shape))
    calculate_gain(nonlinearity, a)                    # torch's checks and errors

    def draw(buf, offset, seed, stream):
        fill(buf, a, mode, nonlinearity, fans=fans_, seed=seed, stream=stream, offset=offset)
    return draw


def kaiming_uniform_draw(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu",
                         generator=None, *, stacklevel=4):
    return _kaiming(tensor, a, mode, nonlinearity, generator, "kaiming_uniform_",
                    kaiming_uniform, stacklevel)


def kaiming_normal_draw(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu",
                        generator=None, *, stacklevel=4):
    return _kaiming(tensor, a, mode, nonlinearity, generator, "kaiming_normal_",
                    kaiming_normal, stacklevel)


@_doc
def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None,
                     *, seed=None, stream=0):
    """Fill ``tensor`` with U(-b, b), b = gain * sqrt(3 / fan), as ``kaiming_uniform_``.

    gain = ``calculate_gain(nonlinearity, a)``; a zero-element tensor is left
    as it is, with torch's warning.

    Parameters
    ----------
    {matrix}
    a : float
        Negative slope of the leaky_relu after this layer.
    mode : {{"fan_in", "fan_out"}}
        Which fan (any case, as torch).
    nonlinearity : str
        As :func:`calculate_gain`.
    {generator}
    {seed_stream}

    {returns}

    Raises
    ------
    {raises}
        fewer than 2 dimensions, another mode or nonlinearity (torch's messages).

    Example: ``ft.kaiming_uniform_(torch.empty(3, 5), a=5 ** 0.5, seed=0)``
    """
    return _fill(tensor, kaiming_uniform_draw(tensor, a, mode, nonlinearity, generator),
                 seed, stream, "kaiming_uniform_")


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None,
                    *, seed=None, stream=0):
    """Fill ``tensor`` with N(0, std^2), std = gain / sqrt(fan), as ``kaiming_normal_``.

    Parameters, returns and errors as :func:`kaiming_uniform_`.

    Example: ``ft.kaiming_normal_(torch.empty(3, 5), nonlinearity="relu", seed=0)``
    """
    return _fill(tensor, kaiming_normal_draw(tensor, a, mode, nonlinearity, generator),
                 seed, stream, "kaiming_normal_")


# Each twin's checks and draw, by name, without seed and stream: the redirect
# (fastinit.torch.redirect) applies them to a parameter's positions.
DRAWS = {
    "uniform_": uniform_draw, "normal_": normal_draw, "trunc_normal_": trunc_normal_draw,
    "constant_": constant_draw, "masked_uniform_": masked_uniform_draw,
    "xavier_uniform_": xavier_uniform_draw, "xavier_normal_": xavier_normal_draw,
    "kaiming_uniform_": kaiming_uniform_draw, "kaiming_normal_": kaiming_normal_draw,
}
