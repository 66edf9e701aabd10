"""One-shot GPU check for fastinit's CUDA path: tests, then bandwidth.

Run from anywhere on a machine with an NVIDIA GPU, torch (CUDA) and CuPy:

    python bench/gpu_check.py            # about 1-3 minutes on one H200

1. ``pytest -q tests/test_cuda_gpu.py`` (bit equality with the CPU fills,
   torch tensors in place and on a non-default stream, Philox vs cuRAND),
   plus the GPU cases of the adapter tests (a CUDA tensor through
   fastinit.torch, cupy -> torch, TensorFlow and JAX without a copy);
2. for 2**30 elements in float32 and bfloat16: fastinit's uniform, normal and
   truncated_normal next to torch's ``uniform_``, ``normal_`` and
   ``nn.init.trunc_normal_`` and next to a memset of the same buffer
   (``cudaMemsetAsync`` and ``Tensor.zero_``): the median of a few runs timed
   with CUDA events, GB/s of output written, and % of the memset bandwidth;
   plus a spot check that the first and last 2**20 elements of the big
   fastinit fills equal the CPU fills at the same offsets.

fastinit need not be installed: when ``fastinit.kernels`` cannot be imported
(the package maps it onto ``kernels/`` at install time), the script builds a
small import shim of symlinks in a temporary folder and uses it for itself
and for pytest. Compiled kernels are cached on disk (``~/.cache/fastinit``
and Numba's ``kernels/__pycache__``), so the benchmark reuses what the tests
built.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTEST_TIMEOUT_S = 170


def say(*args):
    print(*args, flush=True)


def import_path():
    """A folder to put first on sys.path so that ``fastinit.kernels`` imports."""
    probe = subprocess.run([sys.executable, "-c", "import fastinit.kernels, fastinit.backends.cuda"],
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


# The GPU cases of the adapter tests (torch CUDA tensors, cupy -> torch,
# TensorFlow and JAX): the test names below, picked out by node id.
ADAPTER_GPU_TESTS = [
    "tests/test_torch_init.py::test_cuda_tensor_matches_cpu",
    "tests/test_torch_init.py::test_to_torch_cupy",
    "tests/test_interop.py::test_cupy_to_tensorflow_gpu",
    "tests/test_interop.py::test_cupy_to_jax_gpu",
]


def run_tests(env):
    say(f"== pytest -q tests/test_cuda_gpu.py + {len(ADAPTER_GPU_TESTS)} adapter GPU tests "
        f"(limit {PYTEST_TIMEOUT_S} s)")
    t0 = time.time()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p",
                               "no:cacheprovider", "tests/test_cuda_gpu.py",
                               *ADAPTER_GPU_TESTS],
                              cwd=ROOT, env=env, timeout=PYTEST_TIMEOUT_S)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        say(f"pytest did not finish in {PYTEST_TIMEOUT_S} s")
        rc = -1
    say(f"== pytest exit code {rc} after {time.time() - t0:.0f} s")
    return rc


def cuda_timer(torch, runs):
    """median milliseconds of fn() over ``runs`` runs after one warm-up, CUDA events
    on torch's current stream (which fastinit also launches on)."""
    def measure(fn):
        stream = torch.cuda.current_stream()
        fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(runs):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            fn()
            end.record(stream)
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)
    return measure


def bench(n_log2, runs):
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
    props = torch.cuda.get_device_properties(0)
    say(f"GPU: {torch.cuda.get_device_name(0)} (sm_{props.major}{props.minor}, "
        f"{props.multi_processor_count} SMs, {props.total_memory / 2 ** 30:.0f} GiB)")
    versions = [f"torch {torch.__version__}"]
    if cupy is not None:
        versions.append(f"cupy {cupy.__version__}")
        try:
            v = cupy.cuda.runtime.driverGetVersion()
            versions.append(f"driver CUDA {v // 1000}.{v % 1000 // 10}")
        except Exception:
            pass
    say(", ".join(versions) + f"; {fi.STREAM_VERSION}; {n} = 2**{n_log2} elements, "
        f"median of {runs} runs")
    measure = cuda_timer(torch, runs)
    spot = []
    std = 0.02
    fills = {  # name -> (fastinit fill, its arguments)
        "uniform": (fi.uniform, dict(low=-0.1, high=0.1)),
        "normal": (fi.normal, dict(mean=0.0, std=std)),
        "truncated_normal": (fi.truncated_normal, dict(mean=0.0, std=std, a=-2 * std,
                                                       b=2 * std)),
    }
    say("")
    say(f"{'dtype':9s} {'operation':27s} {'median ms':>9s} {'GB/s':>9s} {'% memset':>9s}")
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
            if name.startswith("memset"):
                best = ms if best is None else min(best, ms)
            gbs = nbytes / (ms * 1e-3) / 1e9
            pct = f"{100 * best / ms:.0f}%" if best else "-"
            say(f"{dtype_name:9s} {name:27s} {ms:9.3f} {gbs:9.0f} {pct:>9s}")
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
                    spot.append(f"{dtype_name} {kind} elements [{offset}, {offset + m}): "
                                + ("equal to the CPU fill" if same
                                   else "DIFFERENT from the CPU fill"))
            except Exception as exc:
                spot.append(f"{dtype_name} {kind} spot check failed: "
                            f"{type(exc).__name__}: {exc}")
        t = ops = None                     # free the buffer before the next one
        torch.cuda.empty_cache()
    say("")
    for line in spot:
        say(line)
    return all("equal to the CPU fill" in line for line in spot)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-tests", action="store_true", help="only the benchmark")
    parser.add_argument("--n-log2", type=int, default=30, help="elements = 2**N (30)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per operation (5)")
    args = parser.parse_args()
    t0 = time.time()

    shim = import_path()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if shim:
        sys.path.insert(0, shim)
        env["PYTHONPATH"] = shim + os.pathsep + env.get("PYTHONPATH", "")
        say(f"(fastinit is not installed: importing it through {shim})")

    try:
        import torch
        if not torch.cuda.is_available():
            say("torch sees no CUDA device: nothing to check")
            return 2
    except ImportError:
        say("torch is not installed: nothing to check")
        return 2

    rc = 0 if args.skip_tests else run_tests(env)
    say("")
    say("== bandwidth")
    try:
        spot_ok = bench(args.n_log2, args.runs)
    except Exception as exc:
        import traceback
        traceback.print_exc()
        say(f"benchmark failed: {type(exc).__name__}: {exc}")
        spot_ok = False
    say(f"\n== done in {time.time() - t0:.0f} s: tests {'passed' if rc == 0 else 'FAILED'}, "
        f"spot check {'passed' if spot_ok else 'FAILED'}")
    return 0 if rc == 0 and spot_ok else 1


if __name__ == "__main__":
    sys.exit(main())
