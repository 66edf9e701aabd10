"""Keras 3 initializers drawn by fastinit, handed to the backend zero copy.

Same names, arguments, defaults and configs as ``keras.initializers``, fans
as Keras's ``compute_fans``; each class is registered as ``"fastinit>Name"``
(lower-case aliases too) so ``.keras`` files reload. An int seed is
stateless; ``seed=None`` and a ``SeedGenerator`` draw new values per call
(Keras draws a seed once, at construction). Under ``keras.distribution``
(JAX backend) each shard is drawn from its global offsets. Details and the
deliberate differences: docs/keras_jax.md.
"""

import math
import numbers
import re

import keras
import numpy as np

from . import _contract
from . import structured
from ._blocks import fill_tile, public_fill
from .buffers import empty
from .fans import DISTRIBUTIONS, MODES, TRUNCATED_STD, axes_size, fans
from .interop import to_jax, to_tensorflow

_FLOATS = ("float16", "bfloat16", "float32", "float64")
_register = keras.saving.register_keras_serializable(package="fastinit")


def compute_fans(shape, input_axes=None, output_axes=None):
    """(fan_in, fan_out) as ``keras.src.initializers.random_initializers.compute_fans``.

    Scalars: (1, 1); 1-D ``(n,)``: (n, n); 2-D and more: ``fastinit.fans``'s keras
    layout (the leading axes are the receptive field). Explicit axes multiply their
    sizes, with no receptive field.
    """
    shape = tuple(shape)
    if input_axes is not None and output_axes is not None:
        return int(axes_size(shape, input_axes)), int(axes_size(shape, output_axes))
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    return fans(shape, "keras")


def _number(value, name, who):
    """A Python number from a number, a NumPy scalar or a scalar (0-d) tensor of any
    backend, which Keras documents for these arguments; converted once, at
    construction (so the config holds the number). Else a ValueError naming it."""
    return _contract.number_of(value, f"{who}: {name}", to_numpy=keras.ops.convert_to_numpy,
                               error=ValueError, kind="a scalar tensor")


def _shape(shape):
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    return tuple(int(d) for d in shape)


def _float_dtype(dtype, who):
    name = keras.backend.standardize_dtype(dtype)
    if name not in _FLOATS:
        raise ValueError(f"{who} draws float16, bfloat16, float32 or float64 values, "
                         f"got dtype={name}")
    return name


