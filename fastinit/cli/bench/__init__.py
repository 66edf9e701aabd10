"""Time fastinit's fills side by side with torch, NumPy, JAX and TensorFlow.

The ``fastinit bench`` command: its options and their checks, then the run
(:mod:`.measure`), the printed report (:mod:`.report`), ``--json`` and
``--plot``. The implementations are in :mod:`.peers`, the machine
information in :mod:`.system`.
"""

import json
import re
import sys

from .._args import choices_arg, int_arg, list_arg, output_problem
from .measure import run_bench
from .peers import ITEMSIZE, PEERS
from .report import format_report
from .system import mem_available

# ``fastinit bench --help``
DESCRIPTION = """\
Time fastinit's fills side by side with torch, NumPy, JAX and TensorFlow.

For each method x dtype x size, every implementation fills (or, for JAX and
TensorFlow, which cannot write into a given buffer, returns) the same number
of elements from the same distribution: U[0, 1), N(0, 1), and N(0, 1)
truncated to [-2, 2]. fastinit, torch and NumPy write into one shared,
pre-faulted buffer. Each entry is the median of --repeat timed calls after
one warm-up call; within each repeat the implementations of a row run
round-robin (starting one further along each repeat), so a drift in machine
speed hits all of them alike. A plain zero fill of the same buffer (the
faster of torch's Tensor.zero_ and NumPy's ndarray.fill(0)) is timed in the
same rotation and gives the write-bandwidth reference.

ratio = fastinit's speed / that implementation's speed (above 1: fastinit is
faster); on fastinit's own row it is the ratio to the fastest peer.

A second section times fastinit with 1 and 2 fill threads, the peak RSS
growth of one fill into a preallocated 1 GiB float32 buffer (in a fresh
subprocess), and the per-call time of a 1024-element fill.

Peers are imported here, lazily, never at ``import fastinit``; a peer that
is not installed, or that has no matching operation, is skipped and the
report says why.
"""

METHODS = ("uniform", "normal", "truncated_normal")
DTYPES = ("float32", "bfloat16", "float16", "float64")
DEFAULT_DTYPES = ("float32", "bfloat16")
DEFAULT_SIZES = (2 ** 26,)
DEFAULT_REPEAT = 5
QUICK_SIZES = (2 ** 16,)
QUICK_REPEAT = 3
RSS_MIB = 1024
QUICK_RSS_MIB = 16
PER_CALL = (60, 100)             # (batches, calls per batch); the median batch is reported
QUICK_PER_CALL = (10, 20)
MAX_SIZE = 2 ** 40
_SIZE_RE = re.compile(r"(\d+)(?:(\*\*|\^|<<)(\d+))?")


def parse_size(text):
    """An element count: ``"4096"``, ``"67_108_864"``, ``"2**26"``, ``"2^26"`` or ``"1<<26"``."""
    t = str(text).replace("_", "").replace(" ", "")
    m = _SIZE_RE.fullmatch(t)
    if not m:
        raise ValueError(f"not a size: {text!r} (use an integer such as 4096, "
                         f"or a power such as 2**26)")
    base = int(m.group(1))
    if m.group(2):
        exp = int(m.group(3))
        if exp > 64:
            raise ValueError(f"size {text!r} is too large (at most {MAX_SIZE} = 2**40)")
        value = base << exp if m.group(2) == "<<" else base ** exp
    else:
        value = base
    if value < 1:
        raise ValueError(f"size must be at least 1, got {text!r}")
    if value > MAX_SIZE:
        raise ValueError(f"size {text!r} is too large (at most {MAX_SIZE} = 2**40)")
    return value


