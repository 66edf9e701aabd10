"""d2l's "Parameter Initialization" chapter, TensorFlow examples, with fastinit.keras.

Every TensorFlow cell of the chapter (shared/reference/
d2l-parameter-initialization.txt) is replayed with fastinit's initializers
in place of ``tf.random_normal_initializer``, ``tf.zeros_initializer``,
``tf.keras.initializers.Constant``/``GlorotUniform`` and the custom
``MyInit``; each test checks what the cell sets out to show.
"""

import math
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":
    pytest.skip("the d2l cells are TensorFlow code (tf.nn.relu, tf.random.uniform)",
                allow_module_level=True)
fk = pytest.importorskip("fastinit.keras")

import fastinit as fi  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
from keras import layers, models  # noqa: E402


@pytest.fixture(autouse=True)
def reproducible():
    """The chapter passes no seeds: fastinit's process-wide generator, reset per test."""
    from fastinit import _contract
    saved = dict(_contract._state)
    fi.manual_seed(2024)
    yield
    _contract._state.update(saved)


@pytest.fixture
def Xtf():
    return tf.random.uniform((2, 4))


def test_default_net(Xtf):
    # In [12]: a Flatten -> Dense(4, relu) -> Dense(1) net maps (2, 4) to (2, 1).
    net_tf = models.Sequential([layers.Flatten(), layers.Dense(4, activation=tf.nn.relu),
                                layers.Dense(1)])
    assert net_tf(Xtf).shape == (2, 1)


def test_normal_weights_zero_bias(Xtf):
    # In [42]/[43]: RandomNormal(mean=0, stddev=0.01) weights, zero bias.
    net_tf2 = models.Sequential([
        layers.Flatten(),
        layers.Dense(4, activation=tf.nn.relu,
                     kernel_initializer=fk.RandomNormal(mean=0, stddev=0.01),
                     bias_initializer=fk.Zeros()),
        layers.Dense(1)])
    assert net_tf2(Xtf).shape == (2, 1)
    w, b = net_tf2.weights[0].numpy(), net_tf2.weights[1].numpy()
    assert w.shape == (4, 4) and w.dtype == np.float32
    assert np.array_equal(b, np.zeros(4, np.float32))
    # the first unseeded fill after manual_seed(2024) takes stream 0
    assert np.array_equal(w, fi.normal(fi.empty((4, 4)), 0.0, 0.01, seed=2024, stream=0))
    assert np.abs(w).max() < 0.06 and len(np.unique(w)) == 16
    # the intended distribution, on a kernel big enough to see it
    big = fk.RandomNormal(mean=0, stddev=0.01)((512, 512)).numpy()
    assert abs(big.mean()) < 1e-4 and big.std() == pytest.approx(0.01, rel=0.01)


def test_constant_one(Xtf):
    # In [44]: Constant(1) weights and zero bias.
    net_tf = models.Sequential([
        layers.Flatten(),
        layers.Dense(4, activation=tf.nn.relu, kernel_initializer=fk.Constant(1),
                     bias_initializer=fk.Zeros()),
        layers.Dense(1),
    ])
    net_tf(Xtf)
    assert np.array_equal(net_tf.weights[0].numpy(), np.ones((4, 4), np.float32))
    assert np.array_equal(net_tf.weights[1].numpy(), np.zeros(4, np.float32))
    # every hidden unit sees the same input: all four activations agree
    hidden = net_tf.layers[1](net_tf.layers[0](Xtf)).numpy()
    assert np.all(hidden == hidden[:, :1])


def test_xavier_first_layer_constant_42_second(Xtf):
    # In [49]: GlorotUniform on the first Dense, Constant(42) on the second.
    net_tf = models.Sequential([
        layers.Flatten(),
        layers.Dense(4, activation=tf.nn.relu, kernel_initializer=fk.GlorotUniform()),
        tf.keras.layers.Dense(1, kernel_initializer=fk.Constant(42)),
    ])
    net_tf(Xtf)
    w1, w2 = net_tf.layers[1].weights[0].numpy(), net_tf.layers[2].weights[0].numpy()
    limit = math.sqrt(6 / (4 + 4))
    assert w1.shape == (4, 4) and np.abs(w1).max() < limit
    assert np.array_equal(w1, fi.uniform(fi.empty((4, 4)), -limit, limit, seed=2024, stream=0))
    assert np.array_equal(w2, np.full((4, 1), 42, np.float32))
    big = fk.GlorotUniform()((400, 600)).numpy()          # U(-l, l), l = sqrt(6 / 1000)
    assert big.max() < math.sqrt(6 / 1000) and big.max() > 0.99 * math.sqrt(6 / 1000)
    assert big.std() == pytest.approx(math.sqrt(2 / 1000), rel=0.01)


def test_custom_my_init(Xtf):
    # In [54]: MyInit draws U(-10, 10) and zeroes |w| < 5; here MaskedUniform(-10, 10, 5).
    net_tf = tf.keras.models.Sequential([
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(4, activation=tf.nn.relu,
                              kernel_initializer=fk.MaskedUniform(-10, 10, 5)),
        tf.keras.layers.Dense(1),
    ])
    net_tf(Xtf)
    w = net_tf.layers[1].weights[0].numpy()
    assert w.shape == (4, 4)
    assert np.all((w == 0) | (np.abs(w) >= 5)) and np.all((w >= -10) & (w < 10))
    # the same as the chapter's two-step MyInit on the same uniform draw
    u = fi.uniform(fi.empty((4, 4)), -10, 10, seed=2024, stream=0)
    assert np.array_equal(w, u * (np.abs(u) >= 5))
    big = fk.MaskedUniform(-10, 10, 5)((256, 256)).numpy()
    assert (big == 0).mean() == pytest.approx(0.5, abs=0.01)
    nz = big[big != 0]
    assert nz.min() >= -10 and nz.max() < 10 and np.abs(nz).min() >= 5
