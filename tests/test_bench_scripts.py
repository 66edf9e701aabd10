"""The framework benchmark scripts in bench/ run end to end on a small size.

They are measured by hand (README, docs/torch.md, docs/keras_jax.md); this
keeps them from rotting between measurements. No timing is asserted.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def run(script, *args, timeout=600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, os.path.join(BENCH, script), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_torch_model_bench_small():
    pytest.importorskip("torch")
    out = run("bench_torch_model.py", "--params", "0.02e9", "--model-repeat", "1",
              "--repeat", "1", "--quiet")
    for line in ("meta -> CPU", "re-init of the allocated model", "first touch alone",
                 "peak RSS growth", "kaiming_uniform_", "non-contiguous view",
                 "per-call cost"):
        assert line in out, out


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None
                        for m in ("tensorflow", "keras", "jax")),
                    reason="needs tensorflow, keras and jax (make test installs them)")
def test_keras_jax_bench_small(tmp_path):
    out = run("bench_keras_jax.py", "--size", "256", "--reps", "1",
              "--json", str(tmp_path / "r.json"))
    for case in ("keras GlorotUniform", "keras TruncatedNormal", "jax normal"):
        assert case in out, out
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert len(rows) == 3 and all(r["fastinit_ms"] > 0 for r in rows)


def test_checkpoint_bench_child(tmp_path):
    """One child run of bench_checkpoint.py (what each timed run is) on a tiny preset:
    it writes the file and reports its size and peak RSS."""
    pytest.importorskip("safetensors")
    path = tmp_path / "c.safetensors"
    cfg = {"preset": {"hidden": 64, "layers": 1, "heads": 4, "intermediate": 96,
                      "vocab": 100},
           "dtype": "bfloat16", "fill": "init", "seed": 0, "chunk_mib": 1, "path": str(path)}
    res = json.loads(run("bench_checkpoint.py", "--child", json.dumps(cfg),
                         timeout=300).strip().splitlines()[-1])
    from safetensors.numpy import load_file
    loaded = load_file(str(path))
    assert res["tensors"] == len(loaded) == 3 + 9
    assert res["nbytes"] == path.stat().st_size
    assert res["numel"] == sum(a.size for a in loaded.values())
    assert res["maxrss_after"] >= res["maxrss_before"] > 0 and res["seconds"] > 0


def test_checkpoint_hf_bench_small():
    pytest.importorskip("transformers")
    out = run("bench_checkpoint_hf.py", "--layers", "1", "--hidden", "64",
              "--intermediate", "96", "--heads", "4", "--vocab", "256", "--repeat", "1",
              "--max-shard-size", "100KB")
    for line in ("init speed / zeros speed", "--workers 2 speed-up", "peak RSS MiB"):
        assert line in out, out
