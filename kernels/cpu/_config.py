"""Numba settings for every fastinit CPU kernel, defined once.

No ``fastmath`` (the contract forbids contraction and reassociation);
``error_model="numpy"`` (divisions never raise, so loops vectorize); an on-disk
cache stamped by :class:`_KernelsLocator` with a digest of every kernel source,
placed as docs/design.md ("Where the disk cache goes") says; no
``parallel=True`` and no threading layer (a large fill runs the kernels on
Python threads: fastinit/backends/_threads.py); cached kernels loaded
without Numba's full registry refresh where this Numba is one the narrow
load was checked against (:class:`KernelCache`).
Why each: docs/design.md, "The CPU kernels" and "Start-up".
"""

import atexit
import collections
import functools
import hashlib
import itertools
import os
import shutil
import stat
import tempfile
import threading
import warnings

import numba
from numba.core import caching, entrypoints

_OPTIONS = dict(fastmath=False, nogil=True, error_model="numpy")
# SERIAL, INNER and INLINE (the options of every kernel) are built by
# the module's __getattr__ below on first use, once the cache location is known.


KERNELS_DIR = os.path.dirname(os.path.abspath(__file__))
# the host/kernel interface: the kernels compile its integers in as constants
ABI_FILE = os.path.join(os.path.dirname(KERNELS_DIR), "_abi.py")


def sources_digest(directory=KERNELS_DIR, shared=(ABI_FILE,)):
    """BLAKE2b of the ``.py`` files of ``directory`` and of the ``shared``
    files (names and contents)."""
    h = hashlib.blake2b(digest_size=16)
    paths = [os.path.join(directory, n) for n in sorted(os.listdir(directory))
             if n.endswith(".py")] + list(shared)
    for path in paths:
        h.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    return h.hexdigest()


_digest_once = functools.lru_cache(maxsize=None)(sources_digest)


def _numba_locator(py_func, py_file):
    """The locator Numba itself would choose for ``py_file``, or None.

    Numba's own order: ``NUMBA_CACHE_DIR``, ``__pycache__`` next to the
    file, the per-user cache directory; each only when writable.
    """
    for other in caching.CacheImpl._locator_classes:
        if other is not _KernelsLocator:
            inner = other.from_function(py_func, py_file)
            if inner is not None:
                return inner
    return None


class _DirLocator(caching.UserProvidedCacheLocator):
    """``NUMBA_CACHE_DIR``'s layout under another base directory."""

    def __init__(self, py_func, py_file, base):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(base, self.get_suitable_cache_subpath(py_file))


def _private_temp_dir(root=None):
    """A directory for the cache under the temporary directory, or None.

    ``<tmp>/fastinit-numba-<uid>``, so later processes of the same user find
    the kernels there. Cached kernels are pickles, so the directory is used
    only if it is a real directory owned by this user and writable by no
    one else; otherwise (someone planted it) a fresh one for this process.
    """
    try:
        root = root or tempfile.gettempdir()
    except OSError:                       # no writable temporary directory
        return None
    if os.path.abspath(root) == os.getcwd() and not any(
            os.environ.get(v) for v in ("TMPDIR", "TEMP", "TMP")):
        return None                       # tempfile's last resort; keep the cwd clean
    uid = os.getuid() if hasattr(os, "getuid") else None
    path = os.path.join(root, "fastinit-numba" if uid is None else f"fastinit-numba-{uid}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if uid is None or (stat.S_ISDIR(st.st_mode) and st.st_uid == uid
                       and not st.st_mode & 0o022):
        return path
    try:
        path = tempfile.mkdtemp(prefix="fastinit-numba-", dir=root)
    except OSError:
        return None
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


_fallback_dir = functools.lru_cache(maxsize=None)(_private_temp_dir)


