"""A transformers model directory from a config: init against zeros through the same path.

Each run is a fresh process (``fastinit checkpoint --config``'s code, in-process
API): the model's own init code into the memory-mapped shards (``init``)
against zeros written through the very same path (``zeros``: the same
planning, files, mappings, write-back and page dropping, no init code), run
alternately, then ``--workers N`` for the init. Printed per kind: median
wall seconds of the whole process (import, planning, writing), median
seconds of the write itself, GB/s, and the peak RSS of the process.

    python bench/bench_checkpoint_hf.py                 # 7B-class Llama, bfloat16
    python bench/bench_checkpoint_hf.py --layers 4 --repeat 3
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
import time

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from fastinit.cli.checkpoint.modeldir import write_model_dir
a = json.loads(sys.argv[1])
rep = write_model_dir(a["out"], model_type="llama", sets=a["sets"], dtype=a["dtype"], seed=0,
                      max_shard_size=a["shard"], fill=a["fill"], workers=a["workers"])
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(dict(write=rep.seconds, nbytes=rep.nbytes, files=len(rep.files),
                      rss_mib=rss, child_rss_mib=kids, wall=time.perf_counter() - t0)))
"""


def run(out, sets, dtype, shard, fill, workers):
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(dict(
        out=out, sets=sets, dtype=dtype, shard=shard, fill=fill, workers=workers))],
        capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr)
    d = json.loads(r.stdout.strip().splitlines()[-1])
    d["process"] = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=11008)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--max-shard-size", default="5GB")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary "
                                                "directory)")
    args = ap.parse_args()
    sets = [f"hidden_size={args.hidden}", f"intermediate_size={args.intermediate}",
            f"num_hidden_layers={args.layers}", f"num_attention_heads={args.heads}",
            f"num_key_value_heads={args.heads}", f"vocab_size={args.vocab}"]
    base = args.dir or tempfile.mkdtemp(prefix="fastinit-bench-")
    out = os.path.join(base, "model")
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
          f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC")
    print(f"# Llama {args.layers} layers, hidden {args.hidden}, {args.dtype}, "
          f"--max-shard-size {args.max_shard_size}; fresh process per run, alternated")
    res = {"init": [], "zeros": [], f"init --workers {args.workers}": []}
    for _ in range(args.repeat):
        for kind, fill, w in (("zeros", "zeros", 1), ("init", "init", 1),
                              (f"init --workers {args.workers}", "init", args.workers)):
            res[kind].append(run(out, sets, args.dtype, args.max_shard_size, fill, w))
    nbytes = res["init"][0]["nbytes"]
    print(f"# {nbytes / 1e9:.2f} GB in {res['init'][0]['files']} files")
    print(f"{'kind':<22}{'process s':>10}{'write s':>9}{'GB/s':>7}{'peak RSS MiB':>14}"
          f"{'spread of write s':>22}")
    med = {}
    for kind, rs in res.items():
        w = statistics.median(r["write"] for r in rs)
        med[kind] = w
        rss = max(max(r["rss_mib"], r["child_rss_mib"]) for r in rs)
        print(f"{kind:<22}{statistics.median(r['process'] for r in rs):>10.1f}{w:>9.1f}"
              f"{nbytes / w / 1e9:>7.2f}{rss:>14.0f}"
              f"{min(r['write'] for r in rs):>11.1f} - {max(r['write'] for r in rs):.1f}")
    print(f"init speed / zeros speed (write): {med['zeros'] / med['init']:.2f} (goal >= 0.60)")
    print(f"--workers {args.workers} speed-up over 1 worker (write): "
          f"{med['init'] / med[f'init --workers {args.workers}']:.2f}")
    if args.dir is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
