"""The measurements of ``fastinit bench``: timing loops, rows, thread scaling, overheads.

:func:`run_bench` runs everything a configuration asks for (see
:func:`fastinit.cli.bench.resolve_config`) and returns the JSON-ready
result that :mod:`.report` prints and ``--json`` writes.
"""

import gc
import json
import statistics
import subprocess
import sys
import time

from .peers import (ITEMSIZE, SEED, TRUNC_BOUNDS, Buffer, Fastinit, Skip, load_peers,
                    zero_fillers)
from .report import fmt_size
from .system import machine_info, mem_available, versions

SCHEMA = "fastinit-bench/1"
PER_CALL_SIZE = 1024
# On Linux a process inherits, in ru_maxrss, the peak RSS of the process it was
# exec'd from: this one-line launcher gives the probe a small starting peak
_RSS_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def interleave(items, repeat, warmup=1):
    """Time ``items`` = [(key, fn, setup_or_None)] round-robin; {key: [seconds]}.

    Every item runs ``warmup`` untimed calls first. Repeat r starts at item
    r mod n, so no implementation always follows the same one. ``setup`` runs
    untimed right before each call.
    """
    n = len(items)
    times = {key: [] for key, _, _ in items}
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(warmup):
            for _, fn, setup in items:
                if setup is not None:
                    setup()
                fn()
        for r in range(repeat):
            for key, fn, setup in items[r % n:] + items[:r % n]:
                if setup is not None:
                    setup()
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
    finally:
        if was_enabled:
            gc.enable()
    return times


def median(ts):
    return max(statistics.median(ts), 1e-12)


def summarize(method, dtype, size, impls, times, refs):
    """Rows for one (method, dtype, size) from the raw timings.

    ``impls``: [(implementation, api)], fastinit first; ``refs``:
    [(reference key, api)] of the zero fills; ``times``: {key: [seconds]}.
    Returns (rows, reference) where reference is the faster zero fill.
    """
    nbytes = size * ITEMSIZE[dtype]
    med = {key: median(times[key]) for key in times}
    reference = None
    if refs:
        ref_key, ref_api = min(refs, key=lambda r: med[r[0]])
        t_ref = med[ref_key]
        reference = {"method": method, "dtype": dtype, "size": size,
                     "implementation": ref_key.split(":", 1)[1], "api": ref_api,
                     "median_s": t_ref, "times_s": times[ref_key],
                     "gb_per_s": nbytes / t_ref / 1e9,
                     "candidates": {r[0].split(":", 1)[1]: med[r[0]] for r in refs}}
    t_fast = med["fastinit"]
    peers = {name: med[name] for name, _ in impls if name != "fastinit"}
    rows = []
    for name, api in impls:
        t = med[name]
        if name == "fastinit":
            best = min(peers, key=peers.get) if peers else None
            ratio = peers[best] / t_fast if best else None
            vs = best
        else:
            ratio, vs = t / t_fast, name
        rows.append({
            "method": method, "dtype": dtype, "size": size, "implementation": name,
            "api": api, "median_s": t, "times_s": times[name], "bytes_written": nbytes,
            "gelem_per_s": size / t / 1e9, "gb_per_s": nbytes / t / 1e9,
            "ratio": ratio, "ratio_vs": vs,
            "pct_write_bw": 100.0 * reference["median_s"] / t if reference else None,
            "write_bw_gb_per_s": reference["gb_per_s"] if reference else None,
            "write_bw_ref": (f"{reference['implementation']} {reference['api']}"
                             if reference else None),
        })
    return rows, reference


def measure_row(method, dtype, size, fast, peers, repeat, skipped, fillers=None):
    buf = Buffer(size, dtype)
    impls, items = [], []
    for impl in [fast] + peers:
        try:
            api, fn = impl.prepare(method, buf)
        except Skip as exc:
            skipped.append({"method": method, "dtype": dtype, "size": size,
                            "implementation": impl.name, "reason": str(exc)})
            continue
        impls.append((impl.name, api))
        items.append((impl.name, fn, None))
    refs = []
    for impl in (peers if fillers is None else fillers):
        z = impl.zero(buf)
        if z is not None:
            key = "zero:" + impl.name
            refs.append((key, z[0]))
            items.append((key, z[1], None))
    times = interleave(items, repeat)
    del items, buf
    gc.collect()
    return summarize(method, dtype, size, impls, times, refs)


def measure_scaling(size, repeat, thread_counts):
    """fastinit uniform float32 at ``size`` with each fill thread count."""
    import fastinit as fi
    from fastinit.backends.cpu import PARALLEL_MIN
    saved = fi.get_num_threads()
    buf = Buffer(size, "float32")
    arr = buf.array
    items = [(k, lambda: fi.uniform(arr, 0.0, 1.0, seed=SEED),
              lambda k=k: fi.set_num_threads(k)) for k in thread_counts]
    try:
        times = interleave(items, repeat)
    finally:
        fi.set_num_threads(saved)
    med = {k: median(times[k]) for k in thread_counts}
    base = med[thread_counts[0]]
    return {"method": "uniform", "dtype": "float32", "size": size,
            "parallel": size >= PARALLEL_MIN, "parallel_min": PARALLEL_MIN,
            "runs": [{"threads": k, "median_s": med[k], "times_s": times[k],
                      "gelem_per_s": size / med[k] / 1e9,
                      "speedup_vs_1": base / med[k]} for k in thread_counts]}


