"""orthogonal_ speed: fastinit.torch.orthogonal_ against torch.nn.init.orthogonal_.

Both factor an n x n float32 matrix of normal values by QR with
torch.linalg.qr (fastinit.torch hands its own normal draw to torch's
LAPACK); the QR dominates. Two measures for each:

- fresh: a new Python process imports the library and fills one tensor
  (the first fill, Numba kernels from the disk cache included); the call
  alone is timed inside the child, and the child's whole run outside it;
- warm: in one process, after a warm-up call, the best of ``repeats`` calls.

The ratio is fastinit's time over torch's (below 1: fastinit is faster).
The load average (``os.getloadavg``, as ``uptime`` shows it) is printed
before and after: QR runs on every core, so other work on the machine
changes these figures a lot.

    python bench/bench_orthogonal.py [--n 4096] [--repeats 3] [--threads T]
"""

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
n, which, threads = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if threads:
    torch.set_num_threads(threads)
if which == "fastinit":
    import fastinit.torch as ft
    fill = lambda t: ft.orthogonal_(t, seed=0)
else:
    g = torch.Generator().manual_seed(0)
    fill = lambda t: torch.nn.init.orthogonal_(t, generator=g)
t = torch.empty(n, n)
t1 = time.perf_counter()
fill(t)
t2 = time.perf_counter()
print(json.dumps({"call": t2 - t1, "import": t1 - t0}))
"""


def fresh(which, n, threads):
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), which, str(threads)],
                         check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    res["process"] = time.perf_counter() - t0
    return res


def warm(which, n, repeats):
    import torch
    if which == "fastinit":
        import fastinit.torch as ft

        def fill(t):
            ft.orthogonal_(t, seed=0)
    else:
        g = torch.Generator().manual_seed(0)

        def fill(t):
            torch.nn.init.orthogonal_(t, generator=g)
    t = torch.empty(n, n)
    fill(t)                                       # warm-up (and Numba's first load)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fill(t)
        best = min(best, time.perf_counter() - t0)
    return best


def load():
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0,
                   help="torch.set_num_threads in the fresh children (0: torch's default)")
    args = p.parse_args(argv)
    print(f"orthogonal_ on {args.n} x {args.n} float32, {os.cpu_count()} CPUs; {load()}")
    rows = {}
    for which in ("fastinit", "torch"):
        f = fresh(which, args.n, args.threads)
        w = warm(which, args.n, args.repeats)
        rows[which] = (f, w)
        print(f"{which:9} fresh: call {f['call']:.2f} s, import {f['import']:.2f} s, "
              f"process {f['process']:.2f} s; warm: best of {args.repeats} {w:.2f} s")
    (ff, fw), (tf, tw) = rows["fastinit"], rows["torch"]
    print(f"ratio fastinit/torch: fresh call {ff['call'] / tf['call']:.2f}, fresh process "
          f"{ff['process'] / tf['process']:.2f}, warm {fw / tw:.2f}")
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
