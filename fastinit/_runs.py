"""Many short runs of one global array, drawn with one public fill's checks (CPU).

A shard of a sharded weight is a block of the global array: in the global
C order, one run per row of its leading axes, each at its own global
offset. A column shard of a 4096 x 4096 kernel is 4096 runs of 1024
elements, and a public fill (``fastinit.normal(run, ..., offset=...)``)
costs tens of microseconds of argument checks and dispatch per call,
several times the draw itself. :func:`fill_runs` checks once (the first
run goes through the public fill, so a bad parameter raises before
anything else is written) and draws the other runs with the same CPU
kernel entry (``fill_serial``) and the same kernel parameters the public
fill builds (``fastinit._contract``), one call per run at its offset.
Every element therefore holds what the public fill at its global offset
gives; the tests compare the two bit for bit for every kind and dtype.

This is a CPU backend duty written from outside fastinit.backends; it
belongs there (a ``fill_runs`` next to ``fill``) once that package takes it.
"""

import numpy as np

from . import _contract as C
from .distributions import constant, normal, truncated_normal, uniform
from .kernels._abi import CTL_OFFSET, DTYPES, KINDS

LONG_RUN = 1 << 16     # runs this long go through the public fill (its own threads)

_PUBLIC = {"uniform": uniform, "normal": normal, "trunc": truncated_normal}


def _params(kind, args, compute):
    """The kernel parameters the public fill of ``kind`` builds from ``args``."""
    if kind == "uniform":
        low, high = args
        return C.uniform_params(C.check_real("low", low), C.check_real("high", high), 0.0,
                                compute)
    if kind == "normal":
        mean, std = args
        return C.normal_params(C.check_real("mean", mean), C.check_real("std", std), compute)
    mean, std, a, b = args
    return C.truncated_normal_params(C.check_real("mean", mean), C.check_real("std", std),
                                     C.check_real("a", a), C.check_real("b", b), compute)


def public_fill(kind, args, out, *, seed, stream, offset):
    """The public fill of ``kind`` (``"uniform"``, ``"normal"``, ``"trunc"``,
    ``"constant"``) with ``args`` into ``out`` at global ``offset``."""
    if kind == "constant":
        return constant(out, *args)
    return _PUBLIC[kind](out, *args, seed=seed, stream=stream, offset=offset)


def fill_runs(kind, args, rows, index, run, offsets, *, seed, stream):
    """Fill ``rows[index[i], :run]`` with the elements ``offsets[i] .. offsets[i] + run - 1``.

    ``rows`` is a C-contiguous 2-D NumPy array (float16, bfloat16, float32 or
    float64; a shard's buffer viewed as rows), ``index`` the rows to fill and
    ``offsets`` their global offsets. ``kind``/``args`` as :func:`public_fill`.
    """
    n = len(offsets)
    if n == 0 or run == 0:
        return rows
    first = rows[index[0], :run]
    public_fill(kind, args, first, seed=seed, stream=stream, offset=int(offsets[0]))
    if kind == "constant" or run >= LONG_RUN:
        for i in range(1, n):
            public_fill(kind, args, rows[index[i], :run], seed=seed, stream=stream,
                        offset=int(offsets[i]))
        return rows
    spec = DTYPES[rows.dtype.name]
    compute = np.float64 if spec.compute == "float64" else np.float32
    params = _params(kind, args, compute)
    C.check_range(max(int(o) for o in offsets), run)
    from .kernels import cpu as kernels
    bits = rows.view(spec.bits)
    ctl = C.ctl_words(seed, stream, 0, spec.fmt, 1, KINDS[kind])
    fill_serial = kernels.fill_serial
    for i in range(1, n):
        ctl[CTL_OFFSET] = offsets[i]
        fill_serial(bits[index[i], :run], ctl, params)
    return rows
