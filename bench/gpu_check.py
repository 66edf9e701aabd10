"""One-shot GPU check for fastinit's CUDA path: tests, then bandwidth (issue 15, part 4).

Run from the repository on a machine with an NVIDIA GPU, torch (CUDA) and CuPy
(``pip install 'fastinit[cuda12]'`` or ``[cuda13]``; for the cuRAND test also
``nvidia-curand-cu12`` / ``nvidia-curand``, or a CUDA toolkit):

    python bench/gpu_check.py            # about 3-6 minutes on one H200

It is sized to finish within 10 minutes (tests at most PYTEST_TIMEOUT_S, the
benchmark about a minute), so a run under a 10-minute limit leaves room for a
rerun. It prints, in order:

1. the set-up it found (GPU, driver, CuPy, NVRTC, cuRAND headers, torch);
2. ``pytest tests/test_cuda_gpu.py`` and the torch/CuPy handoff tests of the
   adapters (TORCH_GPU_TESTS). **A skipped test is a failure here**: every
   test of this list must run on a GPU machine, so a missing piece (torch
   without CUDA, no cuRAND headers, ...) cannot pass as a success;
3. for 2**30 elements in float32 and bfloat16: fastinit's uniform, normal and
   truncated_normal next to torch's ``uniform_``, ``normal_``,
   ``nn.init.trunc_normal_`` and a memset of the same buffer
   (``cudaMemsetAsync``, ``Tensor.zero_``). Each figure is the median over
   RUNS timings of K back-to-back calls between one pair of CUDA events (so
   the host's launch overhead overlaps the GPU work and does not bias one
   call), with the first and last 2**20 elements of each big fastinit fill
   compared with the CPU fill at the same offsets;
4. the part-4 table: each check and each goal with its result.

The exit code is 0 only when every test ran and passed and every spot check
matched; the speed goals are reported (met / MISSED) without failing it.

fastinit need not be installed: when ``fastinit.kernels`` cannot be imported
(the package maps it onto ``kernels/`` at install time), the script builds a
small import shim of symlinks in a temporary folder and uses it for itself and
for pytest. Compiled kernels are cached on disk (``~/.cache/fastinit/cuda``
and Numba's cache), so the benchmark reuses what the tests built.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTEST_TIMEOUT_S = 420
K = 10              # calls between one pair of CUDA events
RUNS = 5            # timings per operation; the median is reported

# The torch CUDA tensor and DLPack handoff tests of the adapters, by node id.
TORCH_GPU_TESTS = [
    "tests/test_torch_init.py::test_cuda_tensor_matches_cpu",
    "tests/test_torch_init.py::test_to_torch_cupy",
]
# rows of the part-4 table: (row, test-name prefixes in tests/test_cuda_gpu.py
# or the node ids above)
CHECKS = [
    ("bit equality with the CPU, every distribution and dtype (CuPy buffers)",
     ("test_cupy_equals_cpu", "test_cupy_short_fills_and_edges", "test_cupy_guard_bytes",
      "test_cupy_non_default_stream", "test_cupy_constant", "test_cupy_rows",
      "test_empty_cuda_alignment")),
    ("cuRAND Philox4_32_10 word equality", ("test_philox_words_equal_curand",)),
    ("torch CUDA tensors (in place, streams, views, last device, graph capture)",
     ("test_torch_", "test_graph_capture")),
    ("torch / CuPy DLPack handoffs (adapters)",
     ("test_cuda_tensor_matches_cpu", "test_to_torch_cupy")),
]


def say(*args):
    print(*args, flush=True)


def import_path():
    """A folder to put first on sys.path so that ``fastinit.kernels`` imports."""
    probe = subprocess.run([sys.executable, "-c",
                            "import fastinit.kernels, fastinit.backends.cuda"],
                           cwd=tempfile.gettempdir(), capture_output=True)
    if probe.returncode == 0:
        return None                        # installed (editable or not)
    shim = tempfile.mkdtemp(prefix="fastinit-shim-")
    pkg = os.path.join(shim, "fastinit")
    os.mkdir(pkg)
    src = os.path.join(ROOT, "fastinit")
    for name in os.listdir(src):
        if name != "__pycache__":
            os.symlink(os.path.join(src, name), os.path.join(pkg, name))
    os.symlink(os.path.join(ROOT, "kernels"), os.path.join(pkg, "kernels"))
    return shim


def setup_report():
    """Print what this machine has; returns False when torch sees no GPU."""
    try:
        import torch
    except ImportError:
        say("torch is not installed: nothing to check")
        return False
    say(f"torch {torch.__version__} (CUDA {torch.version.cuda}), "
        f"{torch.cuda.device_count()} device(s) visible")
    if not torch.cuda.is_available():
        say("torch sees no CUDA device: nothing to check")
        return False
    for d in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(d)
        say(f"  cuda:{d} {p.name} (sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
            f"{p.total_memory / 2 ** 30:.0f} GiB)")
    try:
        import cupy
        v = cupy.cuda.runtime.driverGetVersion()
        r = cupy.cuda.runtime.runtimeGetVersion()
        say(f"CuPy {cupy.__version__} (built for CUDA {r // 1000}.{r % 1000 // 10}); "
            f"driver supports CUDA {v // 1000}.{v % 1000 // 10}")
    except Exception as exc:
        say(f"CuPy: {type(exc).__name__}: {exc}")
        return True
    try:
        from fastinit.backends import cuda
        nvrtc = cuda._nvrtc(cupy)
        say(f"NVRTC {'.'.join(map(str, nvrtc.getVersion()))}")
    except Exception as exc:
        say(f"NVRTC: {exc}")
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    try:
        import test_cuda_gpu
        options = test_cuda_gpu.curand_options()
        say(f"cuRAND headers: {options[1][2:] if options else 'NOT FOUND (pip install '}"
            + ("" if options else "nvidia-curand-cu12 for CUDA 12, nvidia-curand for 13)"))
    except Exception as exc:
        say(f"cuRAND headers: could not look ({type(exc).__name__}: {exc})")
    finally:
        sys.path.pop(0)
    return True


def run_tests(env):
    """pytest over the GPU tests; {test name: "passed" | "failed" | "skipped"}, rc."""
    say(f"== pytest tests/test_cuda_gpu.py + {len(TORCH_GPU_TESTS)} handoff tests "
        f"(limit {PYTEST_TIMEOUT_S} s; a skip counts as a failure)")
    xml = os.path.join(tempfile.mkdtemp(prefix="fastinit-gpu-check-"), "junit.xml")
    t0 = time.time()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p",
                               "no:cacheprovider", f"--junitxml={xml}",
                               "tests/test_cuda_gpu.py", *TORCH_GPU_TESTS],
                              cwd=ROOT, env=env, timeout=PYTEST_TIMEOUT_S)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        say(f"pytest did not finish in {PYTEST_TIMEOUT_S} s")
        rc = -1
    results = {}
    if os.path.exists(xml):
        for case in ET.parse(xml).getroot().iter("testcase"):
            state = "passed"
            for child in case:
                if child.tag in ("failure", "error"):
                    state = "failed"
                elif child.tag == "skipped" and state == "passed":
                    state = "skipped"
            results[case.get("name")] = state
    counts = {s: sum(v == s for v in results.values()) for s in ("passed", "failed", "skipped")}
    say(f"== pytest exit code {rc} after {time.time() - t0:.0f} s: {counts}")
    for name, state in results.items():
        if state == "skipped":
            say(f"   SKIPPED (a failure here): {name}")
    ok = rc == 0 and counts["failed"] == 0 and counts["skipped"] == 0 and counts["passed"] > 0
    return results, ok


def cuda_timer(torch, runs, k):
    """fn -> median milliseconds per call: ``runs`` timings of ``k`` back-to-back
    calls between one pair of CUDA events on torch's current stream (which
    fastinit also launches on), after one warm-up call."""
    def measure(fn):
        stream = torch.cuda.current_stream()
        fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(runs):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            for _ in range(k):
                fn()
            end.record(stream)
            end.synchronize()
            times.append(start.elapsed_time(end) / k)
        return statistics.median(times)
    return measure


def bench(n_log2, runs, k):
    """The bandwidth table; returns ({(dtype, op): ms}, [spot check lines], ok)."""
    import ml_dtypes
    import numpy as np
    import torch

    import fastinit as fi

    try:
        import cupy
    except Exception as exc:
        cupy = None
        say(f"(CuPy is not importable: {exc}; cudaMemsetAsync row skipped)")

    n = 1 << n_log2
    say(f"{fi.STREAM_VERSION}; {n} = 2**{n_log2} elements; median of {runs} timings of "
        f"{k} calls between one pair of CUDA events")
    measure = cuda_timer(torch, runs, k)
    spot, ms_of = [], {}
    std = 0.02
    fills = {  # name -> (fastinit fill, its arguments)
        "uniform": (fi.uniform, dict(low=-0.1, high=0.1)),
        "normal": (fi.normal, dict(mean=0.0, std=std)),
        "truncated_normal": (fi.truncated_normal, dict(mean=0.0, std=std, a=-2 * std,
                                                       b=2 * std)),
    }
    say("")
    say(f"{'dtype':9s} {'operation':27s} {'ms/call':>9s} {'GB/s':>9s} {'% memset':>9s}")
    for dtype_name, tdtype, ndtype in (("float32", torch.float32, np.float32),
                                       ("bfloat16", torch.bfloat16, ml_dtypes.bfloat16)):
        t = torch.empty(n, dtype=tdtype, device="cuda")
        nbytes = t.numel() * t.element_size()
        ops = []
        if cupy is not None:
            ops.append(("memset (cudaMemsetAsync)", lambda: cupy.cuda.runtime.memsetAsync(
                t.data_ptr(), 0, nbytes, torch.cuda.current_stream().cuda_stream)))
        ops += [
            ("memset (torch zero_)", lambda: t.zero_()),
            ("fastinit uniform", lambda: fi.uniform(t, -0.1, 0.1, seed=1)),
            ("torch uniform_", lambda: t.uniform_(-0.1, 0.1)),
            ("fastinit normal", lambda: fi.normal(t, 0.0, std, seed=1)),
            ("torch normal_", lambda: t.normal_(0.0, std)),
            ("fastinit truncated_normal",
             lambda: fi.truncated_normal(t, 0.0, std, -2 * std, 2 * std, seed=1)),
            ("torch trunc_normal_",
             lambda: torch.nn.init.trunc_normal_(t, 0.0, std, -2 * std, 2 * std)),
        ]
        best = None                        # the fastest memset, measured first
        for name, fn in ops:
            try:
                ms = measure(fn)
            except Exception as exc:
                say(f"{dtype_name:9s} {name:27s} failed: {type(exc).__name__}: {exc}")
                continue
            ms_of[dtype_name, name] = ms
            if name.startswith("memset"):
                best = ms if best is None else min(best, ms)
            gbs = nbytes / (ms * 1e-3) / 1e9
            pct = f"{100 * best / ms:.0f}%" if best else "-"
            say(f"{dtype_name:9s} {name:27s} {ms:9.3f} {gbs:9.0f} {pct:>9s}")
        if best is not None:
            ms_of[dtype_name, "memset"] = best
        # spot check: the ends of each big fill equal the CPU fill at those offsets
        m = min(1 << 20, n)
        bits = {2: torch.int16, 4: torch.int32}[t.element_size()]
        for kind, (fill, kw) in fills.items():
            try:
                fill(t, **kw, seed=7, stream=3)
                torch.cuda.synchronize()
                for offset in (0, n - m):
                    got = t[offset:offset + m].view(bits).cpu().numpy()
                    want = fill(np.empty(m, ndtype), **kw, seed=7, stream=3, offset=offset)
                    same = got.tobytes() == want.tobytes()
                    spot.append((same, f"{dtype_name} {kind} elements [{offset}, {offset + m}): "
                                 + ("equal to the CPU fill" if same
                                    else "DIFFERENT from the CPU fill")))
            except Exception as exc:
                spot.append((False, f"{dtype_name} {kind} spot check failed: "
                                    f"{type(exc).__name__}: {exc}"))
        t = ops = None                     # free the buffer before the next one
        torch.cuda.empty_cache()
    say("")
    for _, line in spot:
        say(line)
    return ms_of, spot, bool(spot) and all(same for same, _ in spot)


def goals(ms_of):
    """[(goal, measured text, met or None)] of issue 15's part 4."""
    rows = []

    def ratio(a, b):
        return ms_of[b] / ms_of[a] if a in ms_of and b in ms_of else None

    for op, share in (("uniform", 0.90), ("normal", 0.80), ("truncated_normal", 0.70)):
        r = ratio(("float32", f"fastinit {op}"), ("float32", "memset"))
        rows.append((f"float32 {op} >= {share:.0%} of memset bandwidth",
                     "-" if r is None else f"{r:.0%}", None if r is None else r >= share))
    for dtype_name in ("float32", "bfloat16"):
        for op, theirs, factor in (("uniform", "torch uniform_", 1),
                                   ("normal", "torch normal_", 1),
                                   ("truncated_normal", "torch trunc_normal_", 1),
                                   ("truncated_normal", "torch trunc_normal_", 3)):
            if factor == 3 and dtype_name != "float32":
                continue
            r = ratio((dtype_name, f"fastinit {op}"), (dtype_name, theirs))
            rows.append((f"{dtype_name} {op} >= {factor}x {theirs}",
                         "-" if r is None else f"{r:.2f}x", None if r is None else r >= factor))
    for op in ("uniform", "normal", "truncated_normal"):
        r = ratio(("bfloat16", f"fastinit {op}"), ("float32", f"fastinit {op}"))
        rows.append((f"bfloat16 {op} at least as fast as float32 (time ratio f32/bf16)",
                     "-" if r is None else f"{r:.2f}x", None if r is None else r >= 1))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-tests", action="store_true", help="only the benchmark")
    parser.add_argument("--n-log2", type=int, default=30, help="elements = 2**N (30)")
    parser.add_argument("--runs", type=int, default=RUNS, help=f"timings per operation ({RUNS})")
    parser.add_argument("--k", type=int, default=K, help=f"calls per timing ({K})")
    args = parser.parse_args()
    t0 = time.time()

    shim = import_path()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if shim:
        sys.path.insert(0, shim)
        env["PYTHONPATH"] = shim + os.pathsep + env.get("PYTHONPATH", "")
        say(f"(fastinit is not installed: importing it through {shim})")

    say("== set-up")
    if not setup_report():
        return 2
    say("")
    results, tests_ok = ({}, True) if args.skip_tests else run_tests(env)
    say("")
    say("== bandwidth")
    try:
        ms_of, spot, spot_ok = bench(args.n_log2, args.runs, args.k)
    except Exception as exc:
        import traceback
        traceback.print_exc()
        say(f"benchmark failed: {type(exc).__name__}: {exc}")
        ms_of, spot, spot_ok = {}, [], False

    say("")
    say("== issue 15, part 4")
    say(f"| {'check':72s} | result |")
    say(f"| {'-' * 72} | ------ |")
    for row, prefixes in CHECKS:
        got = [s for name, s in results.items() if name.startswith(prefixes)]
        if args.skip_tests:
            verdict = "not run"
        elif not got:
            verdict = "FAILED (no test ran)"
        else:
            bad = sum(s != "passed" for s in got)
            verdict = (f"passed ({len(got)} tests)" if not bad
                       else f"FAILED ({bad} of {len(got)} failed or skipped)")
        say(f"| {row:72s} | {verdict} |")
    say(f"| {'2**' + str(args.n_log2) + ' fills: ends equal to the CPU fill':72s} | "
        f"{'passed' if spot_ok else 'FAILED'} ({len(spot)} checks) |")
    for goal, measured, met in goals(ms_of):
        verdict = "not measured" if met is None else ("met" if met else "MISSED")
        say(f"| {goal:72s} | {measured} {verdict} |")
    ok = tests_ok and spot_ok
    say(f"\n== done in {time.time() - t0:.0f} s: tests "
        f"{'not run' if args.skip_tests else ('passed' if tests_ok else 'FAILED')}, "
        f"spot check {'passed' if spot_ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
