"""fastinit.keras: Orthogonal, Identity, the lower-case aliases and the inputs Keras takes.

Runs on the backend KERAS_BACKEND names (TensorFlow when unset, as tests/test_keras.py).
"""

import contextlib
import json
import math
import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
fk = pytest.importorskip("fastinit.keras")

import fastinit as fi  # noqa: E402
from fastinit._blocks import fill_tile  # noqa: E402
from conftest import assert_same_bits, host  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
FLOATS = ("float16", "bfloat16", "float32", "float64")
NP = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32,
      "float64": np.float64}


def x64(dtype):
    """float64 on the JAX backend needs x64 (else JAX makes it float32)."""
    if dtype == "float64" and keras.backend.backend() == "jax":
        import jax
        return jax.enable_x64(True)
    return contextlib.nullcontext()


def gram_error(m):
    m = m.astype(np.float64) if m.dtype != np.float64 else m
    if m.shape[0] < m.shape[1]:
        m = m.T
    return float(np.abs(m.T @ m - np.eye(m.shape[1])).max())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(64, 128), (128, 64), (512, 512), (3, 3, 16, 32)])
def test_orthogonal_values_and_orthogonality(shape, dtype):
    with x64(dtype):
        got = host(fk.Orthogonal(1.5, seed=4)(shape, dtype))
    want = fi.orthogonal(np.empty(shape, NP[dtype]), 1.5, layout="keras", seed=4)
    assert_same_bits(got, want)
    m = got.reshape(-1, shape[-1]) / NP[dtype](1.5)
    if dtype == "float32":                       # the product in float32 itself
        m32 = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
        assert np.abs(m32 - np.eye(len(m32), dtype=np.float32)).max() < 1e-5
    else:
        assert gram_error(m) < 1e-12


def test_orthogonal_statistics_against_keras():
    """1M entries of a 2048 x 512 matrix against keras.initializers.Orthogonal's."""
    from scipy import stats
    ours = host(fk.Orthogonal(seed=1)((2048, 512))).reshape(-1).astype(np.float64)
    theirs = host(keras.initializers.Orthogonal(seed=1)((2048, 512))).reshape(-1)
    assert ours.size >= 1_000_000
    assert abs(ours.std() - theirs.std()) < 2e-3 * theirs.std()
    assert stats.ks_2samp(ours, theirs).pvalue > 1e-4


def test_orthogonal_parts_are_slices_of_the_whole():
    """A shard's block (fastinit._blocks.fill_tile, as under a Keras layout) is the
    same slice of the unsharded array, runs and all."""
    init, shape = fk.Orthogonal(seed=2), (12, 10)
    whole = host(init(shape, "float32"))
    block = fill_tile(init, shape, (4, 3), np.empty((5, 4), np.float32), seed=2)
    assert_same_bits(block, whole[4:9, 3:7])
    with pytest.raises(ValueError, match="at least two-dimensional"):
        init((5,))


@pytest.mark.parametrize("dtype", FLOATS)
def test_identity_equals_keras(dtype):
    for gain in (1.0, 0.5, -2.0, 0.7):
        for shape in ((3, 5), (4, 2)):
            with x64(dtype):
                got = fk.Identity(gain)(shape, dtype)
                want = keras.initializers.Identity(gain)(shape, dtype)
            assert_same_bits(host(got), host(want).astype(NP[dtype]), f"{gain} {shape}")
    with pytest.raises(ValueError, match="2D matrices"):
        fk.Identity()((2, 2, 2))


def test_identity_int_dtype_is_keras_own():
    assert np.array_equal(host(fk.Identity(2)((2, 3), "int32")),
                          host(keras.initializers.Identity(2)((2, 3), "int32")))


def test_aliases():
    for name in ("glorot_uniform", "he_normal", "orthogonal", "identity", "constant",
                 "random_normal", "normal", "uniform", "one", "zero", "lecun_uniform"):
        init = keras.initializers.get(f"fastinit>{name}")
        assert type(init).__module__ == "fastinit.keras", name
    assert type(keras.initializers.get("fastinit>glorot_uniform")) is fk.GlorotUniform
    layer = keras.layers.Dense(4, kernel_initializer="fastinit>orthogonal")
    layer.build((None, 6))
    assert gram_error(host(layer.kernel.value)) < 1e-5


