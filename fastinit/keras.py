"""Keras 3 initializers drawn by fastinit, handed to the backend zero copy.

Same names, arguments, defaults and configs as ``keras.initializers``;
fans follow Keras's ``compute_fans`` (kernel layout ``(*kernel, in, out)``,
and fans for 1-D and scalar shapes too). Each call fills a 64-byte aligned
buffer (``fastinit.empty``) and hands it to the TensorFlow or JAX backend
through DLPack (``fastinit.interop``), or to torch (``fastinit.to_torch``);
the numpy backend gets ``keras.ops.convert_to_tensor`` of it.

Seeds: an int seed is stateless (every call gives the same values);
``seed=None`` takes the next stream of fastinit's process-wide generator on
every call (``fastinit.manual_seed`` makes that reproducible); a
``keras.random.SeedGenerator`` gives new values on every call (its two
state words become seed and stream). Keras 3's own initializers differ on
``None``: they draw a seed once, at construction.

Distribution: the call takes Keras 3's optional ``layout`` (a
``keras.distribution.TensorLayout`` or a backend sharding), which Keras
passes under ``keras.distribution`` (``ModelParallel`` with a
``LayoutMap``) on the JAX backend. Each shard is then drawn on its own
from its global offsets (``jax.make_array_from_callback``): the values are
those of the undistributed call, and no full array is ever built. Keras's
distribution API exists on the JAX backend only: a layout on another
backend raises ValueError.

Every class is registered as ``"fastinit>Name"``, so a ``.keras`` file that
uses them reloads with its initializers once ``fastinit.keras`` is imported.
"""

import numbers

import math

import keras
import numpy as np

from . import _contract
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
        self.minval, self.maxval = minval, maxval
        super().__init__(seed=seed)

    def draw(self, shape):
        return "uniform", (self.minval, self.maxval)

    def get_config(self):
        return {**super().get_config(), "minval": self.minval, "maxval": self.maxval}


@_register
class MaskedUniform(_Random):
    """U[minval, maxval), then 0 where |x| < threshold (d2l's custom ``MyInit``)."""

    def __init__(self, minval=-0.05, maxval=0.05, threshold=0.0, seed=None):
        self.minval, self.maxval, self.threshold = minval, maxval, threshold
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
        self.mean, self.stddev = mean, stddev
        super().__init__(seed=seed)

    def draw(self, shape):
        return "normal", (self.mean, self.stddev)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "stddev": self.stddev}


@_register
class TruncatedNormal(_Random):
    """N(mean, stddev^2) cut to [mean - 2 stddev, mean + 2 stddev] (no variance correction)."""

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev = mean, stddev
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
class Constant(keras.initializers.Initializer):
    """Every element ``value`` (a scalar)."""

    def __init__(self, value=0.0):
        self.value = value

    def __call__(self, shape, dtype=None, layout=None):
        shape, name = _shape(shape), keras.backend.standardize_dtype(dtype)
        if name not in _FLOATS:       # ints and bools: Keras's own way
            value = keras.ops.cast(self.value, dtype=name) * keras.ops.ones(shape, dtype=name)
            if layout is not None:
                value = keras.distribution.distribute_tensor(
                    value, layout_sharding(self, layout))
            return value
        if layout is not None:
            return distributed(self, shape, name, layout_sharding(self, layout), None, 0)
        out = empty(shape, name)
        public_fill(*self.draw(shape), out, seed=None, stream=0, offset=0)
        return to_backend(out)

    def draw(self, shape):
        value = self.value
        if not isinstance(value, numbers.Real):
            value = np.asarray(value).item()
        return "constant", (value,)

    def fill(self, out, *, seed=None, stream=0, offset=0, shape=None):
        public_fill(*self.draw(()), out, seed=seed, stream=stream, offset=offset)

    def get_config(self):
        return {"value": keras.saving.serialize_keras_object(self.value)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["value"]))


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


__all__ = ["RandomUniform", "RandomNormal", "TruncatedNormal", "VarianceScaling",
           "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform",
           "LecunNormal", "Constant", "Zeros", "Ones", "MaskedUniform", "compute_fans",
           "to_backend", "layout_sharding", "distributed"]
