"""Fans, gains and the initializers built on them, against torch and Keras."""

import math

import numpy as np
import pytest
import torch
import torch.nn.init as tinit

import fastinit as fi

BIG = (1024, 1024)               # 2^20 elements: max|x| and std settle within 1%
TORCH_SHAPES = [(64, 32), (128, 16, 3), (64, 32, 3, 3), (16, 8, 2, 3, 4)]


def torch_fans(shape):
    return tinit._calculate_fan_in_and_fan_out(torch.empty(shape))


def f64(x):
    return np.asarray(x).astype(np.float64)


def max_abs(x):
    return float(np.abs(f64(x)).max())


def sample_std(x):
    return float(np.sqrt(np.mean(f64(x) ** 2)))   # mean is 0 for every variant here


def close_bound(x, bound):
    """Every |x| <= bound and the largest within 1% of it."""
    m = max_abs(x)
    return m <= bound and m >= 0.99 * bound


# --- fans -----------------------------------------------------------------------
@pytest.mark.parametrize("shape", TORCH_SHAPES + [(5, 7), (1, 1), (3, 4, 1, 1)])
def test_fans_torch_layout(shape):
    assert fi.fans(shape) == tuple(torch_fans(shape))
    assert fi.fans(shape, layout="torch") == tuple(torch_fans(shape))


@pytest.mark.parametrize("shape", [(64, 32), (3, 128, 16), (3, 3, 32, 64), (2, 3, 4, 8, 16)])
def test_fans_keras_layout(shape):
    # Keras _compute_fans: (*kernel, in, out); receptive field = prod(kernel).
    receptive = math.prod(shape[:-2])
    assert fi.fans(shape, layout="keras") == (shape[-2] * receptive, shape[-1] * receptive)
    # the same weight in torch layout has the same fans
    torch_shape = (shape[-1], shape[-2]) + tuple(shape[:-2])
    assert fi.fans(torch_shape) == fi.fans(shape, layout="keras")


@pytest.mark.parametrize("shape", [(), (5,), (0,)])
@pytest.mark.parametrize("layout", ["torch", "keras"])
def test_fans_need_two_dims(shape, layout):
    with pytest.raises(ValueError, match="dimension"):
        fi.fans(shape, layout)


@pytest.mark.parametrize("fill", [fi.xavier_uniform, fi.xavier_normal, fi.kaiming_uniform,
                                  fi.kaiming_normal, fi.lecun_uniform, fi.lecun_normal,
                                  fi.variance_scaling])
def test_initializers_need_fans_for_1d(fill):
    x = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="fans"):
        fill(x, seed=0)
    assert (x == 0).all()


# --- gains ----------------------------------------------------------------------
LINEARS = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
           "conv_transpose3d", "sigmoid"]


@pytest.mark.parametrize("nonlinearity", LINEARS + ["tanh", "relu", "selu"])
def test_calculate_gain_matches_torch(nonlinearity):
    assert fi.calculate_gain(nonlinearity) == tinit.calculate_gain(nonlinearity)


@pytest.mark.parametrize("param", [None, 0.2, 0, 1, 0.01, 3.5, -0.5])
def test_calculate_gain_leaky_relu_matches_torch(param):
    assert fi.calculate_gain("leaky_relu", param) == tinit.calculate_gain("leaky_relu", param)


@pytest.mark.parametrize("param", [1e150, -3e200, 1e300, 1.7e308])
def test_calculate_gain_huge_slope(param):
    """torch overflows on slope ** 2; the gain is sqrt(2) / |slope| there, and it meets
    torch's value where torch still has one."""
    assert fi.calculate_gain("leaky_relu", param) == pytest.approx(math.sqrt(2) / abs(param))
    assert fi.calculate_gain("leaky_relu", 1e149) == tinit.calculate_gain("leaky_relu", 1e149)


@pytest.mark.parametrize("nonlinearity", ["relu6", "gelu", "Relu", ""])
def test_calculate_gain_unknown(nonlinearity):
    with pytest.raises(ValueError, match="nonlinearity"):
        fi.calculate_gain(nonlinearity)


@pytest.mark.parametrize("param", ["0.2", True, [0.2]])
def test_calculate_gain_bad_slope(param):
    with pytest.raises((ValueError, TypeError), match="slope"):
        fi.calculate_gain("leaky_relu", param)


