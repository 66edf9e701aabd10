"""Time fastinit's fills side by side with torch, NumPy, JAX and TensorFlow.

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

A second section times fastinit with 1 and 2 Numba threads, the peak RSS
growth of one fill into a preallocated 1 GiB float32 buffer (in a fresh
subprocess), and the per-call time of a 1024-element fill.

Peers are imported here, lazily, never at ``import fastinit``; a peer that
is not installed, or that has no matching operation, is skipped and the
report says why.
"""

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import numpy as np

from .cli import int_arg

METHODS = ("uniform", "normal", "truncated_normal")
DTYPES = ("float32", "bfloat16", "float16", "float64")
DEFAULT_DTYPES = ("float32", "bfloat16")
DEFAULT_SIZES = (2 ** 26,)
DEFAULT_REPEAT = 5
QUICK_SIZES = (2 ** 16,)
QUICK_REPEAT = 3
RSS_MIB = 1024
QUICK_RSS_MIB = 16
PER_CALL_SIZE = 1024
PER_CALL = (60, 100)             # (batches, calls per batch); the median batch is reported
QUICK_PER_CALL = (10, 20)
PEERS = ("torch", "numpy", "jax", "tensorflow")
SEED = 0
TRUNC_BOUNDS = (-2.0, 2.0)       # in units of std, the default of torch, JAX and TensorFlow
MAX_SIZE = 2 ** 40
ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
BITS = {"float32": np.uint32, "bfloat16": np.uint16, "float16": np.uint16,
        "float64": np.uint64}
SCHEMA = "fastinit-bench/1"


# --- argument parsing ----------------------------------------------------------
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


def _split(text, what):
    items = [s.strip() for s in str(text).split(",")]
    if not text.strip() or any(not s for s in items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, "
                                         f"got {text!r}")
    return list(dict.fromkeys(items))          # de-duplicated, order kept


def _sizes_arg(text):
    out = []
    for item in _split(text, "sizes"):
        try:
            out.append(parse_size(item))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return list(dict.fromkeys(out))


def _choices_arg(allowed, what):
    def parse(text):
        items = _split(text, what)
        if items == ["all"]:
            return list(allowed)
        bad = [s for s in items if s not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(map(repr, bad))}; choose from "
                f"{', '.join(allowed)} (or 'all')")
        return items
    return parse


def configure_parser(parser):
    """Add ``fastinit bench``'s options to ``parser`` (see :mod:`fastinit.cli`)."""
    parser.description = __doc__
    parser.add_argument("--sizes", type=_sizes_arg, default=None, metavar="LIST",
                        help="comma-separated element counts, integers or powers such as "
                             "2**26 (default 2**26; 2**16 with --quick)")
    parser.add_argument("--dtypes", type=_choices_arg(DTYPES, "dtypes"), default=None,
                        metavar="LIST", help=f"comma-separated, from {', '.join(DTYPES)} "
                                             f"(default {','.join(DEFAULT_DTYPES)})")
    parser.add_argument("--methods", type=_choices_arg(METHODS, "methods"), default=None,
                        metavar="LIST", help=f"comma-separated, from {', '.join(METHODS)} "
                                             f"(default all)")
    parser.add_argument("--peers", type=_choices_arg(PEERS, "peers"), default=None,
                        metavar="LIST", help=f"implementations to compare with, from "
                                             f"{', '.join(PEERS)} (default all installed)")
    parser.add_argument("--threads", type=int_arg("--threads", 1), default=None, metavar="N",
                        help="Numba threads for the main table (default: numba's current "
                             "count, normally one per core); peers keep their own defaults")
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


