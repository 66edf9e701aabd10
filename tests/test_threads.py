"""Concurrent fills from Python threads, fills after fork, and the fill threads
(fastinit/backends/_threads.py)."""

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
import numpy as np
import pytest

import fastinit as fi
from fastinit.backends import cpu as cpu_backend
from fastinit.backends import _threads

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


def test_num_threads_checked_and_restored():
    before = fi.get_num_threads()
    assert isinstance(before, int) and before >= 1
    for bad, err in ((0, ValueError), (-2, ValueError), (True, TypeError), ("2", TypeError),
                     (2.0, TypeError), (None, TypeError)):
        with pytest.raises(err, match=r"\bn\b"):
            fi.set_num_threads(bad)
        assert fi.get_num_threads() == before
    assert fi.set_num_threads(np.int64(3)) == before
    try:
        assert fi.get_num_threads() == 3
    finally:
        assert fi.set_num_threads(before) == 3


@pytest.mark.parametrize("value, ok", [("3", True), (" 1 ", True), ("0", False),
                                       ("two", False), ("", True)])
def test_num_threads_from_environment(value, ok):
    script = textwrap.dedent(f"""
        import numpy as np, fastinit as fi
        try:
            fi.uniform(np.empty({BIG}, np.float32), seed=1)
        except ValueError as exc:
            print("ValueError", exc)
            assert fi.set_num_threads(2) is None          # an explicit count overrides it
            fi.uniform(np.empty({BIG}, np.float32), seed=1)
            assert fi.get_num_threads() == 2
        else:
            print(fi.get_num_threads())
    """)
    env = dict(os.environ)
    env[_threads.ENV] = value
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.strip()
    if not ok:
        assert out.startswith("ValueError") and _threads.ENV in out, out
    elif value.strip():
        assert out == value.strip()
    else:
        assert int(out) == len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else int(out) >= 1


def pieces_at_once(k):
    """``_threads.run`` runs k pieces concurrently (a barrier of k passes)."""
    before = fi.set_num_threads(k)
    try:
        barrier = threading.Barrier(k, timeout=TIMEOUT / 4)
        seen = set()

        def piece(i):
            seen.add(threading.get_ident())
            barrier.wait()

        _threads.run(piece, k)
        assert len(seen) == k
    finally:
        fi.set_num_threads(before)


def test_pool_runs_pieces_at_once():
    """With k threads, k pieces run concurrently (a barrier of k passes), whatever
    the number of cores; a piece's exception reaches the caller and the pool
    still works after it."""
    pieces_at_once(4)
    before = fi.set_num_threads(4)
    try:
        def bad(i):
            if i == 2:
                raise KeyError("piece 2")

        with pytest.raises(KeyError, match="piece 2"):
            _threads.run(bad, 5)
        done = []
        _threads.run(done.append, 7)
        assert sorted(done) == list(range(7))
    finally:
        fi.set_num_threads(before)


def test_interrupt_stops_the_pieces():
    """A KeyboardInterrupt in the caller's thread starts no more pieces, and when it
    leaves ``run`` no piece is still running (none writes into the buffer after)."""
    before = fi.set_num_threads(2)
    main = threading.main_thread()
    running, done, lock = [0], [], threading.Lock()

    def piece(i):
        with lock:
            running[0] += 1
        time.sleep(0.005)
        with lock:
            running[0] -= 1
        if threading.current_thread() is main:
            raise KeyboardInterrupt
        done.append(i)

    try:
        with pytest.raises(KeyboardInterrupt):
            _threads.run(piece, 200)
        assert running[0] == 0
        count = len(done)
        assert count < 50
        time.sleep(0.05)
        assert len(done) == count and running[0] == 0
    finally:
        fi.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
@pytest.mark.parametrize("offset", [0, 5, 2 ** 40 - 1])
def test_cuts_are_tile_aligned_pieces(threads, offset):
    before = fi.set_num_threads(threads)
    try:
        for size in (1, 1000, 2 * 4096 - 1, 2 * 4096, 100_003, 10 ** 6):
            at = _threads.cuts(size, offset, 2048, 4096)
            assert at[0] == 0 and at[-1] == size
            assert all(a < b for a, b in zip(at, at[1:]))
            assert len(at) - 1 <= max(1, min(threads, size // 4096))
            assert all((offset + c) % 2048 == 0 for c in at[1:-1])
            if threads > 1 and size >= 10 ** 5:
                assert len(at) - 1 == threads            # every thread gets a piece
    finally:
        fi.set_num_threads(before)


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
            pieces_at_once(2)          # the child has threads of its own, not the parent's
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
    threads = fi.get_num_threads()
    try:
        for k in (1, 2, 5):
            fi.set_num_threads(k)
            assert digest(run_job(job)) == digest(whole), k
    finally:
        fi.set_num_threads(threads)
