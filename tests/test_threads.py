"""Concurrent fills from Python threads, fills after fork, and the threading layer."""

import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import ml_dtypes
import numba
import numpy as np
import pytest

import fastinit as fi
from fastinit.backends import cpu as cpu_backend
from fastinit.kernels.cpu import _config

BIG = 1 << 18                     # well past cpu_backend.PARALLEL_MIN: the parallel path
TIMEOUT = 60.0

# (fill, dtype, params, seed, stream, offset): one job per thread
JOBS = [
    (fi.uniform, np.float32, dict(low=-1.0, high=2.0), 1, 0, 0),
    (fi.normal, np.float64, dict(mean=0.5, std=2.0), 2, 5, 3),
    (fi.truncated_normal, np.float32, dict(std=0.2, a=-0.3, b=0.5), 3, 1, 1 << 40),
    (fi.masked_uniform, ml_dtypes.bfloat16, dict(low=-1.0, high=1.0, threshold=0.2), 4, 9, 7),
    (fi.normal, np.float16, dict(std=3.0), 5, 2, 11),
    (fi.truncated_normal, np.float64, dict(mean=1.0), 6, 0, 2 ** 63),
]


def run_job(job, out=None):
    fill, dtype, params, seed, stream, offset = job
    out = np.empty(BIG, dtype) if out is None else out
    return fill(out, **params, seed=seed, stream=stream, offset=offset)


def digest(x):
    return hashlib.sha256(np.ascontiguousarray(x).view(np.uint8).tobytes()).hexdigest()


def test_big_is_parallel():
    assert BIG >= 2 * cpu_backend.PARALLEL_MIN


def test_threading_layer_is_thread_safe():
    run_job(JOBS[0])                                   # a parallel fill picks the layer
    layer = numba.threading_layer()
    if layer == "tbb":
        assert _config.THREAD_SAFE
    else:
        # no TBB: fastinit must know it, and serialize its parallel launches
        assert not _config.THREAD_SAFE, layer


def test_without_thread_safe_layer_launches_are_serialized(monkeypatch):
    """Whatever layer this process has, with THREAD_SAFE False every parallel launch
    runs under KERNEL_LOCK."""
    held = []

    class SpyLock:
        def __init__(self):
            self.lock = threading.Lock()

        def __enter__(self):
            self.lock.acquire()
            held.append(True)

        def __exit__(self, *exc):
            self.lock.release()

    monkeypatch.setattr(_config, "THREAD_SAFE", False)
    monkeypatch.setattr(_config, "KERNEL_LOCK", SpyLock())
    ref = run_job(JOBS[0])
    assert held, "a parallel fill ran without KERNEL_LOCK"
    monkeypatch.undo()
    assert digest(ref) == digest(run_job(JOBS[0]))


