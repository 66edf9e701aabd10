"""Filling and reading a checkpoint through a memory mapping, in bounded memory.

A tensor is walked in chunks of whole rows (:func:`chunks`); the finished
page ranges of a written file are written back and dropped from the process
(:class:`Flusher`, on a background thread on Linux), those of a read one
dropped (:func:`drop_pages`), so resident memory stays near a few chunks
whatever the file size. Also: preallocation (a full disk fails before any
write) and the progress bar over the bytes.
"""

import errno
import math
import mmap
import os
import queue
import sys
import threading

from ..._progress import bar

DEFAULT_CHUNK_BYTES = 64 << 20


def chunks(t, chunk_bytes):
    """(start, count) element ranges of ``t``: whole rows of at most chunk_bytes
    when a row fits, else pieces of a row."""
    n = t.numel
    if n == 0:
        return
    per = max(1, chunk_bytes // t.itemsize)
    row = math.prod(t.shape[1:]) if len(t.shape) > 1 else 1
    if 0 < row <= per:
        per -= per % row
    for start in range(0, n, per):
        yield start, min(per, n - start)


class _Libc:
    """msync and madvise through ctypes, which releases the GIL (mmap.flush does not),
    so pages are written back while the next chunk is filled."""

    MS_SYNC = 4
    MADV_DONTNEED = 4

    def __init__(self):
        import ctypes
        self.ctypes = ctypes
        lib = ctypes.CDLL(None, use_errno=True)
        self.msync_fn = lib.msync
        self.madvise_fn = lib.madvise
        for f in (self.msync_fn, self.madvise_fn):
            f.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            f.restype = ctypes.c_int

    def _check(self, rc, what):
        if rc != 0:
            err = self.ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def msync(self, addr, length):
        self._check(self.msync_fn(addr, length, self.MS_SYNC), "msync")

    def madvise(self, addr, length):
        self._check(self.madvise_fn(addr, length, self.MADV_DONTNEED), "madvise")


def _libc():
    if sys.platform != "linux":
        return None
    try:
        return _Libc()
    except (OSError, AttributeError):
        return None


class Flusher:
    """Writes back and drops finished page ranges of the mapping.

    On Linux a background thread does it (msync MS_SYNC, madvise
    MADV_DONTNEED, posix_fadvise DONTNEED) while the main thread fills on;
    at most ``depth`` ranges wait, so resident dirty memory stays bounded.
    Elsewhere it runs inline with mmap.flush / mmap.madvise.
    """

    def __init__(self, mm, fd, base_addr, depth=2):
        self.mm, self.fd, self.base = mm, fd, base_addr
        self.page = mmap.PAGESIZE
        self.mark = 0                       # everything below is handed over
        self.libc = _libc() if base_addr is not None else None
        self.error = None
        self.thread = None
        if self.libc is not None:
            self.q = queue.Queue(maxsize=depth)
            self.thread = threading.Thread(target=self._loop, name="fastinit-flush",
                                           daemon=True)
            self.thread.start()

    def _drop(self, begin, end):
        if self.libc is not None:
            self.libc.msync(self.base + begin, end - begin)
            self.libc.madvise(self.base + begin, end - begin)
        else:
            self.mm.flush(begin, end - begin)
            drop_pages(self.mm, begin, end - begin)
        if hasattr(os, "posix_fadvise"):
            try:
                os.posix_fadvise(self.fd, begin, end - begin, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass

    def _loop(self):
        while True:
            item = self.q.get()
            if item is None:
                return
            if self.error is None:
                try:
                    self._drop(*item)
                except BaseException as exc:         # reported to the main thread
                    self.error = exc

    def _raise(self):
        if self.error is not None:
            err, self.error = self.error, None
            raise err

    def done_up_to(self, pos, final=False):
        """Bytes [0, pos) of the file are final: write back and drop their pages."""
        self._raise()
        end = pos if final else pos - pos % self.page
        if end <= self.mark:
            return
        begin, self.mark = self.mark, end
        self._submit(begin, end)

    def drop(self, begin, end):
        """Write back and drop the pages of bytes [begin, end), widened to whole pages,
        in any order and any number of times: for a model's own init code, which
        writes its tensors in its own order and may come back to one. Dropping pages
        of a shared file mapping loses nothing (the data stays in the file and its
        page cache; a later access maps it again)."""
        self._raise()
        begin -= begin % self.page
        end = min(len(self.mm), end + (-end) % self.page)
        if end > begin:
            self._submit(begin, end)

    def _submit(self, begin, end):
        if self.thread is not None:
            self.q.put((begin, end))
        else:
            self._drop(begin, end)

    def close(self, wait=True):
        """Stop the thread (after the queued ranges when ``wait``)."""
        if self.thread is not None:
            if not wait:
                try:
                    while True:
                        self.q.get_nowait()
                except queue.Empty:
                    pass
            self.q.put(None)
            self.thread.join()
            self.thread = None
        self._raise()


def drop_pages(mm, pos, nbytes):
    """madvise(MADV_DONTNEED) the whole pages inside [pos, pos + nbytes) of mapping
    ``mm``, where Python offers it (a no-op elsewhere)."""
    if not (hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED")):
        return
    begin = pos + (-pos) % mmap.PAGESIZE
    end = pos + nbytes
    end -= end % mmap.PAGESIZE
    if end > begin:
        mm.madvise(mmap.MADV_DONTNEED, begin, end - begin)


def progress_bar(lay, enabled, desc):
    """A tqdm bar over the data bytes of layout ``lay``, its postfix counting
    tensors; ``enabled`` False makes every call on it a no-op."""
    b = bar(lay.total - lay.data_start, desc, enabled=bool(enabled), unit="B")
    b.set_postfix_str(f"0/{len(lay.entries)} tensors")
    return b


def tensor_done(b, count, lay):
    """Show on bar ``b`` that ``count`` of ``lay``'s tensors are done."""
    b.set_postfix_str(f"{count}/{len(lay.entries)} tensors", refresh=False)


def preallocate(fd, size, path):
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, size)
        else:                                   # macOS: no fallocate; may SIGBUS when full
            os.ftruncate(fd, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(exc.errno, f"not enough space for {path!r}: the file needs "
                                     f"{size / 1e9:.3f} GB ({size} bytes) "
                                     f"({os.strerror(exc.errno)})") from None
        raise OSError(exc.errno, f"cannot preallocate {size} bytes for {path!r}: "
                                 f"{exc.strerror or exc}") from None

