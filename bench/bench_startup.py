"""What a fresh process waits for: import, first fill, cold compile, materialize.

Every figure comes from fresh processes (medians of --repeat), one-time
costs included, and is printed beside its goal (issue 13):

- imports: ``import fastinit`` over ``import numpy``, and ``import
  fastinit.torch`` over ``import torch`` (timed inside the process);
- first fill with a warm kernel cache (the kernel's object code linked from
  disk with llvmlite, the fill threads started): a small buffer (one thread)
  and a large one (the same kernel on every thread), against a later fill of
  the same, how the kernels were got (``_native.LOADS``: loaded, built) and
  whether Numba was imported, and, for comparison, ``import numba`` alone
  (which the warm path no longer pays);
- cold compile: the first fill of each (distribution, dtype) with an empty
  ``NUMBA_CACHE_DIR`` (a small buffer; --cold-parallel adds a large one,
  filled on every thread), beside what Numba costs alone (its import and one trivial compile),
  and ``fastinit warmup`` (every kernel) into an empty cache, then
  again into the full one; the process's CPU seconds are shown too, since
  on a loaded machine the wall clock says more about the neighbours;
- materialize: a Llama-shaped model (bench/bench_torch_model.py's, 1.1B
  parameters by default) built on meta, each side in its own fresh process
  with nothing warmed up: ``fastinit.torch.materialize``, ``to_empty`` +
  ``reset_parameters``, and the first-touch floor (``to_empty`` then a zero
  fill of every parameter), interleaved round by round.

    python bench/bench_startup.py                       # everything (~10-20 min)
    python bench/bench_startup.py --parts imports,first_fill --repeat 5
    python bench/bench_startup.py --parts materialize --params 0.1e9
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = ("imports", "first_fill", "cold", "warmup", "materialize")
DISTS = ("uniform", "normal", "truncated_normal")
DTYPES = ("float32", "bfloat16", "float16", "float64")

IMPORTS = r"""
import json, sys, time
base = sys.argv[1]
t0 = time.perf_counter()
__import__(base)
t1, c1 = time.perf_counter(), time.process_time()
__import__(sys.argv[2])
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps(dict(base=t1 - t0, extra=t2 - t1, extra_cpu=c2 - c1)))
"""

FIRST_FILL = r"""
import json, sys, time
import numpy as np
import fastinit as fi
n = int(sys.argv[1])
a = np.zeros(n, np.float32)                 # pages touched: only the fill is timed
t0, c0 = time.perf_counter(), time.process_time()
fi.normal(a, seed=0)
t1, c1 = time.perf_counter(), time.process_time()
fi.normal(a, seed=1)
t2 = time.perf_counter()
from fastinit.backends import _native
loads = dict(_native.LOADS)                 # how the kernels left the disk cache
print(json.dumps(dict(first=t1 - t0, later=t2 - t1, first_cpu=c1 - c0, loads=loads,
                      numba="numba" in sys.modules)))
"""

NUMBA_IMPORT = r"""
import json, time
import numpy as np
t0 = time.perf_counter()
import numba
print(json.dumps(dict(seconds=time.perf_counter() - t0)))
"""

COLD = r"""
import json, sys, time
import numpy as np
import fastinit as fi
dist, dtype, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
a = fi.empty((n,), dtype)
c0, t0 = time.process_time(), time.perf_counter()
getattr(fi, dist)(a, seed=0)
print(json.dumps(dict(wall=time.perf_counter() - t0, cpu=time.process_time() - c0)))
"""

NUMBA_FLOOR = r"""
import json, time
c0, t0 = time.process_time(), time.perf_counter()
import numpy as np
import numba
t1 = time.perf_counter()
@numba.njit(cache=False)
def total(a):
    s = 0.0
    for i in range(a.size):
        s += a[i]
    return s
total(np.ones(3))
print(json.dumps(dict(wall=time.perf_counter() - t0, cpu=time.process_time() - c0,
                      import_numba=t1 - t0)))
