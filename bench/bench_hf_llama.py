"""A transformers Llama built on the meta device, initialized by its own init code.

Side by side, each run in a fresh process (nothing warmed up: the kernels load
from Numba's cache inside the timed call), alternating the two sides:

- fastinit: ``fastinit.torch.materialize(model, "cpu", seed=0)`` (the model's
  ``init_weights()`` under the redirect);
- transformers: ``model.to_empty(device="cpu")`` then ``model.init_weights()``
  (torch's generator).

Prints the medians, every run, and the peak RSS growth against the model's
size. About 200M parameters by default (hidden 1024, 12 layers, vocab 32000).
A second table ("kernels loaded") repeats it with one tiny untimed fill
first in each child (fastinit's kernels loaded, torch's generator used
once), to separate Numba's one-time start-up from the per-model cost.

    python bench/bench_hf_llama.py --runs 5
    python bench/bench_hf_llama.py --runs 3 --hidden 512 --layers 4    # a quick run
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time


def config(args):
    import transformers as tr
    return tr.LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                          intermediate_size=args.intermediate or int(2.75 * args.hidden),
                          num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                          num_key_value_heads=max(1, args.hidden // 256),
                          max_position_embeddings=2048, tie_word_embeddings=False)


def child(args):
    """One measurement in this (fresh) process; prints a JSON line."""
    import torch
    import transformers as tr
    tr.logging.set_verbosity_error()
    import fastinit.torch as ft
    torch.set_num_threads(args.threads)
    with torch.device("meta"):
        model = tr.LlamaForCausalLM(config(args))
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    n = sum(p.numel() for p in model.parameters())
    if args.warm:
        if args.child == "fastinit":
            ft.normal_(torch.empty(16), seed=0)
        else:
            torch.empty(16).normal_()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    if args.child == "fastinit":
        ft.materialize(model, "cpu", seed=0, progress=False)
    else:
        model.to_empty(device="cpu")
        model.init_weights()
    dt = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    w = model.model.layers[0].mlp.up_proj.weight
    print(json.dumps(dict(side=args.child, seconds=dt, grew=rss1 - rss0, size=size, params=n,
                          std=float(w.detach().std()))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="runs of each side (median reported)")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--intermediate", type=int, default=0, help="default 2.75 x hidden")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads in each child (Numba uses its own default)")
    p.add_argument("--skip-warm", action="store_true", help="no 'kernels loaded' table")
    p.add_argument("--child", choices=("fastinit", "transformers"), help=argparse.SUPPRESS)
    p.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    import torch
    import transformers
    import fastinit
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}, transformers "
          f"{transformers.__version__}, fastinit {fastinit.__version__}, Python "
          f"{sys.version.split()[0]}")
    base = [sys.executable, os.path.abspath(__file__), "--hidden", str(args.hidden),
            "--layers", str(args.layers), "--vocab", str(args.vocab), "--intermediate",
            str(args.intermediate), "--threads", str(args.threads)]
    for warm in (False,) if args.skip_warm else (False, True):
        res = {"fastinit": [], "transformers": []}
        for _ in range(args.runs):
            for side in ("fastinit", "transformers"):
                out = subprocess.run(base + ["--child", side] + (["--warm"] if warm else []),
                                     capture_output=True, text=True, check=True)
                res[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
        report(args, res, "kernels loaded first" if warm else "fresh processes")


def report(args, res, how):
    first = res["fastinit"][0]
    print(f"model: LlamaForCausalLM, {first['params'] / 1e6:.1f} M parameters, float32, "
          f"{first['size'] / 1e9:.2f} GB; hidden {args.hidden}, {args.layers} layers, vocab "
          f"{args.vocab}; {how}")
    tf = statistics.median(r["seconds"] for r in res["fastinit"])
    tt = statistics.median(r["seconds"] for r in res["transformers"])
    print(f"  (median of {args.runs})                       fastinit  transformers   ratio")
    print(f"  meta -> CPU, the model's own init  {tf:8.2f} s {tt:10.2f} s {tt / tf:7.2f} x"
          f"   (materialize vs to_empty + init_weights())")
    print("  every run (s): fastinit " + " ".join(f"{r['seconds']:.2f}" for r in res["fastinit"])
          + " | transformers " + " ".join(f"{r['seconds']:.2f}" for r in res["transformers"]))
    for side in ("fastinit", "transformers"):
        g = statistics.median(r["grew"] for r in res[side])
        print(f"  peak RSS growth, {side}: {g / 1e9:.2f} GB for a {first['size'] / 1e9:.2f} GB "
              f"model ({g / first['size']:.2f} x)")
    print(f"  mlp.up_proj std: fastinit {first['std']:.5f}, transformers "
          f"{res['transformers'][0]['std']:.5f} (config initializer_range 0.02)")


if __name__ == "__main__":
    main()