def to_backend(buf):
    """``buf`` as a tensor of the active Keras backend: zero copy on TensorFlow, JAX, torch."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return to_tensorflow(buf)
    if backend == "jax":
        return to_jax(buf)
    if backend == "torch":             # a CPU tensor; Keras moves it to its device
        from .torch.handoff import to_torch
        return keras.ops.convert_to_tensor(to_torch(buf))
    return keras.ops.convert_to_tensor(buf)


def _jax_sharding(layout):
    """The concrete ``jax.sharding.Sharding`` of a Keras layout on the JAX backend."""
    import jax
    if isinstance(layout, keras.distribution.TensorLayout):
        layout = layout.backend_layout
    mesh = getattr(layout, "mesh", None)
    if isinstance(mesh, jax.sharding.AbstractMesh):     # Keras's explicit-axes context
        concrete = jax.sharding.get_mesh()
        if concrete.empty or concrete.axis_names != mesh.axis_names:
            raise ValueError(f"layout {layout} names an abstract mesh and no concrete mesh "
                             f"with its axes is set (jax.set_mesh)")
        layout = jax.sharding.NamedSharding(concrete, layout.spec)
    if not isinstance(layout, jax.sharding.Sharding):
        raise TypeError(f"layout must be a keras.distribution.TensorLayout or a "
                        f"jax.sharding.Sharding, got {type(layout).__name__}")
    return layout


def layout_sharding(init, layout):
    """The ``jax.sharding.Sharding`` of Keras ``layout``; a ValueError off the JAX backend
    (Keras's distribution API exists on the JAX backend only)."""
    backend = keras.backend.backend()
    if backend != "jax":
        raise ValueError(f"{type(init).__name__}: a layout is only supported on the JAX "
                         f"backend (Keras's distribution API), got layout={layout!r} on the "
                         f"{backend} backend")
    return _jax_sharding(layout)


def distributed(init, shape, dtype, sharding, seed, stream):
    """The ``shape`` array of ``init`` laid out by the JAX ``sharding``: each shard one
    block of the global array, drawn from its global offsets (fastinit._blocks)."""
    import jax

    def shard(index):
        ranges = [range(*s.indices(n)) for s, n in zip(index, shape)]
        block = empty(tuple(len(r) for r in ranges), dtype)
        return fill_tile(init, shape, [r.start for r in ranges], block, seed=seed,
                         stream=stream)
    return jax.make_array_from_callback(shape, sharding, shard, dtype=dtype)


class _Random(keras.initializers.Initializer):
    """Seed handling and ``__call__`` for the random initializers."""

    def __init__(self, seed=None):
        self._init_seed = seed
        if isinstance(seed, dict):
            seed = keras.saving.deserialize_keras_object(seed)
        if seed is not None and (isinstance(seed, bool) or not isinstance(
                seed, (numbers.Integral, keras.random.SeedGenerator))):
            raise ValueError(f"seed must be an int, None or a keras.random.SeedGenerator, "
                             f"got {seed!r}")
        if isinstance(seed, numbers.Integral) and not 0 <= seed < 2 ** 64:
            raise ValueError(f"seed must be in [0, 2**64) (fastinit's Philox key), got "
                             f"{seed}; Keras's own initializers fail later, when the layer "
                             f"is built")
        self.seed = int(seed) if isinstance(seed, numbers.Integral) else seed

    def _seed_stream(self):
        if isinstance(self.seed, keras.random.SeedGenerator):
            words = keras.ops.convert_to_numpy(self.seed.next()).astype(np.int64)
            return int(words[0]) & 0xFFFFFFFF, int(words[1]) & 0xFFFFFFFF
        return self.seed, 0

    def __call__(self, shape, dtype=None, layout=None):
        shape = _shape(shape)
        name = _float_dtype(dtype, type(self).__name__)
        sharding = None if layout is None else layout_sharding(self, layout)
        if math.prod(shape) == 0:
            out = to_backend(empty(shape, name))
            return out if sharding is None else keras.distribution.distribute_tensor(
                out, sharding)
        seed, stream = self._seed_stream()
        if seed is None:                  # one stream of the process-wide generator per call
            seed, stream = _contract.take_stream()
        if sharding is not None:
            return distributed(self, shape, name, sharding, seed, stream)
        out = empty(shape, name)
        self.fill(out, seed=seed, stream=stream)
        return to_backend(out)

    def draw(self, shape):
        """``(kind, args)`` of the fill for an array of ``shape`` (fastinit._blocks)."""
        raise NotImplementedError

    def fill(self, out, *, seed, stream=0, offset=0, shape=None):
        """Fill ``out`` with the elements ``offset ..`` of the ``shape`` array."""
        kind, args = self.draw(out.shape if shape is None else tuple(shape))
        public_fill(kind, args, out, seed=seed, stream=stream, offset=offset)

    def get_config(self):
        return {"seed": keras.saving.serialize_keras_object(self._init_seed)}


@_register
class RandomUniform(_Random):
    """U[minval, maxval)."""

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval = _number(minval, "minval", "RandomUniform")
        self.maxval = _number(maxval, "maxval", "RandomUniform")
        super().__init__(seed=seed)

    def __call__(self, shape, dtype=None, layout=None):
        name = keras.backend.standardize_dtype(dtype)
        if name.startswith(("int", "uint")):
            return self._integers(_shape(shape), name, layout)
        return super().__call__(shape, dtype, layout)

    def _integers(self, shape, name, layout):
        """Integers in [minval, maxval), as Keras draws for an integer dtype: the floor
        of fastinit.uniform(minval, maxval) in float64 (the same seed and stream)."""
        low, high = math.ceil(self.minval), math.ceil(self.maxval)
        if not low < high:
            raise ValueError(f"RandomUniform: no integer in [minval, maxval) = "
                             f"[{self.minval}, {self.maxval}) for dtype {name}")
        info = np.iinfo(name)
        if low < info.min or high - 1 > info.max:
            raise ValueError(f"RandomUniform: [minval, maxval) = [{self.minval}, "
                             f"{self.maxval}) does not fit dtype {name}")
        seed, stream = self._seed_stream()
        if seed is None:
            seed, stream = _contract.take_stream()
        values = public_fill("uniform", (low, high), np.empty(shape, np.float64), seed=seed,
                             stream=stream, offset=0)
        out = keras.ops.convert_to_tensor(np.minimum(np.floor(values), high - 1).astype(name))
        if layout is not None:
            out = keras.distribution.distribute_tensor(out, layout_sharding(self, layout))
        return out

    def draw(self, shape):
        return "uniform", (self.minval, self.maxval)

    def get_config(self):
        return {**super().get_config(), "minval": self.minval, "maxval": self.maxval}


@_register
class MaskedUniform(_Random):
    """U[minval, maxval), then 0 where |x| < threshold (d2l's custom ``MyInit``)."""

    def __init__(self, minval=-0.05, maxval=0.05, threshold=0.0, seed=None):
        self.minval = _number(minval, "minval", "MaskedUniform")
        self.maxval = _number(maxval, "maxval", "MaskedUniform")
        self.threshold = _number(threshold, "threshold", "MaskedUniform")
        super().__init__(seed=seed)

    def draw(self, shape):
        return "masked_uniform", (self.minval, self.maxval, self.threshold)

    def get_config(self):
        return {**super().get_config(), "minval": self.minval, "maxval": self.maxval,
                "threshold": self.threshold}


@_register
class RandomNormal(_Random):
    """N(mean, stddev^2)."""

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean = _number(mean, "mean", type(self).__name__)
        self.stddev = _number(stddev, "stddev", type(self).__name__)
        super().__init__(seed=seed)

    def draw(self, shape):
        return "normal", (self.mean, self.stddev)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "stddev": self.stddev}


