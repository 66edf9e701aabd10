"""``fastinit warmup``: every kernel compiled ahead of time into the disk cache.

A run into an empty ``NUMBA_CACHE_DIR`` compiles (one dtype here, to keep
the suite short; the distributions in two worker processes), names the
cache and leaves one file per entry point there; later runs (with and
without worker processes) link every kernel and compile none. With nothing writable the
command says so and exits 1 before compiling anything (a read-only copy of
the package, as tests/test_cache_dir.py builds it).
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

import fastinit as fi
from fastinit import cli
from fastinit.backends import _native
from test_cache_dir import DROP_DAC, _tree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATS = re.compile(r"(\d+) kernel entry points compiled, (\d+) loaded from the cache; "
                   r"(\d+) kernel files in (.+)$", re.M)


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "NUMBA_CACHE_LOCATOR_CLASSES")}
    env.update(extra)
    return env


def _warmup(env, *argv, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "fastinit", "warmup", *argv], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=900)


def test_warmup_fills_an_empty_cache_then_loads_it(tmp_path):
    cache = tmp_path / "cache"
    env = _env(NUMBA_CACHE_DIR=str(cache))
    first = _warmup(env, "--dtypes", "float16", "--jobs", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"kernel cache: {cache}" in first.stdout
    # the entry point of every distribution for 16-bit output, each compiled
    # once across the processes, each in its own file
    from fastinit.kernels._abi import CPU_ENTRIES
    entries = len([e for e in CPU_ENTRIES if e[2] == "uint16"])
    compiled, loaded, written, where = STATS.search(first.stdout).groups()
    assert int(compiled) == entries == 3 and int(written) == entries
    assert where.startswith(str(cache))
    assert len([f for f in os.listdir(where) if f.endswith(".o")]) == int(written)
    assert "compiling kernels" in first.stderr          # the progress bar
    for jobs in ("2", "1"):         # with a full cache, no worker starts either way
        again = _warmup(env, "--dtypes", "float16", "--quiet", "--jobs", jobs)
        assert again.returncode == 0, again.stderr[-3000:]
        compiled2, loaded2, written2, _ = STATS.search(again.stdout).groups()
        # the entry points link with the kernels they call compiled in
        assert int(compiled2) == 0 and int(loaded2) == entries
        assert int(written2) == int(written)
        assert "compiling kernels" not in again.stderr


READ_ONLY_CHILD = r"""
import sys, tempfile
tempfile.tempdir = sys.argv[1]       # as if no temporary directory were writable
from fastinit.cli import main
sys.exit(main(["warmup"]))
"""


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX file permissions")
def test_no_writable_cache_exits_1_before_compiling(tmp_path):
    if os.geteuid() == 0 and sys.platform != "linux":
        pytest.skip("as root, read-only permissions are enforced here on Linux only")
    pkg = tmp_path / "site"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(os.path.dirname(os.path.abspath(fi.__file__)), pkg / "fastinit",
                    ignore=ignore)
    shutil.rmtree(pkg / "fastinit" / "kernels", ignore_errors=True)
    shutil.copytree(os.path.dirname(_native.KERNELS_DIR), pkg / "fastinit" / "kernels",
                    ignore=ignore)
    ro = {n: tmp_path / n for n in ("home", "cache", "tmp")}
    for d in ro.values():
        d.mkdir()
    for d in (pkg, *ro.values()):
        _tree(d, 0o555)
    try:
        env = _env(HOME=str(ro["home"]), TMPDIR=str(ro["tmp"]), PYTHONPATH=str(pkg),
                   NUMBA_CACHE_DIR=str(ro["cache"]), PYTHONDONTWRITEBYTECODE="1")
        cmd = [sys.executable, "-c", READ_ONLY_CHILD, str(ro["tmp"])]
        if os.geteuid() == 0:
            cmd = [sys.executable, "-c", DROP_DAC] + cmd[1:]
        proc = subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True,
                              text=True, timeout=300)
        if proc.returncode == 77:
            pytest.skip("as root without CAP_SETPCAP: read-only permissions not enforced")
        assert proc.returncode == 1, (proc.stdout, proc.stderr[-3000:])
        assert "fastinit warmup: error: no writable cache directory" in proc.stderr
        assert f"NUMBA_CACHE_DIR={ro['cache']}" in proc.stderr       # the warning names it
        assert "kernel cache:" not in proc.stdout
        assert "numba" not in proc.stdout.lower() or "compiled" not in proc.stdout
    finally:
        for d in (pkg, *ro.values()):
            _tree(d, 0o755)


def test_groups_are_dealt_whole_to_the_least_loaded_process():
    from fastinit.cli import warmup
    dtypes = list(warmup.DTYPES)
    todo = warmup.units(dtypes)
    keys = {u[0] for u in todo}
    assert len(keys) == 2 * len(warmup.DRAWS)           # (kind, precision)
    mine = [u for u in todo if u[0] == ("uniform", "float32")]
    rest = [u for u in todo if u not in mine]
    for jobs in (1, 2, 3, 8):
        shares = warmup.deal(rest, [list(mine)] + [[] for _ in range(jobs - 1)], dtypes)
        assert sorted(u[1] for s in shares for u in s) == sorted(u[1] for u in todo)
        assert shares[0][:len(mine)] == mine              # this process keeps its group
        for key in keys:                                  # a group is never split
            assert sum(any(u[0] == key for u in s) for s in shares) == 1, key
        load = [sum(warmup._cost(u, dtypes) for u in s) for s in shares]
        # greedy, costliest group first: no process exceeds the lightest by
        # more than one group's cost
        biggest = max(sum(warmup._cost(u, dtypes) for u in todo if u[0] == k) for k in keys)
        assert max(load) - min(load) <= biggest
    # float16 beside bfloat16 only loads bfloat16's kernels
    f16 = next(u for u in todo if u[3] == "float16")
    assert warmup._cost(f16, dtypes) < warmup._cost(f16, ["float16"])


def test_help_lists_warmup(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "warmup" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--dtypes", "float8"], ["--dtypes", ""],
                                  ["--dtypes", "float32,int8"], ["--jobs", "0"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["warmup", *argv])
    assert exc.value.code == 2
    assert f"argument {argv[0]}" in capsys.readouterr().err
