"""Initializers with the ``jax.nn.initializers`` call shape, drawn by fastinit.

``init = fastinit.jax.glorot_uniform(); w = init(key, (784, 512), jnp.bfloat16)``
fills a 64-byte aligned buffer and hands it to JAX zero copy; names,
arguments and formulas follow ``jax.nn.initializers``. The key's words give
(seed, stream) (docs/keras_jax.md, "The key"). Under ``jit``/``vmap`` the fill
is an XLA FFI call on the CPU, partitioned so each device fills its own tile
from its global offsets; eagerly, :func:`sharded` does the same.
"""

import math
import numbers
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning

from . import _contract, structured
from .buffers import empty
from .fans import TRUNCATED_STD, fans_by_axes
from ._blocks import fill_tile, public_fill
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


def _number(value, name):
    """A Python number from a number, a NumPy scalar or a concrete 0-d array (a
    ``jnp.float32(0.5)``), converted once, when the initializer is built."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"{name} is a traced value: fastinit.jax takes concrete numbers "
                        f"(build the initializer outside jit)")
    return _contract.number_of(value, name)


def _shape(shape):
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    return tuple(int(d) for d in shape)


def compute_fans(shape, in_axis=-2, out_axis=-1, batch_axis=()):
    """(fan_in, fan_out) as ``jax.nn.initializers`` computes them (floats).

    ``fastinit.fans.fans_by_axes`` with JAX's axes; a 0-D or 1-D shape needs an
    explicit ``in_axis``, with JAX's error.
    """
    if isinstance(in_axis, numbers.Integral) and in_axis == -2 and len(shape) <= 1:
        raise ValueError(f"Can't compute input and output sizes of a {len(shape)}-dimensional"
                         f" weights tensor with default in_axis. Must be at least 2D or "
                         f"specify in_axis explicitly.")
    fan_in, fan_out = fans_by_axes(tuple(shape), in_axis, out_axis, batch_axis)
    return float(fan_in), float(fan_out)


# --- the initializers -----------------------------------------------------------
class Initializer:
    """``init(key, shape, dtype=None)`` -> jax.Array, as ``jax.nn.initializers``.

    A subclass says what it draws for an array of ``shape``:
    :meth:`draw` returns ``(kind, args)`` of one of fastinit's fills
    (``"uniform"``: (low, high), ``"normal"``: (mean, std), ``"trunc"``:
    (mean, std, a, b), ``"constant"``: (value,)), or it overrides
    :meth:`fill`, which writes the C-order elements
    ``offset .. offset + out.size - 1`` of that array into ``out``.
    """

    def __init__(self, dtype=None):
        self.dtype = dtype

    def __call__(self, key, shape, dtype=None, out_sharding=None):
        shape = _shape(shape)
        dt = _dtype(self.dtype if dtype is None else dtype)
        _check_dims(shape)
        words = _key_words(key)
        if isinstance(words, jax.core.Tracer):
            out = _traced(self, shape, dt, words)
            if out_sharding is not None:
                out = jax.lax.with_sharding_constraint(out, out_sharding)
            return out
        if out_sharding is not None:
            return sharded(self, shape, out_sharding, seed=key, dtype=dt)
        seed, stream = _seed_stream_of(words)
        return to_jax(self.host(shape, dt, seed=seed, stream=stream))

    def host(self, shape, dtype, *, seed, stream=0):
        """The whole array as an aligned NumPy buffer."""
        out = empty(_shape(shape), np.dtype(dtype).name)
        if out.size:
            self.fill(out, seed=seed, stream=stream)
        return out

    def draw(self, shape):
        """``(kind, args)`` of the fill for an array of ``shape``, or None (see the class)."""
        return None

    def fill(self, out, *, seed, stream=0, offset=0, shape=None):
        """Fill ``out`` with the elements ``offset ..`` of the ``shape`` array
        (``shape`` defaults to ``out.shape``)."""
        kind_args = self.draw(out.shape if shape is None else tuple(shape))
        if kind_args is None:
            raise NotImplementedError(f"{type(self).__name__} defines neither draw nor fill")
        public_fill(*kind_args, out, seed=seed, stream=stream, offset=offset)


class _Uniform(Initializer):
    def __init__(self, low, high, dtype=None):
        super().__init__(dtype)
        self.low, self.high = low, high

    def draw(self, shape):
        return "uniform", (self.low, self.high)


class _Normal(Initializer):
    def __init__(self, stddev, dtype=None):
        super().__init__(dtype)
        self.stddev = stddev

    def draw(self, shape):
        return "normal", (0.0, self.stddev)


class _TruncatedNormal(Initializer):
    def __init__(self, stddev, lower, upper, dtype=None):
        super().__init__(dtype)
        self.stddev, self.lower, self.upper = stddev, lower, upper

    def draw(self, shape):
        s = self.stddev
        return "trunc", (0.0, s, self.lower * s, self.upper * s)


class _Constant(Initializer):
    """``value`` broadcast to the shape (jnp.full's rule): a number, or an array."""

    def __init__(self, value, dtype=None):
        super().__init__(dtype)
        if isinstance(value, jax.core.Tracer):
            raise TypeError("value is a traced value: fastinit.jax takes concrete values "
                            "(build the initializer outside jit)")
        arr = None if isinstance(value, numbers.Number) else np.asarray(value)
        self.value = arr if arr is not None and arr.ndim else _number(value, "value")

    def __call__(self, key, shape, dtype=None, out_sharding=None):
        if isinstance(self.value, np.ndarray):
            shape = _shape(shape)
            try:
                ok = np.broadcast_shapes(self.value.shape, shape) == shape
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"constant: value of shape {self.value.shape} does not "
                                 f"broadcast to shape {shape}")
        return super().__call__(key, shape, dtype, out_sharding)

    def draw(self, shape):
        if isinstance(self.value, np.ndarray):
            return None
        return "constant", (self.value,)

    def fill(self, out, *, seed, stream=0, offset=0, shape=None):
        if not isinstance(self.value, np.ndarray):
            return super().fill(out, seed=seed, stream=stream, offset=offset, shape=shape)
        shape = out.shape if shape is None else tuple(shape)
        flat = np.broadcast_to(self.value, shape).reshape(-1)[offset:offset + out.size]
        out.reshape(-1)[...] = flat.astype(out.dtype)


