"""``write_checkpoint``: a spec's tensors filled straight into a new safetensors file.

The file (:mod:`.tmpfile`) is preallocated, memory-mapped, given its header
(:mod:`.safetensors`) and filled tensor by tensor, a chunk of rows at a
time, each finished range written back and dropped (:mod:`.mmapio`); it
gets its name only when complete.
"""

import mmap
import numbers
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..._contract import check_u64
from ...buffers import empty
from ...distributions import uniform
from . import tmpfile
from .mmapio import (DEFAULT_CHUNK_BYTES, Flusher, chunks, preallocate, progress_bar,
                     tensor_done)
from .safetensors import layout
from .spec import CONSTANT_RULES, fans_of, fill_range, load_spec, np_dtype


@dataclass
class WriteReport:
    """What write_checkpoint did."""
    path: str
    tensors: int
    numel: int
    nbytes: int                      # file size
    seconds: float                   # preallocate, fill, write back, rename
    fill: str
    seed: int
    removed: list = field(default_factory=list)   # [(path, bytes)]: stale temporaries


def _load_kernels(spec):
    """Run the kernel of every dtype the spec draws once, on a scratch buffer large
    enough to start the fill threads, before the output file exists: Numba loads a
    kernel on its first call, and a Ctrl-C that lands inside Numba's loader can be
    swallowed (a ctypes callback) or end the process by SIGINT; this way it never
    finds a file open."""
    from ...backends.cpu import PARALLEL_MIN       # backends load on first use
    for dt in sorted({t.dtype for t in spec.tensors
                      if t.init not in CONSTANT_RULES and t.numel}):
        uniform(empty(PARALLEL_MIN, dt), seed=0)


def write_checkpoint(spec, path, seed, *, chunk_bytes=DEFAULT_CHUNK_BYTES, progress=False,
                     fill="init", flush_depth=1):
    """Write ``spec`` (see :func:`load_spec`) to the safetensors file ``path``.

    Each tensor is filled in place in the memory-mapped, preallocated file
    in chunks of at most ``chunk_bytes`` (whole rows where a row fits); the
    pages of each finished chunk are written back (msync) and dropped
    (madvise DONTNEED) so resident memory stays near ``chunk_bytes`` times
    a few, whatever the file size. The file appears at ``path`` only when
    complete. It is written as an unnamed O_TMPFILE file in ``path``'s
    directory and linked into place at the end (an existing file is replaced
    atomically), so even SIGKILL leaves nothing behind; where O_TMPFILE is
    not available (or the environment sets FASTINIT_CHECKPOINT_NO_TMPFILE=1,
    for tests) it has a temporary name ``.NAME.fastinit-<host>-<pid>-<random>.part``
    and is renamed into place. On any error or KeyboardInterrupt the temporary
    file is removed; one left by a killed process is removed by the next write
    into the directory, once that process is gone (``WriteReport.removed``).
    An exception raised after the file got its name carries
    ``checkpoint_written = path``.

    ``fill="zeros"`` writes zeros instead of the inits through the very same
    path: the write-bandwidth reference of bench/bench_checkpoint.py.
    """
    if fill not in ("init", "zeros"):
        raise ValueError(f"fill must be 'init' or 'zeros', got {fill!r}")
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, numbers.Integral) \
            or chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be a positive integer, got {chunk_bytes!r}")
    spec = load_spec(spec)
    seed = check_u64("seed", seed)
    path = os.fspath(path)
    lay = layout(spec, seed)
    tmpfile.check_output(path)
    if fill == "init":
        _load_kernels(spec)
    t0 = time.perf_counter()
    removed = tmpfile.remove_stale(os.path.dirname(os.path.abspath(path)))
    fd, tmp = tmpfile.open_output(path)
    mm = flusher = bar = None
    ok = False
    try:
        preallocate(fd, lay.total, path)
        mm = mmap.mmap(fd, lay.total)
        mm[:lay.data_start] = lay.header
        base = np.frombuffer(mm, dtype=np.uint8)
        addr = base.ctypes.data
        del base
        flusher = Flusher(mm, fd, addr, depth=flush_depth)
        bar = progress_bar(lay, progress, "fastinit checkpoint")
        _fill_file(mm, lay, seed, chunk_bytes, fill, flusher, bar)
        flusher.done_up_to(lay.total, final=True)
        flusher.close()
        flusher = None
        bar.close()
        bar = None
        mm.close()
        mm = None
        os.fsync(fd)
        if tmp is None:
            tmpfile.link_into_place(fd, path)
        else:
            os.replace(tmp, path)
        ok = True
        os.close(fd)
        fd = None
        tmpfile.fsync_dir(os.path.dirname(os.path.abspath(path)))
    except BaseException as exc:
        if ok or (fd is not None and tmpfile.same_file(fd, path)):
            # interrupted after the complete file got its name: say so to the caller
            exc.checkpoint_written = path
        raise
    finally:
        if not ok:
            if flusher is not None:
                try:
                    flusher.close(wait=False)
                except BaseException:
                    pass
            if bar is not None:
                try:
                    bar.close()
                except BaseException:
                    pass
            if mm is not None:
                try:
                    mm.close()
                except BaseException:       # views still alive in a traceback: GC
                    pass
            if tmp is not None:             # (an unnamed file goes with its last fd)
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
    return WriteReport(path=path, tensors=len(spec), numel=spec.numel, nbytes=lay.total,
                       seconds=time.perf_counter() - t0, fill=fill, seed=seed,
                       removed=removed)


def _fill_file(mm, lay, seed, chunk_bytes, fill, flusher, bar):
    for i, (t, begin, _) in enumerate(lay.entries):
        dt = np_dtype(t.dtype)
        fans = fans_of(t) if fill == "init" else None
        for start, n in chunks(t, chunk_bytes):
            pos = lay.data_start + begin + start * t.itemsize
            view = np.frombuffer(mm, dtype=dt, count=n, offset=pos)
            if fill == "init":
                fill_range(t, view, start, seed, fans)
            else:
                view.view(np.dtype(f"u{t.itemsize}")).fill(0)
            del view
            flusher.done_up_to(pos + n * t.itemsize)
            bar.update(n * t.itemsize)
        tensor_done(bar, i + 1, lay)
