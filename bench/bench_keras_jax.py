"""fastinit.keras and fastinit.jax against Keras's and JAX's own initializers.

One run, one 8192 x 8192 float32 kernel, median wall time of each call
after an idle pause and one warm-up call (which also compiles Numba and
XLA code), theirs first, then fastinit's:

- GlorotUniform and TruncatedNormal: ``fastinit.keras`` vs
  ``keras.initializers`` on the TensorFlow backend (the call returns a
  ``tf.Tensor``);
- normal: ``fastinit.jax.normal(1.0)(key, shape)`` vs
  ``jax.random.normal(key, shape)`` on the CPU, both ``block_until_ready``.

Usage: ``python bench/bench_keras_jax.py [--size 8192] [--reps 7] [--json out.json]``
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ["KERAS_BACKEND"] = "tensorflow"     # read once, when keras is imported
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

GOAL = 5.0
PAUSE = 0.5     # idle seconds before each block of calls (see block_median)


def cpu_seconds():
    """(busy CPU seconds of the whole machine, CPU seconds of this process)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None, None
    idle = fields[3] + fields[4]                      # idle + iowait
    t = os.times()
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK"), t.user + t.system


def block_median(fn, reps, ready=lambda r: r, pause=PAUSE):
    """Median seconds of ``reps`` back-to-back calls of ``fn``.

    The block starts with ``pause`` seconds of idle and one warm-up call
    (compiles Numba and XLA code, pages in). The pause keeps one side's
    leftovers off the other's clock: XLA's and TensorFlow's thread pools keep
    working for a moment after a call returns (freeing the result, spinning),
    and a call started at once shares the two cores with them (measured:
    fastinit's normal took 345 ms right after jax.random.normal and 116 ms
    after a 0.5 s pause).
    """
    time.sleep(pause)
    ready(fn())
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import keras
    import tensorflow as tf

    import fastinit as fi
    import fastinit.jax as fj
    import fastinit.keras as fk

    shape = (args.size, args.size)
    key = jax.random.key(0)
    jax_ready = jax.block_until_ready
    pairs = [
        ("keras GlorotUniform (TF backend)",
         lambda: keras.initializers.GlorotUniform(seed=0)(shape),
         lambda: fk.GlorotUniform(seed=0)(shape), lambda r: r),
        ("keras TruncatedNormal (TF backend)",
         lambda: keras.initializers.TruncatedNormal(seed=0)(shape),
         lambda: fk.TruncatedNormal(seed=0)(shape), lambda r: r),
        ("jax normal (CPU)",
         lambda: jax.random.normal(key, shape, jnp.float32),
         lambda: fj.normal(1.0)(key, shape, jnp.float32), jax_ready),
    ]
    info = {"shape": list(shape), "dtype": "float32", "reps": args.reps,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "fill_threads": fi.get_num_threads(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "jax": jax.__version__,
            "loadavg_before": os.getloadavg()}
    rows = []
    for name, theirs, ours, ready in pairs:
        busy0, own0 = cpu_seconds()
        wall0 = time.perf_counter()
        t_theirs = block_median(theirs, args.reps, ready)
        t_ours = block_median(ours, args.reps, ready)
        busy1, own1 = cpu_seconds()
        wall = time.perf_counter() - wall0
        # CPU time that other processes took while this case ran, in cores
        others = None if busy0 is None else max(0.0, (busy1 - busy0) - (own1 - own0)) / wall
        rows.append({"case": name, "theirs_ms": 1e3 * t_theirs, "fastinit_ms": 1e3 * t_ours,
                     "speedup": t_theirs / t_ours, "other_processes_cores": others})
    print(f"{args.size} x {args.size} float32, median of {args.reps} "
          f"(cores {info['cores']}, fill threads {info['fill_threads']}, "
          f"TF {info['tensorflow']}, Keras {info['keras']}, JAX {info['jax']})")
    print(f"{'case':36} {'theirs ms':>10} {'fastinit ms':>12} {'speedup':>8} "
          f"{'others':>7}  goal >= {GOAL:g}x")
    for r in rows:
        mark = "ok" if r["speedup"] >= GOAL else "BELOW GOAL"
        others = r["other_processes_cores"]
        others = "?" if others is None else f"{others:.2f}"
        print(f"{r['case']:36} {r['theirs_ms']:10.1f} {r['fastinit_ms']:12.1f} "
              f"{r['speedup']:7.1f}x {others:>7}  {mark}")
    print("others: CPU cores that other processes kept busy during the case (0 = quiet)")
    info["loadavg_after"] = os.getloadavg()
    print(f"load average before/after: {info['loadavg_before'][0]:.2f} / "
          f"{info['loadavg_after'][0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