def _mem_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def resolve_config(args, parser):
    """The run's settings from parsed ``args``; argument errors go to ``parser.error``."""
    import numba

    # fastinit picks Numba's threading layer (TBB when it can) on import of its
    # kernel config; that must happen before anything asks Numba for threads,
    # or Numba starts its default layer instead
    import fastinit.kernels._config  # noqa: F401
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
    max_threads = numba.config.NUMBA_NUM_THREADS
    if cfg["threads"] is None:
        cfg["threads"] = numba.get_num_threads()
    elif cfg["threads"] > max_threads:
        parser.error(f"--threads must be between 1 and {max_threads} (Numba's thread pool "
                     f"size, NUMBA_NUM_THREADS), got {cfg['threads']}")
    if cfg["json"] is not None:
        path = os.path.abspath(cfg["json"])
        if os.path.isdir(path):
            parser.error(f"--json {cfg['json']!r} is a directory; give a file path")
        if not os.path.isdir(os.path.dirname(path)):
            parser.error(f"--json {cfg['json']!r}: directory {os.path.dirname(path)!r} "
                         f"does not exist")
        if not os.access(os.path.dirname(path), os.W_OK) or \
                (os.path.exists(path) and not os.access(path, os.W_OK)):
            parser.error(f"--json {cfg['json']!r} is not writable")
    if cfg["plot"] is not None:
        from . import plot
        problem = plot.check_path(cfg["plot"])
        if problem is None and not plot.available():
            problem = "needs matplotlib, which is not installed: pip install 'fastinit[plot]'"
        if problem:
            parser.error(f"--plot {problem}")
    avail = _mem_available()
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
        from . import plot
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


# --- implementations -----------------------------------------------------------
class Skip(Exception):
    """This implementation has no matching operation for the row; the message says why."""


class Unavailable(Exception):
    """The peer cannot be imported; the message says why."""


class Buffer:
    """One pre-faulted, 64-byte-aligned buffer of ``size`` elements, seen by everyone."""

    def __init__(self, size, dtype):
        import fastinit as fi
        self.size, self.dtype = size, dtype
        self.array = fi.empty(size, dtype)
        self.bits = self.array.view(BITS[dtype])
        self.bits.fill(0)                       # fault every page in before timing
        self.nbytes = self.array.nbytes
        self._torch = None

    def torch(self):
        """A torch tensor over the same memory."""
        if self._torch is None:
            import torch
            if self.dtype == "bfloat16":       # torch.from_numpy has no ml_dtypes bfloat16
                self._torch = torch.from_numpy(self.array.view(np.int16)).view(torch.bfloat16)
            else:
                self._torch = torch.from_numpy(self.array)
        return self._torch


class Fastinit:
    name = "fastinit"
    label = "fastinit"

    def load(self):
        import fastinit
        self.fi = fastinit
        return fastinit.__version__

    def prepare(self, method, buf):
        fi, arr = self.fi, buf.array
        if method == "uniform":
            return "fastinit.uniform", lambda: fi.uniform(arr, 0.0, 1.0, seed=SEED)
        if method == "normal":
            return "fastinit.normal", lambda: fi.normal(arr, 0.0, 1.0, seed=SEED)
        a, b = TRUNC_BOUNDS
        return ("fastinit.truncated_normal",
                lambda: fi.truncated_normal(arr, 0.0, 1.0, a, b, seed=SEED))

    def zero(self, buf):
        return None


class TorchPeer:
    name = "torch"
    label = "torch"

    def load(self):
        try:
            import torch
        except ImportError as exc:
            raise Unavailable(f"not installed ({exc})") from None
        self.torch = torch
        return torch.__version__

    def prepare(self, method, buf):
        t = buf.torch()
        if method == "uniform":
            return "Tensor.uniform_", lambda: t.uniform_(0.0, 1.0)
        if method == "normal":
            return "Tensor.normal_", lambda: t.normal_(0.0, 1.0)
        a, b = TRUNC_BOUNDS
        init = self.torch.nn.init
        return "nn.init.trunc_normal_", lambda: init.trunc_normal_(t, 0.0, 1.0, a, b)

    def zero(self, buf):
        t = buf.torch()
        return "Tensor.zero_", t.zero_

    def threads(self):
        return self.torch.get_num_threads()


class NumpyPeer:
    name = "numpy"
    label = "numpy"

    def load(self):
        return np.__version__

    def prepare(self, method, buf):
        if buf.dtype not in ("float32", "float64"):
            raise Skip(f"numpy.random.Generator has no {buf.dtype} output (float32 and "
                       f"float64 only); timing a float32 draw plus a conversion would "
                       f"not be a native path")
        if method == "truncated_normal":
            raise Skip("numpy.random.Generator has no truncated normal")
        rng = np.random.default_rng(SEED)
        arr, dt = buf.array, buf.array.dtype
        if method == "uniform":
            return "Generator.random", lambda: rng.random(out=arr, dtype=dt)
        return "Generator.standard_normal", lambda: rng.standard_normal(out=arr, dtype=dt)

    def zero(self, buf):
        bits = buf.bits
        return "ndarray.fill(0)", lambda: bits.fill(0)


