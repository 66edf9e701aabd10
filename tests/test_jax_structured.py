"""fastinit.jax: orthogonal, delta_orthogonal and the scalar and array inputs JAX takes.

Eager and under ``jax.jit`` (the FFI fill), against jax.nn.initializers' own.
"""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

fj = pytest.importorskip("fastinit.jax")

import fastinit as fi  # noqa: E402
from conftest import assert_same_bits  # noqa: E402

KEY = jax.random.key(7)                  # (seed 0, stream 7)


def gram_error(m):
    m = np.asarray(m, np.float64)
    if m.shape[0] < m.shape[1]:
        m = m.T
    return float(np.abs(m.T @ m - np.eye(m.shape[1])).max())


@pytest.mark.parametrize("shape, column_axis", [((64, 128), -1), ((128, 64), -1),
                                                ((512, 512), -1), ((3, 3, 16, 32), -1),
                                                ((4, 6, 5), 0)])
def test_orthogonal_eager_and_jit(shape, column_axis):
    init = fj.orthogonal(2.0, column_axis)
    got = np.asarray(init(KEY, shape, jnp.float32))
    want = fi.orthogonal(np.empty(shape, np.float32), 2.0, layout="keras",
                         column_axis=column_axis, seed=0, stream=7)
    assert_same_bits(got, want)
    assert_same_bits(np.asarray(jax.jit(lambda k: init(k, shape, jnp.float32))(KEY)), want)
    m = np.moveaxis(got, column_axis, -1).reshape(-1, shape[column_axis]) / 2
    m32 = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    assert np.abs(m32 - np.eye(len(m32), dtype=np.float32)).max() < 1e-5


def test_orthogonal_float64_and_statistics():
    """float64 orthogonality; 1M entries against jax.nn.initializers.orthogonal's."""
    from scipy import stats
    x64 = fi.orthogonal(np.empty((512, 512)), layout="keras", seed=0, stream=1)
    assert gram_error(x64) < 1e-12
    ours = np.asarray(fj.orthogonal()(KEY, (2048, 512), jnp.float32)).reshape(-1)
    theirs = np.asarray(jax.nn.initializers.orthogonal()(KEY, (2048, 512),
                                                         jnp.float32)).reshape(-1)
    assert abs(ours.std() - theirs.std()) < 2e-3 * theirs.std()
    assert stats.ks_2samp(ours, theirs).pvalue > 1e-4


def test_orthogonal_block_is_slice():
    init, shape = fj.orthogonal(), (10, 12)
    whole = np.asarray(init(KEY, shape, jnp.float32))
    block = fj.fill_block(init, shape, (slice(5, 10), slice(0, 6)), np.float32, seed=0,
                          stream=7)
    assert_same_bits(block, whole[5:10, :6])


@pytest.mark.parametrize("shape", [(3, 4, 8), (2, 3, 4, 8), (3, 3, 3, 5, 5)])
def test_delta_orthogonal(shape):
    init = fj.delta_orthogonal(1.5)
    got = np.asarray(init(KEY, shape, jnp.float32))
    assert_same_bits(np.asarray(jax.jit(lambda k: init(k, shape, jnp.float32))(KEY)), got)
    theirs = np.asarray(jax.nn.initializers.delta_orthogonal(1.5)(KEY, shape, jnp.float32))
    assert np.array_equal(got != 0, theirs != 0)          # JAX's centre, zeros elsewhere
    centre = tuple((k - 1) // 2 for k in shape[:-2])
    assert_same_bits(got[centre], fi.orthogonal(np.empty(shape[-2:], np.float32), 1.5,
                                                layout="keras", seed=0, stream=7))
    assert gram_error(got[centre] / 1.5) < 1e-5
    with pytest.raises(ValueError, match="3D, 4D or 5D"):
        init(KEY, (4, 8))
    with pytest.raises(ValueError, match="fan_in"):
        init(KEY, (3, 8, 4))


def test_refusals():
    with pytest.raises(ValueError, match="2D"):
        fj.orthogonal()(KEY, (5,))
    with pytest.raises(ValueError, match="column_axis"):
        fj.orthogonal(column_axis=3)(KEY, (4, 5))
    with pytest.raises(TypeError, match="stddev"):
        fj.normal(jnp.ones(2))
    with pytest.raises(ValueError, match="broadcast"):
        fj.constant(jnp.arange(3.0))(KEY, (2, 4))


def test_scalar_and_array_inputs():
    got = np.asarray(fj.constant(jnp.arange(3.0))(KEY, (2, 3), jnp.float32))
    assert_same_bits(got, np.asarray(jax.nn.initializers.constant(jnp.arange(3.0))(
        KEY, (2, 3), jnp.float32)))
    init = fj.constant(jnp.arange(3.0))
    assert_same_bits(np.asarray(jax.jit(lambda k: init(k, (4, 3), jnp.float32))(KEY)),
                     np.broadcast_to(np.arange(3.0, dtype=np.float32), (4, 3)))
    assert_same_bits(np.asarray(fj.constant(jnp.float32(2.5))(KEY, (3,), jnp.float32)),
                     np.full(3, 2.5, np.float32))
    assert_same_bits(np.asarray(fj.normal(jnp.float32(0.5))(KEY, (100,), jnp.float32)),
                     np.asarray(fj.normal(0.5)(KEY, (100,), jnp.float32)))
    assert_same_bits(np.asarray(fj.truncated_normal(np.float64(0.2))(KEY, (50,), jnp.float32)),
                     np.asarray(fj.truncated_normal(0.2)(KEY, (50,), jnp.float32)))


SHARDED = r"""
import jax, numpy as np
import fastinit.jax as fj
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
mesh = Mesh(np.array(jax.devices()[:4]).reshape(2, 2), ("x", "y"))
s = NamedSharding(mesh, P("x", "y"))
key = jax.random.key(1)
for init, shape in ((fj.orthogonal(), (64, 32)), (fj.delta_orthogonal(), (2, 4, 8, 16))):
    whole = np.asarray(init(key, shape))
    jitted = jax.jit(lambda k: init(k, shape), out_shardings=s)(key)
    assert len(jitted.addressable_shards) == 4
    assert np.array_equal(np.asarray(jitted), whole), shape
    assert np.array_equal(np.asarray(fj.sharded(init, shape, s, seed=key)), whole), shape
print("ok")
"""


def test_sharded_on_four_devices():
    """Under jit with out_shardings (the partitioned FFI fill) and eagerly sharded, each
    of 4 CPU devices keeps its block of the one matrix: equal to the unsharded array."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
