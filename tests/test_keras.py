"""fastinit.keras: Keras 3 initializers on the TensorFlow, JAX and torch backends.

This process uses the backend that KERAS_BACKEND names (TensorFlow when it
is unset); each other backend runs this file as a script in a subprocess,
since Keras reads KERAS_BACKEND once, at import.
"""

import contextlib
import json
import math
import os
import subprocess
import sys
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
BACKEND = keras.backend.backend()
BACKENDS = ("tensorflow", "jax", "torch")
if BACKEND not in BACKENDS:
    pytest.skip(f"fastinit.keras is tested on the {BACKENDS} backends, not {BACKEND}",
                allow_module_level=True)
pytest.importorskip(BACKEND)
fk = pytest.importorskip("fastinit.keras")

import fastinit as fi  # noqa: E402
from fastinit.buffers import dtype_of  # noqa: E402
from fastinit.interop import ALIGN, HandoffCopyWarning  # noqa: E402
from conftest import bits  # noqa: E402

# keras.ops.convert_to_numpy(tf.Tensor) calls np.array(x); NumPy 2 warns about TF's __array__
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
OTHERS = [b for b in BACKENDS if b != BACKEND]
SQRT = math.sqrt
PRESETS = {                      # class: (scale, mode, distribution), as Keras has them
    "GlorotUniform": (1.0, "fan_avg", "uniform"),
    "GlorotNormal": (1.0, "fan_avg", "truncated_normal"),
    "HeUniform": (2.0, "fan_in", "uniform"),
    "HeNormal": (2.0, "fan_in", "truncated_normal"),
    "LecunUniform": (1.0, "fan_in", "uniform"),
    "LecunNormal": (1.0, "fan_in", "truncated_normal"),
}
SHAPES = [(), (7,), (5, 6), (3, 3, 4, 8)]



def host(t):
    return keras.ops.convert_to_numpy(t)


def keras_fans(shape):
    from keras.src.initializers.random_initializers import compute_fans
    return compute_fans(shape)


# --- the same numbers as a direct fill, with Keras's parameters ----------------------
def expected(name, shape, dtype="float32", seed=11, **kw):
    out = fi.empty(shape, dtype)
    if not out.size:
        return out
    if name in PRESETS:
        scale, mode, dist = PRESETS[name]
        return fi.variance_scaling(out, scale, mode, dist, fans=keras_fans(shape), seed=seed)
    if name == "RandomUniform":
        return fi.uniform(out, kw["minval"], kw["maxval"], seed=seed)
    if name == "RandomNormal":
        return fi.normal(out, kw["mean"], kw["stddev"], seed=seed)
    if name == "TruncatedNormal":
        m, s = kw["mean"], kw["stddev"]
        return fi.truncated_normal(out, m, s, m - 2 * s, m + 2 * s, seed=seed)
    if name == "MaskedUniform":
        return fi.masked_uniform(out, kw["minval"], kw["maxval"], kw["threshold"], seed=seed)
    raise AssertionError(name)


ARGS = {"RandomUniform": dict(minval=-0.3, maxval=0.7),
        "RandomNormal": dict(mean=0.5, stddev=0.2),
        "TruncatedNormal": dict(mean=-1.0, stddev=0.3),
        "MaskedUniform": dict(minval=-10.0, maxval=10.0, threshold=5.0)}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", list(PRESETS) + list(ARGS))
def test_values_are_the_direct_fill(name, shape):
    init = getattr(fk, name)(seed=11, **ARGS.get(name, {}))
    got = init(shape)
    assert tuple(got.shape) == shape
    assert np.array_equal(bits(host(got)), bits(expected(name, shape, **ARGS.get(name, {}))))


