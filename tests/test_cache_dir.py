"""Fills work where the package and the home directory are read-only.

A container image, a shared site-packages or a non-root user: the
kernels' disk cache (fastinit/backends/_native.py) cannot go next to the
package; it goes to the per-user cache directory, then a private temporary
directory, or the kernels compile in memory; ``NUMBA_CACHE_DIR`` comes first.

The scenarios run for real: the installed package (``fastinit/`` and its
``kernels/``) is copied into a temporary tree made read-only, and a child
process imports it from there and fills a buffer. Read-only permissions do
not bind root, so as root the child first drops ``CAP_DAC_OVERRIDE``
(and its read-search and owner twins) from its bounding set and re-executes
itself: it keeps uid 0, so it still reads the interpreter wherever it is
installed, but the permission bits now apply. Every child checks that
precondition (it cannot write into its package) before filling.

The children compile the float64 uniform kernel with an empty cache
(seconds each); they run side by side.
"""

import concurrent.futures
import json
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

import fastinit as fi
from fastinit.backends import _native

N, SEED = 3001, 20240611

# As root, drop the capabilities that override file permissions, then run the
# real child. Exit 77: the capabilities could not be dropped.
DROP_DAC = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for cap in (1, 2, 3):          # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
    if libc.prctl(24, cap, 0, 0, 0) != 0:      # PR_CAPBSET_DROP
        sys.exit(77)
os.execv(sys.executable, [sys.executable] + sys.argv[1:])
"""

CHILD = r"""
import json, os, sys, tempfile
cfg = json.loads(sys.argv[1])
if cfg["tempdir"]:
    tempfile.tempdir = cfg["tempdir"]     # as if no temporary directory were writable
import numpy as np
import fastinit as fi
from fastinit.backends import _native
probe = os.path.join(_native.KERNELS_DIR, "write-probe")
try:
    open(probe, "w").close()
except PermissionError:
    package_writable = False
else:
    os.remove(probe)
    package_writable = True
if not cfg["fill"]:
    print(json.dumps(dict(package_writable=package_writable,
                          cache=_native.cache_path() is not None)))
    sys.exit()
