"""fastinit.fans.fans_by_axes, the one fan implementation, against the rules it serves:
torch's _calculate_fan_in_and_fan_out, Keras's compute_fans and JAX's _compute_fans,
through fastinit.fans, fastinit.torch's twins, fastinit.keras and fastinit.jax."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastinit as fi
from fastinit.fans import fans_by_axes
from fastinit.torch import twins

jax_init = pytest.importorskip("jax._src.nn.initializers")
keras_init = pytest.importorskip("keras.src.initializers.random_initializers")
import fastinit.jax as fj  # noqa: E402  (after the skips)
import fastinit.keras as fk  # noqa: E402

SHAPES = st.lists(st.integers(0, 6), min_size=0, max_size=5).map(tuple)
POSITIVE = st.lists(st.integers(1, 6), min_size=1, max_size=5).map(tuple)


@settings(max_examples=300, deadline=None)
@given(SHAPES)
def test_layouts_are_torch_and_keras(shape):
    """Zero-size axes included: the receptive field is an exact product."""
    if len(shape) < 2:
        with pytest.raises(ValueError, match="fewer than 2 dimensions"):
            twins.fans(shape)
        assert fk.compute_fans(shape) == keras_init.compute_fans(shape)
        return
    want = tuple(torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape)))
    assert fans_by_axes(shape, 1, 0) == fi.fans(shape) == twins.fans(shape) == want
    keras = keras_init.compute_fans(shape)
    assert fans_by_axes(shape, -2, -1) == fi.fans(shape, "keras") == fk.compute_fans(shape)
    assert fk.compute_fans(shape) == keras
    assert all(type(f) is int for f in fi.fans(shape) + fk.compute_fans(shape))


@settings(max_examples=300, deadline=None)
@given(POSITIVE, st.data())
def test_axes_are_jax(shape, data):
    """Any axes JAX takes, an axis named twice included (its quotient, floats)."""
    axis = st.integers(-len(shape), len(shape) - 1)
    axes = st.one_of(axis, st.lists(axis, max_size=3).map(tuple))
    in_axis, out_axis, batch_axis = data.draw(axes), data.draw(axes), data.draw(axes)
    want = jax_init._compute_fans(shape, in_axis, out_axis, batch_axis)
    got = fj.compute_fans(shape, in_axis, out_axis, batch_axis)
    assert got == want and all(type(f) is float for f in got)
    assert fans_by_axes(shape, in_axis, out_axis, batch_axis) == pytest.approx(want)


def test_receptive_field_and_batch_axes():
    # (batch 2, in 3, kernel 4, kernel 5, out 7): receptive field 20
    assert fans_by_axes((2, 3, 4, 5, 7), 1, -1, 0) == (60, 140)
    assert fans_by_axes((2, 3, 4, 5, 7), (1, 2), 4, 0) == (60, 35)
    # a 1-D weight with in = out = its only axis: JAX's quotient, 6 / 6 / 6
    assert fans_by_axes((6,), 0, 0) == (1.0, 1.0)
    assert fans_by_axes((), (), ()) == (1, 1)
    with pytest.raises(IndexError):
        fans_by_axes((3, 4), 2, 0)