def test_variance_scaling_and_axes():
    shape = (3, 5, 4, 6)
    for dist in ("truncated_normal", "untruncated_normal", "uniform"):
        for mode in ("fan_in", "fan_out", "fan_avg"):
            got = fk.VarianceScaling(0.7, mode, dist, seed=2)(shape)
            want = fi.variance_scaling(fi.empty(shape), 0.7, mode, dist,
                                       fans=keras_fans(shape), seed=2)
            assert np.array_equal(host(got), want), (dist, mode)
    # "normal" is Keras's alias of truncated_normal; explicit axes pick the fans
    assert fk.VarianceScaling(distribution="Normal").distribution == "truncated_normal"
    got = fk.VarianceScaling(2.0, "fan_out", "uniform", seed=4, input_axes=[0, 1],
                             output_axes=[2])(shape)
    want = fi.variance_scaling(fi.empty(shape), 2.0, "fan_out", "uniform", fans=(15, 4), seed=4)
    assert np.array_equal(host(got), want)


@pytest.mark.parametrize("shape", [(), (1,), (9,), (4, 3), (2, 3, 4), (3, 3, 5, 7), (0, 3)],
                         ids=str)
def test_compute_fans_is_keras(shape):
    assert fk.compute_fans(shape) == keras_fans(shape)
    from keras.src.initializers.random_initializers import compute_fans
    if len(shape) >= 2:
        assert fk.compute_fans(shape, [0], [1]) == compute_fans(shape, [0], [1])


# --- the same distribution as Keras's own --------------------------------------------
@pytest.mark.parametrize("name, args", [
    ("GlorotUniform", {}), ("GlorotNormal", {}), ("HeUniform", {}), ("HeNormal", {}),
    ("LecunUniform", {}), ("LecunNormal", {}),
    ("RandomUniform", dict(minval=-0.2, maxval=0.6)),
    ("RandomNormal", dict(mean=0.1, stddev=0.3)),
    ("TruncatedNormal", dict(mean=0.1, stddev=0.3)),
    ("VarianceScaling", dict(scale=3.0, mode="fan_out", distribution="untruncated_normal")),
])
def test_matches_keras_statistics(name, args):
    shape = (3, 3, 96, 64)           # 55296 values; fan_in 864, fan_out 576
    ours = host(getattr(fk, name)(seed=1, **args)(shape)).astype(np.float64)
    theirs = host(getattr(keras.initializers, name)(seed=1, **args)(shape)).astype(np.float64)
    assert abs(ours.mean() - theirs.mean()) < 0.03 * theirs.std() + 1e-12
    assert ours.std() == pytest.approx(theirs.std(), rel=0.03)
    if name not in ("RandomNormal", "VarianceScaling"):   # uniform, truncated: same bounds
        assert ours.min() >= theirs.min() - 0.01 * theirs.std()
        assert ours.max() <= theirs.max() + 0.01 * theirs.std()
        assert ours.max() - ours.min() == pytest.approx(theirs.max() - theirs.min(), rel=0.01)


def test_truncated_normal_cut_at_two_stddev():
    x = host(fk.TruncatedNormal(1.0, 0.5, seed=3)((256, 256))).astype(np.float64)
    assert x.min() >= 0.0 and x.max() <= 2.0
    assert x.min() < 0.01 and x.max() > 1.99
    assert host(fk.TruncatedNormal(2.0, 0.0)((3,))).tolist() == [2.0] * 3


def test_masked_uniform():
    x = host(fk.MaskedUniform(-10, 10, 5, seed=4)((128, 128)))
    nz = x[x != 0]
    assert np.all((np.abs(nz) >= 5) & (nz >= -10) & (nz < 10))
    assert 0.45 < (x == 0).mean() < 0.55


# --- seeds ----------------------------------------------------------------------
def test_int_seed_is_stateless():
    init = fk.HeNormal(seed=7)
    a, b = host(init((20, 30))), host(init((20, 30)))
    assert np.array_equal(a, b)
    assert np.array_equal(a, host(fk.HeNormal(seed=7)((20, 30))))
    assert not np.array_equal(a, host(fk.HeNormal(seed=8)((20, 30))))


@pytest.fixture
def global_generator():
    """Restore fastinit's process-wide seed and stream counter after the test."""
    from fastinit import _contract
    saved = dict(_contract._state)
    yield
    _contract._state.update(saved)


def test_none_seed_draws_a_fresh_stream_per_call(global_generator):
    init = fk.RandomUniform()
    fi.manual_seed(123)
    a, b = host(init((50,))), host(init((50,)))
    assert not np.array_equal(a, b)
    fi.manual_seed(123)                # reproducible by call order
    assert np.array_equal(host(init((50,))), a)
    assert np.array_equal(b, fi.uniform(fi.empty(50), -0.05, 0.05, seed=123, stream=1))