class _Orthogonal(Initializer):
    """``jax.nn.initializers.orthogonal``: the matrix has ``shape[column_axis]``
    columns and the other axes' product rows (fastinit.orthogonal, layout="keras")."""

    def __init__(self, scale, column_axis, dtype=None):
        super().__init__(dtype)
        self.scale = _contract.check_real("scale", _number(scale, "scale"))
        if isinstance(column_axis, bool) or not isinstance(column_axis, numbers.Integral):
            raise TypeError(f"column_axis must be an int, got {type(column_axis).__name__}")
        self.column_axis = int(column_axis)

    def check(self, shape):
        if len(shape) < 2:
            raise ValueError("orthogonal initializer requires at least a 2D shape")
        if not -len(shape) <= self.column_axis < len(shape):
            raise ValueError(f"column_axis {self.column_axis} is out of range for shape "
                             f"{shape}")

    def __call__(self, key, shape, dtype=None, out_sharding=None):
        self.check(_shape(shape))
        return super().__call__(key, shape, dtype, out_sharding)

    def whole(self, buf, seed, stream):
        return structured.orthogonal(buf, self.scale, layout="keras",
                                     column_axis=self.column_axis, seed=seed, stream=stream)

    def fill(self, out, *, seed, stream=0, offset=0, shape=None):
        shape = out.shape if shape is None else tuple(shape)
        key = (type(self).__name__, self.scale, self.column_axis, shape, out.dtype.name, seed,
               stream)
        structured.fill_part(out, shape, offset, key, lambda buf: self.whole(buf, seed, stream))


class _DeltaOrthogonal(_Orthogonal):
    """``jax.nn.initializers.delta_orthogonal``: zeros, and an orthogonal (in, out)
    matrix at the spatial centre ``((k - 1) // 2, ...)``."""

    def check(self, shape):
        if len(shape) not in (3, 4, 5):
            raise ValueError("Delta orthogonal initializer requires a 3D, 4D or 5D shape.")
        if shape[-1] < shape[-2]:
            raise ValueError("`fan_in` must be less or equal than `fan_out`. ")
        if not -2 <= self.column_axis < 2:
            raise ValueError(f"column_axis {self.column_axis} is out of range for the "
                             f"(in, out) matrix")

    def whole(self, buf, seed, stream):
        return structured.delta_orthogonal(buf, self.scale, column_axis=self.column_axis,
                                           seed=seed, stream=stream)