def _roundtrip(init):
    back = type(init).from_config(init.get_config())
    ser = keras.initializers.serialize(init)
    back2 = keras.initializers.deserialize(json.loads(json.dumps(ser)))
    assert type(back) is type(init) and type(back2) is type(init)
    return back, back2


def test_configs_round_trip():
    for init, shape in ((fk.Orthogonal(0.5, seed=3), (6, 4)), (fk.Identity(1.5), (3, 4)),
                        (fk.Constant(np.arange(3.0)), (2, 3)),
                        (fk.RandomUniform(keras.ops.convert_to_tensor(-1.0), 2.0, seed=1),
                         (5,))):
        for back in _roundtrip(init):
            assert_same_bits(host(back(shape)), host(init(shape)), type(init).__name__)
    assert fk.Orthogonal(0.5, seed=3).get_config() == {"seed": 3, "gain": 0.5}


def test_keras_file_round_trip(tmp_path):
    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, kernel_initializer=fk.Orthogonal(seed=5))(inputs)
    out = keras.layers.Dense(8, kernel_initializer=fk.Identity(2.0))(x)
    model = keras.Model(inputs, out)
    path = tmp_path / "model.keras"
    model.save(path)
    back = keras.saving.load_model(path)
    for a, b in zip(model.layers[1:], back.layers[1:]):
        assert type(b.kernel_initializer) is type(a.kernel_initializer)
        assert b.kernel_initializer.get_config() == a.kernel_initializer.get_config()
        assert_same_bits(host(b.kernel.value), host(a.kernel.value))


# --- the inputs Keras takes ------------------------------------------------------------
def test_constant_broadcasts():
    got = host(fk.Constant(np.arange(3.0))((2, 3)))
    assert_same_bits(got, host(keras.initializers.Constant(np.arange(3.0))((2, 3))))
    got = host(fk.Constant(np.array([[0.1], [0.2]]))((2, 3), "bfloat16"))
    want = np.broadcast_to(np.array([[0.1], [0.2]]), (2, 3)).astype(ml_dtypes.bfloat16)
    assert_same_bits(got, want)
    block = fill_tile(fk.Constant(np.arange(4.0)), (3, 4), (1, 1), np.empty((2, 2)), seed=0)
    assert_same_bits(block, np.array([[1.0, 2.0], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="broadcast"):
        fk.Constant(np.arange(3.0))((2, 4))


def test_scalar_tensors():
    t = keras.ops.convert_to_tensor
    assert_same_bits(host(fk.RandomUniform(t(-1.0), t(1.0), seed=2)((50,))),
                     host(fk.RandomUniform(-1.0, 1.0, seed=2)((50,))))
    assert_same_bits(host(fk.RandomNormal(np.float32(0.5), t(2.0), seed=2)((50,))),
                     host(fk.RandomNormal(0.5, 2.0, seed=2)((50,))))
    assert_same_bits(host(fk.TruncatedNormal(stddev=t(0.3), seed=2)((50,))),
                     host(fk.TruncatedNormal(stddev=0.3, seed=2)((50,))))
    with pytest.raises(ValueError, match="stddev"):
        fk.RandomNormal(stddev=t([1.0, 2.0]))


def test_negative_seed_refused_at_construction():
    for cls in (fk.RandomNormal, fk.GlorotUniform, fk.Orthogonal):
        with pytest.raises(ValueError, match="seed"):
            cls(seed=-1)


def test_random_uniform_integers():
    init = fk.RandomUniform(0, 10, seed=3)
    got = host(init((200, 50), "int32"))
    assert got.dtype == np.int32 and got.min() == 0 and got.max() == 9
    counts = np.bincount(got.reshape(-1), minlength=10)
    assert (abs(counts - 1000) < 5 * math.sqrt(1000)).all(), counts
    assert np.array_equal(got, host(init((200, 50), "int32")))        # stateless
    u = fi.uniform(np.empty((200, 50)), 0.0, 10.0, seed=3)
    assert np.array_equal(got, np.floor(u).astype(np.int32))
    with pytest.raises(ValueError, match="no integer"):
        fk.RandomUniform(0.2, 0.7, seed=0)((3,), "int32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="does not fit"):
            fk.RandomUniform(0, 1000, seed=0)((3,), "int8")
