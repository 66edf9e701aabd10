"""Exit statuses, messages and signals shared by the checkpoint command lines.

``fastinit checkpoint`` for a file (:mod:`.command`) and for a model
directory (:mod:`.modelcommand`): one-line errors, the --verify report,
SIGTERM handled like Ctrl-C.
"""

import signal
import sys
import threading

EXIT_ERROR, EXIT_USAGE, EXIT_MISMATCH, EXIT_INTERRUPT, EXIT_TERM = 1, 2, 3, 130, 143


class _Terminated(BaseException):
    """SIGTERM while writing: clean up as for Ctrl-C, exit 143."""


class sigterm_raises:
    """While active (in the main thread), SIGTERM raises _Terminated."""

    def __enter__(self):
        self.old = None
        if threading.current_thread() is threading.main_thread():
            def on_term(signum, frame):
                raise _Terminated()
            self.old = signal.signal(signal.SIGTERM, on_term)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)
        return False


def mismatch(output, what, problems):
    """Report what --verify found (each problem on its own line); the exit status."""
    _err(f"verify: {output} does not match {what}:")
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    return EXIT_MISMATCH


def interrupted(exc):
    """(signal name, exit status) of a KeyboardInterrupt or _Terminated."""
    if isinstance(exc, KeyboardInterrupt):
        return "SIGINT", EXIT_INTERRUPT
    return "SIGTERM", EXIT_TERM


def _err(msg):
    print(f"fastinit checkpoint: error: {msg}", file=sys.stderr, flush=True)


def _peak_rss_mib():
    try:
        import resource
    except ImportError:
        return None
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2 ** 20 if sys.platform == "darwin" else r / 1024


def _os_message(exc, path):
    if isinstance(exc, OSError) and exc.filename is None and exc.strerror:
        return exc.strerror if path in exc.strerror else f"{path}: {exc.strerror}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)