"""

MATERIALIZE = r"""
import gc, json, sys, time
sys.path.insert(0, sys.argv[3])
import torch
import fastinit.torch as ft
from bench_torch_model import config, meta_model, torch_init
side, params = sys.argv[1], float(sys.argv[2])
m = meta_model(config(params), torch.float32)
n = sum(p.numel() for p in m.parameters())
t0 = time.perf_counter()
if side == "materialize":
    ft.materialize(m, "cpu", seed=0, progress=False)
elif side == "reset_parameters":
    torch_init(m)
else:                                       # the first-touch floor
    m.to_empty(device="cpu")
    for p in m.parameters():
        ft.zeros_(p)
print(json.dumps(dict(seconds=time.perf_counter() - t0, params=n)))
"""


def _env(**extra):
    env = dict(os.environ)
    env.update(extra)
    return env


def _child(code, *argv, env=None, timeout=1800):
    """Run ``code`` in a fresh interpreter; its last stdout line as JSON, and
    the process's wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *map(str, argv)], env=env or _env(),
                          capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def load():
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


class Table:
    """Rows of (figure, median, every run, goal, met)."""

    def __init__(self):
        self.rows = []

    def add(self, what, values, goal=None, ok=None, unit="s", fmt="{:.2f}"):
        med = statistics.median(values)
        runs = " ".join(fmt.format(v) for v in values)
        verdict = "" if ok is None else ("met" if ok(med) else "MISSED")
        self.rows.append((what, fmt.format(med) + (f" {unit}" if unit else ""), runs,
                          goal or "", verdict))
        print(f"  {what:54s} {self.rows[-1][1]:>10s}   goal {goal or '-':14s} "
              f"{verdict:6s}  runs: {runs}", flush=True)
        return med


def bench_imports(args, table):
    print(f"imports (fresh processes, median of {args.repeat}; {load()})")
    for base, mod, goal in (("numpy", "fastinit", 0.15), ("torch", "fastinit.torch", 0.15)):
        res = [_child(IMPORTS, base, mod)[0] for _ in range(args.repeat)]
        table.add(f"import {base}", [r["base"] for r in res])
        table.add(f"import {mod} over import {base}", [r["extra"] for r in res],
                  f"<= {goal} s", lambda m, g=goal: m <= g)
        table.add("  the same, CPU seconds", [r["extra_cpu"] for r in res])


def bench_first_fill(args, table):
    _child(FIRST_FILL, 4096)                 # the kernels in the disk cache
    _child(FIRST_FILL, 1 << 22)
    print(f"first fill, warm kernel cache (fastinit.normal, float32; fresh processes, "
          f"median of {args.repeat}; {load()})")
    for n, label in ((4096, "4096 elements (one thread)"),
                     (1 << 22, "2^22 elements (every thread)")):
        res = [_child(FIRST_FILL, n)[0] for _ in range(args.repeat)]
        table.add(f"first fill, {label}", [r["first"] for r in res], "<= 0.25 s",
                  lambda m: m <= 0.25, fmt="{:.3f}")
        table.add("  the first, CPU seconds (all threads)", [r["first_cpu"] for r in res],
                  fmt="{:.3f}")
        table.add("  a later fill of the same", [r["later"] for r in res], fmt="{:.3f}")
        table.add("  first minus later (fastinit's one-time cost)",
                  [r["first"] - r["later"] for r in res], fmt="{:.3f}")
        paths = sorted({", ".join(f"{k} {v}" for k, v in sorted(r["loads"].items())) +
                        ("; Numba imported" if r["numba"] else "; Numba not imported")
                        for r in res})
        print(f"    kernel loads: {' | '.join(paths)}")
    numba_alone = [_child(NUMBA_IMPORT)[0]["seconds"] for _ in range(args.repeat)]
    table.add("import numba alone, after numpy (not on the warm path)", numba_alone,
              fmt="{:.3f}")


def _fresh_cache():
    return tempfile.TemporaryDirectory(prefix="fastinit-bench-cache-")


