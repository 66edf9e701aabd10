"""fastinit.jax under a sharded jax.jit against jax.nn.initializers (issue 17).

Each case jits a function that draws two 4096 x 4096 float32 weights (the
kernels of the issue's two-layer flax model) from split keys, with
``out_shardings`` over 4 CPU devices (``--xla_force_host_platform_device_count=4``):

- shardings: ``rows`` P("d"), ``cols`` P(None, "d"), ``grid`` P("a", "b") on a
  2 x 2 mesh, and ``single`` (one device, no sharding: the unsharded jit);
- initializers: lecun_normal, normal(0.02), truncated_normal(0.02);
- implementations: ``jax`` (``jax.nn.initializers``, partitionable threefry,
  JAX's default), ``fastinit`` (this release: an FFI fill per device, on its
  own shard) and ``callback`` (fastinit's route before issue 17: one
  ``jax.pure_callback`` producing the whole array, as the module had it).

Every (implementation, initializer, sharding) runs in ``--procs`` fresh
processes. In each, the first call (trace, compile, run) is the cold time;
then ``--reps`` calls after a 0.5 s idle pause are the warm times. Reported:
the median cold time over processes and the median warm time over all warm
calls, and the ratios jax / fastinit (above 1: fastinit is faster) and
callback / fastinit. The ``--model`` option adds the flax model itself
(``jax.jit(m.init, out_shardings=...)``), jax.nn vs fastinit initializers;
``--layers`` gives it more Dense layers and ``--model-only`` runs only it.
``--keras`` adds a Keras 3 Sequential of ``--layers`` Dense layers built
under ``keras.distribution.ModelParallel`` on the JAX backend (kernels
laid out by the case's sharding; ``single``: no distribution), Keras's own
initializers in the ``jax`` column against ``fastinit.keras``.

Usage: ``python bench/bench_jax_sharded.py [--procs 3] [--reps 5] [--json out.json]``
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

N = 4096
SHARDINGS = ("rows", "cols", "grid", "single")
INITS = ("lecun_normal", "normal", "truncated_normal")
IMPLS = ("jax", "fastinit", "callback")


# --- one measurement, in a fresh process -------------------------------------------------
def child(impl, init_name, sharding, reps, model, layers=2, n=N):
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ["KERAS_BACKEND"] = "jax"
    t_import = time.perf_counter()
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    import fastinit.jax as fj
    imported = time.perf_counter() - t_import

    if impl == "callback":                       # fastinit's jit route before issue 17
        def host_callback(init, shape, dt, words):
            def host(w):
                seed, stream = fj._seed_stream_of(w)
                return init.host(shape, dt, seed=seed, stream=stream)
            return jax.pure_callback(host, jax.ShapeDtypeStruct(shape, dt), words,
                                     vmap_method="sequential")
        fj._traced = host_callback
    lib = jax.nn.initializers if impl == "jax" else fj
    make = {"keras": None, "lecun_normal": lambda: lib.lecun_normal(),
            "normal": lambda: lib.normal(0.02),
            "truncated_normal": lambda: lib.truncated_normal(0.02)}[init_name]

    flat = np.array(jax.devices())
    spec = {"rows": (("d",), P("d")), "cols": (("d",), P(None, "d")),
            "grid": (("a", "b"), P("a", "b")), "single": None}[sharding]
    if spec is None:
        out = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    else:
        names, pspec = spec
        out = NamedSharding(Mesh(flat.reshape((2, 2) if len(names) == 2 else (4,)), names),
                            pspec)
    key = jax.random.key(0)
    if init_name == "keras":
        pass
    elif model:
        import flax.linen as nn
        k1 = lib.lecun_normal()
        k2 = lib.normal(0.02)

        class Model(nn.Module):
            @nn.compact
            def __call__(self, x):
                for i in range(layers):        # lecun_normal, normal(0.02), lecun_normal, ...
                    x = nn.Dense(n, kernel_init=(k1, k2)[i % 2])(x)
                return x
        m, x = Model(), jnp.ones((1, n))
        shapes = jax.eval_shape(m.init, key, x)
        shardings = jax.tree.map(
            lambda a: out if a.ndim == 2 or spec is None else
            NamedSharding(out.mesh, P()), shapes)
        fn = jax.jit(m.init, out_shardings=shardings)
        args = (key, x)
    else:
        init = make()

        def two(k):
            a, b = jax.random.split(k)
            return init(a, (n, n), jnp.float32), init(b, (n, n), jnp.float32)
        fn = jax.jit(two, out_shardings=(out, out))
        args = (key,)
    if init_name == "keras":                    # Keras 3, JAX backend, ModelParallel
        fn, args = _keras_build(impl, out, spec, layers, n), ()
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    cold = time.perf_counter() - start
    warm = []
    time.sleep(0.5)
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        warm.append(time.perf_counter() - start)
    print(json.dumps({"cold": cold, "warm": warm, "import": imported}))


def _keras_build(impl, out, spec, layers, n):
    """A builder of a Keras Sequential of Dense layers under keras.distribution.ModelParallel
    whose kernels take the case's sharding (``jax``: Keras's own initializers)."""
    import keras
    import fastinit.keras as fk
    dist = keras.distribution
    if spec is not None:
        names, pspec = spec
        mesh = dist.DeviceMesh(out.mesh.devices.shape, list(names), dist.list_devices()[:4])
        layout_map = dist.LayoutMap(mesh)
        layout_map[".*kernel"] = tuple(pspec) + (None,) * (2 - len(tuple(pspec)))
        dist.set_distribution(dist.ModelParallel(layout_map=layout_map))
    lib = keras.initializers if impl == "jax" else fk

    def build():
        inits = (lib.LecunNormal(seed=1), lib.RandomNormal(stddev=0.02, seed=2))
        model = keras.Sequential([keras.Input((n,))] + [
            keras.layers.Dense(n, kernel_initializer=inits[i % 2]) for i in range(layers)])
        return [w.value for w in model.weights]
    return build


# --- the table -----------------------------------------------------------------------------
def cpu_busy():
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def measure(impl, init_name, sharding, procs, reps, model, layers, n):
    colds, warms = [], []
    for _ in range(procs):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", impl, init_name, sharding, str(reps),
             "--layers", str(layers), "--size", str(n)] + (["--model"] if model else []),
            capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"{impl} {init_name} {sharding}: {proc.stderr[-2000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        colds.append(r["cold"])
        warms.extend(r["warm"])
    return statistics.median(colds), statistics.median(warms)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=3, help="fresh processes per case")
    parser.add_argument("--size", type=int, default=N, help="n of the n x n weights")
    parser.add_argument("--reps", type=int, default=5, help="warm calls per process")
    parser.add_argument("--inits", default=",".join(INITS))
    parser.add_argument("--shardings", default=",".join(SHARDINGS))
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--model", action="store_true",
                        help="also the flax model (lecun_normal + normal(0.02) kernels)")
    parser.add_argument("--layers", type=int, default=2,
                        help="Dense layers of the flax model (the issue's has 2)")
    parser.add_argument("--model-only", action="store_true",
                        help="only the flax model")
    parser.add_argument("--keras", action="store_true",
                        help="also a Keras model under ModelParallel (JAX backend): "
                             "keras.initializers (the jax column) vs fastinit.keras")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        impl, init_name, sharding, reps = args.child
        child(impl, init_name, sharding, int(reps), args.model, args.layers, args.size)
        return 0

    cases = [(i, s) for i in args.inits.split(",") if i for s in args.shardings.split(",")]
    if args.model_only:
        cases, args.model = [], True
    if args.model:
        cases += [("model", s) for s in args.shardings.split(",")]
    if args.keras:
        cases += [("keras", s) for s in args.shardings.split(",")]
    impls = args.impls.split(",")
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "layers": args.layers, "size": args.size,
            "procs": args.procs, "reps": args.reps, "loadavg_before": os.getloadavg(),
            "python": platform.python_version()}
    rows = []
    print(f"2 x {args.size} x {args.size} float32 on 4 CPU devices; cold = first call in a "
          f"fresh process (median of {args.procs}), warm = median of {args.procs} x "
          f"{args.reps} calls")
    head = "".join(f"{impl + ' cold':>15}{impl + ' warm':>15}" for impl in impls)
    print(f"{'case':28}{head}   jax/fi cold  jax/fi warm   others")
    for init_name, sharding in cases:
        busy0, wall0 = cpu_busy(), time.perf_counter()
        own0 = os.times()
        row = {"init": init_name, "sharding": sharding}
        for impl in impls:
            if impl == "callback" and init_name == "keras":
                continue
            row[impl] = measure(impl, init_name if init_name != "model" else "normal",
                                sharding, args.procs, args.reps, init_name == "model",
                                args.layers, args.size)
        busy1, own1 = cpu_busy(), os.times()
        # CPU that processes other than ours and our children kept busy, in cores
        ours = (own1.children_user + own1.children_system + own1.user + own1.system
                - own0.children_user - own0.children_system - own0.user - own0.system)
        wall = time.perf_counter() - wall0
        row["other_processes_cores"] = (None if busy0 is None else
                                        max(0.0, (busy1 - busy0) - ours) / wall)
        rows.append(row)
        cells = "".join(f"{1e3 * row[i][0]:13.0f}ms{1e3 * row[i][1]:13.0f}ms" if i in row
                        else f"{'-':>15}{'-':>15}" for i in impls)
        ratio = ""
        if "jax" in row and "fastinit" in row:
            ratio = (f"{row['jax'][0] / row['fastinit'][0]:12.2f}x"
                     f"{row['jax'][1] / row['fastinit'][1]:12.2f}x")
        others = row["other_processes_cores"]
        print(f"{init_name + ' / ' + sharding:28}{cells}{ratio}"
              f"{'?' if others is None else f'{others:9.2f}'}", flush=True)
    info["loadavg_after"] = os.getloadavg()
    print(f"load average before/after: {info['loadavg_before'][0]:.2f} / "
          f"{info['loadavg_after'][0]:.2f}; others: cores other processes kept busy")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
