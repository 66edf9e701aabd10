"""pytest-benchmark: fastinit's fills next to torch, NumPy, JAX and TensorFlow.

Every implementation comes from ``fastinit.cli.bench``, so these time exactly
what ``python -m fastinit bench`` times: fastinit, torch and NumPy fill one
shared, pre-faulted buffer; JAX and TensorFlow (when installed) return a new
array. A peer that is not installed, or has no such operation (NumPy has no
bfloat16 output and no truncated normal), is skipped with the reason.

    pytest bench/                                   # 2**22 elements
    FASTINIT_BENCH_SIZE=2**26 pytest bench/         # any size, as in --sizes
    pytest bench/ --benchmark-disable               # each once, as plain tests

Each test also checks the values it produced, so the plain-test run is a
smoke test of every adapter.
"""

import math
import os

import numpy as np
import pytest

from fastinit.cli import bench as fb
from fastinit.cli.bench import peers
from fastinit.cli.bench.report import fmt_size

SIZE = fb.parse_size(os.environ.get("FASTINIT_BENCH_SIZE", "2**22"))
DTYPES = ("float32", "bfloat16")
IMPLS = ("fastinit",) + peers.PEERS

_loaded = {}


def _implementation(name):
    """The loaded fastinit.cli.bench implementation, or a skip saying why it is absent."""
    if name not in _loaded:
        impl = peers.Fastinit() if name == "fastinit" else peers.PEER_CLASSES[name]()
        try:
            impl.version = impl.load()
        except peers.Unavailable as exc:
            impl = str(exc)
        _loaded[name] = impl
    impl = _loaded[name]
    if isinstance(impl, str):
        pytest.skip(f"{name}: {impl}")
    return impl


def _values(impl, result, buf):
    """The produced values as float32: the buffer, or the array a JAX/TF call returned."""
    if impl in ("jax", "tensorflow"):
        if impl == "tensorflow":
            result = result.numpy()
        return np.asarray(result).astype(np.float32)
    return buf.array.astype(np.float32)              # an in-place fill


def _check(method, dtype, impl, vals):
    assert vals.shape == (SIZE,)
    assert np.isfinite(vals).all()
    if method == "uniform":
        # fastinit keeps float32 draws below 1; rounded to bfloat16 the largest
        # may become 1.0 (docs/stream.md 3.8), as it may for the peers
        assert vals.min() >= 0.0
        assert vals.max() < 1.0 if (impl, dtype) == ("fastinit", "float32") \
            else vals.max() <= 1.0
        mean, std = 0.5, math.sqrt(1 / 12)
    elif method == "normal":
        mean, std = 0.0, 1.0
    else:
        lo, hi = peers.TRUNC_BOUNDS
        assert vals.min() >= lo and vals.max() <= hi
        mean, std = 0.0, 0.8796                      # N(0, 1) truncated to [-2, 2]
    if SIZE >= 4096:
        # loose: a peer that computes in bfloat16 itself is off by ~0.015
        # (JAX's truncated_normal), which is not what this smoke check is for
        slack = 0.01 if dtype == "float32" else 0.04
        assert abs(float(vals.mean()) - mean) < 6 * std / math.sqrt(SIZE) + slack
        assert abs(float(vals.std()) - std) < 0.05 * std


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", fb.METHODS)
def test_fill(benchmark, method, dtype, impl):
    implementation = _implementation(impl)
    buf = peers.Buffer(SIZE, dtype)
    try:
        api, fn = implementation.prepare(method, buf)
    except peers.Skip as exc:
        pytest.skip(f"{impl}: {exc}")
    benchmark.group = f"{method} {dtype} {fmt_size(SIZE)}"
    benchmark.extra_info.update(implementation=impl, api=api, size=SIZE,
                                bytes_written=buf.nbytes)
    fn()                                             # warm-up: compile, load, first touch
    result = benchmark(fn)
    _check(method, dtype, impl, _values(impl, result, buf))