class JaxPeer:
    name = "jax"
    label = "jax"
    allocates = True

    def load(self):
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        try:
            import jax
            import jax.numpy as jnp
        except ImportError as exc:
            raise Unavailable(f"not installed ({exc})") from None
        except Exception as exc:                # a broken install: say so, carry on
            raise Unavailable(f"import failed: {type(exc).__name__}: {exc}") from None
        self.jax, self.jnp = jax, jnp
        try:
            self.device = jax.devices("cpu")[0]
        except Exception as exc:
            raise Unavailable(f"no CPU device: {exc}") from None
        return jax.__version__

    def prepare(self, method, buf):
        jax, jnp = self.jax, self.jnp
        if buf.dtype == "float64" and not jax.config.read("jax_enable_x64"):
            raise Skip("JAX runs with jax_enable_x64 off, so float64 would silently be "
                       "float32")
        dt = getattr(jnp, buf.dtype)
        n = buf.size
        make_key = getattr(jax.random, "key", jax.random.PRNGKey)
        key = jax.device_put(make_key(SEED), self.device)
        if method == "uniform":
            api, f = "random.uniform", jax.jit(lambda k: jax.random.uniform(k, (n,), dt))
        elif method == "normal":
            api, f = "random.normal", jax.jit(lambda k: jax.random.normal(k, (n,), dt))
        else:
            a, b = TRUNC_BOUNDS
            api, f = "random.truncated_normal", jax.jit(
                lambda k: jax.random.truncated_normal(k, a, b, (n,), dt))
        return api, lambda: f(key).block_until_ready()

    def zero(self, buf):
        return None


class TensorflowPeer:
    name = "tensorflow"
    label = "tf"
    allocates = True

    def load(self):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import tensorflow as tf
        except ImportError as exc:
            raise Unavailable(f"not installed ({exc})") from None
        except Exception as exc:
            raise Unavailable(f"import failed: {type(exc).__name__}: {exc}") from None
        self.tf = tf
        return tf.__version__

    def prepare(self, method, buf):
        tf = self.tf
        dt = getattr(tf, buf.dtype)
        shape = (buf.size,)
        if method == "uniform":
            api, op = "random.uniform", lambda: tf.random.uniform(shape, 0.0, 1.0, dtype=dt)
        elif method == "normal":
            api, op = "random.normal", lambda: tf.random.normal(shape, 0.0, 1.0, dtype=dt)
        else:                                   # TensorFlow truncates at 2 std, fixed
            api, op = "random.truncated_normal", lambda: tf.random.truncated_normal(
                shape, 0.0, 1.0, dtype=dt)

        def fn():
            with tf.device("/CPU:0"):
                return op()                    # eager CPU ops finish before returning
        return api, fn

    def zero(self, buf):
        return None


PEER_CLASSES = {"torch": TorchPeer, "numpy": NumpyPeer, "jax": JaxPeer,
                "tensorflow": TensorflowPeer}


def load_peers(names):
    """(loaded peers, {name: reason} for those that could not be imported)."""
    loaded, unavailable = [], {}
    for name in names:
        peer = PEER_CLASSES[name]()
        try:
            peer.version = peer.load()
        except Unavailable as exc:
            unavailable[name] = str(exc)
        else:
            loaded.append(peer)
    return loaded, unavailable


# --- timing --------------------------------------------------------------------
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


def _median(ts):
    return max(statistics.median(ts), 1e-12)


def summarize(method, dtype, size, impls, times, refs):
    """Rows for one (method, dtype, size) from the raw timings.

    ``impls``: [(implementation, api)], fastinit first; ``refs``:
    [(reference key, api)] of the zero fills; ``times``: {key: [seconds]}.
    Returns (rows, reference) where reference is the faster zero fill.
    """
    nbytes = size * ITEMSIZE[dtype]
    med = {key: _median(times[key]) for key in times}
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


