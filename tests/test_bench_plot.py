"""``fastinit bench --plot``: a real PNG from a quick run, and clear errors for bad paths."""

import json
import os
import struct
import subprocess
import sys

import pytest

from fastinit import cli
from fastinit.cli import plot

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _png_size(path):
    """(width, height) from the IHDR chunk, after checking the signature."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_SIGNATURE
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One in-process --quick run with two sizes, writing the plot and the JSON."""
    d = tmp_path_factory.mktemp("plot")
    png, js = d / "bench.png", d / "bench.json"
    status = cli.main(["bench", "--quick", "--methods", "uniform,normal", "--dtypes",
                       "float32,bfloat16", "--sizes", "4096,65536", "--repeat", "1",
                       "--rss-mib", "0", "--threads", "1", "--plot", str(png),
                       "--json", str(js)])
    assert status == 0
    return png, json.loads(js.read_text())


def test_quick_run_writes_a_png(quick_run, capsys):
    png, res = quick_run
    assert png.exists()
    width, height = _png_size(png)
    assert width >= 400 and height >= 300
    assert png.stat().st_size > 10_000           # a drawn figure, not an empty canvas
    # the plot is drawn from the same measurements as the table
    assert {(r["method"], r["dtype"]) for r in res["rows"]} == {
        (m, d) for m in ("uniform", "normal") for d in ("float32", "bfloat16")}


def test_plot_from_saved_json_svg_and_pdf(quick_run, tmp_path):
    _, res = quick_run
    svg = plot.plot_bench(res, str(tmp_path / "b.svg"))
    assert open(svg, "rb").read(200).lstrip().startswith((b"<?xml", b"<svg"))
    pdf = tmp_path / "b.pdf"
    plot.plot_bench(res, str(pdf))
    assert pdf.read_bytes()[:5] == b"%PDF-"
    js = tmp_path / "r.json"
    js.write_text(json.dumps(res))
    out = tmp_path / "again.png"
    assert plot.main([str(js), str(out)]) == 0
    _png_size(out)


def test_plot_needs_rows(tmp_path):
    with pytest.raises(ValueError, match="no rows"):
        plot.plot_bench({"rows": []}, str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()


def test_plot_does_not_touch_pyplot_state(tmp_path):
    code = ("import sys, json; from fastinit.cli import plot; "
            "res = {'rows': [{'method': 'uniform', 'dtype': 'float32', 'size': 1024, "
            "'implementation': 'fastinit', 'gelem_per_s': 1.0, 'median_s': 1e-6}]}; "
            "plot.plot_bench(res, sys.argv[1]); "
            "assert 'matplotlib.pyplot' not in sys.modules")
    out = str(tmp_path / "probe.png")
    proc = subprocess.run([sys.executable, "-c", code, out], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _png_size(out)


def _bad_paths(tmp_path):
    regular = tmp_path / "a_file"
    regular.write_text("x")
    return [
        (str(tmp_path / "no" / "such" / "dir" / "b.png"), "does not exist"),
        (str(tmp_path), "is a directory"),
        (str(regular / "b.png"), "is not a directory"),
        (str(tmp_path / "b.gif"), "unsupported extension '.gif'"),
        (str(tmp_path / "b"), "unsupported extension '(none)'"),
    ]


def test_bad_plot_paths_exit_2_before_measuring(tmp_path, capsys):
    for path, message in _bad_paths(tmp_path):
        with pytest.raises(SystemExit) as exc:
            cli.main(["bench", "--quick", "--plot", path])
        assert exc.value.code == 2
        err = capsys.readouterr()
        assert "usage: fastinit bench" in err.err
        assert "--plot" in err.err and message in err.err, (path, err.err)
        assert err.out == ""                    # failed at once: nothing measured


def test_missing_matplotlib_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plot, "available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--quick", "--plot", str(tmp_path / "b.png")])
    assert exc.value.code == 2
    assert "needs matplotlib" in capsys.readouterr().err


def test_write_failure_at_the_end_exits_1(tmp_path, monkeypatch, capsys):
    """A plot that cannot be saved after the run (disk full, ...) is an error, exit 1."""
    def fail(result, path, **kw):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(plot, "plot_bench", fail)
    status = cli.main(["bench", "--quick", "--methods", "uniform", "--dtypes", "float32",
                       "--repeat", "1", "--rss-mib", "0", "--threads", "1",
                       "--plot", str(tmp_path / "b.png")])
    assert status == 1
    captured = capsys.readouterr()
    assert "cannot write the plot" in captured.err and "No space left" in captured.err
    assert "machine:" in captured.out             # the table was still printed


def test_help_lists_plot():
    parser = cli.build_parser()
    sub = parser._subparsers._group_actions[0].choices["bench"]
    assert "--plot" in sub.format_help()
