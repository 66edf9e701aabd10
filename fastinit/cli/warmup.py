"""Compile every CPU kernel ahead of time into the disk cache (for images and CI).

``fastinit warmup`` runs one small fill of every distribution for every
dtype, so that Numba compiles each kernel entry point a fill can use (a
large fill runs the same ones on several threads; constant fills use none)
and its object code goes to the disk cache (fastinit/backends/_native.py);
later processes link it instead of compiling, without importing Numba. It
prints where the cache lives. Exit status 1 when no cache can be written
(the kernels would compile in memory, in every process);
``NUMBA_CACHE_DIR`` chooses the directory. Run it again: it then links
every kernel and compiles none.

The kernels compile side by side in ``--jobs`` processes, this one
included. Units are grouped by distribution and compute precision (float32
for float32, bfloat16 and float16; float64), and a group runs in one
process, which compiles the functions its kernels share once; the groups
are dealt out by their estimated cost, the costliest first, each to the
least loaded process. Only the entry points are cached, each with
everything it calls compiled in, one file each, written to a temporary
name and renamed, so processes compiling the same one at once each leave a
whole file. Worker processes start only once a kernel has to compile: with
a full cache everything is linked here.
"""

import os
import sys
import time

from ._args import int_arg

DTYPES = ("float32", "bfloat16", "float16", "float64")
DRAWS = ("uniform", "normal", "truncated_normal")
EXIT_NO_CACHE = 1


def configure_parser(parser):
    parser.add_argument("--dtypes", default=",".join(DTYPES),
                        help="comma-separated dtypes to compile for (default: all: "
                             "%(default)s)")
    parser.add_argument("--jobs", type=int_arg("--jobs", 1),
                        default=max(1, min(os.cpu_count() or 1, 2 * len(DRAWS))),
                        help="processes compiling at once, this one included "
                             "(default: %(default)s: the number of CPUs, up to the "
                             "number of unit groups)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _dtypes(text, parser):
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in DTYPES]
    if bad or not names:
        parser.error(f"argument --dtypes: expected names among {', '.join(DTYPES)}, "
                     f"got {text!r}")
    return list(dict.fromkeys(names))


# a unit's estimated compile cost (seconds on the development VM), by kind
COST = {"truncated_normal": 5.0, "uniform": 3.5, "normal": 3.0}


def units(dtypes):
    """(group, label, kind, dtype, n) for every kernel a fill of ``dtypes`` can
    use: one small fill of each distribution and dtype. A group is (kind,
    compute precision): its units share the functions their kernels call, so
    one process runs it."""
    from ..kernels._abi import DTYPES as SPECS
    return [((name, SPECS[dt].compute), f"{name} {dt}", name, dt, 8)
            for name in DRAWS for dt in dtypes]


def _cost(unit, dtypes):
    """A unit's estimated cost: float16 uses bfloat16's kernels (16-bit
    output), so with bfloat16 in the run it only loads them."""
    _, _, kind, dtype, _ = unit
    return 0.1 if dtype == "float16" and "bfloat16" in dtypes else COST[kind]


def deal(todo, shares, dtypes):
    """``shares`` (lists of units, one per process; the first is this
    process's, possibly already started) extended with ``todo``'s groups,
    costliest first, each to the share with the least estimated cost."""
    groups = {}
    for u in todo:
        groups.setdefault(u[0], []).append(u)
    cost = {key: sum(_cost(u, dtypes) for u in us) for key, us in groups.items()}
    load = [sum(_cost(u, dtypes) for u in share) for share in shares]
    for key in sorted(groups, key=lambda g: -cost[g]):
        i = load.index(min(load))
        shares[i].extend(groups[key])
        load[i] += cost[key]
    return shares


def run_unit(kind, dtype, n):
    """One fill that compiles (or loads) the kernels of one unit."""
    import fastinit as fi
    getattr(fi, kind)(fi.empty((n,), dtype), seed=0)


