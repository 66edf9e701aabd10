"""The output file's name: none while it is written, OUT once it is complete.

The file is filled under no name at all where the system allows it: an
O_TMPFILE file in the output's directory, linked into place when complete.
A process killed with SIGKILL (or a machine that goes down) then leaves
nothing behind: the kernel frees an unnamed file's blocks. Where O_TMPFILE
is missing (not Linux, or a file system without it) the file gets a name
that carries its writer's process id, and the next write into that
directory removes the ones whose process is gone (docs/checkpoint.md,
"Temporary files").
"""

import errno
import os
import re
import secrets
import stat

from .._args import output_problem

NO_TMPFILE_ENV = "FASTINIT_CHECKPOINT_NO_TMPFILE"   # "1": always use a named file (tests)
_PROC_FD = "/proc/self/fd"
_PART_RE = re.compile(r"^\.(?P<base>.+)\.fastinit-(?P<tag>[0-9a-f]{8})-(?P<pid>[1-9][0-9]*)"
                      r"-(?P<rand>[0-9a-f]{8})\.part$")
_TMPFILE_UNSUPPORTED = frozenset(
    getattr(errno, n) for n in ("EOPNOTSUPP", "ENOTSUP", "EISDIR", "EINVAL")
    if hasattr(errno, n))
_REUSE_MARGIN_S = 60.0


def host_tag():
    """8 hex digits for this machine and process-id namespace: a process id in a
    temporary file's name is only looked up where it means the same process."""
    import hashlib
    import socket
    try:
        ns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        ns = ""
    return hashlib.blake2b(f"{socket.gethostname()}\0{ns}".encode("utf-8", "replace"),
                           digest_size=4).hexdigest()


def _part_name(base):
    """A fresh ``.BASE.fastinit-<host>-<pid>-<random>.part`` (BASE cut to keep the
    name under the usual 255-byte limit)."""
    short = base.encode("utf-8")[:160].decode("utf-8", "ignore")
    return f".{short}.fastinit-{host_tag()}-{os.getpid()}-{secrets.token_hex(4)}.part"


def _tmpfile_wanted():
    return (os.environ.get(NO_TMPFILE_ENV, "") in ("", "0") and hasattr(os, "O_TMPFILE")
            and os.path.isdir(_PROC_FD))


def _cannot_create(exc, d, path):
    return type(exc)(exc.errno, f"cannot create a file in {d!r} for {path!r}: "
                                f"{exc.strerror or exc}")


def open_output(path):
    """(fd, name): an unnamed O_TMPFILE file in the output's directory (name None),
    or, where O_TMPFILE is not available, a new file named by :func:`_part_name`."""
    d, base = os.path.split(os.path.abspath(path))
    if _tmpfile_wanted():
        try:
            return os.open(d, os.O_TMPFILE | os.O_RDWR, 0o666), None
        except OSError as exc:
            if exc.errno not in _TMPFILE_UNSUPPORTED:
                raise _cannot_create(exc, d, path) from None
    while True:
        tmp = os.path.join(d, _part_name(base))
        try:
            return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise _cannot_create(exc, d, path) from None


def link_into_place(fd, path):
    """Give the unnamed file ``fd`` the name ``path``: linkat of /proc/self/fd/N
    (AT_SYMLINK_FOLLOW) straight to ``path`` when nothing is there, else to a
    tagged temporary name and os.replace onto ``path`` (atomic)."""
    d, base = os.path.split(os.path.abspath(path))
    src = f"{_PROC_FD}/{fd}"
    dfd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        def link(dst):
            # the dir_fd arguments make CPython call linkat(..., AT_SYMLINK_FOLLOW);
            # without them it calls link(), which links the /proc symlink itself (EXDEV)
            os.link(src, dst, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=True)
        try:
            link(base)
            return
        except FileExistsError:
            pass
        while True:
            tmp = _part_name(base)
            try:
                link(tmp)
                break
            except FileExistsError:
                continue
        try:
            os.replace(tmp, base, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
            raise
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot give the written file the name {path!r}: "
                                   f"{exc.strerror or exc}") from None
    finally:
        os.close(dfd)


def _process_start(pid):
    """When process ``pid`` started (seconds since the epoch), or None where unknown
    (Linux /proc only)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            st = f.read()
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        ticks = int(st[st.rindex(b")") + 2:].split()[19])       # field 22, starttime
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _writer_gone(pid, mtime):
    """True when process ``pid`` cannot be writing a file last modified at ``mtime``:
    there is no such process, or it started after that (the pid was reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:                 # a process of another user: alive
        pass
    except OSError:
        return False
    started = _process_start(pid)
    return started is not None and started > mtime + _REUSE_MARGIN_S


def remove_stale(d):
    """Remove the temporary files of earlier writes into ``d`` whose process is gone.

    Only regular files named exactly as :func:`_part_name` names them, with this
    machine's tag, and whose process is gone (see :func:`_writer_gone`: a file
    with this very process's id is kept unless it predates the process, as
    another thread may be writing it). Returns [(path, size)] of the removed
    files."""
    if os.name != "posix":                  # os.kill(pid, 0) is not a probe elsewhere
        return []
    try:
        names = os.listdir(d)
    except OSError:
        return []
    tag, removed = None, []
    for name in names:
        m = _PART_RE.match(name)
        if m is None:
            continue
        tag = tag or host_tag()
        pid = int(m["pid"])
        if m["tag"] != tag:
            continue
        p = os.path.join(d, name)
        try:
            st = os.lstat(p)
            if not stat.S_ISREG(st.st_mode) or not _writer_gone(pid, st.st_mtime):
                continue
            os.unlink(p)
        except OSError:
            continue
        removed.append((p, st.st_size))
    return removed


def same_file(fd, path):
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def check_output(path):
    """A clear OSError for output paths that cannot work, before any work is done."""
    problem = output_problem(os.fspath(path), writable=False)
    if problem is not None:
        raise type(problem)(f"output {problem}")


def fsync_dir(d):
    try:
        dfd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