def test_seed_generator_seed():
    a_init = fk.GlorotNormal(seed=keras.random.SeedGenerator(5))
    b_init = fk.GlorotNormal(seed=keras.random.SeedGenerator(5))
    a1, a2 = host(a_init((16, 16))), host(a_init((16, 16)))
    assert not np.array_equal(a1, a2)
    assert np.array_equal(host(b_init((16, 16))), a1)
    assert np.array_equal(host(b_init((16, 16))), a2)
    clone = fk.GlorotNormal.from_config(a_init.get_config())
    assert isinstance(clone.seed, keras.random.SeedGenerator)


def test_bad_arguments():
    with pytest.raises(ValueError, match="seed"):
        fk.RandomNormal(seed="x")
    with pytest.raises(ValueError, match="seed"):
        fk.RandomNormal(seed=True)
    with pytest.raises(ValueError, match="scale"):
        fk.VarianceScaling(scale=0.0)
    with pytest.raises(ValueError, match="mode"):
        fk.VarianceScaling(mode="fan_max")
    with pytest.raises(ValueError, match="distribution"):
        fk.VarianceScaling(distribution="cauchy")
    with pytest.raises(ValueError, match="int32"):
        fk.GlorotUniform(seed=1)((4, 4), dtype="int32")
    with pytest.raises(ValueError, match="seed"):
        fk.GlorotUniform(seed=-1)((4, 4))
    with pytest.raises(ValueError, match="low must be <= high"):
        fk.RandomUniform(1.0, -1.0, seed=1)((4,))


@pytest.mark.skipif(BACKEND == "jax", reason="the JAX backend takes layouts "
                    "(tests/test_keras_jax_distribution.py)")
def test_layout_needs_the_jax_backend(global_generator):
    from fastinit import _contract
    before = dict(_contract._state)
    for init in (fk.GlorotUniform(seed=1), fk.RandomNormal(), fk.Ones()):
        with pytest.raises(ValueError, match=f"only supported on the JAX backend.*{BACKEND}"):
            init((4, 4), layout=("model", None))
    assert _contract._state == before          # no stream taken by the refused call


# --- dtypes and the zero-copy handoff -----------------------------------------------
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_dtypes(dtype):
    x64 = contextlib.nullcontext()
    if dtype == "float64" and BACKEND == "jax":
        import jax
        x64 = jax.enable_x64(True)       # float64 on the JAX backend needs x64
    with x64:
        got = fk.GlorotUniform(seed=3)((32, 48), dtype=dtype)
    assert keras.backend.standardize_dtype(got.dtype) == dtype
    want = expected("GlorotUniform", (32, 48), "float32", seed=3)
    if dtype == "float64":
        want = expected("GlorotUniform", (32, 48), "float64", seed=3)
    assert np.array_equal(bits(host(got)), bits(want.astype(dtype_of(dtype))))


def backend_address(t):
    if BACKEND == "jax":
        return t.unsafe_buffer_pointer()
    if BACKEND == "torch":
        return t.data_ptr()
    from fastinit import _dlpack
    return _dlpack.consume(t).pointer


def is_native(t):
    """``t`` is the backend's own tensor type."""
    if BACKEND == "jax":
        import jax
        return isinstance(t, jax.Array)
    if BACKEND == "torch":
        import torch
        return isinstance(t, torch.Tensor)
    import tensorflow as tf
    return isinstance(t, tf.Tensor)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_zero_copy_handoff(monkeypatch, dtype):
    made = []

    def empty(shape, dtype):
        made.append(fi.empty(shape, dtype))
        return made[-1]
    monkeypatch.setattr(fk, "empty", empty)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HandoffCopyWarning)
        for init in (fk.LecunNormal(seed=1), fk.Constant(0.25), fk.Ones()):
            t = init((64, 40), dtype=dtype)
            assert backend_address(t) == made[-1].ctypes.data
            assert backend_address(t) % ALIGN == 0