@_register
class TruncatedNormal(_Random):
    """N(mean, stddev^2) cut to [mean - 2 stddev, mean + 2 stddev] (no variance correction)."""

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean = _number(mean, "mean", type(self).__name__)
        self.stddev = _number(stddev, "stddev", type(self).__name__)
        super().__init__(seed=seed)

    def draw(self, shape):
        if self.stddev == 0:
            return "constant", (self.mean,)
        return "trunc", (self.mean, self.stddev, self.mean - 2.0 * self.stddev,
                         self.mean + 2.0 * self.stddev)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "stddev": self.stddev}


@_register
class VarianceScaling(_Random):
    """Variance ``scale / max(1, n)``, n the fan ``mode`` picks (Keras's rules).

    ``truncated_normal`` (alias ``normal``) cuts at two stddev and divides the
    stddev by 0.87962566103423978; ``uniform`` draws U(-l, l), l = sqrt(3 var).
    """

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None,
                 input_axes=None, output_axes=None):
        scale = _number(scale, "scale", "VarianceScaling")
        if scale <= 0.0:
            raise ValueError(f"Argument `scale` must be positive float. Received: "
                             f"scale={scale}")
        if mode not in MODES:
            raise ValueError(f"Invalid `mode` argument: {mode}. Please use one of "
                             f"{set(MODES)}")
        distribution = distribution.lower()
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"Invalid `distribution` argument: {distribution}. Please use "
                             f"one of {set(DISTRIBUTIONS)}")
        self.scale, self.mode, self.distribution = scale, mode, distribution
        self.input_axes, self.output_axes = input_axes, output_axes
        super().__init__(seed=seed)

    def draw(self, shape):
        """Keras's rule, as ``fastinit.variance_scaling`` with these fans."""
        fan_in, fan_out = compute_fans(shape, self.input_axes, self.output_axes)
        fan = {"fan_in": fan_in, "fan_out": fan_out,
               "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        variance = self.scale / max(1.0, fan)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return "uniform", (-limit, limit)
        if self.distribution == "untruncated_normal":
            return "normal", (0.0, math.sqrt(variance))
        std = math.sqrt(variance) / TRUNCATED_STD
        return "trunc", (0.0, std, -2.0 * std, 2.0 * std)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "mode": self.mode,
                "distribution": self.distribution, "input_axes": self.input_axes,
                "output_axes": self.output_axes}


