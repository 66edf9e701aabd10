"""The peak-RSS probe of ``fastinit bench``, run as a fresh process.

``python -m fastinit.cli.bench.rss_child N THREADS`` fills a preallocated,
resident float32 buffer of N elements once with THREADS fill threads and
prints one JSON line: the buffer's size, ``ru_maxrss`` before and after the
fill (bytes), the RSS before it and whether the peak could be reset.
:func:`fastinit.cli.bench.measure.measure_rss` starts it and reads the line.
"""

import gc
import json
import resource
import sys

RU_MAXRSS_SCALE = 1 if sys.platform == "darwin" else 1024   # bytes on macOS, else KiB


def reset_peak():
    """Reset ru_maxrss to the current RSS (Linux: write 5 to clear_refs); False where
    refused. Growth that stays under an earlier, higher peak (Numba's start-up)
    would otherwise not show."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def probe(n, threads):
    import fastinit as fi
    from fastinit.backends.cpu import PARALLEL_MIN

    from .system import rss_now
    fi.set_num_threads(threads)
    fi.uniform(fi.empty(PARALLEL_MIN, "float32"), seed=0)   # load the kernel, start the threads
    buf = fi.empty(n, "float32")
    buf.view("uint32").fill(0)                              # preallocated and resident
    gc.collect()
    reset = reset_peak()
    now = rss_now()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RU_MAXRSS_SCALE
    fi.uniform(buf, 0.0, 1.0, seed=1)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RU_MAXRSS_SCALE
    return {"nbytes": buf.nbytes, "maxrss_before": before, "maxrss_after": after,
            "rss_before": now, "peak_reset": reset}


if __name__ == "__main__":
    print(json.dumps(probe(int(sys.argv[1]), int(sys.argv[2]))))