a = np.empty(cfg["n"], np.float64)
fi.uniform(a, -2.0, 3.0, seed=cfg["seed"])
path = _native.cache_path()
name = "fastinit_cpu_uniform_float64_uint64"
print(json.dumps(dict(
    kernels_dir=_native.KERNELS_DIR,
    package_writable=package_writable,
    bits=a.tobytes().hex(),
    cache=path is not None,
    cache_path=path,
    hits=_native.LOADS["loaded"],
    misses=_native.LOADS["built"],
    keyed=path is not None and _native.read(_native.file_path(path, name), name) is not None,
)))
"""


def _tree(root, mode):
    for d, _, files in os.walk(root):
        for name in files:
            os.chmod(os.path.join(d, name), mode & 0o666)
        os.chmod(d, mode)


class Child:
    def __init__(self, proc):
        self.rc, self.stderr = proc.returncode, proc.stderr
        lines = proc.stdout.strip().splitlines()
        self.out = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
        self.warnings = [ln for ln in proc.stderr.splitlines() if "Warning: fastinit:" in ln]

    def ok(self):
        assert self.rc == 0 and "Traceback" not in self.stderr, self.stderr[-3000:]
        return self.out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The read-only package copy, the directories, the parent's fill,
    ``runs[name]()``: the finished child(ren) of each scenario, started in
    the background, and ``launch(...)``: one more child, run now."""
    if not hasattr(os, "geteuid"):
        pytest.skip("POSIX file permissions")
    if os.geteuid() == 0 and sys.platform != "linux":
        pytest.skip("as root, read-only permissions can only be enforced here on Linux "
                    "(by dropping CAP_DAC_OVERRIDE)")
    top = tmp_path_factory.mktemp("readonly")
    pkg = top / "site"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(os.path.dirname(os.path.abspath(fi.__file__)), pkg / "fastinit", ignore=ignore)
    shutil.rmtree(pkg / "fastinit" / "kernels", ignore_errors=True)
    shutil.copytree(os.path.dirname(_native.KERNELS_DIR), pkg / "fastinit" / "kernels",
                    ignore=ignore)
    dirs = {name: top / name for name in ("home", "ro_home", "cache_dir", "ro_cache_dir",
                                          "tmp_cache_dir", "tmp_home", "tmp", "ro_tmp")}
    for d in dirs.values():
        d.mkdir()
    read_only = (pkg, dirs["ro_home"], dirs["ro_cache_dir"], dirs["ro_tmp"])
    for ro in read_only:
        _tree(ro, 0o555)

    def launch(home, tmpdir, cache_dir=None, tempdir=None, fill=True):
        env = {k: v for k, v in os.environ.items()
               if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "NUMBA_CACHE_LOCATOR_CLASSES")}
        env.update(HOME=str(home), TMPDIR=str(tmpdir), PYTHONPATH=str(pkg),
                   PYTHONDONTWRITEBYTECODE="1")
        if cache_dir is not None:
            env["NUMBA_CACHE_DIR"] = str(cache_dir)
        cfg = json.dumps(dict(n=N, seed=SEED, tempdir=tempdir and str(tempdir), fill=fill))
        cmd = [sys.executable, "-c", CHILD, cfg]
        if os.geteuid() == 0:
            cmd = [sys.executable, "-c", DROP_DAC] + cmd[1:]
        proc = subprocess.run(cmd, env=env, cwd=str(top), capture_output=True, text=True,
                              timeout=900)
        child = Child(proc)
        if proc.returncode == 77:
            pytest.skip("running as root without CAP_SETPCAP: cannot drop CAP_DAC_OVERRIDE, "
                        "so read-only permissions cannot be enforced on a child")
        if child.out is not None and child.out["package_writable"]:
            pytest.skip("the child could write into its read-only package copy (permissions "
                        "are not enforced for this user here)")
        return child

    def twice(**kw):
        """Two processes one after the other: the second should load the cache."""
        return launch(**kw), launch(**kw)

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1))
    runs = {
        # NUMBA_CACHE_DIR is writable: it is used, whatever else is read-only
        "cache_dir": pool.submit(twice, home=dirs["ro_home"], tmpdir=dirs["tmp_cache_dir"],
                                 cache_dir=dirs["cache_dir"]),
        # read-only package, writable HOME: Numba's per-user cache directory
        "home": pool.submit(twice, home=dirs["home"], tmpdir=dirs["tmp_home"]),
        # read-only package and HOME, no XDG_CACHE_HOME: a private temporary directory
        "temp": pool.submit(twice, home=dirs["ro_home"], tmpdir=dirs["tmp"]),
        # nothing writable, NUMBA_CACHE_DIR included: compiled in memory
        "memory": pool.submit(launch, home=dirs["ro_home"], tmpdir=dirs["ro_tmp"],
                              cache_dir=dirs["ro_cache_dir"], tempdir=dirs["ro_tmp"]),
    }
    expected = np.empty(N, np.float64)        # this process' fill, from the checkout
    fi.uniform(expected, -2.0, 3.0, seed=SEED)
    yield dict(runs={k: f.result for k, f in runs.items()}, expected=expected.tobytes().hex(),
               pkg=pkg, launch=launch, **dirs)
    pool.shutdown(wait=True, cancel_futures=True)
    for ro in read_only:
        _tree(ro, 0o755)


def _under(path, base):
    return os.path.commonpath([str(path), str(base)]) == str(base)


def _cache_files(base):
    return [os.path.join(d, f) for d, _, files in os.walk(base) for f in files
            if f.endswith(".o")]


def _assert_filled_from_copy(world, out):
    assert _under(out["kernels_dir"], world["pkg"])      # the read-only copy, not the checkout
    assert out["bits"] == world["expected"]              # the same bytes as this process' fill