def configure_parser(parser):
    """Add ``fastinit bench``'s options to ``parser`` (see :mod:`fastinit.cli`)."""
    parser.description = DESCRIPTION
    parser.add_argument("--sizes", type=list_arg(parse_size, "sizes"), default=None,
                        metavar="LIST", help="comma-separated element counts, integers or "
                                             "powers such as 2**26 (default 2**26; 2**16 "
                                             "with --quick)")
    parser.add_argument("--dtypes", type=choices_arg(DTYPES, "dtypes"), default=None,
                        metavar="LIST", help=f"comma-separated, from {', '.join(DTYPES)} "
                                             f"(default {','.join(DEFAULT_DTYPES)})")
    parser.add_argument("--methods", type=choices_arg(METHODS, "methods"), default=None,
                        metavar="LIST", help=f"comma-separated, from {', '.join(METHODS)} "
                                             f"(default all)")
    parser.add_argument("--peers", type=choices_arg(PEERS, "peers"), default=None,
                        metavar="LIST", help=f"implementations to compare with, from "
                                             f"{', '.join(PEERS)} (default all installed)")
    parser.add_argument("--threads", type=int_arg("--threads", 1), default=None, metavar="N",
                        help="fastinit's fill threads for the main table (default: "
                             "fastinit.get_num_threads(), normally one per usable core); "
                             "peers keep their own defaults")
    parser.add_argument("--repeat", type=int_arg("--repeat", 1), default=None, metavar="N",
                        help=f"timed runs per entry after one warm-up; the median is "
                             f"reported (default {DEFAULT_REPEAT}; {QUICK_REPEAT} with --quick)")
    parser.add_argument("--rss-mib", type=int_arg("--rss-mib", 0), default=None, metavar="N",
                        help=f"buffer size for the peak-RSS check, MiB; 0 skips it "
                             f"(default {RSS_MIB}; {QUICK_RSS_MIB} with --quick)")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write the rows and machine information as JSON to PATH")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few repeats, for smoke tests")
    parser.add_argument("--plot", metavar="PATH", default=None,
                        help="also draw throughput against size, log-log, one line per "
                             "implementation, to PATH (.png, .svg or .pdf; needs matplotlib)")
    return parser


def resolve_config(args, parser):
    """The run's settings from parsed ``args``; argument errors go to ``parser.error``."""
    import fastinit as fi
    from fastinit.backends._threads import usable_cpus
    quick = bool(args.quick)
    cfg = {
        "sizes": list(args.sizes or (QUICK_SIZES if quick else DEFAULT_SIZES)),
        "dtypes": list(args.dtypes or DEFAULT_DTYPES),
        "methods": list(args.methods or METHODS),
        "peers": list(args.peers or PEERS),
        "repeat": args.repeat or (QUICK_REPEAT if quick else DEFAULT_REPEAT),
        "threads": args.threads,
        "rss_mib": args.rss_mib if args.rss_mib is not None else (QUICK_RSS_MIB if quick
                                                                  else RSS_MIB),
        "per_call": QUICK_PER_CALL if quick else PER_CALL,
        "quick": quick,
        "json": args.json,
        "plot": getattr(args, "plot", None),
    }
    max_threads = usable_cpus()
    if cfg["threads"] is None:
        cfg["threads"] = fi.get_num_threads()
    elif cfg["threads"] > max_threads:
        parser.error(f"--threads must be between 1 and {max_threads} (the CPUs this "
                     f"process may run on), got {cfg['threads']}")
    if cfg["json"] is not None:
        problem = output_problem(cfg["json"])
        if problem:
            parser.error(f"--json {problem}")
    if cfg["plot"] is not None:
        from .. import plot
        problem = plot.check_path(cfg["plot"])
        if problem is None and not plot.available():
            problem = "needs matplotlib, which is not installed: pip install 'fastinit[plot]'"
        if problem:
            parser.error(f"--plot {problem}")
    avail = mem_available()
    if avail is not None:
        need = max(cfg["sizes"]) * max(ITEMSIZE[d] for d in cfg["dtypes"])
        if 2 * need > avail:   # the buffer, plus a new output for JAX/TensorFlow
            parser.error(f"--sizes {max(cfg['sizes'])} in {max(cfg['dtypes'], key=ITEMSIZE.get)}"
                         f" needs about {2 * need / 2**30:.1f} GiB, but only "
                         f"{avail / 2**30:.1f} GiB of memory is available")
    return cfg


def run(args, parser):
    """Entry point of ``fastinit bench``: measure, print the report, write JSON."""
    cfg = resolve_config(args, parser)
    log = _progress if sys.stderr.isatty() else None
    result = run_bench(cfg, log=log)
    result["command"] = " ".join(["fastinit"] + list(getattr(args, "_argv", None) or []))
    sys.stdout.write(format_report(result))
    sys.stdout.flush()
    if cfg["json"] is not None:
        with open(cfg["json"], "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        print(f"wrote {cfg['json']}", file=sys.stderr)
    if cfg.get("plot") is not None:
        from .. import plot
        try:
            plot.plot_bench(result, cfg["plot"])
        except (OSError, ValueError) as exc:
            print(f"fastinit bench: error: cannot write the plot {cfg['plot']!r}: {exc}",
                  file=sys.stderr)
            return 1
        print(f"wrote {cfg['plot']}", file=sys.stderr)
    return 0


def _progress(msg):
    print(f"[fastinit bench] {msg}", file=sys.stderr, flush=True)
