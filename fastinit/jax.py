"""Initializers with the ``jax.nn.initializers`` call shape, drawn by fastinit.

``init = fastinit.jax.glorot_uniform(); w = init(key, (784, 512), jnp.bfloat16)``
fills a 64-byte aligned buffer and hands it to JAX zero copy. Names,
arguments and formulas follow ``jax.nn.initializers`` (fans from
``in_axis``/``out_axis``/``batch_axis``, ``variance_scaling`` with modes
fan_in, fan_out, fan_avg, fan_geo_avg and distributions truncated_normal,
normal, uniform); the values come from fastinit's Philox stream.

The key: ``jax.random.key_data(key)`` gives its uint32 words. Two words
(threefry2x32, JAX's default) give ``seed = w0``, ``stream = w1``; four
words (rbg, unsafe_rbg) give ``seed = w0 | w1 << 32``,
``stream = w2 | w3 << 32``. So ``jax.random.key(s)`` for ``0 <= s < 2**32``
is (seed 0, stream s), and ``jax.random.split`` keys pick other streams.
Under ``jax.jit`` or ``jax.vmap`` (the key is traced) the fill runs on the
host through ``jax.pure_callback``, with the same values.

``sharded(init, shape, sharding, seed=...)`` builds a sharded ``jax.Array``
whose every shard is drawn directly from its global element indices: it
equals, bit for bit, the same slice of the unsharded array.
"""

import itertools
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from .buffers import empty
from .distributions import constant as _constant
from .distributions import normal as _normal
from .distributions import truncated_normal as _truncated_normal
from .distributions import uniform as _uniform
from .fans import TRUNCATED_STD
from .interop import to_jax

_FLOATS = ("float16", "bfloat16", "float32", "float64")
MODES = ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")
DISTRIBUTIONS = ("truncated_normal", "normal", "uniform")


# --- keys, shapes, dtypes -------------------------------------------------------
def _key_words(key):
    """The uint32 words of a key (typed, or a raw uint32 array), possibly traced."""
    if jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        return jax.random.key_data(key)
    return key


def _seed_stream_of(words):
    words = np.asarray(words).reshape(-1)
    if words.dtype != np.uint32 or words.size not in (2, 4):
        raise ValueError(f"a PRNG key (jax.random.key) holds 2 or 4 uint32 words, got "
                         f"{words.size} of {words.dtype}; pass one key, not a batch")
    w = [int(v) for v in words]
    if len(w) == 2:
        return w[0], w[1]
    return w[0] | w[1] << 32, w[2] | w[3] << 32


def key_to_seed(key):
    """(seed, stream) of a concrete JAX PRNG key (see the module docstring)."""
    return _seed_stream_of(_key_words(key))


def _dtype(dtype):
    """The dtype JAX would give: None is the default float, float64 needs x64."""
    dt = jnp.dtype(jnp.float32 if dtype is None else dtype)
    if dtype is None or dt == jnp.float64:
        dt = jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))
    if dt.name not in _FLOATS:
        raise ValueError(f"fastinit.jax draws float16, bfloat16, float32 or float64 "
                         f"values, got dtype={dt.name}")
    return dt


def _shape(shape):
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    return tuple(int(d) for d in shape)


def _axis_size(shape, axis):
    if isinstance(axis, numbers.Integral):
        return shape[axis]
    return math.prod(shape[a] for a in axis)


def compute_fans(shape, in_axis=-2, out_axis=-1, batch_axis=()):
    """(fan_in, fan_out) as ``jax.nn.initializers`` computes them (floats)."""
    if isinstance(in_axis, numbers.Integral) and in_axis == -2 and len(shape) <= 1:
        raise ValueError(f"Can't compute input and output sizes of a {len(shape)}-dimensional"
                         f" weights tensor with default in_axis. Must be at least 2D or "
                         f"specify in_axis explicitly.")
    in_size, out_size = _axis_size(shape, in_axis), _axis_size(shape, out_axis)
    batch_size = _axis_size(shape, batch_axis)
    receptive = math.prod(shape) / in_size / out_size / batch_size
    return in_size * receptive, out_size * receptive