def run_threads(jobs, repeats):
    """Every job in its own thread, started together; returns {index: [digests]}."""
    results = {i: [] for i in range(len(jobs))}
    errors = []
    barrier = threading.Barrier(len(jobs))

    def worker(i, job):
        try:
            out = np.empty(BIG, job[1])
            barrier.wait(timeout=TIMEOUT)
            for _ in range(repeats):
                results[i].append(digest(run_job(job, out)))
        except BaseException as exc:          # reported by the main thread
            errors.append((i, exc))

    threads = [threading.Thread(target=worker, args=(i, job), daemon=True)
               for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + TIMEOUT
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a fill hung in a thread"
    assert not errors, errors
    return results


def test_threads_give_serial_bytes():
    serial = [digest(run_job(job)) for job in JOBS]
    results = run_threads(JOBS, repeats=4)
    for i, digests in results.items():
        assert digests == [serial[i]] * 4, f"job {i} differs when run in threads"


def test_threads_same_job_many_buffers():
    job = JOBS[1]
    serial = digest(run_job(job))
    results = run_threads([job] * 4, repeats=3)
    assert all(d == [serial] * 3 for d in results.values())


def wait_child(pid, timeout=TIMEOUT):
    """waitpid with a deadline; kills the child and fails on a hang."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.02)


def rerun_in_fresh_process(name):
    """True when the caller should return: its body has run in a fresh
    interpreter. Forking is only safe from a process that no other library
    (JAX, TensorFlow, imported by other test files) has filled with threads,
    so the fork tests run by themselves."""
    if os.environ.get("FASTINIT_FRESH_PROCESS") == "1":
        return False
    env = dict(os.environ, FASTINIT_FRESH_PROCESS="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"{__file__}::{name}"], env=env, capture_output=True, text=True,
                          timeout=4 * TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return True


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_after_parallel_fill():
    if rerun_in_fresh_process("test_fork_after_parallel_fill"):
        return
    expected = [digest(run_job(job)) for job in JOBS]   # the parent has run parallel fills
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:                                          # child: never return to pytest
        code = 1
        try:
            os.close(read_fd)
            got = " ".join(digest(run_job(job)) for job in JOBS)
            os.write(write_fd, got.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        status = wait_child(pid)
        data = b""
        while chunk := os.read(read_fd, 65536):
            data += chunk
    finally:
        os.close(read_fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert data.decode().split() == expected
    assert digest(run_job(JOBS[0])) == expected[0]     # and the parent still works


def _child_fill(queue):
    queue.put([digest(run_job(job)) for job in JOBS[:3]])


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                    reason="needs the fork start method")
def test_multiprocessing_fork_after_parallel_fill():
    if rerun_in_fresh_process("test_multiprocessing_fork_after_parallel_fill"):
        return
    expected = [digest(run_job(job)) for job in JOBS[:3]]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_fill, args=(queue,))
    proc.start()
    try:
        got = queue.get(timeout=TIMEOUT)
    finally:
        proc.join(timeout=TIMEOUT)
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert got == expected
    assert proc.exitcode == 0


def test_workqueue_fallback_serializes_threads():
    """Forced onto Numba's workqueue layer (not thread-safe), fastinit must say so and
    still give serial bytes from concurrent threads instead of aborting."""
    script = textwrap.dedent(f"""
        import hashlib, threading, numpy as np, numba, fastinit as fi
        from fastinit.kernels.cpu import _config
        assert not _config.THREAD_SAFE, _config.THREADING_LAYER
        def fill(seed):
            return fi.normal(np.empty({BIG}, np.float32), seed=seed)
        def h(x):
            return hashlib.sha256(x.tobytes()).hexdigest()
        serial = [h(fill(s)) for s in range(4)]
        assert numba.threading_layer() == "workqueue", numba.threading_layer()
        got = {{}}
        def work(s):
            got[s] = [h(fill(s)) for _ in range(3)]
        ts = [threading.Thread(target=work, args=(s,)) for s in range(4)]
        for t in ts: t.start()
        for t in ts: t.join(60)
        assert not any(t.is_alive() for t in ts)
        assert all(got[s] == [serial[s]] * 3 for s in range(4)), "bytes differ"
        print("OK")
    """)
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "OK", proc.stderr[-3000:]


def test_explicit_tbb_request_is_honoured():
    """NUMBA_THREADING_LAYER=tbb asks for the layer fastinit prefers; with TBB installed
    (it is: this process runs on it) a parallel fill must work and run on TBB."""
    run_job(JOBS[0])
    if numba.threading_layer() != "tbb":
        pytest.skip("TBB is not available here")
    script = textwrap.dedent(f"""
        import numpy as np, numba, fastinit as fi
        from fastinit.kernels.cpu import _config
        fi.normal(np.empty({BIG}, np.float32), seed=1)
        print(numba.threading_layer(), _config.THREAD_SAFE)
    """)
    env = dict(os.environ, NUMBA_THREADING_LAYER="tbb")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["tbb", "True"]


@pytest.mark.parametrize("job", JOBS, ids=lambda j: f"{j[0].__name__}-{np.dtype(j[1]).name}")
def test_parallel_fill_is_its_serial_pieces(job):
    """One parallel fill == serial fills of its pieces at their offsets, on any thread count."""
    whole = run_job(job)
    fill, dtype, params, seed, stream, offset = job
    piece = cpu_backend.PARALLEL_MIN // 2 - 3                # odd, below the parallel cutoff
    parts = np.empty(BIG, dtype)
    for start in range(0, BIG, piece):
        stop = min(start + piece, BIG)
        fill(parts[start:stop], **params, seed=seed, stream=stream, offset=offset + start)
    assert digest(parts) == digest(whole)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert digest(run_job(job)) == digest(whole)
    finally:
        numba.set_num_threads(threads)