def zero_fillers(peers):
    """The implementations whose zero fill is the write-bandwidth reference.

    torch's Tensor.zero_ when torch can be imported, and NumPy's fill(0),
    whether or not they are among the compared peers.
    """
    have = {p.name: p for p in peers}
    out = []
    for name in ("torch", "numpy"):
        p = have.get(name)
        if p is None:
            p = PEER_CLASSES[name]()
            try:
                p.version = p.load()
            except Unavailable:
                continue
        out.append(p)
    return out


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
    """fastinit uniform float32 at ``size`` with each Numba thread count."""
    import numba

    import fastinit as fi
    from fastinit.backends.cpu import PARALLEL_MIN
    saved = numba.get_num_threads()
    buf = Buffer(size, "float32")
    arr = buf.array
    items = [(k, lambda: fi.uniform(arr, 0.0, 1.0, seed=SEED),
              lambda k=k: numba.set_num_threads(k)) for k in thread_counts]
    try:
        times = interleave(items, repeat)
    finally:
        numba.set_num_threads(saved)
    med = {k: _median(times[k]) for k in thread_counts}
    base = med[thread_counts[0]]
    return {"method": "uniform", "dtype": "float32", "size": size,
            "parallel": size >= PARALLEL_MIN, "parallel_min": PARALLEL_MIN,
            "runs": [{"threads": k, "median_s": med[k], "times_s": times[k],
                      "gelem_per_s": size / med[k] / 1e9,
                      "speedup_vs_1": base / med[k]} for k in thread_counts]}


_RSS_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"

_RSS_SCRIPT = r"""
import gc, json, resource, sys
import numba
import fastinit as fi
import fastinit.kernels._config                         # fastinit's threading layer first
from fastinit.backends.cpu import PARALLEL_MIN
n, threads = int(sys.argv[1]), int(sys.argv[2])
numba.set_num_threads(threads)
fi.uniform(fi.empty(PARALLEL_MIN, "float32"), seed=0)   # load the kernel: not part of a fill
buf = fi.empty(n, "float32")
buf.view("uint32").fill(0)                              # preallocated and resident
gc.collect()
scale = 1 if sys.platform == "darwin" else 1024         # ru_maxrss: bytes on macOS, else KiB

def rss_now():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None

# ru_maxrss is a peak: growth that stays under an earlier, higher peak (Numba's
# start-up) would not show. On Linux, writing 5 to clear_refs resets the peak to
# the current RSS; where that is refused, the hidden headroom is reported.
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    reset = True
except OSError:
    reset = False
now = rss_now()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
fi.uniform(buf, 0.0, 1.0, seed=1)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
print(json.dumps({"nbytes": buf.nbytes, "maxrss_before": before, "maxrss_after": after,
                  "rss_before": now, "peak_reset": reset}))
"""


def measure_rss(mib, threads):
    """Peak RSS growth of one fastinit uniform fill into a resident ``mib`` MiB buffer."""
    nbytes = mib * 2 ** 20
    n = nbytes // 4
    avail = _mem_available()
    if avail is not None and nbytes + 2 ** 29 > avail:
        return {"skipped": f"needs {mib} MiB plus headroom, {avail / 2**20:.0f} MiB available"}
    # On Linux a process inherits, in ru_maxrss, the peak RSS of the process it
    # was exec'd from: started straight from this (large) process, the child's
    # ru_maxrss would begin at our peak and hide the fill. A small launcher in
    # between gives the measuring process a small starting peak.
    cmd = [sys.executable, "-c", _RSS_LAUNCHER,
           sys.executable, "-c", _RSS_SCRIPT, str(n), str(threads)]
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
    per = {k: _median(times[k]) / per_batch for k, _, _ in fns}
    out = {"size": PER_CALL_SIZE, "dtype": "float32", "batches": batches,
           "calls_per_batch": per_batch,
           "runs": [{"implementation": k, "api": api, "per_call_s": per[k]}
                    for k, api, _ in fns]}
    if "torch" in per:
        out["ratio_vs_torch"] = per["torch"] / per["fastinit"]
        out["ratio_vs_torch_on_torch_tensor"] = per["torch"] / per["fastinit_on_torch"]
    return out


# --- machine -------------------------------------------------------------------
def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model", "Hardware") \
                        and val.strip():
                    return val.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _dist_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(threads, peers):
    import numba
    from fastinit.kernels import _config
    try:
        layer = numba.threading_layer()
    except ValueError:                          # no parallel kernel has run yet
        layer = _config.THREADING_LAYER
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable,
            "machine": platform.machine(), "platform": platform.platform(),
            "python": platform.python_version(), "numba_threading_layer": layer,
            "numba_threads": threads, "numba_max_threads": numba.config.NUMBA_NUM_THREADS}
    for p in peers:
        if p.name == "torch":
            info["torch_threads"] = p.threads()
    return info


