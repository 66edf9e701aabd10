"""fastinit.jax: jax.nn.initializers-style initializers and sharded construction.

The sharding tests need 4 CPU devices, which XLA_FLAGS must ask for before
JAX starts; unless this process already has them, this file runs itself as
a script in a subprocess with --xla_force_host_platform_device_count=4.
"""

import json
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

fj = pytest.importorskip("fastinit.jax")

import fastinit as fi  # noqa: E402
from fastinit.interop import ALIGN, HandoffCopyWarning  # noqa: E402
from conftest import bits  # noqa: E402

TRUNC = 0.87962566103423978



# --- keys -------------------------------------------------------------------------
def test_key_words_become_seed_and_stream():
    assert fj.key_to_seed(jax.random.key(42)) == (0, 42)
    assert fj.key_to_seed(jax.random.PRNGKey(42)) == (0, 42)      # raw uint32[2] keys too
    k = jax.random.split(jax.random.key(0))[1]
    w0, w1 = (int(v) for v in jax.random.key_data(k))
    assert fj.key_to_seed(k) == (w0, w1)
    rbg = jax.random.key(3, impl="rbg")
    w = [int(v) for v in jax.random.key_data(rbg)]
    assert fj.key_to_seed(rbg) == (w[0] | w[1] << 32, w[2] | w[3] << 32)
    with pytest.raises(ValueError, match="one key"):
        fj.key_to_seed(jax.random.split(jax.random.key(0), 3))


# --- the same numbers as a direct fill, with jax.nn's parameters ----------------------
def direct(kind, shape, key, dtype="float32", **p):
    seed, stream = fj.key_to_seed(key)
    out = fi.empty(shape, dtype)
    kw = dict(seed=seed, stream=stream)
    if kind == "uniform":
        return fi.uniform(out, 0.0, p["scale"], **kw)
    if kind == "normal":
        return fi.normal(out, 0.0, p["stddev"], **kw)
    if kind == "truncated_normal":
        s = p["stddev"]
        return fi.truncated_normal(out, 0.0, s, p["lower"] * s, p["upper"] * s, **kw)
    var = p["var"]
    if kind == "vs_uniform":
        return fi.uniform(out, -math.sqrt(3 * var), math.sqrt(3 * var), **kw)
    if kind == "vs_normal":
        return fi.normal(out, 0.0, math.sqrt(var), **kw)
    s = math.sqrt(var) / TRUNC
    return fi.truncated_normal(out, 0.0, s, -2 * s, 2 * s, **kw)


KEY = jax.random.key(1234)
SHAPE = (3, 5, 24, 40)                            # fan_in 360, fan_out 600


@pytest.mark.parametrize("make, kind, params", [
    (lambda: fj.uniform(0.3), "uniform", dict(scale=0.3)),
    (lambda: fj.normal(0.2), "normal", dict(stddev=0.2)),
    (lambda: fj.truncated_normal(0.5, lower=-1.0, upper=3.0), "truncated_normal",
     dict(stddev=0.5, lower=-1.0, upper=3.0)),
    (fj.glorot_uniform, "vs_uniform", dict(var=1 / 480)),
    (fj.xavier_normal, "vs_trunc", dict(var=1 / 480)),
    (fj.lecun_uniform, "vs_uniform", dict(var=1 / 360)),
    (fj.lecun_normal, "vs_trunc", dict(var=1 / 360)),
    (fj.he_uniform, "vs_uniform", dict(var=2 / 360)),
    (fj.kaiming_normal, "vs_trunc", dict(var=2 / 360)),
    (lambda: fj.variance_scaling(3.0, "fan_out", "normal"), "vs_normal", dict(var=3 / 600)),
    (lambda: fj.variance_scaling(1.0, "fan_geo_avg", "uniform"), "vs_uniform",
     dict(var=1 / math.sqrt(360 * 600))),
])
def test_values_are_the_direct_fill(make, kind, params):
    got = make()(KEY, SHAPE)
    assert got.dtype == jnp.float32 and got.shape == SHAPE
    assert np.array_equal(bits(got), bits(direct(kind, SHAPE, KEY, **params)))


@pytest.mark.parametrize("shape, axes", [
    ((4, 6), {}), ((3, 3, 8, 16), {}), ((5, 7, 9), dict(in_axis=0, out_axis=2)),
    ((2, 3, 4, 5), dict(in_axis=(1, 2), out_axis=-1, batch_axis=0)),
    ((6,), dict(in_axis=0, out_axis=0)),
], ids=str)
def test_fans_are_jax(shape, axes):
    from jax._src.nn.initializers import _compute_fans
    assert fj.compute_fans(shape, **axes) == _compute_fans(shape, **axes)


