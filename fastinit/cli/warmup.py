"""Compile every CPU kernel ahead of time into the disk cache (for images and CI).

``fastinit warmup`` runs one small fill of every distribution (and the
constant fill) for every dtype, on one thread and on all of them, so that
Numba compiles each kernel a fill can use and stores it in its disk cache;
later processes load them instead of compiling. It prints where the cache
lives. Exit status 1 when no cache can be written (the kernels would compile
in memory, in every process); ``NUMBA_CACHE_DIR`` chooses the directory.
Run it again: it then loads every kernel and compiles none.
"""

import os
import sys
import time

DTYPES = ("float32", "bfloat16", "float16", "float64")
EXIT_NO_CACHE = 1


def configure_parser(parser):
    parser.add_argument("--dtypes", default=",".join(DTYPES),
                        help="comma-separated dtypes to compile for (default: all: "
                             "%(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _dtypes(text, parser):
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in DTYPES]
    if bad or not names:
        parser.error(f"argument --dtypes: expected names among {', '.join(DTYPES)}, "
                     f"got {text!r}")
    return list(dict.fromkeys(names))


def units(dtypes):
    """(label, fill) for every kernel a fill of ``dtypes`` can use: each
    distribution on one thread (a small buffer) and on all threads (a buffer
    of the CPU backend's parallel size), and the parallel constant fill."""
    import fastinit as fi
    from ..backends import cpu
    draws = (("uniform", fi.uniform), ("normal", fi.normal),
             ("truncated_normal", fi.truncated_normal))
    out = []
    for dt in dtypes:
        for mode, n in (("serial", 8), ("parallel", cpu.PARALLEL_MIN)):
            for name, draw in draws:
                out.append((f"{name} {dt} {mode}",
                            lambda draw=draw, dt=dt, n=n: draw(fi.empty((n,), dt), seed=0)))
        out.append((f"constant {dt} parallel",
                    lambda dt=dt: fi.ones(fi.empty((cpu.PARALLEL_MIN,), dt))))
    return out


def _kernel_stats():
    """(compiled, loaded): the cache misses and hits of every kernel so far."""
    from ..kernels.cpu import fills
    from numba.core.registry import CPUDispatcher
    misses = hits = 0
    for obj in vars(fills).values():
        if isinstance(obj, CPUDispatcher):
            misses += sum(obj.stats.cache_misses.values())
            hits += sum(obj.stats.cache_hits.values())
    return misses, hits


def _index_files(path):
    return [f for f in os.listdir(path) if f.endswith(".nbi")] if os.path.isdir(path) else []


def run(args, parser):
    dtypes = _dtypes(args.dtypes, parser)
    from ..kernels.cpu import _config
    path = _config.cache_path()
    if path is None:
        print("fastinit warmup: error: no writable Numba cache directory: the kernels would "
              "compile in memory in every process; set NUMBA_CACHE_DIR to a writable "
              "directory", file=sys.stderr)
        return EXIT_NO_CACHE
    print(f"fastinit warmup: kernel cache: {path}", flush=True)
    from .. import _progress
    todo = units(dtypes)
    t0 = time.perf_counter()
    enabled = False if args.quiet else None      # None: shown once it passes a second
    with _progress.bar(len(todo), "compiling kernels", enabled=enabled, unit="fill") as bar:
        for label, fill in todo:
            bar.set_postfix_str(label, refresh=True)
            fill()
            bar.update(1)
    seconds = time.perf_counter() - t0
    compiled, loaded = _kernel_stats()
    written = _index_files(path)
    print(f"fastinit warmup: {len(todo)} fills ({', '.join(dtypes)}) in {seconds:.1f} s: "
          f"{compiled} kernel signatures compiled, {loaded} loaded from the cache; "
          f"{len(written)} index files in {path}")
    if not written:
        print(f"fastinit warmup: error: nothing was written to {path}", file=sys.stderr)
        return EXIT_NO_CACHE
    return 0
