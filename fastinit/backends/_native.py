"""The CPU kernels' machine code: compiled once, cached on disk, loaded without Numba.

Each CPU entry point (kernels/cpu/entry.py: one per distribution, compute
precision and stored bits) is a function of the C ABI whose object code
calls nothing but itself and the C math library. The first process that
needs one compiles it with Numba and writes its object code here, to a file
named by the entry point and a key of everything the code depends on; any
later process links that file with llvmlite's JIT linker and calls it through
ctypes, without importing Numba (whose import alone costs more than a warm
first fill may: docs/design.md, "Start-up").

The key: the digest of every kernel source (``kernels/cpu/*.py`` and
``kernels/_abi.py``), llvmlite's version (Numba requires one llvmlite
release), the CPU the code was compiled for (name and features as Numba decides them:
``NUMBA_CPU_NAME`` and ``NUMBA_CPU_FEATURES`` where set, none for a
``generic`` name, else the host's),
and Numba's ``NUMBA_ENABLE_AVX``/``NUMBA_OPT`` settings, which change the
code Numba emits. A file is written to a
temporary name and renamed, so a reader sees a whole file or none; its
header holds the key, the external symbols and a BLAKE2b of the code, and
a file that does not match is compiled again and replaced.

Where the cache goes (docs/design.md, "Where the disk cache goes"):
``NUMBA_CACHE_DIR`` when set and writable, else ``__pycache__`` next to the
kernels, else the per-user cache directory (``$XDG_CACHE_HOME`` or
``~/.cache``), else a private directory under the temporary directory; with
none writable, kernels are compiled in memory in every process. Object code
is executable, so a directory someone else can write to is never used.
"""

import atexit
import collections
import ctypes
import functools
import hashlib
import json
import os
import secrets
import shutil
import stat
import tempfile
import threading
import warnings

import numpy as np

from ..kernels import _abi
from ..kernels._abi import CPU_SCRATCH, CTL_WORDS, PARAMS, cpu_entry_name

ABI_FILE = os.path.abspath(_abi.__file__)
KERNELS_DIR = os.path.join(os.path.dirname(ABI_FILE), "cpu")
SUBDIR = "fastinit-kernels"         # under the chosen base directory
FORMAT = 1                          # of a cache file; a change makes every file stale

LOADS = collections.Counter()
"""How this process got its entry points: ``loaded`` (object code read from
the disk cache), ``built`` (compiled here: not cached, or the cached file did
not match)."""

_ENV = ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_ENABLE_AVX", "NUMBA_OPT")


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


# --- where the cache goes ---------------------------------------------------------
def _usable(path):
    """Whether ``path`` is (or could be made) a directory this process can write."""
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def _private_temp_dir(root=None):
    """A directory for the cache under the temporary directory, or None.

    ``<tmp>/fastinit-numba-<uid>``, so later processes of the same user find
    the kernels there. Cached kernels are machine code, so the directory is
    used only if it is a real directory owned by this user and writable by
    no one else; otherwise (someone planted it) a fresh one for this process.
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


def _user_cache_base():
    xdg = os.environ.get("XDG_CACHE_HOME")
    return os.path.join(xdg if xdg else os.path.expanduser("~/.cache"), "fastinit")


def _choose():
    """(the cache directory or None, the warning to give or None)."""
    user_dir = os.environ.get("NUMBA_CACHE_DIR")
    tried = []
    if user_dir:
        path = os.path.join(user_dir, SUBDIR)
        if _usable(path):
            return path, None
        tried.append(f"NUMBA_CACHE_DIR={user_dir}")
    for base in (os.path.join(KERNELS_DIR, "__pycache__"), _user_cache_base()):
        path = os.path.join(base, SUBDIR)
        if _usable(path):
            note = None
            if user_dir:                # set, but not writable (else returned above)
                note = (f"fastinit: NUMBA_CACHE_DIR={user_dir} is not writable; fastinit "
                        f"caches its compiled kernels in {path} instead")
            return path, note
        tried.append(base)
    tried = ", ".join(tried)
    base = _private_temp_dir()
    if base is not None and _usable(os.path.join(base, SUBDIR)):
        path = os.path.join(base, SUBDIR)
        return path, (f"fastinit: no writable cache directory ({tried}); fastinit's "
                      f"compiled kernels are cached in {path}, which the system may clear; "
                      f"set NUMBA_CACHE_DIR to a writable directory to keep them")
    return None, (f"fastinit: no writable cache directory ({tried}, nor a temporary "
                   f"directory); fastinit's kernels compile in memory in every process; "
                   f"set NUMBA_CACHE_DIR to a writable directory to cache them")


_CHOICE_LOCK = threading.Lock()
_choice = []


def cache_path():
    """The directory the compiled kernels are cached in, or None when they
    compile in memory (nothing writable). Decided on first use, once per
    process, with a one-line warning when it is not where the settings ask."""
    with _CHOICE_LOCK:
        if not _choice:
            path, note = _choose()
            if note:
                warnings.warn(note, stacklevel=3)
            _choice.append(path)
    return _choice[0]


# --- the key and the files ----------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _ll():
    """llvmlite's binding layer, the native target initialized."""
    from llvmlite import binding as ll
    ll.initialize_native_target()
    ll.initialize_native_asmprinter()
    return ll