# --- torch initializers -----------------------------------------------------------
def torch_xavier_std(shape, gain):
    fan_in, fan_out = torch_fans(shape)
    return gain * math.sqrt(2.0 / float(fan_in + fan_out))      # torch.nn.init.xavier_*_


def torch_kaiming_std(shape, a, mode, nonlinearity):
    fan = tinit._calculate_correct_fan(torch.empty(shape), mode)  # torch.nn.init.kaiming_*_
    return tinit.calculate_gain(nonlinearity, a) / math.sqrt(fan)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, gain", [(BIG, 1.0), ((256, 64, 8, 8), 2.5), ((512, 2048), 0.3)])
def test_xavier_uniform_bound(dtype, shape, gain):
    x = fi.xavier_uniform(np.empty(shape, dtype), gain, seed=1)
    assert close_bound(x, math.sqrt(3.0) * torch_xavier_std(shape, gain))


@pytest.mark.parametrize("shape, gain", [(BIG, 1.0), ((256, 64, 8, 8), 2.5)])
def test_xavier_normal_std(shape, gain):
    x = fi.xavier_normal(np.empty(shape, np.float32), gain, seed=2)
    assert sample_std(x) == pytest.approx(torch_xavier_std(shape, gain), rel=0.01)


KAIMING = [
    ((256, 128, 3, 3), 0.0, "fan_in", "leaky_relu"),
    ((256, 128, 3, 3), math.sqrt(5), "fan_in", "leaky_relu"),   # nn.Linear / nn.Conv default
    ((128, 8192), 0.2, "fan_out", "leaky_relu"),
    (BIG, 0.0, "fan_in", "relu"),
    ((2048, 512), 0.0, "fan_out", "tanh"),
    ((64, 128, 5, 5), 0.0, "fan_in", "selu"),
    ((64, 128, 5, 5), 0.0, "fan_out", "conv2d"),
]


@pytest.mark.parametrize("shape, a, mode, nonlinearity", KAIMING)
def test_kaiming_uniform_bound(shape, a, mode, nonlinearity):
    x = fi.kaiming_uniform(np.empty(shape, np.float32), a, mode, nonlinearity, seed=3)
    bound = math.sqrt(3.0) * torch_kaiming_std(shape, a, mode, nonlinearity)
    assert close_bound(x, bound)


@pytest.mark.parametrize("shape, a, mode, nonlinearity", KAIMING)
def test_kaiming_normal_std(shape, a, mode, nonlinearity):
    x = fi.kaiming_normal(np.empty(shape, np.float32), a, mode, nonlinearity, seed=4)
    assert sample_std(x) == pytest.approx(torch_kaiming_std(shape, a, mode, nonlinearity),
                                          rel=0.01)


def test_kaiming_defaults_match_torch_defaults():
    # torch: a=0, mode="fan_in", nonlinearity="leaky_relu"
    x = fi.kaiming_uniform(np.empty(BIG, np.float32), seed=5)
    assert close_bound(x, math.sqrt(3.0) * torch_kaiming_std(BIG, 0, "fan_in", "leaky_relu"))


def test_torch_sample_agrees():
    """Our reading of torch's formulas is torch's: its own sample has the same max."""
    shape = (256, 128, 3, 3)
    t = torch.empty(shape)
    torch.manual_seed(0)
    tinit.kaiming_uniform_(t, a=math.sqrt(5))
    x = fi.kaiming_uniform(np.empty(shape, np.float32), a=math.sqrt(5), seed=6)
    assert max_abs(x) == pytest.approx(float(t.abs().max()), rel=0.01)
    tinit.xavier_normal_(t, gain=2.0)
    x = fi.xavier_normal(np.empty(shape, np.float32), gain=2.0, seed=6)
    assert sample_std(x) == pytest.approx(float(t.std()), rel=0.01)


# --- Keras initializers -----------------------------------------------------------
KERAS_SHAPE = (3, 3, 256, 512)             # (*kernel, in, out): 1.18M elements
TRUNCATED_STD = 0.87962566103423978        # std of N(0, 1) cut to [-2, 2]