class _VarianceScaling(Initializer):
    def __init__(self, scale, mode, distribution, in_axis=-2, out_axis=-1, batch_axis=(),
                 dtype=None):
        if mode not in MODES:
            raise ValueError(f"invalid mode for variance scaling initializer: {mode}")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"invalid distribution for variance scaling initializer: "
                             f"{distribution}")
        scale = _contract.check_real("scale", _number(scale, "scale"))
        if scale < 0:
            raise ValueError(f"scale must be >= 0 for a variance scaling initializer, "
                             f"got {scale}")
        super().__init__(dtype)
        self.scale, self.mode, self.distribution = scale, mode, distribution
        self.axes = (in_axis, out_axis, batch_axis)

    def variance(self, shape):
        fan_in, fan_out = compute_fans(shape, *self.axes)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2,
             "fan_geo_avg": (fan_in * fan_out) ** 0.5}[self.mode]
        return self.scale / n

    def draw(self, shape):
        variance = self.variance(shape)
        if variance == 0:                  # scale 0: every distribution is the point 0
            return "constant", (0.0,)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return "uniform", (-limit, limit)
        if self.distribution == "normal":
            return "normal", (0.0, math.sqrt(variance))
        std = math.sqrt(variance) / TRUNCATED_STD
        return "trunc", (0.0, std, -2.0 * std, 2.0 * std)


def uniform(scale=1e-2, dtype=None):
    """U[0, scale)."""
    return _Uniform(0.0, _number(scale, "scale"), dtype)


def normal(stddev=1e-2, dtype=None):
    """N(0, stddev^2)."""
    return _Normal(_number(stddev, "stddev"), dtype)


def truncated_normal(stddev=1e-2, dtype=None, lower=-2.0, upper=2.0):
    """N(0, stddev^2) cut to [lower * stddev, upper * stddev] (no variance correction).

    ``lower = -inf`` or ``upper = inf`` leave that side open; a cut far out in
    a tail is drawn as exactly as one near the mean (docs/stream.md 3.6)."""
    return _TruncatedNormal(_number(stddev, "stddev"), _number(lower, "lower"),
                            _number(upper, "upper"), dtype)


def constant(value, dtype=None):
    """Every element ``value``; an array value broadcasts to the shape, as jnp.full."""
    return _Constant(value, dtype)


def orthogonal(scale=1.0, column_axis=-1, dtype=None):
    """A uniformly distributed (semi-)orthogonal matrix times ``scale``, as
    ``jax.nn.initializers.orthogonal``: ``shape[column_axis]`` columns, the other axes
    flattened into rows, orthonormal on the smaller side. QR of fastinit.normal
    values with the sign correction (``fastinit.orthogonal``, docs/stream.md).
    Sharded (out_sharding, or under jit): every shard computes the whole matrix
    and keeps its block."""
    return _Orthogonal(scale, column_axis, dtype)


def delta_orthogonal(scale=1.0, column_axis=-1, dtype=None):
    """``jax.nn.initializers.delta_orthogonal``: for a 3-, 4- or 5-D conv kernel
    (*spatial, in, out) with in <= out, zeros except at the spatial centre
    ``((k - 1) // 2, ...)``, which holds ``orthogonal(scale, column_axis)`` of (in, out)."""
    return _DeltaOrthogonal(scale, column_axis, dtype)


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


# --- blocks of the global array ---------------------------------------------------
def _check_dims(shape):
    if any(d < 0 for d in shape):
        raise ValueError(f"shape {shape} has a negative dimension")


def fill_block(init, shape, index, dtype, *, seed, stream=0):
    """The block ``index`` (a tuple of unit-step slices) of the ``shape`` array, as a
    new aligned NumPy array (see :func:`fill_tile`)."""
    shape = _shape(shape)
    index = tuple(index) + (slice(None),) * (len(shape) - len(index))
    ranges = []
    for s, n in zip(index, shape):
        r = range(*s.indices(n))
        if r.step != 1:
            raise ValueError(f"shard index {index} has a step; shards are unit-step blocks")
        ranges.append(r)
    out = empty(tuple(len(r) for r in ranges), np.dtype(dtype).name)
    return fill_tile(init, shape, [r.start for r in ranges], out, seed=seed, stream=stream)


def _seed_of(seed, stream):
    """(seed, stream) from an int seed with ``stream``, or from a PRNG key."""
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return _contract.check_u64("seed", seed), _contract.check_u64("stream", stream)
    if stream != 0:
        raise ValueError("stream comes from the key; pass an int seed to choose it")
    return key_to_seed(seed)