def test_numba_cache_dir_is_honoured(world):
    child, again = world["runs"]["cache_dir"]()
    out = child.ok()
    _assert_filled_from_copy(world, out)
    assert not child.warnings, child.stderr
    assert out["cache"] and out["keyed"]
    assert _under(out["cache_path"], world["cache_dir"])
    assert out["misses"] >= 1 and out["hits"] == 0
    assert _cache_files(world["cache_dir"])
    assert not os.listdir(world["tmp_cache_dir"])
    again = again.ok()
    assert again["bits"] == world["expected"]
    assert again["hits"] >= 1 and again["misses"] == 0    # loaded, not compiled


def test_writable_home_gets_the_per_user_cache(world):
    child, again = world["runs"]["home"]()
    out = child.ok()
    _assert_filled_from_copy(world, out)
    assert not child.warnings, child.stderr
    assert out["cache"] and out["keyed"]
    assert _under(out["cache_path"], world["home"] / ".cache")
    assert out["misses"] >= 1 and out["hits"] == 0
    assert _cache_files(world["home"] / ".cache")
    assert not os.listdir(world["tmp_home"])
    again = again.ok()
    assert again["bits"] == world["expected"]
    assert again["hits"] >= 1 and again["misses"] == 0
    assert again["cache_path"] == out["cache_path"]


def test_read_only_home_falls_back_to_a_private_temp_dir(world):
    child, again_child = world["runs"]["temp"]()
    out = child.ok()
    _assert_filled_from_copy(world, out)
    base = world["tmp"] / f"fastinit-numba-{os.geteuid()}"
    assert len(child.warnings) == 1, child.stderr
    assert str(base) in child.warnings[0] and "NUMBA_CACHE_DIR" in child.warnings[0]
    assert out["cache"] and out["keyed"]
    assert _under(out["cache_path"], base)
    assert out["misses"] >= 1 and out["hits"] == 0
    assert stat.S_IMODE(os.stat(base).st_mode) == 0o700
    assert _cache_files(base)
    again = again_child.ok()
    assert again["bits"] == world["expected"]
    assert again["hits"] >= 1 and again["misses"] == 0    # later processes find it
    assert len(again_child.warnings) == 1


def test_nothing_writable_compiles_in_memory(world):
    child = world["runs"]["memory"]()
    out = child.ok()
    _assert_filled_from_copy(world, out)
    assert len(child.warnings) == 1, child.stderr
    line = child.warnings[0]
    assert "compile in memory" in line and f"NUMBA_CACHE_DIR={world['ro_cache_dir']}" in line
    assert out["cache"] is False and out["cache_path"] is None


def test_an_unwritable_numba_cache_dir_is_named(world, tmp_path):
    # say where the cache went instead
    home = tmp_path / "home"
    home.mkdir()
    child = world["launch"](home=home, tmpdir=tmp_path, cache_dir=world["ro_cache_dir"],
                            fill=False)
    assert child.ok()["cache"] is True
    assert len(child.warnings) == 1, child.stderr
    line = child.warnings[0]
    assert f"NUMBA_CACHE_DIR={world['ro_cache_dir']} is not writable" in line
    assert str(home / ".cache" / "fastinit") in line


# -- the temporary directory is private (cached kernels are machine code) ----

@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX ownership checks")
def test_private_temp_dir_is_created_private_and_reused(tmp_path):
    path = _native._private_temp_dir(str(tmp_path))
    assert path == str(tmp_path / f"fastinit-numba-{os.getuid()}")
    st = os.lstat(path)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077 == 0
    assert _native._private_temp_dir(str(tmp_path)) == path


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX ownership checks")
@pytest.mark.parametrize("planted", ["symlink", "shared"])
def test_private_temp_dir_refuses_a_planted_one(tmp_path, planted):
    name = tmp_path / f"fastinit-numba-{os.getuid()}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if planted == "symlink":
        name.symlink_to(elsewhere, target_is_directory=True)
    else:
        name.mkdir()
        os.chmod(name, 0o777)
    path = _native._private_temp_dir(str(tmp_path))
    assert path is not None and path != str(name)
    assert os.path.dirname(path) == str(tmp_path)
    st = os.lstat(path)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert not os.listdir(elsewhere)
