"""fastinit.torch against torch's own initialization, on CPU.

1. A Llama-style decoder (TinyLlama-1.1B shapes at --params 1.1e9: nn.Embedding,
   nn.Linear q/k/v/o with grouped KV heads, a SwiGLU MLP, nn.RMSNorm, an untied
   head) built on the meta device, then materialized on the CPU:
   - fastinit: ``fastinit.torch.materialize(model, "cpu", seed=0)`` (default rules:
     the same distributions as each module's reset_parameters);
   - torch: ``model.to_empty(device="cpu")`` then every module's ``reset_parameters()``;
   - the floor both pay: ``to_empty`` then ``zeros_`` on every parameter (the
     kernel providing fresh pages, on every thread).
2. The twins on one 4096 x 4096 weight against the core fills on a NumPy buffer
   and against torch.nn.init (medians of --repeat runs).
3. A non-contiguous view (``w.t()``): a scratch filled band by band and a strided copy.

With ``--fresh N`` part 1 runs instead as N rounds of two fresh processes
(fastinit's materialize, then torch's to_empty + reset_parameters), each
timing one call with nothing warmed up (fastinit's kernels load inside it).

    python bench/bench_torch_model.py                  # ~1.1B parameters
    python bench/bench_torch_model.py --params 0.1e9   # a quick run
    python bench/bench_torch_model.py --fresh 5 --skip-twins
"""

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from torch import nn

import fastinit as fi
import fastinit.torch as ft


# --- the model --------------------------------------------------------------------
class Attention(nn.Module):
    def __init__(self, d, heads, kv_heads):
        super().__init__()
        hd = d // heads
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)


class MLP(nn.Module):
    def __init__(self, d, ffn):
        super().__init__()
        self.gate_proj = nn.Linear(d, ffn, bias=False)
        self.up_proj = nn.Linear(d, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, d, bias=False)


class DecoderLayer(nn.Module):
    def __init__(self, d, heads, kv_heads, ffn):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(d)
        self.self_attn = Attention(d, heads, kv_heads)
        self.post_attention_layernorm = nn.RMSNorm(d)
        self.mlp = MLP(d, ffn)


class Llama(nn.Module):
    def __init__(self, vocab, d, layers, heads, kv_heads, ffn):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([DecoderLayer(d, heads, kv_heads, ffn)
                                     for _ in range(layers)])
        self.norm = nn.RMSNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)


