"""The text report of a ``fastinit bench`` result: the machine, one table, the overheads.

:func:`format_report` reads nothing but the JSON-ready result of
:func:`fastinit.cli.bench.measure.run_bench`.
"""

from .peers import ALLOCATING, LABELS


def fmt_size(n):
    return f"2**{n.bit_length() - 1}" if n & (n - 1) == 0 else str(n)


def _fmt_s(t):
    return f"{t:.3g}" if t >= 1e-3 else f"{t:.2e}"


def _fmt_pct(p):
    if p is None:
        return "-"
    return f"{p:.1f}%" if p < 10 else f"{p:.0f}%"


def _fmt_us(t):
    return f"{t * 1e6:.2f} us"


def _table(header, body, right):
    widths = [max([len(h)] + [len(r[i]) for r in body if r]) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [line(header), line(["-" * w for w in widths])]
    out += [line(r) if r else "" for r in body]
    return out


def format_report(res):
    m, v = res["machine"], res["versions"]
    cfg = res["config"]
    out = []
    threads = f"{m['fill_threads']} fill thread{'s' * (m['fill_threads'] != 1)}"
    if "torch_threads" in m:
        threads += f", torch {m['torch_threads']}"
    out.append(f"machine: {m['cpu']} | {m['cores']} cores ({m['usable_cores']} usable) | "
               f"{threads}")
    have = [f"{k} {v[k]}" for k in ("fastinit", "numpy", "numba", "torch", "jax",
                                    "tensorflow") if v.get(k)]
    out.append(f"versions: python {m['python']}, " + ", ".join(have))
    out.append(f"median of {cfg['repeat']} runs after 1 warm-up, implementations "
               f"interleaved round-robin; same buffer for all in-place fills")
    out.append("")
    header = ["method", "dtype", "size", "implementation", "median s", "Gelem/s", "GB/s",
              "ratio", "% write bw"]
    body = []
    refs = {(r["method"], r["dtype"], r["size"]): r for r in res["write_reference"]}
    prev = None
    for r in res["rows"]:
        key = (r["method"], r["dtype"], r["size"])
        if prev is not None and key != prev:
            _ref_line(body, refs.get(prev))
            body.append(None)
        prev = key
        if r["implementation"] == "fastinit":
            ratio = (f"{r['ratio']:.2f}x vs {LABELS[r['ratio_vs']]}"
                     if r["ratio"] is not None else "-")
        else:
            ratio = f"{r['ratio']:.2f}x"
        pct = _fmt_pct(r["pct_write_bw"])
        body.append([r["method"], r["dtype"], fmt_size(r["size"]),
                     f"{LABELS[r['implementation']]} {r['api']}".strip()
                     if r["implementation"] != "fastinit" else "fastinit",
                     _fmt_s(r["median_s"]), f"{r['gelem_per_s']:.3f}",
                     f"{r['gb_per_s']:.2f}", ratio, pct])
    if prev is not None:
        _ref_line(body, refs.get(prev))
    out += _table(header, [b or [] for b in body], right={4, 5, 6, 7, 8})
    out.append("")
    out.append("ratio = fastinit speed / that implementation's speed (above 1: fastinit is "
               "faster); fastinit's row: vs the fastest peer.")
    out.append("% write bw = time of a zero fill of the same buffer (the faster of torch "
               "Tensor.zero_ and numpy ndarray.fill(0), the '(zero fill)' rows) / the "
               "implementation's time.")
    allocating = [LABELS[n] for n in ALLOCATING if n not in res["unavailable"]
                  and n in cfg["peers"]]
    if allocating:
        one = len(allocating) == 1
        out.append(f"{' and '.join(allocating)} cannot fill a given buffer: "
                   f"{'its' if one else 'their'} times include allocating a new output.")
    notes = _skip_notes(res)
    if notes:
        out.append("skipped:")
        out += [f"  {n}" for n in notes]
    out.append("")
    out += _overheads_report(res)
    return "\n".join(out) + "\n"


def _ref_line(body, ref):
    if ref is None:
        return
    body.append(["", "", "", f"(zero fill: {LABELS[ref['implementation']]} {ref['api']})",
                 _fmt_s(ref["median_s"]), "", f"{ref['gb_per_s']:.2f}", "", "100%"])


def _skip_notes(res):
    notes = [f"{name}: {reason}" for name, reason in res["unavailable"].items()]
    seen = {}
    for s in res["skipped"]:
        seen.setdefault((s["implementation"], s["reason"]), []).append(
            f"{s['method']} {s['dtype']}")
    for (name, reason), where in seen.items():
        where = list(dict.fromkeys(where))
        notes.append(f"{name} ({', '.join(where)}): {reason}")
    return notes


def _overheads_report(res):
    out = ["scaling and overheads (fastinit uniform, float32)"]
    sc = res["scaling"]
    runs = "; ".join(f"{r['threads']} thread{'s' * (r['threads'] != 1)} "
                     f"{_fmt_s(r['median_s'])} s ({r['gelem_per_s']:.3f} Gelem/s)"
                     for r in sc["runs"])
    speed = ", ".join(f"{r['speedup_vs_1']:.2f}x with {r['threads']}"
                      for r in sc["runs"] if r["threads"] != 1)
    line = f"  fill threads, size {fmt_size(sc['size'])}: {runs}"
    if speed:
        line += f"; speedup over 1 thread: {speed}"
    out.append(line)
    if not sc["parallel"]:
        out.append(f"    (below fastinit's parallel threshold of {sc['parallel_min']} "
                   f"elements: every count runs on one thread)")
    rss = res["overheads"]["rss"]
    if "skipped" in rss:
        out.append(f"  peak RSS growth of one fill: skipped ({rss['skipped']})")
    else:
        line = (f"  peak RSS growth of one fill into a preallocated, resident "
                f"{rss['buffer_bytes'] / 2**20:.0f} MiB buffer (fresh subprocess, "
                f"ru_maxrss): {rss['growth_mib']:.2f} MiB = "
                f"{rss['growth_pct_of_buffer']:.2f}% of the buffer")
        if rss.get("hidden_below_mib", 0) >= 1:
            line += (f" (peak not reset: growth under {rss['hidden_below_mib']:.0f} MiB "
                     f"would not show)")
        out.append(line)
    pc = res["overheads"]["per_call"]
    runs = "; ".join(f"{r['api']} {_fmt_us(r['per_call_s'])}" for r in pc["runs"])
    out.append(f"  per call, {pc['size']} elements (median of {pc['batches']} batches of "
               f"{pc['calls_per_batch']} calls): {runs}")
    if "ratio_vs_torch" in pc:
        out.append(f"    ratio (torch time / fastinit time): {pc['ratio_vs_torch']:.2f}x "
                   f"on a NumPy array, {pc['ratio_vs_torch_on_torch_tensor']:.2f}x on a "
                   f"torch tensor")
    return out
