"""Layer 3: the fills. Each checks all its arguments, then runs one kernel.

A failed check raises before anything is written, so ``out`` is either
filled completely or left untouched.
"""

from . import _contract as C
from ._dispatch import target_of

_BUFFER = """out : buffer
        A writable, C-contiguous float16, bfloat16, float32 or float64 buffer:
        a NumPy array (any subclass but a masked array), a torch tensor, or
        any object with ``__dlpack__`` (CPU or CUDA). Filled in place."""
_STREAM = """seed : int in [0, 2**64) or None, optional
        The Philox key. None takes the process-wide seed
        (:func:`fastinit.manual_seed`) and the next stream of a process-wide
        counter, so an unseeded program is reproducible by call order.
    stream : int in [0, 2**64), optional
        Which of the seed's independent streams to draw from (needs a seed).
    offset : int, optional
        Global index of ``out``'s first element: element ``k`` gets the
        stream's value for index ``offset + k``, so a shard filled with its
        offset holds exactly its slice of the full tensor.
        ``offset + out.size <= 2**64``."""
_RETURNS = """Returns
    -------
    out
        The same buffer.

    Raises
    ------
    TypeError
        ``out`` is no buffer, or holds another dtype; a parameter is no number.
    ValueError
        ``out`` is read-only, non-contiguous or misaligned; a parameter is out
        of range or would overflow the dtype. ``out`` is left untouched."""


_FANS = """fans : (int, int), optional
        (fan_in, fan_out) to use instead of those of ``out``'s shape: for a
        shard or a flat buffer whose fans come from the full weight.
    layout : {"torch", "keras"}, optional
        How ``out``'s shape reads: torch is (out, in, *kernel), keras is
        (*kernel, in, out)."""


def _doc(func):
    """Fill the shared sections (``{out}``, ``{stream}``, ``{fans}``, ``{returns}``)
    into a docstring."""
    if func.__doc__:                          # None under python -OO
        func.__doc__ = func.__doc__.format(out=_BUFFER, stream=_STREAM, fans=_FANS,
                                           returns=_RETURNS)
    return func


def _fill(out, kind, params_for, seed, stream, offset):
    backend, target = target_of(out)
    seed, stream = C.resolve_stream(seed, stream)
    offset = C.check_range(offset, target.size)
    params = params_for(target)
    if target.size == 0:
        return out
    if seed is None:
        seed, stream = C.take_stream()
    backend.fill(target, kind, seed, stream, offset, params)
    return out


@_doc
def uniform(out, low=0.0, high=1.0, *, seed=None, stream=0, offset=0):
    """Fill ``out`` with U[low, high).

    ``v = rn(low) + (rn(high) - rn(low)) * u`` with ``u = k * 2**-24`` (float64:
    ``2**-53``), clamped into [low, high) (docs/stream.md 3.3). float16 and
    bfloat16 hold the float32 value rounded, so they can equal ``high``.

    Parameters
    ----------
    {out}
    low, high : float
        The interval; ``low <= high``.
    {stream}

    {returns}

    Examples
    --------
    >>> w = fastinit.uniform(np.empty((256, 128), np.float32), -0.1, 0.1, seed=0)
    """
    low, high = C.check_real("low", low), C.check_real("high", high)

    def params(t):
        C.check_fits("low", low, t.name)
        C.check_fits("high", high, t.name)
        return C.uniform_params(low, high, 0.0, t.compute)
    return _fill(out, "uniform", params, seed, stream, offset)


@_doc
def masked_uniform(out, low, high, threshold, *, seed=None, stream=0, offset=0):
    """Fill ``out`` with U[low, high), then 0 where ``|x| < threshold``, in one pass.

    Parameters
    ----------
    {out}
    low, high : float
        The interval, as :func:`uniform`.
    threshold : float
        Values of smaller magnitude become +0.0; ``threshold >= 0``.
    {stream}

    {returns}

    Examples
    --------
    >>> fastinit.masked_uniform(w, -1.0, 1.0, 0.5, seed=0)   # about half are 0
    """
    low, high = C.check_real("low", low), C.check_real("high", high)
    threshold = C.check_real("threshold", threshold)
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")

    def params(t):
        C.check_fits("low", low, t.name)
        C.check_fits("high", high, t.name)
        return C.uniform_params(low, high, threshold, t.compute)
    return _fill(out, "uniform", params, seed, stream, offset)