def test_fans_need_2d_by_default():
    with pytest.raises(ValueError, match="at least 2D"):
        fj.glorot_uniform()(KEY, (5,))


def test_constants():
    assert np.all(np.asarray(fj.zeros(KEY, (3, 4))) == 0)
    assert np.all(np.asarray(fj.ones(KEY, (2,), jnp.bfloat16)).astype(np.float32) == 1)
    assert np.all(np.asarray(fj.constant(-7)(KEY, (2, 3), jnp.float16)) == -7)


# --- the same distribution as jax.nn.initializers ---------------------------------------
@pytest.mark.parametrize("name", ["glorot_uniform", "glorot_normal", "lecun_uniform",
                                  "lecun_normal", "he_uniform", "he_normal"])
def test_matches_jax_statistics(name):
    shape = (3, 3, 96, 64)
    ours = np.asarray(getattr(fj, name)()(KEY, shape), dtype=np.float64)
    theirs = np.asarray(getattr(jax.nn.initializers, name)()(KEY, shape), dtype=np.float64)
    assert ours.std() == pytest.approx(theirs.std(), rel=0.03)
    assert abs(ours.mean()) < 0.03 * theirs.std()
    assert ours.max() - ours.min() == pytest.approx(theirs.max() - theirs.min(), rel=0.01)


# --- dtypes, zero copy, jit and vmap ---------------------------------------------------
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, None])
def test_dtypes(dtype):
    got = fj.he_normal()(KEY, (16, 24), dtype)
    want = direct("vs_trunc", (16, 24), KEY, var=2 / 16).astype(dtype or np.float32)
    assert got.dtype == (dtype or jnp.float32)
    assert np.array_equal(bits(got), bits(want))
    assert fj.normal(1.0, dtype=jnp.bfloat16)(KEY, (3,)).dtype == jnp.bfloat16


def test_float64_follows_x64():
    with warnings.catch_warnings():
        warnings.simplefilter("error", HandoffCopyWarning)
        with jax.enable_x64(True):
            got = fj.normal(1.0)(KEY, (8, 8), jnp.float64)
            assert got.dtype == jnp.float64
            assert np.array_equal(got, direct("normal", (8, 8), KEY, "float64", stddev=1.0))
        if not jax.config.jax_enable_x64:       # as JAX: float64 becomes float32
            assert fj.normal(1.0)(KEY, (8, 8), jnp.float64).dtype == jnp.float32


