"""fastinit._blocks: a shard's tile of a global array, drawn at its global offsets.

What the sharded JAX and Keras paths rest on: every tile equals the same
slice of the whole array, bit for bit, for every kind and dtype, however
the block is cut (rows, columns, 2-D and 3-D blocks, uneven tiles with
padding); the many-runs path (one kernel call per run) gives what the
public fill gives at each offset; bad parameters raise before any write.
"""

import math

import numpy as np
import pytest
from conftest import ALL_DTYPES, bits

import fastinit as fi
from fastinit import _blocks

# (kind, args) of every draw fastinit.jax and fastinit.keras use
DRAWS = [("uniform", (-0.5, 0.75)), ("masked_uniform", (-1.0, 1.0, 0.25)),
         ("normal", (0.1, 0.02)), ("trunc", (0.0, 0.3, -0.6, 0.45)), ("constant", (0.125,))]


class Draw:
    """An ``init`` for fill_tile: one fixed draw whatever the shape."""

    def __init__(self, kind, args):
        self.kind_args = (kind, args)
        self.fills = 0

    def draw(self, shape):
        return self.kind_args

    def fill(self, out, *, seed, stream=0, offset=0, shape=None):
        self.fills += 1
        _blocks.public_fill(*self.kind_args, out, seed=seed, stream=stream, offset=offset)


class OwnFill(Draw):
    """An ``init`` with no draw: fill_tile calls its fill once per run."""

    def draw(self, shape):
        return None


def whole(init, shape, dtype, seed=3, stream=5):
    out = fi.empty(shape, np.dtype(dtype).name)
    _blocks.public_fill(*init.kind_args, out.reshape(-1), seed=seed, stream=stream, offset=0)
    return out


def tile_of(init, shape, starts, tile, dtype, seed=3, stream=5):
    out = fi.empty(tile, np.dtype(dtype).name)
    out.view(np.uint8)[...] = 0xAB                 # poison: every element must be written
    return _blocks.fill_tile(init, shape, starts, out, seed=seed, stream=stream)


BLOCKS = [  # (global shape, starts, tile): rows, columns, 2-D, 3-D, uneven, empty
    ((8, 12), (2, 0), (3, 12)),
    ((8, 12), (0, 4), (8, 4)),
    ((8, 12), (4, 6), (4, 6)),
    ((3, 10, 8), (1, 5, 4), (2, 5, 4)),
    ((3, 10, 8), (0, 0, 4), (3, 10, 4)),
    ((10, 7), (9, 0), (3, 7)),                    # uneven: 2 padding rows
    ((7, 10), (0, 8), (7, 3)),                    # uneven: 1 padding column
    ((5, 6), (6, 0), (2, 6)),                     # a tile wholly past the end
    ((20,), (15,), (5,)),
]


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind, args", DRAWS, ids=[d[0] for d in DRAWS])
@pytest.mark.parametrize("shape, starts, tile", BLOCKS, ids=str)
def test_tile_is_the_slice(shape, starts, tile, kind, args, dtype):
    init = Draw(kind, args)
    full = whole(init, shape, dtype)
    got = tile_of(init, shape, starts, tile, dtype)
    inside = tuple(slice(0, max(0, min(t, n - s))) for s, t, n in zip(starts, tile, shape))
    want = full[tuple(slice(s, s + i.stop) for s, i in zip(starts, inside))]
    assert np.array_equal(bits(got[inside]), bits(want))
    pad = np.ones(tile, bool)
    pad[inside] = False
    if kind == "constant":       # a constant fills its padding too
        assert np.all(got[pad].astype(np.float64) == np.float64(np.asarray(
            args[0], dtype)))
    else:
        assert np.all(bits(got)[pad] == 0)


def test_runs_are_the_public_fill_at_each_offset():
    """The many-runs path against one public fill per run, long and short runs."""
    rng = np.random.default_rng(0)
    for dtype in ALL_DTYPES:
        for kind, args in DRAWS[:-1]:
            for run in (1, 3, 64, _blocks.LONG_RUN + 5):
                n = 6 if run < 1000 else 2
                rows = fi.empty((n, run + 4), np.dtype(dtype).name)
                offsets = np.array(rng.integers(0, 2 ** 40, n), np.uint64)
                index = rng.permutation(n)
                _blocks.fill_runs(kind, args, rows, index, run, offsets, seed=11, stream=2)
                for i, row in enumerate(index):
                    want = fi.empty(run, np.dtype(dtype).name)
                    _blocks.public_fill(kind, args, want, seed=11, stream=2,
                                        offset=int(offsets[i]))
                    assert np.array_equal(bits(rows[row, :run]), bits(want)), \
                        (np.dtype(dtype).name, kind, run, i)


def test_column_block_uses_one_public_fill():
    """A column block's 16 runs: one public fill (the checked first run), the rest in the
    kernel loop; an init without draw gets one fill call per run."""
    calls = []
    real = _blocks.public_fill

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)
    init = Draw("normal", (0.0, 1.0))
    _blocks.public_fill = counting
    try:
        got = tile_of(init, (16, 40), (0, 10), (16, 10), np.float32)
    finally:
        _blocks.public_fill = real
    assert len(calls) == 1
    full = whole(init, (16, 40), np.float32)
    assert np.array_equal(bits(got), bits(full[:, 10:20]))
    own = OwnFill("normal", (0.0, 1.0))
    assert np.array_equal(bits(tile_of(own, (16, 40), (0, 10), (16, 10), np.float32)),
                          bits(full[:, 10:20]))
    assert own.fills == 16


def test_bad_parameters_raise_before_any_write():
    rows = fi.empty((4, 8), "float16")
    rows[...] = 7
    with pytest.raises(ValueError, match="std must be >= 0"):
        _blocks.fill_runs("normal", (0.0, -1.0), rows, [0, 1, 2, 3], 8,
                          np.arange(4, dtype=np.uint64) * 100, seed=1, stream=0)
    with pytest.raises(ValueError, match="does not fit|overflow|float16"):
        _blocks.fill_runs("uniform", (0.0, 1e6), rows, [0, 1, 2, 3], 8,
                          np.arange(4, dtype=np.uint64) * 100, seed=1, stream=0)
    assert np.all(rows == 7)
    with pytest.raises(ValueError, match="offset"):
        _blocks.fill_runs("normal", (0.0, 1.0), rows, [0, 1], 8,
                          np.array([0, 2 ** 64 - 4], np.uint64), seed=1, stream=0)


def test_offsets_of_a_3d_block():
    """_rows against a direct computation of each run's first global index."""
    shape, starts, tile = (4, 6, 10), (1, 2, 3), (2, 3, 5)
    sizes = [min(t, n - s) for s, t, n in zip(starts, tile, shape)]
    index, offsets = _blocks._rows(shape, tile, starts, sizes, 2)
    want = [((starts[0] + i) * 60 + (starts[1] + j) * 10 + starts[2], i * tile[1] + j)
            for i in range(sizes[0]) for j in range(sizes[1])]
    assert [(int(o), int(r)) for o, r in zip(offsets, index)] == want
    assert math.prod(sizes[:2]) == len(offsets)