def config(params, vocab=32000):
    """TinyLlama-1.1B's shape (d 2048, 22 layers, ffn 5632, 32 heads, 4 KV heads)
    at 1.1e9 parameters; other sizes scale depth by the cube root and solve for width."""
    layers = max(2, round(22 * (params / 1.1e9) ** (1 / 3)))
    # per layer about (2 + 2/8 + 3 * 2.75) d^2 = 10.5 d^2, plus 2 V d for embed + head
    a, b = 10.5 * layers, 2.0 * vocab
    d = (-b + math.sqrt(b * b + 4 * a * params)) / (2 * a)
    d = max(256, int(round(d / 256)) * 256)
    heads = d // 64
    return dict(vocab=vocab, d=d, layers=layers, heads=heads, kv_heads=max(1, heads // 8),
                ffn=int(round(2.75 * d / 256)) * 256)


def meta_model(cfg, dtype):
    with torch.device("meta"):
        return Llama(**cfg).to(dtype)


def torch_init(model):
    model.to_empty(device="cpu")
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


def maxrss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- helpers ----------------------------------------------------------------------
def median_time(fn, repeat):
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def model_bench(args):
    cfg = config(args.params)
    dtype = getattr(torch, args.dtype)
    n = sum(p.numel() for p in meta_model(cfg, dtype).parameters())
    print(f"model: Llama-style, {n / 1e9:.3f} B parameters, {args.dtype}, config {cfg}")
    # warm the kernels (Numba loads or compiles them once per process)
    w = torch.empty(64, 64, dtype=dtype)
    ft.normal_(w, seed=0), ft.kaiming_uniform_(w, seed=0), ft.ones_(w)

    fast, slow, fast2, slow2, floor = [], [], [], [], []
    # peak RSS growth of the process's first materialize (ru_maxrss is a high-water mark)
    rss0 = maxrss()
    m = meta_model(cfg, dtype)
    ft.materialize(m, "cpu", seed=0, progress=False)
    size = sum(p.numel() * p.element_size() for p in m.parameters())
    grew = maxrss() - rss0
    del m
    gc.collect()
    if args.model_warmup:                  # untimed: the process's first large
        m = meta_model(cfg, dtype)         # allocations are the slowest on both sides
        torch_init(m)
        del m
        gc.collect()
    for i in range(args.model_repeat):
        m = meta_model(cfg, dtype)
        t0 = time.perf_counter()
        ft.materialize(m, "cpu", seed=0, progress=not args.quiet)
        fast.append(time.perf_counter() - t0)
        t0 = time.perf_counter()                     # again, on memory already touched
        ft.init_module(m, seed=0)
        fast2.append(time.perf_counter() - t0)
        del m
        gc.collect()
        m = meta_model(cfg, dtype)                   # the first-touch floor
        t0 = time.perf_counter()
        m.to_empty(device="cpu")
        for p in m.parameters():
            ft.zeros_(p)
        floor.append(time.perf_counter() - t0)
        del m
        gc.collect()
        m = meta_model(cfg, dtype)
        t0 = time.perf_counter()
        torch_init(m)
        slow.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for mod in m.modules():
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()
        slow2.append(time.perf_counter() - t0)
        del m
        gc.collect()
    tf, ts = statistics.median(fast), statistics.median(slow)
    tf2, ts2 = statistics.median(fast2), statistics.median(slow2)
    print(f"  (median of {args.model_repeat})                  fastinit.torch      torch   ratio")
    print(f"  meta -> CPU (allocate + first touch) {tf:9.2f} s {ts:9.2f} s {ts / tf:6.2f} x"
          f"   (materialize vs to_empty + reset_parameters)")
    print(f"  re-init of the allocated model       {tf2:9.2f} s {ts2:9.2f} s {ts2 / tf2:6.2f} x"
          f"   (init_module vs reset_parameters)")
    tz = statistics.median(floor)
    print(f"  first touch alone: to_empty + zeros_ on every thread {tz:.2f} s "
          f"(the memory's cost, part of both sides above; materialize minus it: "
          f"{tf - tz:.2f} s)")
    print("  every run (s): materialize " + " ".join(f"{t:.2f}" for t in fast)
          + " | to_empty + reset_parameters " + " ".join(f"{t:.2f}" for t in slow)
          + " | first touch " + " ".join(f"{t:.2f}" for t in floor))
    print(f"  peak RSS growth during materialize {grew / 1e9:.2f} GB for a "
          f"{size / 1e9:.2f} GB model ({grew / size:.2f} x)")


def fresh_child(args):
    """One timed call in this fresh process; prints a JSON line."""
    cfg = config(args.params)
    dtype = getattr(torch, args.dtype)
    m = meta_model(cfg, dtype)
    size = sum(p.numel() * p.element_size() for p in m.parameters())
    rss0 = maxrss()
    t0 = time.perf_counter()
    if args.child == "fastinit":
        ft.materialize(m, "cpu", seed=0, progress=False)
    else:
        torch_init(m)
    dt = time.perf_counter() - t0
    print(json.dumps(dict(seconds=dt, grew=maxrss() - rss0, size=size,
                          params=sum(p.numel() for p in m.parameters()))))


def fresh_bench(args):
    base = [sys.executable, os.path.abspath(__file__), "--params", str(args.params),
            "--dtype", args.dtype]
    res = {"fastinit": [], "torch": []}
    for _ in range(args.fresh):
        for side in res:
            out = subprocess.run(base + ["--child", side], capture_output=True, text=True,
                                 check=True)
            res[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    r0 = res["fastinit"][0]
    print(f"model: Llama-style, {r0['params'] / 1e9:.3f} B parameters, {args.dtype}, "
          f"config {config(args.params)}; fresh processes, load average "
          f"{os.getloadavg()[0]:.2f}")
    tf = statistics.median(r["seconds"] for r in res["fastinit"])
    tt = statistics.median(r["seconds"] for r in res["torch"])
    print(f"  (median of {args.fresh})                  fastinit.torch      torch   ratio")
    print(f"  meta -> CPU (allocate + first touch) {tf:9.2f} s {tt:9.2f} s {tt / tf:6.2f} x"
          f"   (materialize vs to_empty + reset_parameters)")
    print("  every run (s): materialize " + " ".join(f"{r['seconds']:.2f}" for r in
                                                   res["fastinit"])
          + " | to_empty + reset_parameters " + " ".join(f"{r['seconds']:.2f}" for r in
                                                          res["torch"]))
    g = statistics.median(r["grew"] for r in res["fastinit"])
    print(f"  peak RSS growth during materialize {g / 1e9:.2f} GB for a "
          f"{r0['size'] / 1e9:.2f} GB model ({g / r0['size']:.2f} x)")


def twin_bench(args):
    n = 4096
    rep = args.repeat
    print(f"4096 x 4096 float32 weight, median of {rep} runs (ms):")
    t = torch.empty(n, n)
    a = np.empty((n, n), np.float32)
    rows = [
        ("kaiming_uniform_(a=sqrt(5))",
         lambda: ft.kaiming_uniform_(t, a=math.sqrt(5), seed=0),
         lambda: fi.kaiming_uniform(a, math.sqrt(5), seed=0),
         lambda: torch.nn.init.kaiming_uniform_(t, a=math.sqrt(5))),
        ("normal_(0, 0.02)",
         lambda: ft.normal_(t, 0, 0.02, seed=0),
         lambda: fi.normal(a, 0, 0.02, seed=0),
         lambda: torch.nn.init.normal_(t, 0, 0.02)),
        ("trunc_normal_(std=0.02, a=-0.04, b=0.04)",
         lambda: ft.trunc_normal_(t, 0, 0.02, -0.04, 0.04, seed=0),
         lambda: fi.truncated_normal(a, 0, 0.02, -0.04, 0.04, seed=0),
         lambda: torch.nn.init.trunc_normal_(t, 0, 0.02, -0.04, 0.04)),
        ("xavier_uniform_",
         lambda: ft.xavier_uniform_(t, seed=0),
         lambda: fi.xavier_uniform(a, seed=0),
         lambda: torch.nn.init.xavier_uniform_(t)),
    ]
    print(f"  {'':42s} {'fastinit.torch':>14s} {'fi on numpy':>12s} {'torch.nn.init':>14s}")
    for name, twin, core, ref in rows:
        twin(), core(), ref()
        tt, tc, tr = (median_time(f, rep) * 1e3 for f in (twin, core, ref))
        print(f"  {name:42s} {tt:14.1f} {tc:12.1f} {tr:14.1f}")

    print("non-contiguous view w.t() (ms):")
    w = torch.empty(n, n)
    ft.normal_(w.t(), seed=0)
    cont = median_time(lambda: ft.normal_(w, seed=0), rep)
    view = median_time(lambda: ft.normal_(w.t(), seed=0), rep)
    tv = median_time(lambda: torch.nn.init.normal_(w.t()), rep)
    tmp = torch.empty(n, n)
    copy = median_time(lambda: w.t().copy_(tmp), rep)
    print(f"  fastinit normal_ on w               {cont * 1e3:8.1f}")
    print(f"  fastinit normal_ on w.t()           {view * 1e3:8.1f}   "
          f"(scratch bands + copy_ into the view)")
    print(f"  of which the strided copy_ alone    {copy * 1e3:8.1f}")
    print(f"  torch.nn.init.normal_ on w.t()      {tv * 1e3:8.1f}")

    small = torch.empty(16)
    k = 2000
    ft.zeros_(small)
    t0 = time.perf_counter()
    for i in range(k):
        ft.normal_(small, seed=0, stream=i)
    per = (time.perf_counter() - t0) / k
    t0 = time.perf_counter()
    for i in range(k):
        torch.nn.init.normal_(small)
    per_t = (time.perf_counter() - t0) / k
    print(f"per-call cost on a 16-element tensor: fastinit.torch {per * 1e6:.1f} us, "
          f"torch.nn.init {per_t * 1e6:.1f} us")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", type=float, default=1.1e9,
                   help="model size in parameters (default 1.1e9; 0.1e9 for a quick run)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--model-repeat", type=int, default=1,
                   help="model runs of each kind (median reported)")
    p.add_argument("--model-warmup", type=int, default=1, choices=(0, 1),
                   help="1 (default): one untimed round of each kind first (fastinit's "
                        "also gives the peak-RSS figure); 0: that fastinit round only")
    p.add_argument("--repeat", type=int, default=5, help="runs per 4096 x 4096 timing")
    p.add_argument("--skip-model", action="store_true")
    p.add_argument("--skip-twins", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--fresh", type=int, default=0,
                   help="N: the model part as N rounds of fresh processes instead")
    p.add_argument("--child", choices=("fastinit", "torch"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return fresh_child(args)
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, {fi.get_num_threads()} fill threads; "
          f"torch {torch.__version__}, fastinit {fi.__version__}, Python {sys.version.split()[0]}")
    if not args.skip_model:
        (fresh_bench if args.fresh else model_bench)(args)
    if not args.skip_twins:
        twin_bench(args)


if __name__ == "__main__":
    main()
