"""Plots of ``fastinit bench`` results: throughput (Gelem/s) against size, log-log.

``fastinit bench --plot FILE.png`` calls :func:`plot_bench` on the run's own
measurements (the rows of its table); ``python -m fastinit.cli.plot
RESULT.json FILE.png`` redraws a saved ``--json`` result. One panel per method x dtype
(methods down, dtypes across), one line per implementation with the same
color in every panel, and the zero fill of the same buffer (the write
bandwidth reference) as a dashed gray line.

matplotlib is imported only when a plot is drawn, through its Agg canvas
(no pyplot, no GUI backend, nothing global changed).
"""

import os
import sys

from ._args import output_problem

FORMATS = (".png", ".svg", ".pdf")
_COLORS = {"fastinit": "#d62728", "torch": "#1f77b4", "numpy": "#2ca02c", "jax": "#9467bd",
           "tensorflow": "#ff7f0e"}
_MARKERS = {"fastinit": "o", "torch": "s", "numpy": "^", "jax": "D", "tensorflow": "v"}
_LABELS = {"tensorflow": "tf"}


def available():
    """True when matplotlib can be imported."""
    import importlib.util
    return importlib.util.find_spec("matplotlib") is not None


def check_path(path):
    """None if ``path`` can take a plot, else the reason it cannot (a string)."""
    ext = os.path.splitext(os.path.abspath(path))[1].lower()
    if not os.path.isdir(path) and ext not in FORMATS:
        return (f"{path!r}: unsupported extension {ext or '(none)'!r}; use "
                f"{', '.join(FORMATS)}")
    problem = output_problem(path, hint=" such as bench.png")
    return None if problem is None else str(problem)


def _ordered(values):
    return list(dict.fromkeys(values))


def plot_bench(result, path, *, title=None, dpi=110):
    """Draw ``result`` (what ``fastinit bench --json`` writes) to ``path``
    (.png, .svg or .pdf). Returns ``path``. A partial file is removed on error."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    rows = result.get("rows") or []
    if not rows:
        raise ValueError("the bench result has no rows to plot")
    cfg = result.get("config", {})
    methods = [m for m in cfg.get("methods", []) if any(r["method"] == m for r in rows)] \
        or _ordered(r["method"] for r in rows)
    dtypes = [d for d in cfg.get("dtypes", []) if any(r["dtype"] == d for r in rows)] \
        or _ordered(r["dtype"] for r in rows)
    impls = _ordered(r["implementation"] for r in rows)
    refs = result.get("write_reference") or []
    nr, nc = len(methods), len(dtypes)
    fig = Figure(figsize=(4.2 * nc + 0.6, 3.2 * nr + 1.3), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nr, nc, squeeze=False, sharex=True)
    sizes = sorted({r["size"] for r in rows})
    for i, method in enumerate(methods):
        for j, dtype in enumerate(dtypes):
            ax = axes[i][j]
            sel = [r for r in rows if r["method"] == method and r["dtype"] == dtype]
            for impl in impls:
                pts = sorted((r["size"], r["gelem_per_s"]) for r in sel
                             if r["implementation"] == impl)
                if not pts:
                    continue
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker=_MARKERS.get(impl, "o"), color=_COLORS.get(impl),
                        linewidth=2.2 if impl == "fastinit" else 1.4, markersize=5,
                        label=_LABELS.get(impl, impl))
            ref = sorted((r["size"], r["size"] / r["median_s"] / 1e9) for r in refs
                         if r["method"] == method and r["dtype"] == dtype)
            if ref:
                xs, ys = zip(*ref)
                ax.plot(xs, ys, linestyle="--", marker=".", color="0.55", linewidth=1.2,
                        label="zero fill")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{method}, {dtype}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            if i == nr - 1:
                ax.set_xlabel("elements")
            if j == 0:
                ax.set_ylabel("Gelem/s")
            if len(sizes) == 1:             # one size: keep the point away from the edge
                ax.set_xlim(sizes[0] / 2, sizes[0] * 2)
    handles = [Line2D([], [], color=_COLORS.get(n), marker=_MARKERS.get(n, "o"),
                      label=_LABELS.get(n, n)) for n in impls]
    if refs:
        handles.append(Line2D([], [], color="0.55", linestyle="--", marker=".",
                              label="zero fill (write bw)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 3 * nc),
               frameon=False)
    m = result.get("machine", {})
    if title is None:
        threads = m.get("fill_threads", m.get("numba_threads"))   # older JSON: numba_threads
        title = "fastinit bench: throughput vs size"
        if m:
            title += (f"\n{m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
                      f"{threads} fill thread{'s' * (threads != 1)}")
        if cfg.get("repeat"):
            title += f", median of {cfg['repeat']}"
    fig.suptitle(title, fontsize=10)
    try:
        fig.savefig(path, dpi=dpi)
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    return path


def main(argv=None):
    """``python -m fastinit.cli.plot RESULT.json OUT.png``: redraw a saved bench result."""
    import json
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) != 2:
        print("usage: python -m fastinit.cli.plot RESULT.json OUT.png", file=sys.stderr)
        return 2
    src, out = argv
    problem = check_path(out)
    if problem is None and not available():
        problem = "matplotlib is not installed: pip install 'fastinit[plot]'"
    if problem:
        print(f"fastinit.cli.plot: error: {problem}", file=sys.stderr)
        return 2
    try:
        with open(src) as f:
            result = json.load(f)
        plot_bench(result, out)
    except (OSError, ValueError, KeyError) as exc:
        print(f"fastinit.cli.plot: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