def test_native_tensor_type():
    assert is_native(fk.Zeros()((2, 3)))
    assert is_native(fk.GlorotUniform(seed=1)((2, 3), "bfloat16"))


def test_constants():
    assert np.all(host(fk.Constant(42)((4, 1))) == 42)
    assert np.all(host(fk.Zeros()((3,), "bfloat16")).astype(np.float32) == 0)
    assert np.all(host(fk.Ones()((3, 2), "float16")) == 1)
    ints = fk.Ones()((3,), "int32")       # Keras's own way for non-floats
    assert keras.backend.standardize_dtype(ints.dtype) == "int32"
    assert host(ints).tolist() == [1, 1, 1]
    assert host(fk.Constant(np.float32(0.1))(())).item() == np.float32(0.1)
    want = np.float32(0.1).astype(ml_dtypes.bfloat16)   # rounded once through float32
    assert bits(host(fk.Constant(0.1)((2,), "bfloat16")))[0] == bits(want)


# --- configs and serialization ------------------------------------------------------
ALL = [fk.RandomUniform(-1, 2, seed=1), fk.RandomNormal(0.5, 2.0, seed=2),
       fk.TruncatedNormal(0.0, 0.1, seed=None), fk.VarianceScaling(2.0, "fan_avg", "uniform",
                                                                   seed=4),
       fk.GlorotUniform(seed=5), fk.GlorotNormal(), fk.HeUniform(seed=6),
       fk.HeNormal(seed=7, input_axes=[0], output_axes=[1]), fk.LecunUniform(seed=8),
       fk.LecunNormal(seed=9), fk.Constant(3.5), fk.Zeros(), fk.Ones(),
       fk.MaskedUniform(-10, 10, 5, seed=10)]


@pytest.mark.parametrize("init", ALL, ids=lambda i: type(i).__name__)
def test_config_round_trip(init):
    cls = type(init)
    config = init.get_config()
    assert json.loads(json.dumps(config)) == config
    again = cls.from_config(config)
    assert type(again) is cls and again.get_config() == config
    assert init.clone().get_config() == config
    keras_cls = getattr(keras.initializers, cls.__name__, None)
    if keras_cls is not None:          # the same config keys as Keras's class
        assert set(config) == set(keras_cls().get_config())
    ser = keras.initializers.serialize(init)
    assert ser["registered_name"] == f"fastinit>{cls.__name__}"
    back = keras.initializers.deserialize(json.loads(json.dumps(ser)))
    assert type(back) is cls and back.get_config() == config
    if getattr(init, "seed", None) is not None:
        assert np.array_equal(host(back((6, 5))), host(init((6, 5))))


def test_string_identifier():
    layer = keras.layers.Dense(3, kernel_initializer="fastinit>HeNormal")
    assert type(layer.kernel_initializer) is fk.HeNormal


def build_model():
    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(5, kernel_initializer=fk.GlorotUniform(seed=1),
                           bias_initializer=fk.Constant(0.5)),
        keras.layers.Dense(4, kernel_initializer=fk.TruncatedNormal(0.0, 0.1, seed=2),
                           bias_initializer=fk.Zeros()),
        keras.layers.Dense(3, kernel_initializer=fk.VarianceScaling(
            2.0, "fan_out", "untruncated_normal", seed=3),
            bias_initializer=fk.MaskedUniform(-1, 1, 0.5, seed=4)),
    ])
    return model


def initializer_configs(model):
    return [(keras.initializers.serialize(layer.kernel_initializer),
             keras.initializers.serialize(layer.bias_initializer)) for layer in model.layers]


def fresh_weights(model):
    """Each layer rebuilt from its config: the weights its initializers draw anew."""
    out = []
    for layer in model.layers:
        twin = type(layer).from_config(layer.get_config())
        twin.build(layer.input.shape)
        out += [host(w) for w in twin.weights]
    return out