def versions(peers):
    import numba

    import fastinit
    v = {"fastinit": fastinit.__version__, "numpy": np.__version__,
         "numba": numba.__version__, "ml_dtypes": _dist_version("ml_dtypes"),
         "torch": _dist_version("torch"), "jax": _dist_version("jax"),
         "jaxlib": _dist_version("jaxlib"),
         "tensorflow": _dist_version("tensorflow") or _dist_version("tensorflow-cpu")}
    for p in peers:
        v[p.name] = p.version
    return v


# --- the run -------------------------------------------------------------------
def run_bench(cfg, log=None):
    """Measure everything ``cfg`` (see :func:`resolve_config`) asks; a JSON-ready dict."""
    import numba

    import fastinit as fi
    import fastinit.kernels._config  # noqa: F401  (before any Numba thread call)
    from fastinit.backends.cpu import PARALLEL_MIN
    started = time.time()
    log = log or (lambda msg: None)
    saved = numba.get_num_threads()
    fast = Fastinit()
    fast.version = fast.load()
    peers, unavailable = load_peers(cfg["peers"])
    fillers = zero_fillers(peers)
    torch_peer = next((p for p in fillers if p.name == "torch"), None)
    rows, references, skipped = [], [], []
    try:
        numba.set_num_threads(cfg["threads"])
        for dtype in cfg["dtypes"]:             # load the kernels: not part of any timing
            fi.uniform(fi.empty(PARALLEL_MIN, dtype), seed=SEED)
        machine = machine_info(cfg["threads"], peers + [f for f in fillers if f not in peers])
        total = len(cfg["methods"]) * len(cfg["dtypes"]) * len(cfg["sizes"])
        i = 0
        for method in cfg["methods"]:
            for dtype in cfg["dtypes"]:
                for size in cfg["sizes"]:
                    i += 1
                    log(f"[{i}/{total}] {method} {dtype} {_fmt_size(size)}")
                    numba.set_num_threads(cfg["threads"])
                    r, ref = measure_row(method, dtype, size, fast, peers, cfg["repeat"],
                                         skipped, fillers)
                    rows += r
                    if ref is not None:
                        references.append(ref)
        main_size = max(cfg["sizes"])
        counts = sorted({k for k in (1, 2, numba.config.NUMBA_NUM_THREADS)
                         if k <= numba.config.NUMBA_NUM_THREADS})
        log(f"scaling: threads {counts}")
        scaling = measure_scaling(main_size, cfg["repeat"], counts)
        numba.set_num_threads(cfg["threads"])
        if cfg["rss_mib"]:
            log(f"peak RSS: {cfg['rss_mib']} MiB buffer in a subprocess")
            rss = measure_rss(cfg["rss_mib"], cfg["threads"])
        else:
            rss = {"skipped": "--rss-mib 0"}
        log("per-call overhead")
        per_call = measure_per_call(*cfg["per_call"], torch_peer)
    finally:
        numba.set_num_threads(saved)
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


# --- the report ----------------------------------------------------------------
def _fmt_size(n):
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


LABELS = {"fastinit": "fastinit", "torch": "torch", "numpy": "numpy", "jax": "jax",
          "tensorflow": "tf"}


def format_report(res):
    m, v = res["machine"], res["versions"]
    cfg = res["config"]
    out = []
    threads = f"{m['numba_threads']} numba thread{'s' * (m['numba_threads'] != 1)}"
    if "torch_threads" in m:
        threads += f", torch {m['torch_threads']}"
    out.append(f"machine: {m['cpu']} | {m['cores']} cores ({m['usable_cores']} usable) | "
               f"numba threading layer {m['numba_threading_layer']} | {threads}")
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
        body.append([r["method"], r["dtype"], _fmt_size(r["size"]),
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
    allocating = [LABELS[n] for n in ("jax", "tensorflow") if n not in res["unavailable"]
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
    line = f"  numba threads, size {_fmt_size(sc['size'])}: {runs}"
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
