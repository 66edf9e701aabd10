"""Blocks of a global array: a shard's values, drawn where the shard lies (CPU).

Every element depends only on its global index, so a block is drawn as runs at
their global offsets, one per row of its leading axes (:func:`fill_tile`), and
:func:`fill_runs` checks once and calls the CPU kernel per run. ``init``
objects describe their fill with ``draw(shape) -> (kind, args)`` or define
``fill(out, *, seed, stream, offset, shape)``. Why and at what cost:
docs/keras_jax.md, "Columns".
"""

import math

import numpy as np

from . import _contract as C
from .distributions import constant, masked_uniform, normal, truncated_normal, uniform
from .kernels._abi import CTL_OFFSET, DTYPES, KINDS

LONG_RUN = 1 << 16     # runs this long go through the public fill (its own threads)

_PUBLIC = {"uniform": uniform, "masked_uniform": masked_uniform, "normal": normal,
           "trunc": truncated_normal}
_KERNEL_KIND = {"uniform": "uniform", "masked_uniform": "uniform", "normal": "normal",
                "trunc": "trunc"}


def _params(kind, args, compute):
    """The kernel parameters the public fill of ``kind`` builds from ``args``."""
    if kind in ("uniform", "masked_uniform"):
        low, high, threshold = (*args, 0.0) if kind == "uniform" else args
        return C.uniform_params(C.check_real("low", low), C.check_real("high", high),
                                C.check_real("threshold", threshold), compute)
    if kind == "normal":
        mean, std = args
        return C.normal_params(C.check_real("mean", mean), C.check_real("std", std), compute)
    mean, std, a, b = args
    return C.truncated_normal_params(C.check_real("mean", mean), C.check_real("std", std),
                                     C.check_real("a", a), C.check_real("b", b), compute)


def public_fill(kind, args, out, *, seed, stream, offset):
    """The public fill of ``kind`` with ``args`` into ``out`` at global ``offset``.

    Kinds and their args: ``"uniform"`` (low, high), ``"masked_uniform"``
    (low, high, threshold), ``"normal"`` (mean, std), ``"trunc"`` (mean, std,
    a, b), ``"constant"`` (value,).
    """
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
    C.check_range(int(np.max(offsets)), run)
    from .backends import cpu
    bits = rows.view(spec.bits)
    code = KINDS[_KERNEL_KIND[kind]]
    ctl = C.ctl_words(seed, stream, 0, spec.fmt, code)
    kernel = cpu.kernel(_KERNEL_KIND[kind], rows.dtype.name)   # chosen once, not per run
    for i in range(1, n):
        ctl[CTL_OFFSET] = offsets[i]
        kernel(bits[index[i], :run], ctl, params)
    return rows


def _rows(shape, tile, starts, sizes, k):
    """(row of the tile viewed as rows, global offset) of every run of the block."""
    if k == 0:
        return np.zeros(1, np.int64), np.array([starts[0] * math.prod(shape[1:])], np.uint64)
    lead = np.indices(sizes[:k], dtype=np.int64).reshape(k, -1)
    local = np.array([math.prod(tile[j + 1:k]) for j in range(k)], np.int64)[:, None]
    strides = np.array([math.prod(shape[j + 1:]) for j in range(k + 1)], np.uint64)
    index = (lead * local).sum(axis=0)
    first = np.array(starts[:k], np.uint64)[:, None] + lead.astype(np.uint64)
    offsets = (first * strides[:k, None]).sum(axis=0) + np.uint64(starts[k]) * strides[k]
    return index, offsets


def fill_tile(init, shape, starts, out, *, seed, stream=0):
    """Fill ``out`` with the block of the global ``shape`` array that starts at ``starts``.

    ``out`` is a C-contiguous array (a shard's buffer); its element at
    position ``p`` gets the global element ``starts + p``. Positions past the
    end of the global array (the padding of an uneven shard) are set to 0
    (a constant's value, for a constant).
    The block is cut into runs that are contiguous in the global C order
    (the trailing axes it covers whole, behind its last partial axis); each
    run is one fill at the global offset of its first element, so the block
    equals, bit for bit, the same slice of the unsharded array.
    """
    tile = out.shape
    starts = [int(s) for s in starts]
    sizes = [max(0, min(t, n - s)) for s, t, n in zip(starts, tile, shape)]
    if out.size == 0:
        return out
    kind_args = init.draw(tuple(shape))
    if kind_args is not None and kind_args[0] == "constant":   # the same value everywhere
        public_fill(*kind_args, out, seed=seed, stream=stream, offset=0)
        return out
    if sizes != list(tile):                     # padding, or nothing of the array here
        out[...] = 0
    if 0 in sizes:
        return out
    partial = [k for k in range(len(shape))
               if not (starts[k] == 0 and sizes[k] == shape[k] == tile[k])]
    if not partial:                             # the whole array
        init.fill(out.reshape(-1), seed=seed, stream=stream, offset=0, shape=shape)
        return out
    k = partial[-1]                             # axes after k are whole
    inner = math.prod(shape[k + 1:])
    rows = out.reshape(math.prod(tile[:k]), tile[k] * inner)
    run = sizes[k] * inner
    index, offsets = _rows(shape, tile, starts, sizes, k)
    if kind_args is not None:
        fill_runs(*kind_args, rows, index, run, offsets, seed=seed, stream=stream)
        return out
    for row, offset in zip(index, offsets):     # a subclass with its own fill
        init.fill(rows[row, :run], seed=seed, stream=stream, offset=offset, shape=shape)
    return out
