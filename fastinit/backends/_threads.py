"""Running one fill on every core: Python threads over the serial kernels.

A large CPU fill is cut into pieces at tile boundaries; each piece is an
ordinary serial fill at its own offset (the same bits as one pass: the
stream contract makes an element's value depend on its index only), and
the pieces run on a small pool of Python threads. The kernels release the
GIL (Numba ``nogil``), so the pieces run at once.

Why not Numba's ``prange``: a parallel kernel is a second kernel per
(distribution, dtype) that costs more to compile than the serial one
(Numba's parfor machinery) and needs a threading layer that is safe for
concurrent launches and across ``fork``. The pool is plain Python, costs a
thread wake-up per piece, and is rebuilt in a forked child (docs/design.md,
"Threads").

The thread count is fastinit's own: ``FASTINIT_NUM_THREADS`` at start-up,
else the CPUs this process may run on; :func:`set_num_threads` changes it
for the whole process.
"""

import operator
import os
import queue
import threading

ENV = "FASTINIT_NUM_THREADS"

_count = None                 # the thread count; None: not read from the environment yet
_pool = None                  # (pid, job queue, worker threads) of this process
_pool_lock = threading.Lock()


def usable_cpus():
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_count(n, what):
    if isinstance(n, bool):
        raise TypeError(f"{what} must be an int, got bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"{what} must be an int, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"{what} must be >= 1, got {n}")
    return int(n)


def get_num_threads():
    """How many threads a large CPU fill runs on."""
    global _count
    if _count is None:
        text = os.environ.get(ENV, "").strip()
        if not text:
            _count = usable_cpus()
        else:
            try:
                value = int(text)
            except ValueError:
                raise ValueError(f"environment variable {ENV} must be a positive integer, "
                                 f"got {text!r}") from None
            _count = _check_count(value, f"environment variable {ENV}")
    return _count


def set_num_threads(n):
    """Run large CPU fills on ``n`` threads (the calling one included), for
    the whole process. Returns the previous count (None where it came from
    an invalid ``FASTINIT_NUM_THREADS``, which this call overrides). Values
    do not depend on it."""
    n = _check_count(n, "n")
    try:
        previous = get_num_threads()
    except ValueError:
        previous = None
    global _count
    _count = n
    return previous


class _Job:
    """``run(i)`` for i in range(n), taken one at a time by whichever threads come."""

    __slots__ = ("run", "n", "_taken", "_active", "_left", "_lock", "_done", "error",
                 "cancelled")

    def __init__(self, run, n):
        self.run, self.n = run, n
        self._taken = self._active = 0
        self._left = n
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.error = None
        self.cancelled = False

    def work(self):
        while True:
            with self._lock:
                if self.cancelled or self._taken >= self.n:
                    return
                i = self._taken
                self._taken += 1
                self._active += 1
            try:
                self.run(i)
            except BaseException as exc:    # raised again in the caller's thread
                if self.error is None:
                    self.error = exc
                if not isinstance(exc, Exception):      # KeyboardInterrupt: stop
                    self.cancelled = True
            with self._lock:
                self._active -= 1
                self._left -= 1
                if not self._left or (self.cancelled and not self._active):
                    self._done.set()

    def cancel(self):
        """Start no more pieces; :meth:`wait` then returns once the running ones end."""
        with self._lock:
            self.cancelled = True
            if not self._active:
                self._done.set()

    def wait(self):
        self._done.wait()


def _worker(jobs):
    while True:
        jobs.get().work()


def _jobs_queue(workers):
    """This process's job queue, with at least ``workers`` threads serving it."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), queue.SimpleQueue(), [])
        _, jobs, threads = _pool
        while len(threads) < workers:
            t = threading.Thread(target=_worker, args=(jobs,), daemon=True,
                                 name=f"fastinit-fill-{len(threads)}")
            t.start()
            threads.append(t)
    return jobs


def _forget_pool():
    """In a forked child: the parent's threads do not exist here, and its lock
    may have been held at the fork."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def run(fn, n):
    """``fn(i)`` for every i in range(n), on up to :func:`get_num_threads`
    threads (this one included); returns when all are done, and raises the
    first exception a call raised. ``fn`` must be safe to run concurrently
    for different i."""
    threads = min(get_num_threads(), n)
    if threads <= 1:
        for i in range(n):
            fn(i)
        return
    job = _Job(fn, n)
    jobs = _jobs_queue(threads - 1)
    for _ in range(threads - 1):
        jobs.put(job)
    try:
        job.work()
        job.wait()
    except BaseException:
        # interrupted (KeyboardInterrupt): no piece starts any more, and none
        # still writes into the buffer when the exception leaves this call
        job.cancel()
        job.wait()
        raise
    if job.error is not None:
        raise job.error


def cuts(size, offset, tile, min_piece):
    """Where a fill of ``size`` elements at global ``offset`` is cut: a list
    ``[0, ..., size]`` of local indices, inner ones on global multiples of
    ``tile``, one piece per thread and none under ``min_piece`` elements
    (a single piece when the fill is smaller than two)."""
    pieces = min(get_num_threads(), size // min_piece)
    if pieces <= 1:
        return [0, size]
    out = [0]
    for i in range(1, pieces):
        c = (offset + size * i // pieces) // tile * tile - offset
        if out[-1] < c < size:
            out.append(c)
    out.append(size)
    return out
