"""Truncated-normal fill speed by interval: central, tail and far tail.

Times ``fastinit.truncated_normal`` on a pre-faulted buffer for intervals
that take each path of docs/stream.md 3.6 (central form, the v1 tail loop,
the mixed tail loop with elements past 2^-B, the far-tail form), float32
and float64, at 1 and 2 threads. Best of ``repeats`` runs, after a warm-up
that also compiles the kernels.

    python bench/bench_trunc_tails.py [size_log2] [repeats]
"""

import sys
import time

import numpy as np

import fastinit as fi

INTERVALS = [               # (label, a, b), mean 0, std 1
    ("central [-2, 2]", -2.0, 2.0),
    ("tail [3, 4]", 3.0, 4.0),
    ("tail [5, 9]", 5.0, 9.0),
    ("tail [0, inf)", 0.0, float("inf")),
    ("far [8, 9]", 8.0, 9.0),
    ("far [20, 21]", 20.0, 21.0),
    ("far [40, 41]", 40.0, 41.0),
]


def main(size_log2=24, repeats=5):
    n = 1 << size_log2
    threads = [1, 2]
    print(f"fastinit {fi.STREAM_VERSION}, 2**{size_log2} elements, best of {repeats}, "
          f"Melem/s")
    print(f"{'interval':<18} {'dtype':<8} " + " ".join(f"{t} thr".rjust(9) for t in threads))
    before = fi.get_num_threads()
    try:
        for dtype in ("float32", "float64"):
            buf = np.zeros(n, dtype)
            for label, a, b in INTERVALS:
                try:
                    fi.truncated_normal(buf, 0.0, 1.0, a, b, seed=1)
                except ValueError as exc:          # v1 refuses the far tails it cannot draw
                    print(f"{label:<18} {dtype:<8} refused: {exc}")
                    continue
                row = []
                for t in threads:
                    fi.set_num_threads(t)
                    best = float("inf")
                    for r in range(repeats):
                        t0 = time.perf_counter()
                        fi.truncated_normal(buf, 0.0, 1.0, a, b, seed=1, stream=r)
                        best = min(best, time.perf_counter() - t0)
                    row.append(n / best / 1e6)
                print(f"{label:<18} {dtype:<8} " + " ".join(f"{v:9.1f}" for v in row))
    finally:
        fi.set_num_threads(before)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*args)