@functools.lru_cache(maxsize=None)
def key():
    """What the object code depends on, as a dict of strings (module docstring)."""
    ll = _ll()
    import llvmlite
    # the CPU the code is compiled for, as Numba decides it (numba.core.config):
    # NUMBA_CPU_NAME and NUMBA_CPU_FEATURES where set, no features for a
    # "generic" name, else the host's. With NUMBA_CPU_NAME=generic the key
    # names no host at all: a portable cache.
    cpu = os.environ.get("NUMBA_CPU_NAME")
    features = os.environ.get("NUMBA_CPU_FEATURES")
    if features is None and str(cpu).lower() == "generic":
        features = ""
    if cpu is None:
        cpu = ll.get_host_cpu_name()
    if features is None:
        try:
            features = ll.get_host_cpu_features().flatten()
        except RuntimeError:
            features = ""
    k = dict(format=str(FORMAT), sources=sources_digest(), llvmlite=llvmlite.__version__,
             cpu=cpu, features=features)
    k.update((name, os.environ.get(name, "")) for name in _ENV)
    return k


def _key_hash():
    text = json.dumps(key(), sort_keys=True).encode()
    return hashlib.blake2b(text, digest_size=8).hexdigest()


def file_path(directory, name):
    """The cache file of entry point ``name`` under the current key."""
    return os.path.join(directory, f"{name}-{_key_hash()}.o")