def test_keras_file_round_trip(tmp_path):
    model = build_model()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert initializer_configs(loaded) == initializer_configs(model)
    for layer in loaded.layers:
        assert type(layer.kernel_initializer).__module__ == "fastinit.keras"
    for a, b in zip(model.weights, loaded.weights):
        assert np.array_equal(host(a), host(b))
    fresh = fresh_weights(loaded)
    for a, b in zip(fresh, model.weights):          # int seeds: the same draws
        assert np.array_equal(a, host(b))
    assert np.all(host(loaded.layers[0].bias) == 0.5)
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 6)
    assert np.array_equal(host(model(x)), host(loaded(x)))


# --- the other backend, in a subprocess -----------------------------------------------
def draw_cases():
    """name -> bits of the values each case draws on this backend."""
    cases = {f"{name}-{shape}": (getattr(fk, name)(seed=11, **ARGS.get(name, {})), shape, "float32")
             for name in list(PRESETS) + list(ARGS) for shape in ((5, 6), (3, 3, 4, 8))}
    cases["GlorotUniform-bf16"] = (fk.GlorotUniform(seed=2), (17, 9), "bfloat16")
    cases["Constant-f16"] = (fk.Constant(0.3), (4,), "float16")
    return {k: bits(host(init(shape, dtype))) for k, (init, shape, dtype) in cases.items()}


@pytest.mark.parametrize("other", OTHERS)
def test_other_backend_subprocess(tmp_path, other):
    pytest.importorskip(other)
    model = build_model()
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "weights.npz", *[host(w) for w in model.weights])
    env = dict(os.environ, KERAS_BACKEND=other,
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run([sys.executable, __file__, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["backend"] == other and report["native"], report
    assert report["zero_copy"], report
    theirs = np.load(tmp_path / "draws.npz")
    ours = draw_cases()
    assert set(theirs.files) == set(ours)
    for k in ours:                 # the same bits on every backend
        assert np.array_equal(theirs[k], ours[k]), k
    assert report["loaded_weights_equal"] and report["fresh_weights_equal"], report
    assert report["initializers_from_fastinit"], report
    if other == "jax":
        assert report["model_parallel"], report


def model_parallel_check():
    """Keras's JAX distribution API: a kernel split over a 2 x 2 mesh, same values."""
    dist = keras.distribution
    mesh = dist.DeviceMesh((2, 2), ["batch", "model"], dist.list_devices()[:4])
    layout_map = dist.LayoutMap(mesh)
    layout_map["mp/kernel"] = (None, "model")
    dist.set_distribution(dist.ModelParallel(layout_map=layout_map, batch_dim_name="batch"))
    try:
        layer = keras.layers.Dense(8, kernel_initializer=fk.GlorotUniform(seed=1), name="mp")
        layer.build((None, 6))
        kernel = layer.kernel.value
    finally:
        dist.set_distribution(None)
    return (len(kernel.sharding.device_set) == 4 and
            np.array_equal(np.asarray(kernel), host(fk.GlorotUniform(seed=1)((6, 8)))))


def _subprocess_main(folder):
    """Run on another backend: draws, zero copy, and the model saved on the first one."""
    import pathlib
    folder = pathlib.Path(folder)
    report = {"backend": keras.backend.backend()}
    report["native"] = is_native(fk.GlorotUniform(seed=1)((8, 8)))
    made = []
    real_empty = fk.empty
    fk.empty = lambda shape, dtype: made.append(real_empty(shape, dtype)) or made[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", HandoffCopyWarning)
        t = fk.HeUniform(seed=1)((64, 64), "bfloat16")
    fk.empty = real_empty
    report["zero_copy"] = backend_address(t) == made[-1].ctypes.data
    np.savez(folder / "draws.npz", **draw_cases())
    loaded = keras.models.load_model(folder / "model.keras")
    saved = np.load(folder / "weights.npz")
    saved = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    report["loaded_weights_equal"] = all(
        np.array_equal(host(a), b) for a, b in zip(loaded.weights, saved))
    report["fresh_weights_equal"] = all(
        np.array_equal(a, b) for a, b in zip(fresh_weights(loaded), saved))
    report["initializers_from_fastinit"] = all(
        type(layer.kernel_initializer).__module__ == "fastinit.keras" for layer in loaded.layers)
    if report["backend"] == "jax":
        report["model_parallel"] = bool(model_parallel_check())
    (folder / "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    _subprocess_main(sys.argv[1])