def measure_rss(mib, threads):
    """Peak RSS growth of one fastinit uniform fill into a resident ``mib`` MiB buffer."""
    nbytes = mib * 2 ** 20
    n = nbytes // 4
    avail = mem_available()
    if avail is not None and nbytes + 2 ** 29 > avail:
        return {"skipped": f"needs {mib} MiB plus headroom, {avail / 2**20:.0f} MiB available"}
    # started straight from this (large) process, the probe's ru_maxrss would
    # begin at our peak and hide the fill: a small launcher goes in between
    cmd = [sys.executable, "-c", _RSS_LAUNCHER,
           sys.executable, "-m", "fastinit.cli.bench.rss_child", str(n), str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"skipped": f"subprocess failed (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[-500:]}"}
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    growth = max(r["maxrss_after"] - r["maxrss_before"], 0)
    out = {"buffer_bytes": r["nbytes"], "threads": threads,
           "maxrss_before_bytes": r["maxrss_before"], "maxrss_after_bytes": r["maxrss_after"],
           "growth_bytes": growth, "growth_mib": growth / 2 ** 20,
           "growth_pct_of_buffer": 100.0 * growth / r["nbytes"],
           "peak_reset": r["peak_reset"]}
    if r["rss_before"] is not None:
        # growth smaller than this stays under the earlier peak and reads as 0
        out["rss_before_bytes"] = r["rss_before"]
        out["hidden_below_mib"] = max(r["maxrss_before"] - r["rss_before"], 0) / 2 ** 20
    return out


def measure_per_call(batches, per_batch, torch_peer):
    """Median per-call time of a PER_CALL_SIZE-element uniform float32 fill."""
    import fastinit as fi
    arr = fi.empty(PER_CALL_SIZE, "float32")
    fns = [("fastinit", "fastinit.uniform (NumPy array)",
            lambda: fi.uniform(arr, 0.0, 1.0, seed=SEED))]
    if torch_peer is not None:
        t = torch_peer.torch.empty(PER_CALL_SIZE, dtype=torch_peer.torch.float32)
        t2 = torch_peer.torch.empty(PER_CALL_SIZE, dtype=torch_peer.torch.float32)
        fns += [("fastinit_on_torch", "fastinit.uniform (torch tensor)",
                 lambda: fi.uniform(t2, 0.0, 1.0, seed=SEED)),
                ("torch", "Tensor.uniform_", lambda: t.uniform_(0.0, 1.0))]

    def batch(f):
        def run_batch():
            for _ in range(per_batch):
                f()
        return run_batch

    times = interleave([(k, batch(f), None) for k, _, f in fns], batches)
    per = {k: median(times[k]) / per_batch for k, _, _ in fns}
    out = {"size": PER_CALL_SIZE, "dtype": "float32", "batches": batches,
           "calls_per_batch": per_batch,
           "runs": [{"implementation": k, "api": api, "per_call_s": per[k]}
                    for k, api, _ in fns]}
    if "torch" in per:
        out["ratio_vs_torch"] = per["torch"] / per["fastinit"]
        out["ratio_vs_torch_on_torch_tensor"] = per["torch"] / per["fastinit_on_torch"]
    return out


def run_bench(cfg, log=None):
    """Measure everything ``cfg`` asks (see :func:`fastinit.cli.bench.resolve_config`);
    a JSON-ready dict."""
    import fastinit as fi
    from fastinit.backends._threads import usable_cpus
    from fastinit.backends.cpu import PARALLEL_MIN
    started = time.time()
    log = log or (lambda msg: None)
    saved = fi.get_num_threads()
    fast = Fastinit()
    fast.version = fast.load()
    peers, unavailable = load_peers(cfg["peers"])
    fillers = zero_fillers(peers)
    torch_peer = next((p for p in fillers if p.name == "torch"), None)
    rows, references, skipped = [], [], []
    try:
        fi.set_num_threads(cfg["threads"])
        for dtype in cfg["dtypes"]:             # load the kernels: not part of any timing
            fi.uniform(fi.empty(PARALLEL_MIN, dtype), seed=SEED)
        machine = machine_info(cfg["threads"], peers + [f for f in fillers if f not in peers])
        total = len(cfg["methods"]) * len(cfg["dtypes"]) * len(cfg["sizes"])
        i = 0
        for method in cfg["methods"]:
            for dtype in cfg["dtypes"]:
                for size in cfg["sizes"]:
                    i += 1
                    log(f"[{i}/{total}] {method} {dtype} {fmt_size(size)}")
                    fi.set_num_threads(cfg["threads"])
                    r, ref = measure_row(method, dtype, size, fast, peers, cfg["repeat"],
                                         skipped, fillers)
                    rows += r
                    if ref is not None:
                        references.append(ref)
        main_size = max(cfg["sizes"])
        cpus = usable_cpus()
        counts = sorted({k for k in (1, 2, cpus) if k <= cpus})
        log(f"scaling: threads {counts}")
        scaling = measure_scaling(main_size, cfg["repeat"], counts)
        fi.set_num_threads(cfg["threads"])
        if cfg["rss_mib"]:
            log(f"peak RSS: {cfg['rss_mib']} MiB buffer in a subprocess")
            rss = measure_rss(cfg["rss_mib"], cfg["threads"])
        else:
            rss = {"skipped": "--rss-mib 0"}
        log("per-call overhead")
        per_call = measure_per_call(*cfg["per_call"], torch_peer)
    finally:
        fi.set_num_threads(saved)
    return {
        "schema": SCHEMA,
        "config": {k: cfg[k] for k in ("sizes", "dtypes", "methods", "peers", "repeat",
                                       "threads", "rss_mib", "quick")},
        "warmup": 1, "seed": SEED, "trunc_bounds_std": list(TRUNC_BOUNDS),
        "machine": machine, "versions": versions(peers),
        "unavailable": unavailable, "skipped": skipped,
        "rows": rows, "write_reference": references,
        "scaling": scaling, "overheads": {"rss": rss, "per_call": per_call},
        "elapsed_s": time.time() - started,
    }