# --- the initializers -----------------------------------------------------------
class Initializer:
    """``init(key, shape, dtype=None)`` -> jax.Array, as ``jax.nn.initializers``.

    Subclasses say how to fill a run of the global array: :meth:`fill`
    writes the C-order elements ``offset .. offset + out.size`` of an array
    of ``shape`` (the fans come from ``shape``) into ``out``.
    """

    def __init__(self, dtype=None):
        self.dtype = dtype

    def __call__(self, key, shape, dtype=None, out_sharding=None):
        shape = _shape(shape)
        dt = _dtype(self.dtype if dtype is None else dtype)
        words = _key_words(key)
        if out_sharding is not None:
            return sharded(self, shape, out_sharding, seed=key, dtype=dt)
        if isinstance(words, jax.core.Tracer):
            def host(w):
                seed, stream = _seed_stream_of(w)
                return self.host(shape, dt, seed=seed, stream=stream)
            return jax.pure_callback(host, jax.ShapeDtypeStruct(shape, dt), words,
                                     vmap_method="sequential")
        seed, stream = _seed_stream_of(words)
        return to_jax(self.host(shape, dt, seed=seed, stream=stream))

    def host(self, shape, dtype, *, seed, stream=0):
        """The whole array as an aligned NumPy buffer."""
        out = empty(_shape(shape), np.dtype(dtype).name)
        if out.size:
            self.fill(out, seed=seed, stream=stream)
        return out

    def fill(self, out, *, seed, stream=0, offset=0, shape=None):
        raise NotImplementedError


class _Uniform(Initializer):
    def __init__(self, low, high, dtype=None):
        super().__init__(dtype)
        self.low, self.high = low, high

    def fill(self, out, *, seed, stream=0, offset=0, shape=None):
        _uniform(out, self.low, self.high, seed=seed, stream=stream, offset=offset)


class _Normal(Initializer):
    def __init__(self, stddev, dtype=None):
        super().__init__(dtype)
        self.stddev = stddev

    def fill(self, out, *, seed, stream=0, offset=0, shape=None):
        _normal(out, 0.0, self.stddev, seed=seed, stream=stream, offset=offset)


class _TruncatedNormal(Initializer):
    def __init__(self, stddev, lower, upper, dtype=None):
        super().__init__(dtype)
        self.stddev, self.lower, self.upper = stddev, lower, upper

    def fill(self, out, *, seed, stream=0, offset=0, shape=None):
        s = self.stddev
        _truncated_normal(out, 0.0, s, self.lower * s, self.upper * s, seed=seed,
                          stream=stream, offset=offset)


class _Constant(Initializer):
    def __init__(self, value, dtype=None):
        super().__init__(dtype)
        self.value = value

    def fill(self, out, *, seed=None, stream=0, offset=0, shape=None):
        _constant(out, self.value)


class _VarianceScaling(Initializer):
    def __init__(self, scale, mode, distribution, in_axis=-2, out_axis=-1, batch_axis=(),
                 dtype=None):
        if mode not in MODES:
            raise ValueError(f"invalid mode for variance scaling initializer: {mode}")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"invalid distribution for variance scaling initializer: "
                             f"{distribution}")
        super().__init__(dtype)
        self.scale, self.mode, self.distribution = scale, mode, distribution
        self.axes = (in_axis, out_axis, batch_axis)

    def variance(self, shape):
        fan_in, fan_out = compute_fans(shape, *self.axes)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2,
             "fan_geo_avg": (fan_in * fan_out) ** 0.5}[self.mode]
        return self.scale / n

    def fill(self, out, *, seed, stream=0, offset=0, shape=None):
        variance = self.variance(out.shape if shape is None else shape)
        kw = dict(seed=seed, stream=stream, offset=offset)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            _uniform(out, -limit, limit, **kw)
        elif self.distribution == "normal":
            _normal(out, 0.0, math.sqrt(variance), **kw)
        else:
            std = math.sqrt(variance) / TRUNCATED_STD
            _truncated_normal(out, 0.0, std, -2.0 * std, 2.0 * std, **kw)


def uniform(scale=1e-2, dtype=None):
    """U[0, scale)."""
    return _Uniform(0.0, scale, dtype)


def normal(stddev=1e-2, dtype=None):
    """N(0, stddev^2)."""
    return _Normal(stddev, dtype)


def truncated_normal(stddev=1e-2, dtype=None, lower=-2.0, upper=2.0):
    """N(0, stddev^2) cut to [lower * stddev, upper * stddev] (no variance correction).

    ``lower = -inf`` or ``upper = inf`` leave that side open; a cut far out in
    a tail is drawn as exactly as one near the mean (docs/stream.md 3.6)."""
    return _TruncatedNormal(stddev, lower, upper, dtype)


def constant(value, dtype=None):
    """Every element ``value``."""
    return _Constant(value, dtype)


zeros = constant(0.0)
ones = constant(1.0)