def write(path, name, externals, code):
    """Write a cache file atomically (a temporary file, renamed)."""
    header = dict(key=key(), name=name, externals=list(externals), size=len(code),
                  blake2b=hashlib.blake2b(code).hexdigest())
    # a fresh name, created here (O_EXCL), readable as the umask allows (a cache
    # shared by an image's users); renamed over ``path`` once whole
    tmp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{secrets.token_hex(8)}.o")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(json.dumps(header, sort_keys=True).encode() + b"\n")
            f.write(code)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def read(path, name):
    """(external symbols, object code) of a cache file that matches the current
    key and its own checksum, or None (missing, stale or damaged)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    line, sep, code = data.partition(b"\n")
    try:
        header = json.loads(line)
    except ValueError:
        return None
    if (not sep or not isinstance(header, dict) or header.get("key") != key()
            or header.get("name") != name or header.get("size") != len(code)
            or header.get("blake2b") != hashlib.blake2b(code).hexdigest()
            or not isinstance(header.get("externals"), list)):
        return None
    return header["externals"], code


# --- linking ------------------------------------------------------------------------
_keep = []          # what keeps this process's machine code mapped: engines, built libraries


def _resolve(ll, externals):
    """Make every external symbol known to the JIT linker; False if one is not
    found in this process (the caller then compiles instead)."""
    process = None
    for name in externals:
        if ll.address_of_symbol(name) is not None:
            continue
        if process is None:
            process = ctypes.CDLL(None)
        try:
            address = ctypes.cast(getattr(process, name), ctypes.c_void_p).value
        except AttributeError:
            return False
        ll.add_symbol(name, address)
    return True


def link(name, externals, code):
    """The address of entry point ``name`` in ``code`` (object code), linked
    into an engine of its own; None when a symbol it calls is missing."""
    ll = _ll()
    if not _resolve(ll, externals):
        return None
    machine = ll.Target.from_default_triple().create_target_machine(
        reloc="default", codemodel="jitdefault")
    engine = ll.create_mcjit_compiler(ll.parse_assembly(""), machine)
    engine.add_object_file(ll.ObjectFileRef.from_data(code))
    engine.finalize_object()
    address = engine.get_function_address(name)
    if not address:
        return None
    _keep.append(engine)
    return address


# --- entry points -------------------------------------------------------------------
_PROTO = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                          ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)

_LOCK = threading.RLock()
_entries = {}


def _after_fork():
    global _LOCK, _CHOICE_LOCK
    _LOCK = threading.RLock()     # a thread of the parent may have held them
    _CHOICE_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _build(kind, compute, bits):
    """Compile with Numba: (address, external symbols, object code)."""
    from ..kernels.cpu import entry
    built = entry.build(kind, compute, bits)
    _keep.append(built)
    return built.address, built.externals, built.object_code


def _address(kind, compute, bits, directory):
    name = cpu_entry_name(kind, compute, bits)
    path = None if directory is None else file_path(directory, name)
    cached = None if path is None else read(path, name)
    if cached is not None:
        address = link(name, *cached)
        if address is not None:
            LOADS["loaded"] += 1
            return address
    address, externals, code = _build(kind, compute, bits)
    LOADS["built"] += 1
    if path is not None:
        try:
            write(path, name, externals, code)
        except OSError as exc:
            warnings.warn(f"fastinit: could not write the compiled kernel {path}: {exc}; "
                          f"it is compiled again in the next process", stacklevel=4)
    return address


class _Scratch(threading.local):
    """Per thread: the scratch arrays an entry point is handed, and a block the
    control words and parameters are copied into, with their addresses (taking
    an array's address costs more than the copies: docs/design.md)."""

    def __init__(self):
        self.vals = np.empty(CPU_SCRATCH, np.float64)       # float32 use the first half
        self.words = np.empty(CPU_SCRATCH, np.uint32)
        self.block = np.zeros(CTL_WORDS + max(len(p) for p in PARAMS.values()), np.uint64)
        self.ctl = self.block[:CTL_WORDS]
        params = self.block[CTL_WORDS:]
        self.params = {np.dtype(np.float32): params.view(np.float32),
                       np.dtype(np.float64): params.view(np.float64)}
        self.vals_at = self.vals.ctypes.data
        self.words_at = self.words.ctypes.data
        self.ctl_at = self.block.ctypes.data
        self.params_at = params.ctypes.data


_scratch = _Scratch()


class Kernel:
    """A CPU entry point, called as ``kernel(bits, ctl, params)``: fills the
    flat array ``bits`` (the buffer's unsigned-integer view) from the control
    words ``ctl`` and the parameters ``params``. The arguments are checked
    against the entry point's C signature before the call (it indexes them
    without bounds checks); the call releases the GIL."""

    __slots__ = ("kind", "compute", "bits", "_fn", "_nparams")

    def __init__(self, kind, compute, bits, address):
        self.kind, self.compute, self.bits = kind, np.dtype(compute), np.dtype(bits)
        self._fn = _PROTO(address)
        self._nparams = len(PARAMS[kind])

    def __call__(self, bits, ctl, params):
        if (type(bits) is not np.ndarray or bits.dtype != self.bits or bits.ndim != 1
                or not (bits.flags.c_contiguous and bits.flags.writeable)):
            raise TypeError(f"the {self.kind} kernel fills a writable flat {self.bits} array")
        if ctl.dtype != np.uint64 or ctl.shape != (CTL_WORDS,):
            raise TypeError(f"ctl must be {CTL_WORDS} uint64 control words")
        if params.dtype != self.compute or params.shape != (self._nparams,):
            raise TypeError(f"params must be {self._nparams} {self.compute} values")
        n = bits.size
        if n == 0:
            return
        s = _scratch
        s.ctl[:] = ctl
        s.params[self.compute][:self._nparams] = params
        self._fn(ctypes.addressof(ctypes.c_char.from_buffer(bits)), n, s.ctl_at,
                 s.params_at, s.vals_at, s.words_at)


def kernel(kind, compute, bits):
    """The :class:`Kernel` of (``kind``, ``compute``, ``bits``): loaded from the
    disk cache, or compiled (and cached) on first use in this process."""
    k = _entries.get((kind, compute, bits))
    if k is not None:
        return k
    with _LOCK:
        k = _entries.get((kind, compute, bits))
        if k is None:
            address = _address(kind, compute, bits, cache_path())
            k = _entries[kind, compute, bits] = Kernel(kind, compute, bits, address)
    return k