class _Preset(VarianceScaling):
    """A VarianceScaling whose (scale, mode, distribution) the class fixes."""

    PRESET = None

    def __init__(self, seed=None, input_axes=None, output_axes=None):
        scale, mode, distribution = self.PRESET
        super().__init__(scale, mode, distribution, seed=seed, input_axes=input_axes,
                         output_axes=output_axes)

    def get_config(self):
        return {"seed": keras.saving.serialize_keras_object(self._init_seed),
                "input_axes": self.input_axes, "output_axes": self.output_axes}


@_register
class GlorotUniform(_Preset):
    """U(-l, l), l = sqrt(6 / (fan_in + fan_out))."""
    PRESET = (1.0, "fan_avg", "uniform")


@_register
class GlorotNormal(_Preset):
    """Truncated normal, stddev sqrt(2 / (fan_in + fan_out)) after truncation."""
    PRESET = (1.0, "fan_avg", "truncated_normal")


@_register
class HeUniform(_Preset):
    """U(-l, l), l = sqrt(6 / fan_in)."""
    PRESET = (2.0, "fan_in", "uniform")


@_register
class HeNormal(_Preset):
    """Truncated normal, stddev sqrt(2 / fan_in) after truncation."""
    PRESET = (2.0, "fan_in", "truncated_normal")


@_register
class LecunUniform(_Preset):
    """U(-l, l), l = sqrt(3 / fan_in)."""
    PRESET = (1.0, "fan_in", "uniform")


@_register
class LecunNormal(_Preset):
    """Truncated normal, stddev sqrt(1 / fan_in) after truncation."""
    PRESET = (1.0, "fan_in", "truncated_normal")


@_register
class Orthogonal(_Random):
    """An orthogonal matrix times ``gain``, as ``keras.initializers.Orthogonal``.

    The matrix is ``(prod(shape[:-1]), shape[-1])``, reshaped to ``shape``: the QR
    factor of fastinit.normal values with the sign correction
    (``fastinit.orthogonal(..., layout="keras")``). Under a layout every shard
    computes the whole matrix and keeps its block.
    """

    def __init__(self, gain=1.0, seed=None):
        self.gain = _number(gain, "gain", "Orthogonal")
        super().__init__(seed=seed)

    def __call__(self, shape, dtype=None, layout=None):
        shape = _shape(shape)
        if len(shape) < 2:
            raise ValueError(f"The tensor to initialize must be at least two-dimensional. "
                             f"Received: shape={shape} of rank {len(shape)}.")
        return super().__call__(shape, dtype, layout)

    def draw(self, shape):
        return None

    def fill(self, out, *, seed, stream=0, offset=0, shape=None):
        shape = out.shape if shape is None else tuple(shape)
        key = ("keras.Orthogonal", self.gain, shape, out.dtype.name, seed, stream)
        structured.fill_part(out, shape, offset, key, lambda buf: structured.orthogonal(
            buf, self.gain, layout="keras", seed=seed, stream=stream))

    def get_config(self):
        return {**super().get_config(), "gain": self.gain}


@_register
class Identity(keras.initializers.Initializer):
    """``gain`` times the identity matrix, as ``keras.initializers.Identity`` (2-D only)."""

    def __init__(self, gain=1.0):
        self.gain = _number(gain, "gain", "Identity")

    def __call__(self, shape, dtype=None, layout=None):
        shape, name = _shape(shape), keras.backend.standardize_dtype(dtype)
        if len(shape) != 2:
            raise ValueError(f"Identity matrix initializer can only be used for 2D matrices. "
                             f"Received: shape={shape} of rank {len(shape)}.")
        if name not in _FLOATS:       # ints and bools: Keras's own way
            value = self.gain * keras.ops.eye(*shape, dtype=name)
        else:
            value = to_backend(structured.eye(empty(shape, name), self.gain))
        if layout is not None:
            value = keras.distribution.distribute_tensor(value, layout_sharding(self, layout))
        return value

    def get_config(self):
        return {"gain": self.gain}