def sharded(init, shape, sharding, *, seed, stream=0, dtype=None):
    """A ``jax.Array`` of ``shape`` laid out by ``sharding``, each shard drawn where it lies.

    ``seed`` is an int (with ``stream``) or a PRNG key (which gives both).
    Shard ``index`` holds exactly ``init(key, shape, dtype)[index]``: fans
    come from the global ``shape`` and each element from its global index.
    Eager: the key must be concrete (under ``jax.jit``, call ``init`` itself
    and let ``out_shardings`` or a sharding constraint place it).
    """
    if not isinstance(init, Initializer):
        raise TypeError(f"init must be a fastinit.jax initializer, got {type(init).__name__}")
    seed, stream = _seed_of(seed, stream)
    shape = _shape(shape)
    _check_dims(shape)
    dt = _dtype(init.dtype if dtype is None else dtype)

    def shard(index):
        return fill_block(init, shape, index, dt, seed=seed, stream=stream)
    return jax.make_array_from_callback(shape, sharding, shard, dtype=dt)


# --- inside jit: one FFI call per device, on that device's shard ------------------------
#
# Under jit the key is a tracer. The fill is an XLA FFI custom call
# (``fastinit_fill``, a ctypes handler: fastinit._xla_ffi) wrapped in
# jax.experimental.custom_partitioning: its sharding rule leaves the result
# free to take any sharding (the key operand is replicated), and its partition
# rule, given the result sharding XLA chose, builds a program in which every
# device fills only its own tile, from the global offsets of that tile
# (a table indexed by the device's partition id). The handler writes straight
# into XLA's output buffer: no host copy, no full array anywhere.
_TARGET = "fastinit_fill"
_AXIS = "fastinit_shard"
_calls = {}            # (id(init), shape, dtype name) -> call id (the FFI attribute)
_by_id = []            # call id -> (init, shape, dtype)
_calls_lock = threading.Lock()


def _call_id(init, shape, dt):
    """A process-wide id for (init, shape, dtype); the registry keeps ``init`` alive, since
    a compiled program may outlive the Python objects it was traced from (and so the
    object's id is never reused while it is a key here)."""
    key = (id(init), shape, dt.name)
    with _calls_lock:
        cid = _calls.get(key)
        if cid is None:
            cid = _calls[key] = len(_by_id)
            _by_id.append((init, shape, dt))
    return cid


_kernels_lock = threading.Lock()
_kernels_loaded = False


def _load_kernels():
    """Import the CPU backend and its kernels once, under a lock. XLA runs the devices'
    handlers on several threads at once, and first imports racing on several threads
    can meet a partially initialized module (CPython's import-deadlock avoidance)."""
    global _kernels_loaded
    with _kernels_lock:
        if not _kernels_loaded:
            public_fill("normal", (0.0, 1.0), empty(2, "float32"), seed=0, stream=0, offset=0)
            _kernels_loaded = True


def _ffi_fill(frame):
    """The FFI handler: fill this device's tile of the call's array."""
    if not _kernels_loaded:
        _load_kernels()
    init, shape, dt = _by_id[frame.attr_u64("call")]
    out = frame.result(0)
    seed, stream = _seed_stream_of(frame.arg(0))
    fill_tile(init, shape, frame.arg(1), out, seed=seed, stream=stream)


def _ffi(words, starts, cid, tile, dt):
    return jax.ffi.ffi_call(_TARGET, jax.ShapeDtypeStruct(tile, dt))(
        words, starts, call=np.uint64(cid))


def _host_whole(init, shape, dt, words):
    """The whole array through jax.pure_callback (platforms other than the CPU)."""
    def host(w):
        seed, stream = _seed_stream_of(w)
        return init.host(shape, dt, seed=seed, stream=stream)
    return jax.pure_callback(host, jax.ShapeDtypeStruct(shape, dt), words)


def _describe(init, shape, dt):
    """How errors name an array: the initializer, its shape and dtype."""
    return f"the {shape} {dt.name} array of {type(init).__name__.lstrip('_')}"