def _worker(todo, done):
    """A worker process: run ``todo``'s units, put each label on ``done``, then
    (None, compiled, loaded)."""
    for _, label, kind, dtype, n in todo:
        run_unit(kind, dtype, n)
        done.put((label, 0, 0))
    done.put((None, *_kernel_stats()))


def _kernel_stats():
    """(compiled, loaded): the entry points this process compiled and loaded
    from the disk cache so far."""
    from ..backends import _native
    return _native.LOADS["built"], _native.LOADS["loaded"]


def _run_shares(shares, bar):
    """Run ``shares[1:]`` in fresh processes and ``shares[0]`` here, side by
    side; returns the workers' (compiled, loaded)."""
    import multiprocessing
    import queue as queues
    ctx = multiprocessing.get_context("spawn")    # no fork of a process that runs Numba
    done = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(share, done), daemon=True)
             for share in shares[1:] if share]
    for p in procs:
        p.start()
    compiled = loaded = finished = 0

    def collect(timeout):
        nonlocal compiled, loaded, finished
        try:
            label, c, h = done.get(timeout=timeout) if timeout else done.get_nowait()
        except queues.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError("a warm-up worker process failed (its error is above)")
            return
        if label is None:
            finished += 1
            compiled, loaded = compiled + c, loaded + h
        else:
            bar.set_postfix_str(label, refresh=True)
            bar.update(1)

    try:
        for _, label, kind, dtype, n in shares[0]:
            bar.set_postfix_str(label, refresh=True)
            run_unit(kind, dtype, n)
            bar.update(1)
            collect(0)
        while finished < len(procs):
            collect(0.5)
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
    return compiled, loaded


def _cache_files(path):
    """The cache files of the current key under ``path``."""
    from ..backends import _native
    from ..kernels._abi import CPU_ENTRIES, cpu_entry_name
    return [f for f in (_native.file_path(path, cpu_entry_name(*e)) for e in CPU_ENTRIES)
            if os.path.isfile(f)]


def run(args, parser):
    dtypes = _dtypes(args.dtypes, parser)
    from ..backends import _native
    path = _native.cache_path()
    if path is None:
        print("fastinit warmup: error: no writable cache directory: the kernels would "
              "compile in memory in every process; set NUMBA_CACHE_DIR to a writable "
              "directory", file=sys.stderr)
        return EXIT_NO_CACHE
    print(f"fastinit warmup: kernel cache: {path}", flush=True)
    from .. import _progress
    todo = units(dtypes)
    rest = list(todo)
    t0 = time.perf_counter()
    enabled = False if args.quiet else None      # None: shown once it passes a second
    with _progress.bar(len(todo), "compiling kernels", enabled=enabled, unit="fill") as bar:
        # here, until a unit has to compile (every one, with --jobs 1): with
        # a full cache no worker process is started
        mine = []
        while rest:
            unit = rest.pop(0)
            _, label, kind, dtype, n = unit
            bar.set_postfix_str(label, refresh=True)
            before = _kernel_stats()[0]
            run_unit(kind, dtype, n)
            bar.update(1)
            if args.jobs > 1 and _kernel_stats()[0] > before:
                # the rest of this unit's group stays here (it shares what
                # was just compiled); the other groups are dealt out
                mine = [u for u in rest if u[0] == unit[0]]
                rest = [u for u in rest if u[0] != unit[0]]
                break
        c = h = 0
        if mine or rest:
            shares = deal(rest, [mine] + [[] for _ in range(args.jobs - 1)], dtypes)
            c, h = _run_shares(shares, bar)
        compiled, loaded = _kernel_stats()
        compiled, loaded = compiled + c, loaded + h
    seconds = time.perf_counter() - t0
    written = _cache_files(path)
    print(f"fastinit warmup: {len(todo)} fills ({', '.join(dtypes)}) in {seconds:.1f} s: "
          f"{compiled} kernel entry points compiled, {loaded} loaded from the cache; "
          f"{len(written)} kernel files in {path}")
    if not written:
        print(f"fastinit warmup: error: nothing was written to {path}", file=sys.stderr)
        return EXIT_NO_CACHE
    return 0