@_register
class Constant(keras.initializers.Initializer):
    """Every element ``value``: a number, a scalar tensor, or an array that broadcasts
    to the shape (as Keras's ``cast(value) * ones(shape)``)."""

    def __init__(self, value=0.0):
        self.value = value

    def _array(self):
        """``value`` as a NumPy array when it has dimensions, else None (a scalar)."""
        if isinstance(self.value, numbers.Number):
            return None
        arr = np.asarray(keras.ops.convert_to_numpy(self.value))
        return arr if arr.ndim else None

    def __call__(self, shape, dtype=None, layout=None):
        shape, name = _shape(shape), keras.backend.standardize_dtype(dtype)
        arr = self._array()
        if arr is not None:
            try:
                ok = np.broadcast_shapes(arr.shape, shape) == shape
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"Constant: value of shape {arr.shape} does not broadcast "
                                 f"to shape {shape}")
        if name not in _FLOATS:       # ints and bools: Keras's own way
            value = keras.ops.cast(self.value, dtype=name) * keras.ops.ones(shape, dtype=name)
            if layout is not None:
                value = keras.distribution.distribute_tensor(
                    value, layout_sharding(self, layout))
            return value
        if layout is not None:
            return distributed(self, shape, name, layout_sharding(self, layout), None, 0)
        out = empty(shape, name)
        self.fill(out, shape=shape)
        return to_backend(out)

    def draw(self, shape):
        if self._array() is not None:
            return None                # an array: fill copies its broadcast elements
        value = self.value
        if not isinstance(value, numbers.Real):
            value = np.asarray(value).item()
        return "constant", (value,)

    def fill(self, out, *, seed=None, stream=0, offset=0, shape=None):
        arr = self._array()
        if arr is None:
            public_fill(*self.draw(()), out, seed=seed, stream=stream, offset=offset)
            return
        shape = out.shape if shape is None else tuple(shape)
        flat = np.broadcast_to(arr, shape).reshape(-1)[offset:offset + out.size]
        out.reshape(-1)[...] = flat.astype(out.dtype)     # one rounding, as Keras's cast

    def get_config(self):
        return {"value": keras.saving.serialize_keras_object(self.value)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config.get("value", 0.0)))


class _Fixed(Constant):
    """A Constant whose value the class fixes; its config is empty, as in Keras."""

    VALUE = None

    def __init__(self):
        super().__init__(self.VALUE)

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@_register
class Zeros(_Fixed):
    """Every element 0."""
    VALUE = 0.0


@_register
class Ones(_Fixed):
    """Every element 1."""
    VALUE = 1.0


# Keras's lower-case names for its own initializers ("glorot_uniform", "he_normal",
# and its short aliases), as "fastinit>glorot_uniform", ...: keras.initializers.get
# and a layer's kernel_initializer= take them, as they take "glorot_uniform".
ALIASES = {re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower(): cls for cls in (
    RandomUniform, RandomNormal, TruncatedNormal, VarianceScaling, GlorotUniform,
    GlorotNormal, HeUniform, HeNormal, LecunUniform, LecunNormal, Orthogonal, Identity,
    Constant, Zeros, Ones, MaskedUniform)}
ALIASES.update({"normal": RandomNormal, "uniform": RandomUniform, "one": Ones, "zero": Zeros,
                "IdentityInitializer": Identity, "OrthogonalInitializer": Orthogonal})
for _name, _cls in ALIASES.items():
    keras.saving.get_custom_objects()[f"fastinit>{_name}"] = _cls

__all__ = ["RandomUniform", "RandomNormal", "TruncatedNormal", "VarianceScaling",
           "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform",
           "LecunNormal", "Constant", "Zeros", "Ones", "MaskedUniform", "Orthogonal", "Identity",
           "compute_fans", "to_backend", "layout_sharding", "distributed"]