class _KernelsLocator:
    """Numba cache locator for this package's kernels.

    Wraps the locator Numba would have chosen (so the cache stays where
    Numba puts it, NUMBA_CACHE_DIR included), or, when Numba has none
    writable, one under a private temporary directory, and adds the digest
    of every kernel source file to the function's own source stamp.
    """

    def __init__(self, inner):
        self._inner = inner

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != KERNELS_DIR:
            return None
        inner = _numba_locator(py_func, py_file)
        if inner is None:
            base = _fallback_dir()
            if base is None:
                return None
            inner = _DirLocator(py_func, py_file, base)
            try:
                inner.ensure_cache_path()
            except OSError:
                return None
        return cls(inner)

    def ensure_cache_path(self):
        self._inner.ensure_cache_path()

    def get_cache_path(self):
        return self._inner.get_cache_path()

    def get_disambiguator(self):
        return self._inner.get_disambiguator()

    def get_source_stamp(self):
        return (self._inner.get_source_stamp(), _digest_once(KERNELS_DIR))


if _KernelsLocator not in caching.CacheImpl._locator_classes:
    caching.CacheImpl._locator_classes.insert(0, _KernelsLocator)


class LockedIndexDataCacheFile(caching.IndexDataCacheFile):
    """Numba's cache file with its writes serialized across processes.

    Numba reads a kernel's index, adds an entry and rewrites it without a
    lock, and numbers the new entry's data file by the entries it saw: two
    processes adding different signatures of one kernel at once can leave
    the index pointing one signature at the other's code (a uint16 buffer
    filled by the uint32 kernel). Holding an exclusive ``flock`` on
    ``<index>.lock`` around the read-modify-write makes each save see the
    other's entry. Where no lock can be taken (no ``fcntl``, a file system
    without locks), Numba's own unlocked save runs.
    """

    def save(self, key, data):
        try:
            import fcntl
            fd = os.open(self._index_path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except (ImportError, OSError):
            return super().save(key, data)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                pass
            return super().save(key, data)
        finally:
            os.close(fd)             # closing releases the lock


# --- loading cached kernels without Numba's full refresh ---------------------------
# Before it loads any cached function, Numba refreshes its whole target context
# (``Cache.load_overload``): it imports and installs every registry of
# implementations and typing templates (numba.np.arraymath, which imports
# scipy.linalg to look for BLAS, numba.np.linalg, the typed containers...).
# A cached kernel needs none of them: its machine code is linked, not lowered
# again. What it does need is the runtime (NRT) and the symbols its code calls;
# KernelCache loads with just those and checks every external symbol of the
# kernel resolves before linking it (an unresolved one would link to address 0,
# not raise). Anything unexpected takes Numba's own path. docs/design.md,
# "Start-up".
NARROW_NUMBA = ("0.62", "0.63", "0.64", "0.65", "0.66", "0.67", "0.68")
"""The Numba versions (major.minor) whose cache-load path the narrow load was
checked against (tests/test_kernel_load.py passed under each); on any other
Numba every kernel loads through Numba's own ``load_overload``."""

LOADS = collections.Counter()
"""How this process's kernel cache lookups went: ``narrow`` (loaded without the
refresh), ``full`` (through Numba's ``load_overload``), ``miss`` (not cached:
compiled)."""


def _version_checked(version=None):
    """Whether ``version`` (default: the running Numba's) is in :data:`NARROW_NUMBA`."""
    parts = (version or numba.__version__).split(".")
    return ".".join(parts[:2]) in NARROW_NUMBA


NARROW = _version_checked()
"""Whether kernels load through :meth:`KernelCache.load_overload`'s narrow path."""


def _resolvable(name, engine):
    """Whether the external symbol ``name`` of a cached kernel resolves: an LLVM
    intrinsic, a symbol the process or Numba registered, or one Numba's JIT
    defined (the runtime's compiled functions)."""
    from llvmlite import binding as ll
    return (name.startswith("llvm.") or ll.address_of_symbol(name) is not None
            or engine.is_symbol_defined(name))


def unresolved_symbols(payload, target_context):
    """The external symbols of a cached kernel's ``payload`` (the tuple Numba
    pickles: library, fndesc, environment, signature, ..., reload_init,
    environments) that do not resolve, after running its ``reload_init``.
    Raises on a payload of another shape."""
    from llvmlite import binding as ll
    if not isinstance(payload, tuple) or len(payload) != 9:
        raise TypeError(f"unexpected cached payload: {type(payload).__name__} "
                        f"of {len(payload) if isinstance(payload, tuple) else '?'}")
    (_name, kind, (_object_code, bitcode)), reload_init = payload[0], payload[7]
    if kind != "object":
        raise TypeError(f"unexpected cached library kind {kind!r}")
    for init in reload_init:
        init()
    module = ll.parse_bitcode(bitcode)
    engine = target_context.codegen()._engine
    return [v.name for v in itertools.chain(module.functions, module.global_variables)
            if v.is_declaration and not _resolvable(v.name, engine)]


_FULL = object()        # the narrow load declined: take Numba's path


class KernelCache(caching.FunctionCache):
    """Numba's per-function cache, loading without the full context refresh
    (see the comment above :data:`NARROW_NUMBA`)."""

    def load_overload(self, sig, target_context):
        payload = _FULL
        if NARROW:
            try:
                payload = self._narrow_payload(sig, target_context)
            except Exception:               # anything unexpected: Numba's path
                payload = _FULL
        if payload is _FULL:
            cres = super().load_overload(sig, target_context)
            LOADS["full" if cres is not None else "miss"] += 1
            return cres
        if payload is None:
            LOADS["miss"] += 1
            # about to compile: the extension entry points first, as Numba
            # would have before typing (the dispatcher's hook skipped them)
            entrypoints.init_all()
            return None
        cres = self._impl.rebuild(target_context, payload)  # as Numba's own load does
        LOADS["narrow"] += 1
        return cres

    def _narrow_payload(self, sig, target_context):
        """The cached payload for ``sig`` with the runtime ready and every
        symbol of it resolvable, None when not cached, or ``_FULL`` when some
        symbol would not resolve."""
        if not self._enabled:
            return None
        from numba.core.runtime import rtsys
        rtsys.initialize(target_context)    # the NRT's symbols and functions
        payload = self._cache_file.load(self._index_key(sig, target_context.codegen()))
        if payload is None:
            return None
        if unresolved_symbols(payload, target_context):
            return _FULL
        return payload


def _no_entry_points():
    """The kernels' compilation-chain hook: the extension entry points wait
    for a compile (``KernelCache.load_overload`` on a miss, or any other
    dispatcher); loading a cached kernel of plain arrays needs none."""


def lock_cache_writes(namespace):
    """Prepare every cached Numba dispatcher in ``namespace`` (a module's
    globals): the locked cache file and :class:`KernelCache` (which loads
    narrowly where :data:`NARROW`, the extension entry points then left to a
    compile, and counts its loads in :data:`LOADS`). Returns how many."""
    from numba.core.dispatcher import Dispatcher
    count = 0
    for obj in list(namespace.values()):
        cache = getattr(obj, "_cache", None) if isinstance(obj, Dispatcher) else None
        cache_file = getattr(cache, "_cache_file", None)
        if type(cache_file) is caching.IndexDataCacheFile:
            cache_file.__class__ = LockedIndexDataCacheFile
            count += 1
            if type(cache) is caching.FunctionCache:
                cache.__class__ = KernelCache
                if NARROW:
                    obj._compilation_chain_init_hook = _no_entry_points
    return count


def _no_python_call(name):
    def _compile_for_args(*args, **kws):
        raise TypeError(f"{name}() runs only inside fastinit's compiled kernels and has no "
                        f"Python entry point; call it from a numba.njit function")
    return _compile_for_args


def kernel_only(namespace):
    """Guard every ``INNER``/``INLINE`` dispatcher defined in ``namespace`` (a
    module's globals; not those it imports) against calls from Python: compiled without a CPython wrapper,
    such a call would jump to no code. A call from Python raises TypeError;
    calls from jitted code compile and link as usual (their signatures are
    recorded in ``overloads``, which typing and lowering read, and never in
    the dispatcher's table of Python entry points). Returns how many."""
    from numba.core.dispatcher import Dispatcher
    count = 0
    for obj in list(namespace.values()):
        if (isinstance(obj, Dispatcher) and obj.targetoptions.get("no_cpython_wrapper")
                and obj.py_func.__module__ == namespace["__name__"]):
            obj._compile_for_args = _no_python_call(obj.py_func.__qualname__)
            obj.add_overload = functools.partial(_record_overload, obj)
            count += 1
    return count


def _record_overload(dispatcher, cres):
    dispatcher.overloads[tuple(cres.signature.args)] = cres


def _disk_cache():
    """Whether the kernels can be cached on disk. Warns (one line) when the
    cache cannot go where Numba's settings put it."""
    loc = _KernelsLocator.from_function(sources_digest, os.path.join(KERNELS_DIR, "_config.py"))
    user_dir = numba.config.CACHE_DIR
    if loc is not None and not isinstance(loc._inner, _DirLocator):
        if user_dir and not isinstance(loc._inner, caching.UserProvidedCacheLocator):
            warnings.warn(f"fastinit: NUMBA_CACHE_DIR={user_dir} is not writable; Numba "
                          f"caches fastinit's kernels in {loc.get_cache_path()} instead")
        return True
    tried = [f"NUMBA_CACHE_DIR={user_dir}"] if user_dir else []
    tried += [os.path.join(KERNELS_DIR, "__pycache__"),
              caching.AppDirs(appname="numba", appauthor=False).user_cache_dir]
    tried = ", ".join(tried)
    if loc is not None:
        warnings.warn(f"fastinit: no writable Numba cache directory ({tried}); fastinit's "
                      f"compiled kernels are cached in {_fallback_dir()}, which the system "
                      f"may clear; set NUMBA_CACHE_DIR to a writable directory to keep them")
        return True
    warnings.warn(f"fastinit: no writable Numba cache directory ({tried}, nor a temporary "
                  f"directory); fastinit's kernels compile in memory in every process; "
                  f"set NUMBA_CACHE_DIR to a writable directory to cache them")
    return False


def cache_path():
    """The directory this package's compiled kernels are cached in, or None
    when they compile in memory (nothing writable: see ``_disk_cache``).
    Decides the cache location first, as the first fill does."""
    if not __getattr__("SERIAL")["cache"]:
        return None
    loc = _KernelsLocator.from_function(sources_digest, os.path.join(KERNELS_DIR, "fills.py"))
    return None if loc is None else loc.get_cache_path()


_OPTIONS_LOCK = threading.Lock()


def __getattr__(name):
    """The Numba options of every kernel.

    ``SERIAL``: the entry kernels a fill calls from Python, cached on disk.
    ``INNER``: a function called only from other kernels, compiled once per
    signature and linked into its callers (not cached on its own: an entry
    kernel is cached with everything it calls; no Python wrapper: see
    :func:`kernel_only`). ``INLINE``: the same, and LLVM inlines it at every
    call site (``forceinline``: Numba's own ``inline="always"``
    copies and retypes the function's IR at every site, which made a cold
    compile take twice as long: docs/design.md).

    Built when the kernel modules first import them (the first fill), so
    that ``import fastinit`` neither touches the disk nor warns.
    """
    if name not in ("SERIAL", "INNER", "INLINE"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _OPTIONS_LOCK:
        if "SERIAL" not in globals():
            try:
                cache = _disk_cache()
            except AttributeError as exc:   # would read as "cannot import name 'SERIAL'"
                raise RuntimeError(f"fastinit: setting up Numba's cache failed: {exc!r}") from exc
            serial = dict(cache=cache, **_OPTIONS)
            inner = dict(_OPTIONS, cache=False, no_cpython_wrapper=True, no_cfunc_wrapper=True)
            globals().update(SERIAL=serial, INNER=inner, INLINE=dict(inner, forceinline=True))
    return globals()[name]