def bench_cold(args, table):
    print(f"cold compile: first fill with an empty NUMBA_CACHE_DIR, fresh process each "
          f"(median of {args.cold_repeat}; {load()})")
    floor = [_child(NUMBA_FLOOR)[0] for _ in range(args.repeat)]
    table.add("Numba alone: import numpy + numba, one trivial compile", [r["wall"] for r in floor])
    table.add("  the same, CPU seconds", [r["cpu"] for r in floor])
    modes = [("1024", 1024)] + ([("2^18, every thread", 1 << 18)] if args.cold_parallel
                                else [])
    for mode, n in modes:
        for dtype in args.cold_dtypes:
            for dist in DISTS:
                walls, cpus = [], []
                for _ in range(args.cold_repeat):
                    with _fresh_cache() as cache:
                        r, _ = _child(COLD, dist, dtype, n, env=_env(NUMBA_CACHE_DIR=cache))
                    walls.append(r["wall"])
                    cpus.append(r["cpu"])
                table.add(f"{dist} {dtype} ({mode}) wall", walls, "<= 5 s",
                          lambda m: m <= 5.0)
                table.add(f"{dist} {dtype} ({mode}) CPU", cpus)


def bench_warmup(args, table):
    print(f"fastinit warmup: every kernel, empty NUMBA_CACHE_DIR, then again "
          f"(median of {args.cold_repeat}; {load()})")
    cmd = [sys.executable, "-m", "fastinit", "warmup", "--quiet"]
    cold, warm = [], []
    for _ in range(args.cold_repeat):
        with _fresh_cache() as cache:
            for out in (cold, warm):
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, env=_env(NUMBA_CACHE_DIR=cache),
                                      capture_output=True, text=True, timeout=3600)
                out.append(time.perf_counter() - t0)
                if proc.returncode != 0:
                    raise RuntimeError(proc.stderr[-3000:])
                print("   ", proc.stdout.strip().splitlines()[-1], flush=True)
    table.add("fastinit warmup, empty cache (the process)", cold, "<= 30 s",
              lambda m: m <= 30.0)
    table.add("fastinit warmup again, full cache (the process)", warm)


def bench_materialize(args, table):
    sides = ("materialize", "reset_parameters", "floor")
    res = {s: [] for s in sides}
    _child(MATERIALIZE, "materialize", 1e7, HERE)        # the kernels in the disk cache
    print(f"materialize, Llama-shaped model (--params {args.params:g}), float32, each side "
          f"in a fresh process, rounds interleaved (median of {args.repeat}; {load()})")
    for _ in range(args.repeat):
        for s in sides:
            res[s].append(_child(MATERIALIZE, s, args.params, HERE)[0])
    n = res["materialize"][0]["params"]
    t = {s: [r["seconds"] for r in res[s]] for s in sides}
    print(f"  {n / 1e9:.3f} B parameters")
    fm = table.add("fastinit.torch.materialize", t["materialize"])
    tr = table.add("to_empty + reset_parameters", t["reset_parameters"])
    tz = table.add("first-touch floor: to_empty + zeros_", t["floor"])
    table.add("reset_parameters / materialize", [tr / fm], ">= 4x", lambda m: m >= 4.0,
              unit="x")
    table.add("materialize / floor", [fm / tz], "<= 1.3x", lambda m: m <= 1.3, unit="x")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"comma-separated, among {', '.join(PARTS)}")
    p.add_argument("--repeat", type=int, default=3, help="fresh processes per figure")
    p.add_argument("--cold-repeat", type=int, default=1,
                   help="fresh processes (each with an empty cache) per cold figure")
    p.add_argument("--cold-dtypes", default=",".join(DTYPES))
    p.add_argument("--cold-parallel", action="store_true",
                   help="also the first large fill (2^18 elements, on every thread) of "
                        "each (distribution, dtype)")
    p.add_argument("--params", type=float, default=1.1e9, help="model size to materialize")
    args = p.parse_args(argv)
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    bad = [s for s in parts if s not in PARTS]
    if bad:
        p.error(f"--parts: unknown {bad}; choose among {', '.join(PARTS)}")
    args.cold_dtypes = [d.strip() for d in args.cold_dtypes.split(",") if d.strip()]
    print(f"bench_startup {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{load()}", flush=True)
    table = Table()
    for part in parts:
        globals()[f"bench_{part}"](args, table)
    print(f"done; {load()}")
    missed = [r[0] for r in table.rows if r[4] == "MISSED"]
    if missed:
        print("goals missed: " + "; ".join(missed))


if __name__ == "__main__":
    main()
