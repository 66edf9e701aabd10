"""fastinit.jax inside jit: each device fills only its own shard (issue 17).

The 4-device checks need XLA_FLAGS=--xla_force_host_platform_device_count=4
before JAX starts, so this file runs itself as a script in a fresh
subprocess per mode (the flag never reaches the pytest process); each mode
writes its findings as JSON and the test asserts on them. The parent also
reads the child's stderr, where XLA logs its SPMD warnings.

- ``flax``: the issue's model (two 4096 x 4096 ``nn.Dense``,
  ``lecun_normal`` and ``normal(0.02)``) under ``jax.jit(m.init,
  out_shardings=...)`` for P("d"), P(None, "d") and a 2 x 2 mesh
  P("a", "b"): the values equal the unsharded init bit for bit, every
  ``fastinit_fill`` call of the compiled program returns one tile, no
  instruction has the full (4096, 4096) shape, the handler only ever sees
  tile-shaped buffers, and XLA prints no rematerialization warning.
- ``memory``: on CPU, JAX reports no per-device memory
  (``memory_stats()`` is None), so the check is the process's peak RSS
  (VmHWM, reset through /proc/self/clear_refs just before the call):
  drawing 128 MiB of column-sharded weights may grow it by at most 1.25
  times that (each tile allocated once, on its device); the host-callback
  route of before grew it by about 9 times.
- ``cases``: an uneven shape (a sharding constraint inside jit: JAX's jit
  outputs must divide evenly), the ``out_sharding`` argument under jit,
  the GSPMD partitioner, a 3-D array, bfloat16, a replicated result, vmap
  under a sharded jit, and a refusal raised in the partition rule reaching
  the caller.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from conftest import bits  # noqa: E402

fj = pytest.importorskip("fastinit.jax")

N = 4096



def fill_results(hlo_text):
    """The result shapes of the fastinit_fill custom calls of a compiled module."""
    return re.findall(r"= (\w+\[[\d,]*\])\S* custom-call\([^)]*\), custom_call_target="
                      r"\"fastinit_fill\"", hlo_text)


# --- the child ---------------------------------------------------------------------------
def _spy_tiles():
    """Record the shape of every buffer the FFI handler fills."""
    seen = []
    real = fj._ffi_fill

    def spy(frame):
        seen.append(list(frame.result(0).shape))
        real(frame)
    fj._ffi_fill = spy
    return seen


def child_flax():
    import flax.linen as nn
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(N, kernel_init=fj.lecun_normal())(x)
            return nn.Dense(N, kernel_init=fj.normal(0.02))(x)

    seen = _spy_tiles()
    model, x, key = Model(), jnp.ones((1, N)), jax.random.key(17)
    want = model.init(key, x)                        # eager: the unsharded values
    shapes = jax.eval_shape(model.init, key, x)
    flat = np.array(jax.devices())
    meshes = {"rows": (Mesh(flat, ("d",)), P("d")), "cols": (Mesh(flat, ("d",)), P(None, "d")),
              "grid": (Mesh(flat.reshape(2, 2), ("a", "b")), P("a", "b"))}
    out = {}
    for name, (mesh, spec) in meshes.items():
        shardings = jax.tree.map(
            lambda a: NamedSharding(mesh, spec if a.ndim == 2 else P()), shapes)
        init = jax.jit(model.init, out_shardings=shardings)
        text = init.lower(key, x).compile().as_text()
        seen.clear()
        got = init(key, x)
        kernels = [got["params"][f"Dense_{i}"]["kernel"] for i in (0, 1)]
        out[name] = {
            "equal": all(np.array_equal(bits(a), bits(b)) for a, b in
                         zip(jax.tree.leaves(got), jax.tree.leaves(want))),
            "sharding": all(k.sharding == NamedSharding(mesh, spec) for k in kernels),
            "shards": sorted({str(tuple(s.data.shape)) for k in kernels
                              for s in k.addressable_shards}),
            "fills": sorted(set(fill_results(text))),
            "n_fills": len(fill_results(text)),
            "full_shape_in_hlo": f"f32[{N},{N}]" in text,
            "handler_tiles": sorted({str(tuple(t)) for t in seen}),
            "handler_calls": len(seen),
        }
    return out


def child_memory():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    def status(field):
        """VmRSS (resident now) or VmHWM (peak resident) of this process, in bytes. Not
        ru_maxrss: Linux carries the parent's peak over into a spawned child's."""
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))
    sharding = NamedSharding(Mesh(np.array(jax.devices()), ("d",)), P(None, "d"))
    init = fj.lecun_normal()

    def two(k):
        a, b = jax.random.split(k)
        return init(a, (N, N), jnp.float32), init(b, (N, N), jnp.float32)
    key = jax.random.key(0)
    compiled = jax.jit(two, out_shardings=(sharding, sharding)).lower(key).compile()
    fj.normal(1.0)(key, (8, 8))                    # kernels loaded before measuring
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                           # VmHWM restarts from VmRSS
    except OSError as exc:
        return {"skip": f"cannot reset the peak RSS: {exc}"}
    before = status("VmRSS")
    out = jax.block_until_ready(compiled(key))
    peak = status("VmHWM")
    return {"param_bytes": 2 * N * N * 4, "growth": peak - before,
            "memory_stats": jax.devices()[0].memory_stats(),
            "shards": sorted({str(s.data.shape) for a in out for s in a.addressable_shards})}


def child_cases():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    flat = np.array(jax.devices())
    line, grid = Mesh(flat, ("d",)), Mesh(flat.reshape(2, 2), ("a", "b"))
    key = jax.random.key(5)
    seen = _spy_tiles()
    out = {}

    def record(name, init, shape, dtype, run, text):
        seen.clear()
        got = run(key)
        want = init(key, shape, dtype)
        out[name] = {"equal": bool(np.array_equal(bits(got), bits(want))),
                     "fills": sorted(set(fill_results(text))),
                     "handler_tiles": sorted({str(tuple(t)) for t in seen})}

    # uneven: (10, 7) over 4 devices is 3 + 3 + 3 + 1 rows; inside jit only
    init = fj.he_uniform()

    def uneven(k):
        w = init(k, (10, 7), jnp.float32)
        w = jax.lax.with_sharding_constraint(w, NamedSharding(line, P("d")))
        return jax.lax.with_sharding_constraint(w * 1, NamedSharding(line, P()))
    f = jax.jit(uneven)
    record("uneven", init, (10, 7), jnp.float32, f, f.lower(key).compile().as_text())

    # out_sharding passed to the initializer under jit
    init = fj.truncated_normal(0.3)
    sh = NamedSharding(grid, P("b", "a"))
    f = jax.jit(lambda k: init(k, (8, 12), jnp.bfloat16, out_sharding=sh))
    record("out_sharding", init, (8, 12), jnp.bfloat16, f, f.lower(key).compile().as_text())
    out["out_sharding"]["sharding"] = f(key).sharding == sh

    # a 3-D array on the 2 x 2 mesh, and a replicated one
    init = fj.glorot_normal(in_axis=1, out_axis=2)
    for name, spec in (("3d", P(None, "b", "a")), ("replicated", P())):
        f = jax.jit(lambda k: init(k, (3, 10, 8), jnp.float32),
                    out_shardings=NamedSharding(grid, spec))
        record(name, init, (3, 10, 8), jnp.float32, f, f.lower(key).compile().as_text())

    # vmap under a sharded jit: a stack of 4 keys, each (8, 16) sharded by columns
    init = fj.normal(1.0)
    keys = jax.random.split(key, 4)
    f = jax.jit(jax.vmap(lambda k: init(k, (8, 16), jnp.float32)),
                out_shardings=NamedSharding(line, P(None, None, "d")))
    got = f(keys)
    out["vmap"] = {"equal": all(np.array_equal(bits(got[i]), bits(init(keys[i], (8, 16))))
                                for i in range(4)),
                   "shards": sorted({str(s.data.shape) for s in got.addressable_shards})}

    # a refusal from the partition rule reaches the caller, naming array and sharding
    real = fj._tiles

    def refuse(hlo, shape, n, what):
        raise ValueError(f"fastinit.jax: {what} cannot be drawn with sharding {hlo}: test")
    fj._tiles = refuse
    try:
        jax.jit(lambda k: fj.normal(1.0)(k, (8, 20), jnp.float32),
                out_shardings=NamedSharding(line, P(None, "d")))(key)
        out["refusal"] = "no error"
    except Exception as exc:                     # XLA wraps it: JaxRuntimeError
        out["refusal"] = f"{type(exc).__name__}: {exc}"
    finally:
        fj._tiles = real

    # the GSPMD partitioner (Shardy off) takes the same partition rule
    jax.config.update("jax_use_shardy_partitioner", False)
    init = fj.lecun_normal()
    f = jax.jit(lambda k: init(k, (16, 12), jnp.float32),
                out_shardings=NamedSharding(grid, P("a", "b")))
    record("gspmd", init, (16, 12), jnp.float32, f, f.lower(key).compile().as_text())
    return out


# --- the parent --------------------------------------------------------------------------
def run_child(mode, tmp_path, timeout=600):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    out = tmp_path / f"{mode}.json"
    proc = subprocess.run([sys.executable, __file__, mode, str(out)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(out.read_text()), proc.stderr


def test_flax_model_on_4_devices(tmp_path):
    pytest.importorskip("flax")
    results, stderr = run_child("flax", tmp_path)
    assert "rematerialization" not in stderr, stderr[-3000:]
    assert "[SPMD]" not in stderr, stderr[-3000:]
    tiles = {"rows": "(1024, 4096)", "cols": "(4096, 1024)", "grid": "(2048, 2048)"}
    for name, tile in tiles.items():
        r = results[name]
        assert r["equal"] and r["sharding"], (name, r)
        assert r["shards"] == [tile], (name, r)
        hlo_tile = "f32[" + tile.strip("()").replace(" ", "") + "]"
        assert r["fills"] == [hlo_tile] and r["n_fills"] == 2, (name, r)
        assert not r["full_shape_in_hlo"], (name, r)
        assert r["handler_tiles"] == [tile] and r["handler_calls"] == 8, (name, r)


def test_peak_memory_is_the_shards(tmp_path):
    results, _ = run_child("memory", tmp_path)
    if "skip" in results:
        pytest.skip(results["skip"])
    assert results["shards"] == ["(4096, 1024)"], results
    assert results["growth"] <= 1.25 * results["param_bytes"], results


def test_more_shardings_on_4_devices(tmp_path):
    r, stderr = run_child("cases", tmp_path)
    assert "rematerialization" not in stderr, stderr[-3000:]
    assert r["uneven"] == {"equal": True, "fills": ["f32[3,7]"],
                           "handler_tiles": ["(3, 7)"]}, r["uneven"]
    assert r["out_sharding"] == {"equal": True, "fills": ["bf16[4,6]"],
                                 "handler_tiles": ["(4, 6)"], "sharding": True}
    assert r["3d"] == {"equal": True, "fills": ["f32[3,5,4]"], "handler_tiles": ["(3, 5, 4)"]}
    assert r["replicated"] == {"equal": True, "fills": ["f32[3,10,8]"],
                               "handler_tiles": ["(3, 10, 8)"]}
    assert r["vmap"] == {"equal": True, "shards": ["(4, 8, 4)"]}, r["vmap"]
    assert r["gspmd"] == {"equal": True, "fills": ["f32[8,6]"], "handler_tiles": ["(8, 6)"]}
    assert "the (8, 20) float32 array of Normal cannot be drawn with sharding" in r["refusal"]
    assert "devices=[1,4]" in r["refusal"], r["refusal"]


def test_bench_script_runs(tmp_path):
    """bench/bench_jax_sharded.py end to end on a small size (no timing asserted)."""
    pytest.importorskip("flax")
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "bench", "bench_jax_sharded.py")
    proc = subprocess.run([sys.executable, bench, "--size", "64", "--procs", "1", "--reps", "1",
                           "--inits", "lecun_normal", "--shardings", "cols",
                           "--impls", "fastinit", "--model", "--json",
                           str(tmp_path / "r.json")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [(r["init"], r["sharding"]) for r in rows] == [("lecun_normal", "cols"),
                                                         ("model", "cols")]
    assert all(r["fastinit"][0] > 0 and r["fastinit"][1] > 0 for r in rows)


# --- one device, in this process ------------------------------------------------------------
KEY = jax.random.key(99)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("shape", [(), (7,), (0, 5), (5, 0), (3, 4, 5), (300, 200)], ids=str)
def test_unsharded_jit_is_the_eager_call(shape, dtype):
    init = fj.normal(0.5) if len(shape) < 2 else fj.he_uniform()
    f = jax.jit(lambda k: init(k, shape, dtype))
    assert np.array_equal(bits(f(KEY)), bits(init(KEY, shape, dtype)))
    text = f.lower(KEY).as_text()
    assert ("fastinit_fill" in text) == (np.prod(shape) > 0), text[-2000:]
    assert "callback" not in text


def test_a_fill_error_reaches_the_caller():
    class Broken(fj.Initializer):
        def fill(self, out, *, seed, stream=0, offset=0, shape=None):
            raise RuntimeError("no values today")
    f = jax.jit(lambda k: Broken()(k, (4, 4), jnp.float32))
    with pytest.raises(Exception, match="fastinit_fill: RuntimeError: no values today"):
        jax.block_until_ready(f(KEY))


def _hlo(text):
    from jax.sharding import NamedSharding, PartitionSpec
    one = NamedSharding(jax.sharding.Mesh(np.array(jax.devices()[:1]), ("x",)),
                        PartitionSpec())._to_xla_hlo_sharding(2)
    return type(one).from_string(text)


class _Device:
    def __init__(self, platform):
        self.platform = platform


class _Sharding:
    def __init__(self, hlo, platform="cpu", n=4):
        self.hlo, self._device_assignment = hlo, [_Device(platform)] * n

    def _to_xla_hlo_sharding(self, ndim):
        return self.hlo


class _Result:
    def __init__(self, sharding):
        self.sharding = sharding


@pytest.mark.parametrize("hlo, platform, match", [
    ("{manual}", "cpu", "manual, unreduced or unknown shardings are refused"),
    ("{devices=[2,1]0,1}", "cpu", "not one tile per device"),
    ("{devices=[4,1]0,1,2,3}", "gpu", "inside jit, which fastinit draws on CPU devices only"),
], ids=["manual", "two-tiles-four-devices", "gpu"])
def test_partition_rule_refuses_what_it_cannot_draw(hlo, platform, match):
    """Refusals name the array (initializer, shape, dtype) and the sharding."""
    rule = fj._partition_rule(fj.he_normal(), (8, 6), jnp.dtype(jnp.float32), 0)
    with pytest.raises(ValueError, match=re.escape(match)) as info:
        rule(None, None, _Result(_Sharding(_hlo(hlo), platform)))
    assert "the (8, 6) float32 array of VarianceScaling" in str(info.value)
    assert str(_hlo(hlo)) in str(info.value)


def test_tiles_of_an_uneven_grid():
    """The partition table: tile k of an axis starts at k * ceil(n / parts)."""
    tile, table = fj._tiles(_hlo("{devices=[2,2]0,2,1,3}"), (5, 7), 4, "x")
    assert tile == (3, 4)
    assert table.tolist() == [[0, 0], [3, 0], [0, 4], [3, 4]]


if __name__ == "__main__":
    assert len(jax.devices()) == 4, jax.devices()
    mode, path = sys.argv[1], sys.argv[2]
    result = {"flax": child_flax, "memory": child_memory, "cases": child_cases}[mode]()
    with open(path, "w") as f:
        json.dump(result, f, default=str)