def test_zero_copy(monkeypatch):
    made = []
    real = fj.empty
    monkeypatch.setattr(fj, "empty", lambda s, d: made.append(real(s, d)) or made[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", HandoffCopyWarning)
        x = fj.lecun_normal()(KEY, (128, 96), jnp.bfloat16)
    assert x.unsafe_buffer_pointer() == made[-1].ctypes.data
    assert x.unsafe_buffer_pointer() % ALIGN == 0


def test_jit_and_vmap_give_the_same_values():
    init = fj.glorot_normal()
    eager = init(KEY, (32, 16))
    jitted = jax.jit(init, static_argnums=(1, 2))(KEY, (32, 16), jnp.float32)
    assert np.array_equal(bits(jitted), bits(eager))
    keys = jax.random.split(KEY, 3)
    batched = jax.vmap(lambda k: init(k, (4, 5)))(keys)
    for i in range(3):
        assert np.array_equal(bits(batched[i]), bits(init(keys[i], (4, 5))))


def test_flax_dense():
    nn = pytest.importorskip("flax.linen")
    model = nn.Dense(64, kernel_init=fj.lecun_normal(), bias_init=fj.constant(0.1))
    x = jnp.ones((2, 256))
    params = model.init(KEY, x)
    kernel, bias = params["params"]["kernel"], params["params"]["bias"]
    assert kernel.shape == (256, 64) and np.all(np.asarray(bias) == np.float32(0.1))
    k = np.asarray(kernel, dtype=np.float64)
    assert k.std() == pytest.approx(1 / 16, rel=0.05)
    assert np.abs(k).max() <= 2 / 16 / TRUNC * (1 + 1e-6)
    again = jax.jit(model.init)(KEY, x)           # traced keys: the host callback path
    assert np.array_equal(bits(again["params"]["kernel"]), bits(kernel))
    assert model.apply(params, x).shape == (2, 64)


# --- sharding: the block arithmetic, on one device ---------------------------------------
@pytest.mark.parametrize("index", [
    (slice(0, 3), slice(None)), (slice(3, 6), slice(5, 10)), (slice(None), slice(1, 8)),
    (slice(5, 6), slice(3, 4)), (slice(None), slice(None)),
], ids=str)
@pytest.mark.parametrize("make", [lambda: fj.normal(1.0), fj.he_uniform,
                                  lambda: fj.truncated_normal(2.0)], ids=["n", "he", "tn"])
def test_fill_block_is_the_slice(make, index):
    init, shape = make(), (6, 10)
    full = init.host(shape, jnp.float32, seed=9, stream=4)
    block = fj.fill_block(init, shape, index, jnp.float32, seed=9, stream=4)
    assert np.array_equal(bits(block), bits(full[index]))


def test_fill_block_3d():
    init, shape = fj.glorot_normal(), (3, 6, 10)
    full = init.host(shape, jnp.bfloat16, seed=1)
    for index in [(slice(1, 2), slice(2, 5), slice(3, 8)), (slice(None), slice(3, 6)),
                  (slice(0, 3), slice(None), slice(5, 10))]:
        block = fj.fill_block(init, shape, index, jnp.bfloat16, seed=1)
        assert np.array_equal(bits(block), bits(full[index]))


# --- sharding on 4 devices ---------------------------------------------------------------
CASES = [  # (name, shape, mesh shape, partition spec)
    ("rows-1d", (8, 10), (4,), ("x",)),
    ("cols-1d", (6, 12), (4,), (None, "x")),
    ("vector-1d", (20,), (4,), ("x",)),
    ("grid-2d", (6, 10), (2, 2), ("x", "y")),
    ("grid-2d-t", (6, 10), (2, 2), ("y", "x")),
    ("replicated-2d", (6, 9), (2, 2), ("y", None)),
    ("3d", (3, 6, 10), (2, 2), (None, "x", "y")),
]
INITS = {"normal": lambda: fj.normal(1.0), "glorot_uniform": fj.glorot_uniform,
         "he_normal": fj.he_normal, "lecun_uniform": lambda: fj.lecun_uniform(in_axis=0)}


def sharded_checks():
    """Every (case, init, dtype): the sharded array against the unsharded one."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    results = {}
    key = jax.random.key(77)
    for name, shape, mesh_shape, spec in CASES:
        devices = np.array(jax.devices()[:4]).reshape(mesh_shape)
        mesh = Mesh(devices, ("x", "y")[:len(mesh_shape)])
        sharding = NamedSharding(mesh, PartitionSpec(*spec))
        for init_name, make in INITS.items():
            if len(shape) < 2 and init_name != "normal":
                continue
            init = make()
            for dtype in (jnp.float32, jnp.bfloat16):
                full = np.asarray(init(key, shape, dtype))
                arr = fj.sharded(init, shape, sharding, seed=key, dtype=dtype)
                via_init = init(key, shape, dtype, out_sharding=sharding)
                by_int = fj.sharded(init, shape, sharding, seed=5, stream=2, dtype=dtype)
                shards = arr.addressable_shards
                results[f"{name}/{init_name}/{jnp.dtype(dtype).name}"] = {
                    "devices": len({s.device for s in shards}),
                    "sharding": arr.sharding == sharding,
                    "whole": bool(np.array_equal(bits(arr), bits(full))),
                    "shards": all(np.array_equal(bits(s.data), bits(full[s.index]))
                                  for s in shards),
                    "out_sharding": bool(np.array_equal(bits(via_init), bits(full))),
                    "int_seed": bool(np.array_equal(
                        bits(by_int), bits(init.host(shape, dtype, seed=5, stream=2)))),
                }
    return results


def check_sharded(results):
    for name, r in results.items():
        assert r == {"devices": 4, "sharding": True, "whole": True, "shards": True,
                     "out_sharding": True, "int_seed": True}, name


def test_sharded_on_4_devices(tmp_path):
    if len(jax.devices("cpu")) >= 4 and jax.default_backend() == "cpu":
        check_sharded(sharded_checks())
        return
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    out = tmp_path / "sharded.json"
    proc = subprocess.run([sys.executable, __file__, str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert len(results) == 50
    check_sharded(results)


if __name__ == "__main__":
    assert len(jax.devices()) == 4, jax.devices()
    with open(sys.argv[1], "w") as f:
        json.dump(sharded_checks(), f)
