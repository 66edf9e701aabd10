"""The command line: ``python -m fastinit bench`` end to end, its JSON, its errors."""

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import types

import pytest

import fastinit as fi
from fastinit import cli
from fastinit.backends._threads import usable_cpus
from fastinit.cli import bench
from fastinit.cli.bench import measure, system

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROW_KEYS = {"method", "dtype", "size", "implementation", "api", "median_s", "times_s",
            "bytes_written", "gelem_per_s", "gb_per_s", "ratio", "ratio_vs",
            "pct_write_bw", "write_bw_gb_per_s", "write_bw_ref"}
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _run(*args, timeout=600):
    return subprocess.run([PY, "-m", "fastinit", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """One real run, as the brief's smoke command; (completed process, parsed JSON)."""
    out = tmp_path_factory.mktemp("bench") / "out.json"
    proc = _run("bench", "--sizes", "4096", "--repeat", "2", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    with open(out) as f:
        return proc, json.load(f)


# --- the end-to-end run -------------------------------------------------------------
def test_prints_machine_line_one_table_and_overheads(small_run):
    proc, res = small_run
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("machine: ")
    assert "fill thread" in lines[0] and "cores" in lines[0]
    headers = [i for i, line in enumerate(lines) if line.split()[:4] ==
               ["method", "dtype", "size", "implementation"]]
    assert len(headers) == 1                     # one table, all side by side
    for col in ("median s", "Gelem/s", "GB/s", "ratio", "% write bw"):
        assert col in lines[headers[0]]
    table_rows = [line for line in lines if line.split()[2:3] == ["2**12"]]
    assert len(table_rows) == len(res["rows"])
    assert "scaling and overheads" in proc.stdout
    assert "per call, 1024 elements" in proc.stdout


def test_json_has_the_expected_keys(small_run):
    _, res = small_run
    for key in ("schema", "config", "machine", "versions", "rows", "write_reference",
                "skipped", "unavailable", "scaling", "overheads"):
        assert key in res
    assert res["schema"] == measure.SCHEMA
    m = res["machine"]
    assert m["cpu"] and m["cores"] >= 1
    assert m["fill_threads"] == fi.get_num_threads() and m["usable_cores"] >= 1
    for name in ("numpy", "numba", "torch"):
        assert name in res["versions"]
    assert res["versions"]["numpy"] and res["versions"]["numba"]
    assert res["config"]["sizes"] == [4096] and res["config"]["repeat"] == 2
    assert res["config"]["methods"] == list(bench.METHODS)
    assert res["config"]["dtypes"] == list(bench.DEFAULT_DTYPES)
    for row in res["rows"]:
        assert ROW_KEYS <= set(row)
        assert len(row["times_s"]) == 2


def test_one_row_per_method_dtype_size_implementation(small_run):
    _, res = small_run
    keys = [(r["method"], r["dtype"], r["size"], r["implementation"]) for r in res["rows"]]
    assert len(keys) == len(set(keys))
    skipped = {(s["method"], s["dtype"], s["size"], s["implementation"])
               for s in res["skipped"]}
    assert not skipped & set(keys)
    for method in bench.METHODS:
        for dtype in bench.DEFAULT_DTYPES:
            assert (method, dtype, 4096, "fastinit") in keys
            for peer in bench.PEERS:       # each peer: measured, skipped or not installed
                k = (method, dtype, 4096, peer)
                assert (k in keys) + (k in skipped) + (peer in res["unavailable"]) == 1
    if HAS_TORCH:
        assert ("truncated_normal", "bfloat16", 4096, "torch") in keys
    # numpy has no bfloat16 output and no truncated normal: skipped, not faked
    assert ("uniform", "float32", 4096, "numpy") in keys
    assert ("uniform", "bfloat16", 4096, "numpy") in skipped
    assert ("truncated_normal", "float32", 4096, "numpy") in skipped


def test_ratios_and_rates_come_from_the_medians(small_run):
    _, res = small_run
    refs = {(r["method"], r["dtype"], r["size"]): r for r in res["write_reference"]}
    groups = {}
    for r in res["rows"]:
        groups.setdefault((r["method"], r["dtype"], r["size"]), {})[r["implementation"]] = r
    for key, rows in groups.items():
        for r in rows.values():
            assert r["median_s"] == pytest.approx(statistics.median(r["times_s"]))
            assert r["gelem_per_s"] == pytest.approx(r["size"] / r["median_s"] / 1e9)
            assert r["bytes_written"] == r["size"] * bench.ITEMSIZE[r["dtype"]]
            assert r["gb_per_s"] == pytest.approx(r["bytes_written"] / r["median_s"] / 1e9)
        fast = rows["fastinit"]["median_s"]
        peers = {name: r["median_s"] for name, r in rows.items() if name != "fastinit"}
        for name, t in peers.items():
            assert rows[name]["ratio"] == pytest.approx(t / fast)      # times faster
            assert rows[name]["ratio_vs"] == name
        if peers:
            best = min(peers, key=peers.get)
            assert rows["fastinit"]["ratio_vs"] == best
            assert rows["fastinit"]["ratio"] == pytest.approx(peers[best] / fast)
        else:
            assert rows["fastinit"]["ratio"] is None
        ref = refs.get(key)
        if ref is None:
            continue
        assert ref["median_s"] == pytest.approx(min(ref["candidates"].values()))
        assert ref["median_s"] == pytest.approx(statistics.median(ref["times_s"]))
        for r in rows.values():
            assert r["pct_write_bw"] == pytest.approx(100 * ref["median_s"] / r["median_s"])


def test_scaling_and_overheads_section(small_run):
    _, res = small_run
    sc = res["scaling"]
    threads = [r["threads"] for r in sc["runs"]]
    assert threads[0] == 1
    if usable_cpus() >= 2:
        assert 2 in threads
    t1 = sc["runs"][0]["median_s"]
    for r in sc["runs"]:
        assert r["speedup_vs_1"] == pytest.approx(t1 / r["median_s"])
    rss = res["overheads"]["rss"]
    if "skipped" not in rss:
        assert rss["buffer_bytes"] == bench.RSS_MIB * 2 ** 20
        assert rss["growth_bytes"] == rss["maxrss_after_bytes"] - rss["maxrss_before_bytes"]
        assert rss["growth_pct_of_buffer"] == pytest.approx(
            100 * rss["growth_bytes"] / rss["buffer_bytes"])
        # a fill into a preallocated buffer allocates nothing of the buffer's size
        assert rss["growth_pct_of_buffer"] < 10
    pc = res["overheads"]["per_call"]
    per = {r["implementation"]: r["per_call_s"] for r in pc["runs"]}
    assert pc["size"] == 1024 and per["fastinit"] > 0
    if HAS_TORCH:
        assert pc["ratio_vs_torch"] == pytest.approx(per["torch"] / per["fastinit"])


def test_quick_runs_and_restores_fill_threads(tmp_path):
    """--quick in-process: a smoke run that leaves the fill thread count as it was."""
    before = fi.get_num_threads()
    assert cli.main(["bench", "--quick", "--methods", "uniform", "--dtypes", "float32",
                     "--repeat", "1", "--rss-mib", "0", "--threads", "1",
                     "--json", str(tmp_path / "q.json")]) == 0
    assert fi.get_num_threads() == before
    res = json.loads((tmp_path / "q.json").read_text())
    assert res["config"]["sizes"] == list(bench.QUICK_SIZES)
    assert res["machine"]["fill_threads"] == 1
    assert res["overheads"]["rss"] == {"skipped": "--rss-mib 0"}


# --- arguments ----------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["bench", "--sizes", "abc"], "not a size"),
    (["bench", "--sizes", "0"], "at least 1"),
    (["bench", "--sizes", "2**50"], "too large"),
    (["bench", "--sizes", "4096,,8"], "comma-separated"),
    (["bench", "--dtypes", "int8"], "unknown dtypes 'int8'"),
    (["bench", "--methods", "gaussian"], "unknown methods 'gaussian'"),
    (["bench", "--peers", "mxnet"], "unknown peers 'mxnet'"),
    (["bench", "--repeat", "0"], "--repeat must be >= 1"),
    (["bench", "--repeat", "two"], "--repeat must be an integer"),
    (["bench", "--threads", "0"], "--threads must be >= 1"),
    (["bench", "--threads", str(usable_cpus() + 1)],
     "--threads must be between 1 and"),
    (["bench", "--json", os.path.join("no", "such", "dir", "out.json")], "does not exist"),
    (["bench", "--json", ROOT], "is a directory"),
    (["bench", "--sizes", "2**40", "--dtypes", "float64"], "of memory is available"),
    (["bench", "--bogus"], "unrecognized arguments: --bogus"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "required"),
])
def test_bad_arguments_exit_2_with_a_clear_message(argv, message, capsys):
    if "of memory" in message and system.mem_available() is None:
        pytest.skip("no /proc/meminfo here")
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: fastinit" in err
    assert message in err


def test_bad_arguments_from_the_shell():
    proc = _run("bench", "--sizes", "nope", timeout=120)
    assert proc.returncode == 2
    assert "fastinit bench: error: argument --sizes: not a size: 'nope'" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("text, value", [
    ("4096", 4096), ("2**26", 2 ** 26), ("2^26", 2 ** 26), ("1<<20", 2 ** 20),
    ("67_108_864", 2 ** 26), (" 2 ** 10 ", 1024), ("3**4", 81),
])
def test_parse_size(text, value):
    assert bench.parse_size(text) == value


def test_defaults_and_quick():
    parser = cli.build_parser()
    args = parser.parse_args(["bench"])
    cfg = bench.resolve_config(args, args._parser)
    assert cfg["sizes"] == [2 ** 26] and cfg["repeat"] == 5
    assert cfg["dtypes"] == ["float32", "bfloat16"]
    assert cfg["methods"] == ["uniform", "normal", "truncated_normal"]
    assert cfg["rss_mib"] == 1024
    args = parser.parse_args(["bench", "--quick"])
    cfg = bench.resolve_config(args, args._parser)
    assert cfg["sizes"] == list(bench.QUICK_SIZES) and cfg["repeat"] == bench.QUICK_REPEAT
    args = parser.parse_args(["bench", "--quick", "--sizes", "2**10,4096,1024",
                              "--repeat", "7", "--dtypes", "all"])
    cfg = bench.resolve_config(args, args._parser)
    assert cfg["sizes"] == [1024, 4096] and cfg["repeat"] == 7
    assert cfg["dtypes"] == list(bench.DTYPES)


# --- the pieces -----------------------------------------------------------------------
def test_interleave_is_round_robin_and_rotates():
    calls = []
    items = [(k, (lambda k=k: calls.append(k)), None) for k in "abc"]
    times = measure.interleave(items, repeat=3, warmup=1)
    assert calls == list("abc" + "abc" + "bca" + "cab")
    assert all(len(ts) == 3 for ts in times.values())


def test_summarize_ratios():
    times = {"fastinit": [1.0, 2.0, 9.0], "torch": [4.0, 4.0, 4.0], "numpy": [3.0, 1.0, 3.0],
             "zero:torch": [0.5, 0.5, 0.5], "zero:numpy": [0.25, 0.25, 1.0]}
    rows, ref = measure.summarize(
        "normal", "float32", 1000, [("fastinit", "f"), ("torch", "t"), ("numpy", "n")],
        times, [("zero:torch", "Tensor.zero_"), ("zero:numpy", "ndarray.fill(0)")])
    by = {r["implementation"]: r for r in rows}
    assert by["torch"]["ratio"] == 2.0 and by["numpy"]["ratio"] == 1.5
    assert by["fastinit"]["ratio"] == 1.5 and by["fastinit"]["ratio_vs"] == "numpy"
    assert ref["implementation"] == "numpy" and ref["median_s"] == 0.25
    assert by["fastinit"]["pct_write_bw"] == 12.5
    assert by["fastinit"]["gb_per_s"] == pytest.approx(4000 / 2.0 / 1e9)
    rows, ref = measure.summarize("uniform", "bfloat16", 10, [("fastinit", "f")],
                                {"fastinit": [1.0]}, [])
    assert rows[0]["ratio"] is None and ref is None and rows[0]["pct_write_bw"] is None


def test_no_framework_is_imported_at_start_up():
    code = ("import sys, fastinit, fastinit.cli, fastinit.cli.bench; "
            "fastinit.cli.build_parser(); "
            "bad = [m for m in ('torch', 'jax', 'tensorflow') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_help_lists_bench():
    proc = _run("--help", timeout=120)
    assert proc.returncode == 0 and "bench" in proc.stdout
    proc = _run("bench", "--help", timeout=120)
    assert proc.returncode == 0
    for opt in ("--sizes", "--dtypes", "--methods", "--threads", "--repeat", "--json",
                "--quick"):
        assert opt in proc.stdout


def test_subcommands_are_pluggable(monkeypatch, capsys):
    mod = types.ModuleType("fastinit_fake_cmd")
    mod.__doc__ = "Say hello."
    mod.configure_parser = lambda p: p.add_argument("--name", default="world")
    mod.run = lambda args, parser: print(f"hello {args.name}") or 3
    monkeypatch.setitem(sys.modules, "fastinit_fake_cmd", mod)
    monkeypatch.setitem(cli.COMMANDS, "hello", "fastinit_fake_cmd")
    assert cli.main(["hello", "--name", "fastinit"]) == 3
    assert capsys.readouterr().out == "hello fastinit\n"
    assert cli.main(["hello"]) == 3


def test_interrupt_in_a_command_is_a_documented_error(monkeypatch, capsys):
    """Ctrl-C that a command does not handle: ``fastinit <command>: error: interrupted``
    on stderr, exit status 130, no traceback."""
    mod = types.ModuleType("fastinit_fake_interrupted")
    mod.__doc__ = "Wait forever."
    mod.configure_parser = lambda p: None

    def run(args, parser):
        raise KeyboardInterrupt
    mod.run = run
    monkeypatch.setitem(sys.modules, "fastinit_fake_interrupted", mod)
    monkeypatch.setitem(cli.COMMANDS, "wait", "fastinit_fake_interrupted")
    assert cli.main(["wait"]) == 130
    assert capsys.readouterr().err == "fastinit wait: error: interrupted\n"


def _cli_modules():
    base = os.path.dirname(cli.__file__)
    for d, _, files in os.walk(base):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                rel = os.path.relpath(path, os.path.dirname(os.path.dirname(base)))
                name = rel[:-3].replace(os.sep, ".")
                yield path, name[:-len(".__init__")] if name.endswith(".__init__") else name


def test_subcommands_never_import_the_cli_package_back():
    """The package's ``__init__`` imports subcommands by name; a module below it takes
    shared helpers from ``fastinit.cli._args`` (or another submodule), never a name
    defined in ``fastinit.cli`` itself: that would be an import cycle."""
    import ast
    checked = 0
    for path, name in _cli_modules():
        if name == "fastinit.cli":
            continue
        is_pkg = path.endswith("__init__.py")
        package = name if is_pkg else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1])
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module
                if target == "fastinit.cli":     # only submodules may be named
                    for alias in node.names:
                        sub = os.path.join(os.path.dirname(cli.__file__), alias.name)
                        assert os.path.exists(sub + ".py") or os.path.isdir(sub), \
                            (name, alias.name)
                checked += 1
            elif isinstance(node, ast.Import):
                assert all(a.name != "fastinit.cli" for a in node.names), name
    assert checked > 20


@pytest.mark.skipif(system.mem_available() is None, reason="no /proc/meminfo here")
def test_rss_probe_runs_in_its_own_process():
    """The peak-RSS probe (``python -m fastinit.cli.bench.rss_child``) runs and reports a
    fill into a preallocated buffer that adds next to nothing to the peak."""
    rss = measure.measure_rss(64, 1)
    assert "skipped" not in rss, rss
    assert rss["buffer_bytes"] == 64 * 2 ** 20 and rss["threads"] == 1
    assert rss["maxrss_after_bytes"] >= rss["maxrss_before_bytes"] > 0
    assert rss["growth_pct_of_buffer"] < 10
