"""Time ``fastinit checkpoint`` against writing zeros through the same path.

Each run is a fresh child process that writes one Llama-preset checkpoint
with :func:`fastinit.cli.checkpoint.write_checkpoint`, either with its inits
(``fill="init"``) or with zeros (``fill="zeros"``): the same preallocated,
memory-mapped file, the same chunks, the same msync + madvise(DONTNEED)
per chunk. Init and zero runs alternate, so a drift in machine or disk
speed hits both alike; the medians and their ratio (zero-write time / init
time, the share of the write bandwidth the init reaches) are printed, with
each child's peak RSS (``ru_maxrss``) before and after the write.

    python bench/bench_checkpoint.py                       # ~0.48 B params, bfloat16
    python bench/bench_checkpoint.py --preset 7b --repeat 1
    python bench/bench_checkpoint.py --dir /data --json out.json

The file is deleted after every run. The parent does not import fastinit
(only each child does, ``--child``), so a child's peak RSS is not inflated
by its parent's.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

PRESETS = {
    # ~0.48 B parameters: 32 layers of a 1024-wide Llama, 32000-token vocabulary
    "small": dict(hidden=1024, layers=32, heads=16, kv_heads=16, intermediate=2816,
                  vocab=32000),
    # Llama-2-7B's shapes (6.74 B parameters; 13.5 GB in bfloat16)
    "7b": dict(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008, vocab=32000),
}


def child(cfg):
    """One write in this fresh process: the report's figures and ru_maxrss (bytes)
    before and after, as one JSON line."""
    import resource

    import fastinit as fi
    from fastinit.cli import checkpoint as ck
    spec = ck.llama_spec(**cfg["preset"], dtype=cfg["dtype"])
    fi.normal(fi.empty(1 << 16, cfg["dtype"]), 0.0, 0.02, seed=0)   # load the kernel first
    fi.normal(fi.empty(1 << 16, cfg["dtype"]), 0.0, 0.02, seed=0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rep = ck.write_checkpoint(spec, cfg["path"], cfg["seed"], fill=cfg["fill"],
                              chunk_bytes=cfg["chunk_mib"] << 20)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": rep.seconds, "nbytes": rep.nbytes, "numel": rep.numel,
                      "tensors": rep.tensors, "maxrss_before": before,
                      "maxrss_after": after}))
    return 0


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_child(cfg):
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                           json.dumps(cfg)], capture_output=True, text=True)
    try:
        os.unlink(cfg["path"])
    except OSError:
        pass
    if proc.returncode != 0:
        raise SystemExit(f"child failed (exit {proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=PRESETS, default="small")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each kind (default 3)")
    ap.add_argument("--chunk-mib", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", default=None, help="where to write (default: the temp dir)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)   # one run, JSON cfg
    args = ap.parse_args(argv)
    if args.child is not None:
        return child(json.loads(args.child))
    d = args.dir or tempfile.gettempdir()
    preset = PRESETS[args.preset]
    out = {"preset": args.preset, "shape": preset, "dtype": args.dtype,
           "chunk_mib": args.chunk_mib, "repeat": args.repeat, "cpu": cpu_model(),
           "cores": os.cpu_count(), "runs": []}
    free = shutil.disk_usage(d).free
    print(f"machine: {out['cpu']}, {out['cores']} cores; writing to {d} "
          f"({free / 1e9:.0f} GB free)", flush=True)
    for r in range(args.repeat):
        order = ("init", "zeros") if r % 2 == 0 else ("zeros", "init")
        for fill in order:
            cfg = {"preset": preset, "dtype": args.dtype, "fill": fill, "seed": args.seed,
                   "chunk_mib": args.chunk_mib,
                   "path": os.path.join(d, f"bench_checkpoint_{os.getpid()}.safetensors")}
            res = run_child(cfg)
            res["fill"] = fill
            out["runs"].append(res)
            print(f"  run {r + 1} {fill:5s}: {res['seconds']:7.2f} s, "
                  f"{res['nbytes'] / res['seconds'] / 1e9:5.2f} GB/s, peak RSS "
                  f"{res['maxrss_before'] / 2**20:.0f} MiB before the write, "
                  f"{res['maxrss_after'] / 2**20:.0f} MiB after", flush=True)
    med = {f: statistics.median(x["seconds"] for x in out["runs"] if x["fill"] == f)
           for f in ("init", "zeros")}
    nbytes = out["runs"][0]["nbytes"]
    out["median_s"] = med
    out["ratio"] = med["zeros"] / med["init"]
    out["nbytes"] = nbytes
    out["numel"] = out["runs"][0]["numel"]
    out["peak_rss_mib"] = max(x["maxrss_after"] for x in out["runs"]) / 2 ** 20
    print(f"{args.preset} preset, {out['numel'] / 1e9:.3f} G params, {args.dtype}, "
          f"{nbytes / 1e9:.2f} GB file, median of {args.repeat}:")
    print(f"  init  {med['init']:.2f} s ({nbytes / med['init'] / 1e9:.2f} GB/s, "
          f"{out['numel'] / med['init'] / 1e9:.3f} Gelem/s)")
    print(f"  zeros {med['zeros']:.2f} s ({nbytes / med['zeros'] / 1e9:.2f} GB/s)")
    print(f"  ratio (zero-write time / init time): {100 * out['ratio']:.0f}%")
    print(f"  peak RSS of a child: {out['peak_rss_mib']:.0f} MiB "
          f"(file {nbytes / 2**20:.0f} MiB)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
