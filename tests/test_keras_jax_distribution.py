"""fastinit.keras under keras.distribution on the JAX backend, 4 CPU devices (issue 17).

Keras reads KERAS_BACKEND once and the devices come from XLA_FLAGS, so this
file runs itself as a script in a subprocess with KERAS_BACKEND=jax and
--xla_force_host_platform_device_count=4, whatever the pytest process uses.

Keras 3 passes ``layout`` to an initializer whose ``__call__`` takes one;
fastinit's then draws every shard on its own from its global offsets. The
child builds the same model without and with ``ModelParallel`` (a 2 x 2
mesh, kernels split by columns, by both axes, biases split or replicated;
a seed=None initializer on a split bias)
and reports, per variable: the layout Keras gave it, whether the values
are bit-equal, the shard shapes, and the shapes of the blocks fastinit
drew (each must be a shard's, never the whole array).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def bits(x):
    x = np.asarray(x)
    return x.view(UINT[x.dtype.itemsize])


def child(path):
    import keras
    import fastinit as fi
    import fastinit.keras as fk

    drawn = []
    real = fk.fill_tile

    def spy(init, shape, starts, out, **kw):
        drawn.append((type(init).__name__, list(shape), list(out.shape)))
        return real(init, shape, starts, out, **kw)
    fk.fill_tile = spy

    def build():
        fi.manual_seed(2024)                   # the seed=None initializers: same streams
        return keras.Sequential([
            keras.Input((96,)),
            keras.layers.Dense(128, name="cols", kernel_initializer=fk.LecunNormal(seed=1),
                               bias_initializer=fk.Constant(0.5)),
            keras.layers.Dense(64, name="grid", kernel_initializer=fk.TruncatedNormal(
                0.0, 0.1, seed=2), bias_initializer=fk.RandomNormal(0.0, 0.01)),
            keras.layers.Dense(32, name="rows", kernel_initializer=fk.VarianceScaling(
                2.0, "fan_avg", "uniform", seed=3),
                bias_initializer=fk.MaskedUniform(-1, 1, 0.5, seed=4)),
        ])
    plain = {w.path.split("/", 1)[1]: np.asarray(w.value) for w in build().weights}

    dist = keras.distribution
    mesh = dist.DeviceMesh((2, 2), ["batch", "model"], dist.list_devices()[:4])
    layout_map = dist.LayoutMap(mesh)
    layout_map[".*cols/kernel"] = (None, "model")
    layout_map[".*cols/bias"] = ("model",)
    layout_map[".*grid/kernel"] = ("batch", "model")
    layout_map[".*grid/bias"] = ("batch",)        # seed=None: one stream for every shard
    layout_map[".*rows/kernel"] = ("model", None)
    dist.set_distribution(dist.ModelParallel(layout_map=layout_map, batch_dim_name="batch"))
    drawn.clear()
    try:
        model = build()
        report = {}
        for w in model.weights:
            v = w.value
            name = w.path.split("/", 1)[1]           # without the model's own name
            report[name] = {
                "spec": [s for s in v.sharding.spec] + [None] * (v.ndim - len(v.sharding.spec)),
                "devices": len(v.sharding.device_set),
                "equal": bool(np.array_equal(bits(v), bits(plain[name]))),
                "shards": sorted({str(tuple(s.data.shape)) for s in v.addressable_shards}),
            }
        report["drawn"] = list(drawn)
        # the initializer called directly with a TensorLayout
        layout = dist.TensorLayout(("batch", "model"), mesh)
        direct = fk.HeUniform(seed=9)((6, 8), "bfloat16", layout=layout)
        report["direct"] = {
            "equal": bool(np.array_equal(bits(direct), bits(fk.HeUniform(seed=9)((6, 8),
                                                                              "bfloat16")))),
            "shards": sorted({str(tuple(s.data.shape)) for s in direct.addressable_shards})}
    finally:
        dist.set_distribution(None)
    with open(path, "w") as f:
        json.dump(report, f)


def test_model_parallel_draws_each_shard(tmp_path):
    pytest.importorskip("keras")
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "rematerialization" not in proc.stderr
    r = json.loads(out.read_text())
    want = {  # variable: (spec, shard shape)
        "cols/kernel": ([None, "model"], "(96, 64)"),
        "cols/bias": (["model"], "(64,)"),
        "grid/kernel": (["batch", "model"], "(64, 32)"),
        "grid/bias": (["batch"], "(32,)"),
        "rows/kernel": (["model", None], "(32, 32)"),
        "rows/bias": ([None], "(32,)"),
    }
    for name, (spec, shard) in want.items():
        assert r[name] == {"spec": spec, "devices": 4, "equal": True, "shards": [shard]}, \
            (name, r[name])
    # every block fastinit drew is one shard of its variable: 4 devices each
    drawn = {}
    for cls, shape, block in r["drawn"]:
        drawn.setdefault(str(tuple(shape)), set()).add(str(tuple(block)))
    assert drawn == {"(96, 128)": {"(96, 64)"}, "(128,)": {"(64,)"},
                     "(128, 64)": {"(64, 32)"}, "(64,)": {"(32,)"},
                     "(64, 32)": {"(32, 32)"}, "(32,)": {"(32,)"}}, drawn
    # a split variable is drawn once per device, a replicated one once (JAX copies it)
    assert len(r["drawn"]) == 5 * 4 + 1
    assert r["direct"] == {"equal": True, "shards": ["(3, 4)"]}


if __name__ == "__main__":
    child(sys.argv[1])