def variance_scaling(scale, mode, distribution, in_axis=-2, out_axis=-1, batch_axis=(),
                     dtype=None):
    """Variance ``scale / n``, n the fan ``mode`` picks; truncated_normal cuts at 2 stddev."""
    return _VarianceScaling(scale, mode, distribution, in_axis, out_axis, batch_axis, dtype)


def _preset(scale, mode, distribution, doc):
    def make(in_axis=-2, out_axis=-1, batch_axis=(), dtype=None):
        return _VarianceScaling(scale, mode, distribution, in_axis, out_axis, batch_axis,
                                dtype)
    make.__doc__ = doc
    return make


glorot_uniform = xavier_uniform = _preset(1.0, "fan_avg", "uniform",
                                          "variance_scaling(1, 'fan_avg', 'uniform').")
glorot_normal = xavier_normal = _preset(1.0, "fan_avg", "truncated_normal",
                                        "variance_scaling(1, 'fan_avg', 'truncated_normal').")
lecun_uniform = _preset(1.0, "fan_in", "uniform", "variance_scaling(1, 'fan_in', 'uniform').")
lecun_normal = _preset(1.0, "fan_in", "truncated_normal",
                       "variance_scaling(1, 'fan_in', 'truncated_normal').")
he_uniform = kaiming_uniform = _preset(2.0, "fan_in", "uniform",
                                       "variance_scaling(2, 'fan_in', 'uniform').")
he_normal = kaiming_normal = _preset(2.0, "fan_in", "truncated_normal",
                                     "variance_scaling(2, 'fan_in', 'truncated_normal').")


# --- sharded construction -------------------------------------------------------
def fill_block(init, shape, index, dtype, *, seed, stream=0):
    """The block ``index`` (a tuple of unit-step slices) of the ``shape`` array.

    The block is cut into runs that are contiguous in the global C order:
    the trailing axes it covers whole, behind its last partial axis. Each
    run is one fill at the global offset of its first element.
    """
    shape = _shape(shape)
    index = tuple(index) + (slice(None),) * (len(shape) - len(index))
    ranges = []
    for s, n in zip(index, shape):
        r = range(*s.indices(n))
        if r.step != 1:
            raise ValueError(f"shard index {index} has a step; shards are unit-step blocks")
        ranges.append(r)
    out = empty(tuple(len(r) for r in ranges), np.dtype(dtype).name)
    if out.size == 0:
        return out
    partial = [k for k, (r, n) in enumerate(zip(ranges, shape)) if len(r) != n]
    if not partial:                             # the whole array
        init.fill(out.reshape(-1), seed=seed, stream=stream, offset=0, shape=shape)
        return out
    k = partial[-1]                             # axes after k are whole
    strides = [math.prod(shape[j + 1:]) for j in range(len(shape))]
    runs = out.reshape(math.prod(out.shape[:k]), -1)
    for row, lead in zip(runs, itertools.product(*ranges[:k])):
        offset = sum(i * st for i, st in zip(lead, strides)) + ranges[k].start * strides[k]
        init.fill(row, seed=seed, stream=stream, offset=offset, shape=shape)
    return out


def sharded(init, shape, sharding, *, seed, stream=0, dtype=None):
    """A ``jax.Array`` of ``shape`` laid out by ``sharding``, each shard drawn where it lies.

    ``seed`` is an int (with ``stream``) or a PRNG key (which gives both).
    Shard ``index`` holds exactly ``init(key, shape, dtype)[index]``: fans
    come from the global ``shape`` and each element from its global index.
    """
    if not isinstance(init, Initializer):
        raise TypeError(f"init must be a fastinit.jax initializer, got {type(init).__name__}")
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        seed, stream = int(seed), int(stream)
    else:
        if stream != 0:
            raise ValueError("stream comes from the key; pass an int seed to choose it")
        seed, stream = key_to_seed(seed)
    shape = _shape(shape)
    dt = _dtype(init.dtype if dtype is None else dtype)

    def shard(index):
        return fill_block(init, shape, index, dt, seed=seed, stream=stream)
    return jax.make_array_from_callback(shape, sharding, shard, dtype=dt)


__all__ = ["Initializer", "uniform", "normal", "truncated_normal", "constant", "zeros", "ones",
           "variance_scaling", "glorot_uniform", "xavier_uniform", "glorot_normal",
           "xavier_normal", "lecun_uniform", "lecun_normal", "he_uniform", "kaiming_uniform",
           "he_normal", "kaiming_normal", "compute_fans", "key_to_seed", "sharded",
           "fill_block"]