def _partition_rule(init, shape, dt, cid):
    def partition(mesh, arg_shapes, result_shape):
        sharding = result_shape.sharding
        what = _describe(init, shape, dt)
        hlo = sharding._to_xla_hlo_sharding(len(shape))
        if hlo.is_manual() or hlo.is_unreduced() or hlo.is_unknown():
            raise ValueError(f"fastinit.jax: {what} cannot be drawn with sharding {hlo}: "
                             f"manual, unreduced or unknown shardings are refused")
        devices = list(getattr(sharding, "_device_assignment", ()))
        if not devices:
            raise ValueError(f"fastinit.jax: {what}: sharding {sharding} names no devices")
        platform = devices[0].platform
        if platform != "cpu":
            raise ValueError(
                f"fastinit.jax: {what} is sharded over {len(devices)} {platform} devices "
                f"({hlo}) inside jit, which fastinit draws on CPU devices only; build it "
                f"eagerly with fastinit.jax.sharded(), which fills each shard on its own")
        tile, table = _tiles(hlo, shape, len(devices), what)
        own = jax.sharding.Mesh(np.array(devices), (_AXIS,))

        def lower_fn(words):
            starts = jnp.asarray(table)[jax.lax.axis_index(_AXIS)]
            return _ffi(words, starts, cid, tile, dt)
        replicated = jax.sharding.NamedSharding(own, jax.sharding.PartitionSpec())
        return own, lower_fn, sharding, (replicated,)
    return partition


def _tiles(hlo, shape, n_devices, what):
    """(tile shape, table): row ``p`` of the uint32 table holds the global offsets of the
    tile of partition ``p`` under the HLO sharding ``hlo``, as XLA cuts it (tiles of
    ``ceil(n / parts)`` along each axis, the last ones padded or empty)."""
    table = np.zeros((n_devices, len(shape)), np.uint32)
    if hlo.is_replicated() or hlo.is_maximal():
        return shape, table
    dims = list(hlo.tile_assignment_dimensions())
    ids = np.asarray(hlo.tile_assignment_devices()).reshape(dims)
    if not hlo.is_tiled() or len(dims) < len(shape) or ids.size != n_devices \
            or sorted(ids.reshape(-1).tolist()) != list(range(n_devices)):
        raise ValueError(f"fastinit.jax: {what} cannot be drawn with sharding {hlo}: "
                         f"not one tile per device")
    tile = tuple(-(-n // t) for n, t in zip(shape, dims))
    for pos in np.ndindex(*dims):
        table[ids[pos]] = [i * t for i, t in zip(pos[:len(shape)], tile)]
    return tile, table


def _traced(init, shape, dt, words):
    """The array under a trace: partitioned FFI fills (CPU), else one host callback."""
    if math.prod(shape) == 0:
        return jnp.zeros(shape, dt)
    if dt.name not in _FLOATS:
        raise ValueError(f"fastinit.jax draws {_FLOATS}, got {dt.name}")
    if any(d >= 2 ** 32 for d in shape):
        raise ValueError(f"fastinit.jax: {_describe(init, shape, dt)}: a dimension of "
                         f"2**32 or more")
    from . import _xla_ffi
    _xla_ffi.register(_TARGET, _ffi_fill)
    cid = _call_id(init, shape, dt)

    def whole(w):
        origin = jnp.zeros(len(shape), jnp.uint32)     # traced: custom_partitioning takes
        return jax.lax.platform_dependent(             # no captured constants
            w, cpu=lambda w: _ffi(w, origin, cid, shape, dt),
            default=lambda w: _host_whole(init, shape, dt, w))
    if not shape:                               # a scalar: nothing to partition
        fill = whole
    else:
        fill = custom_partitioning(whole)
        factors = " ".join(f"d{i}" for i in range(len(shape)))
        fill.def_partition(
            partition=_partition_rule(init, shape, dt, cid),
            infer_sharding_from_operands=lambda mesh, args, result: _replicated(args),
            propagate_user_sharding=lambda mesh, user: user.sharding,
            decode_shardings=False,
            sharding_rule=f"w -> {factors}", need_replication_factors=("w",))

    batchable = jax.custom_batching.custom_vmap(fill)

    @batchable.def_vmap
    def _batched(axis_size, in_batched, w):
        if not in_batched[0]:
            return fill(w), False
        return jax.lax.map(fill, w), True
    return batchable(words)


def _replicated(arg_shapes):
    sharding = arg_shapes[0].sharding
    return sharding.get_replicated(list(sharding._device_assignment)) \
        if hasattr(sharding, "get_replicated") else sharding


__all__ = ["Initializer", "uniform", "normal", "truncated_normal", "constant", "zeros", "ones",
           "orthogonal", "delta_orthogonal",
           "variance_scaling", "glorot_uniform", "xavier_uniform", "glorot_normal",
           "xavier_normal", "lecun_uniform", "lecun_normal", "he_uniform", "kaiming_uniform",
           "he_normal", "kaiming_normal", "compute_fans", "key_to_seed", "sharded",
           "fill_block", "fill_tile"]