def keras_n(shape, mode):
    receptive = math.prod(shape[:-2])
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    return {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("distribution", ["uniform", "untruncated_normal", "truncated_normal"])
def test_variance_scaling_matches_keras(mode, distribution):
    scale = 2.0
    n = keras_n(KERAS_SHAPE, mode)
    x = fi.variance_scaling(np.empty(KERAS_SHAPE, np.float32), scale, mode, distribution,
                            layout="keras", seed=7)
    if distribution == "uniform":
        assert close_bound(x, math.sqrt(3.0 * scale / n))
    elif distribution == "untruncated_normal":
        assert sample_std(x) == pytest.approx(math.sqrt(scale / n), rel=0.01)
    else:
        stddev = math.sqrt(scale / n) / TRUNCATED_STD
        assert close_bound(x, 2.0 * stddev)
        # the correction makes the variance of the cut normal exactly scale / n
        assert sample_std(x) == pytest.approx(math.sqrt(scale / n), rel=0.01)


def test_lecun_uniform_matches_keras():
    x = fi.lecun_uniform(np.empty(KERAS_SHAPE, np.float32), layout="keras", seed=8)
    assert close_bound(x, math.sqrt(3.0 / keras_n(KERAS_SHAPE, "fan_in")))


def test_lecun_normal_matches_keras():
    x = fi.lecun_normal(np.empty(KERAS_SHAPE, np.float32), layout="keras", seed=9)
    n = keras_n(KERAS_SHAPE, "fan_in")
    assert close_bound(x, 2.0 * math.sqrt(1.0 / n) / TRUNCATED_STD)
    assert sample_std(x) == pytest.approx(math.sqrt(1.0 / n), rel=0.01)


def test_layouts_pick_different_fans():
    shape = (3, 3, 64, 256)
    a = fi.lecun_uniform(np.empty(shape, np.float32), layout="keras", seed=1)
    b = fi.lecun_uniform(np.empty(shape, np.float32), layout="torch", seed=1)
    assert max_abs(a) == pytest.approx(math.sqrt(3.0 / (3 * 3 * 64)), rel=0.01)
    assert max_abs(b) == pytest.approx(math.sqrt(3.0 / (3 * 64 * 256)), rel=0.01)


# --- fans= overrides ----------------------------------------------------------------
@pytest.mark.parametrize("fill, kw", [
    (fi.xavier_uniform, {"gain": 1.5}),
    (fi.xavier_normal, {}),
    (fi.kaiming_uniform, {"a": math.sqrt(5)}),
    (fi.kaiming_normal, {"mode": "fan_out", "nonlinearity": "relu"}),
    (fi.lecun_uniform, {}),
    (fi.lecun_normal, {}),
    (fi.variance_scaling, {"scale": 0.5, "mode": "fan_avg", "distribution": "uniform"}),
])
def test_fans_override_flat_shard(fill, kw):
    """A flat shard with fans= and an offset is exactly its slice of the full weight."""
    shape = (96, 80, 3, 3)
    full = fill(np.empty(shape, np.float32), **kw, seed=11, stream=2)
    start, size = 12345, 40000
    shard = fill(np.empty(size, np.float32), **kw, fans=fi.fans(shape), seed=11, stream=2,
                 offset=start)
    assert np.array_equal(shard.view(np.uint32), full.reshape(-1)[start:start + size].view(np.uint32))
    # and any other shape with the same fans and offset gives the same values
    other = fill(np.empty((200, 200), np.float32), **kw, fans=fi.fans(shape), seed=11,
                 stream=2, offset=start)
    assert np.array_equal(other.reshape(-1).view(np.uint32),
                          full.reshape(-1)[start:start + 40000].view(np.uint32))


def test_fans_override_replaces_shape():
    x = fi.xavier_uniform(np.empty(BIG, np.float32), fans=(10, 30), seed=12)
    assert close_bound(x, math.sqrt(6.0 / 40))
    y = fi.kaiming_uniform(np.empty(1 << 20, np.float32), fans=(50, 7), mode="fan_out",
                           nonlinearity="relu", seed=12)
    assert close_bound(y, math.sqrt(3.0) * math.sqrt(2.0) / math.sqrt(7))


@pytest.mark.parametrize("fans", [(0, 3), (3, -1), (2.0, 3), (True, 3), (3,), (1, 2, 3), 5, "ab"])
def test_bad_fans_override(fans):
    x = np.zeros((4, 4), np.float32)
    with pytest.raises((ValueError, TypeError), match="fan"):
        fi.xavier_uniform(x, fans=fans, seed=0)
    assert (x == 0).all()