@_doc
def normal(out, mean=0.0, std=1.0, *, seed=None, stream=0, offset=0):
    """Fill ``out`` with N(mean, std**2), by Box-Muller on element pairs (2m, 2m+1).

    ``x = mean + std * r * cos2pi(u2)`` (and ``sin2pi`` for the odd element),
    ``r = sqrt(-2 log u1)`` (docs/stream.md 3.5).

    Parameters
    ----------
    {out}
    mean : float
    std : float
        ``std >= 0``.
    {stream}

    {returns}

    Examples
    --------
    >>> fastinit.normal(w, 0.0, 0.02, seed=0, stream=7)
    """
    mean, std = C.check_real("mean", mean), C.check_real("std", std)
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")

    def params(t):
        C.check_fits("mean and std", abs(mean) + std * C.NORMAL_RADIUS[t.compute], t.name)
        return C.normal_params(mean, std, t.compute)
    return _fill(out, "normal", params, seed, stream, offset)


@_doc
def truncated_normal(out, mean=0.0, std=1.0, a=-2.0, b=2.0, *, seed=None, stream=0, offset=0):
    """Fill ``out`` with N(mean, std**2) restricted to the absolute bounds [a, b].

    Drawn by inverse CDF in one pass (no rejection), never outside [a, b]
    (docs/stream.md 3.6); ``a``/``b`` are bounds on the values, as in
    ``torch.nn.init.trunc_normal_``, not in units of ``std``. ``a`` may be
    -inf and ``b`` +inf (one-sided or no truncation), and [a, b] may lie any
    distance from the mean.

    Parameters
    ----------
    {out}
    mean : float
    std : float
        ``std > 0``.
    a, b : float
        ``a < b``; ``a = -inf`` and ``b = inf`` are allowed.
    {stream}

    {returns}

    Examples
    --------
    >>> fastinit.truncated_normal(w, 0.0, 0.02, -0.04, 0.04, seed=0)
    """
    mean, std = C.check_real("mean", mean), C.check_real("std", std)
    a, b = C.check_real("a", a, infinite=True), C.check_real("b", b, infinite=True)
    if std <= 0:
        raise ValueError(f"std must be > 0, got {std}")
    if a >= b:
        raise ValueError(f"a must be < b, got a={a}, b={b}")

    def params(t):
        lo, hi = C.truncated_normal_reach(mean, std, a, b, t.compute)
        C.check_fits("a", lo, t.name)
        C.check_fits("b", hi, t.name)
        return C.truncated_normal_params(mean, std, a, b, t.compute)
    return _fill(out, "trunc", params, seed, stream, offset)


@_doc
def constant(out, value):
    """Fill ``out`` with ``value``.

    The value is rounded to the compute type (float32, float64 for float64
    buffers), then to nearest even for float16/bfloat16 (docs/stream.md 3.7).

    Parameters
    ----------
    {out}
    value : float
        Finite, and within the dtype's range.

    {returns}

    Examples
    --------
    >>> fastinit.constant(bias, 0.1)
    """
    value = C.check_real("value", value)
    backend, target = target_of(out)
    C.check_fits("value", value, target.name)
    if target.size:
        backend.fill_constant(target, C.constant_bits(value, target.name))
    return out


def zeros(out):
    """Fill ``out`` with +0.0: ``constant(out, 0.0)``."""
    return constant(out, 0.0)


def ones(out):
    """Fill ``out`` with 1.0: ``constant(out, 1.0)``."""
    return constant(out, 1.0)
