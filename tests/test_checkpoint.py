"""``fastinit checkpoint``: safetensors files of initialized weights, streamed to disk.

The files are read back with the safetensors library itself, compared with
``regenerate`` and with direct ``fastinit`` fills, and with
``fastinit.torch.init_module`` on modules whose parameter names match.
"""

import errno
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import uuid

import numpy as np
import pytest

import fastinit as fi
from conftest import same_bits
from fastinit import cli
from fastinit.cli import checkpoint as ck
from fastinit.cli.checkpoint import spec as ck_spec
from fastinit.cli.checkpoint import writer as ck_writer
from fastinit.cli.checkpoint.hfmodel import RULE_NAMES

from conftest import flip_bit  # noqa: E402

safetensors = pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402
import safetensors.numpy as st_numpy  # noqa: E402

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 1234
SQRT5 = math.sqrt(5)

# every init, every dtype, odd shapes (rows of 17 and 7 elements, a 4-D kernel,
# an empty tensor, a scalar)
SPEC = {
    "dtype": "float32",
    "metadata": {"note": "test"},
    "tensors": [
        {"name": "lin.weight", "shape": [33, 17], "init": "kaiming_uniform",
         "args": {"a": SQRT5}},
        {"name": "lin.bias", "shape": [33], "init": "uniform",
         "args": {"low": -0.25, "high": 0.25}},
        {"name": "emb.weight", "shape": [101, 7], "dtype": "bfloat16",
         "init": ["normal", {"std": 0.02}]},
        {"name": "norm.weight", "shape": [7], "dtype": "float16", "init": "ones"},
        {"name": "norm.bias", "shape": [7], "dtype": "float16", "init": "constant",
         "args": {"value": 0.5}},
        {"name": "conv.weight", "shape": [4, 3, 3, 3], "dtype": "float64",
         "init": "xavier_normal", "args": {"gain": 1.5}},
        {"name": "conv.bias", "shape": [4], "dtype": "float64", "init": "zeros"},
        {"name": "t.weight", "shape": [5, 9], "init": "truncated_normal",
         "args": {"std": 0.5, "a": -0.6, "b": 0.9}},
        {"name": "m.weight", "shape": [8, 6], "init": "masked_uniform",
         "args": {"low": -1, "high": 1, "threshold": 0.3}},
        {"name": "m.bias", "shape": [8], "init": "normal", "args": {"mean": 1.0, "std": 2.0}},
        {"name": "kn.weight", "shape": [12, 10], "dtype": "bfloat16", "init": "kaiming_normal",
         "args": {"mode": "fan_out", "nonlinearity": "relu"}},
        {"name": "xu.weight", "shape": [10, 12], "dtype": "float16", "init": "xavier_uniform"},
        {"name": "keras.kernel", "shape": [3, 3, 8, 6], "init": "variance_scaling",
         "args": {"scale": 2.0, "mode": "fan_avg", "layout": "keras"}},
        {"name": "lecun_u", "shape": [6, 11], "init": "lecun_uniform"},
        {"name": "lecun_n", "shape": [6, 11], "dtype": "float64", "init": "lecun_normal"},
        {"name": "flat_shard", "shape": [40], "init": "xavier_uniform",
         "args": {"fans": [100, 300]}},
        {"name": "empty", "shape": [0, 4], "init": "xavier_uniform"},
        {"name": "scalar", "shape": [], "init": "constant", "args": {"value": 3.5}},
    ],
}
CODES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}
TINY_LLAMA = dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=96, vocab=120)


def _dtype(t):
    return t.get("dtype", SPEC["dtype"])


def _args(t):
    if isinstance(t["init"], list):
        return t["init"][0], dict(t["init"][1]) if len(t["init"]) > 1 else {}
    return t["init"], dict(t.get("args", {}))


def _direct(t, seed):
    """The tensor by a plain fastinit call, without fastinit.checkpoint."""
    init, args = _args(t)
    out = fi.empty(tuple(t["shape"]), _dtype(t))
    fn = getattr(fi, init)
    if "fans" in args:
        args["fans"] = tuple(args["fans"])
    if init in ("constant", "zeros", "ones"):
        fn(out, **args)
    else:
        fn(out, **args, seed=seed, stream=fi.stream_for(t["name"]))
    return out


def _leftovers(d):
    return sorted(p for p in os.listdir(d) if p.endswith(".part"))


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("spec") / "spec.json"
    p.write_text(json.dumps(SPEC))
    return p


@pytest.fixture(scope="module")
def written(spec_file, tmp_path_factory):
    """The spec written twice: 8-byte chunks (rows split, odd starts) and the default."""
    d = tmp_path_factory.mktemp("ckpt")
    small, big = d / "small_chunks.safetensors", d / "default.safetensors"
    ck.write_checkpoint(str(spec_file), small, SEED, chunk_bytes=8)
    ck.write_checkpoint(str(spec_file), big, SEED)
    return small, big


# --- the file --------------------------------------------------------------------
def test_names_shapes_dtypes_and_metadata_with_safe_open(written):
    path, _ = written
    with safe_open(str(path), framework="np") as f:
        assert sorted(f.keys()) == sorted(t["name"] for t in SPEC["tensors"])
        for t in SPEC["tensors"]:
            sl = f.get_slice(t["name"])
            assert sl.get_dtype() == CODES[_dtype(t)], t["name"]
            assert list(sl.get_shape()) == t["shape"], t["name"]
        md = f.metadata()
    assert md["note"] == "test" and md["format"] == "pt"
    assert md["fastinit.seed"] == str(SEED)
    assert md["fastinit.stream"] == fi.STREAM_VERSION
    assert [t["name"] for t in json.loads(md["fastinit.spec"])] == \
        [t["name"] for t in SPEC["tensors"]]
    assert {CODES[_dtype(t)] for t in SPEC["tensors"]} == {"F32", "F16", "BF16", "F64"}


def test_values_equal_regenerate_and_direct_fills(written, spec_file):
    path, _ = written
    loaded = st_numpy.load_file(str(path))
    for t in SPEC["tensors"]:
        got = loaded[t["name"]]
        assert same_bits(got, _direct(t, SEED)), t["name"]
        assert same_bits(got, ck.regenerate(str(spec_file), t["name"], SEED)), t["name"]
        assert got.dtype == ck_spec.np_dtype(_dtype(t))
    # the values are the inits', not zeros or a copy of another tensor
    assert np.all(loaded["norm.weight"] == 1) and np.all(loaded["conv.bias"] == 0)
    assert loaded["scalar"].shape == () and loaded["scalar"] == 3.5
    m = loaded["m.weight"]
    assert np.all((m == 0) | (np.abs(m) >= 0.3)) and np.any(m == 0)
    tn = loaded["t.weight"]
    assert tn.min() >= -0.6 and tn.max() <= 0.9
    assert not np.array_equal(loaded["lecun_u"], loaded["lecun_n"].astype(np.float32))


def test_chunk_size_does_not_change_a_byte(written):
    small, big = written
    assert small.read_bytes() == big.read_bytes()


def test_values_with_safetensors_torch(written):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    path, _ = written
    loaded = load_file(str(path))
    dtypes = {"float32": torch.float32, "float16": torch.float16,
              "bfloat16": torch.bfloat16, "float64": torch.float64}
    for t in SPEC["tensors"]:
        x = loaded[t["name"]]
        assert x.dtype == dtypes[_dtype(t)] and list(x.shape) == t["shape"]
        want = fi.to_torch(_direct(t, SEED))
        assert torch.equal(x, want), t["name"]


def test_layout_is_the_safetensors_one(written, tmp_path):
    """Header: 8-byte LE length, JSON padded with spaces to a multiple of 8; data section
    byte-identical to what safetensors itself writes for the same arrays."""
    path, _ = written
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0
    text = raw[8:8 + n]
    assert text[:1] == b"{"
    body = text.rstrip(b" ")
    assert set(text[len(body):]) <= {ord(" ")}
    header = json.loads(body)
    ends = sorted((v["data_offsets"] for k, v in header.items() if k != "__metadata__"))
    pos = 0
    for b, e in ends:                              # contiguous, no holes
        assert b == pos and e >= b
        pos = e
    assert 8 + n + pos == len(raw)
    arrays = {t["name"]: _direct(t, SEED) for t in SPEC["tensors"]}
    ref = tmp_path / "ref.safetensors"
    st_numpy.save_file(arrays, str(ref))
    ref_raw = ref.read_bytes()
    (rn,) = struct.unpack("<Q", ref_raw[:8])
    ref_header = json.loads(ref_raw[8:8 + rn])
    header.pop("__metadata__")
    assert header == ref_header
    assert raw[8 + n:] == ref_raw[8 + rn:]


def test_a_loaded_spec_takes_no_dtype_or_overrides(spec_file):
    spec = ck.load_spec(str(spec_file))
    assert ck.load_spec(spec) is spec
    with pytest.raises(ck.SpecError, match="apply when a spec is loaded"):
        ck.load_spec(spec, dtype="bfloat16")
    assert ck.load_spec(str(spec_file), dtype="bfloat16")["lin.weight"].dtype == "bfloat16"


def test_seed_and_name_select_the_values(spec_file):
    a = ck.regenerate(str(spec_file), "lin.weight", SEED)
    b = ck.regenerate(str(spec_file), "lin.weight", SEED + 1)
    assert not np.array_equal(a, b)
    spec = ck.load_spec(str(spec_file))
    renamed = {"tensors": [dict(spec["lin.weight"].to_json(), name="other.weight")]}
    c = ck.regenerate(renamed, "other.weight", SEED)
    assert not np.array_equal(a, c)                 # another name, another stream
    with pytest.raises(KeyError, match="no tensor 'nope'"):
        ck.regenerate(str(spec_file), "nope", SEED)


# --- against fastinit.torch.init_module -----------------------------------------
def _torch_rules(spec_tensors):
    rules = {}
    for t in spec_tensors:
        init, args = _args(t)
        name, rename = RULE_NAMES[init]
        rules[t["name"]] = (name, {rename.get(k, k): v for k, v in args.items()})
    return rules


def test_equals_init_module_for_every_torch_twin(written):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    from fastinit.torch import init_module
    from safetensors.torch import load_file
    m = nn.Module()
    m.lin = nn.Linear(17, 33)
    m.emb = nn.Embedding(101, 7).to(torch.bfloat16)
    m.norm = nn.LayerNorm(7).to(torch.float16)
    m.conv = nn.Conv2d(3, 4, 3).to(torch.float64)
    m.t = nn.Linear(9, 5, bias=False)
    m.m = nn.Linear(6, 8)
    m.kn = nn.Linear(10, 12, bias=False).to(torch.bfloat16)
    m.xu = nn.Linear(12, 10, bias=False).to(torch.float16)
    names = {n for n, _ in m.named_parameters()}
    twins = [t for t in SPEC["tensors"] if t["name"] in names]
    assert len(twins) == len(names) == 12
    init_module(m, _torch_rules(twins), seed=SEED)
    loaded = load_file(str(written[0]))
    for name, p in m.named_parameters():
        assert p.dtype == loaded[name].dtype, name
        assert torch.equal(p.detach(), loaded[name]), name


def _tiny_llama(torch, cfg, tie=False):
    """A module with a Hugging Face LlamaForCausalLM's parameter names and shapes."""
    nn = torch.nn
    h, heads, kv = cfg["hidden"], cfg["heads"], cfg["kv_heads"]
    hd = h // heads

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn = nn.Module()
            self.self_attn.q_proj = nn.Linear(h, heads * hd, bias=False)
            self.self_attn.k_proj = nn.Linear(h, kv * hd, bias=False)
            self.self_attn.v_proj = nn.Linear(h, kv * hd, bias=False)
            self.self_attn.o_proj = nn.Linear(heads * hd, h, bias=False)
            self.mlp = nn.Module()
            self.mlp.gate_proj = nn.Linear(h, cfg["intermediate"], bias=False)
            self.mlp.up_proj = nn.Linear(h, cfg["intermediate"], bias=False)
            self.mlp.down_proj = nn.Linear(cfg["intermediate"], h, bias=False)
            self.input_layernorm = nn.RMSNorm(h)
            self.post_attention_layernorm = nn.RMSNorm(h)

    top = nn.Module()
    top.model = nn.Module()
    top.model.embed_tokens = nn.Embedding(cfg["vocab"], h)
    top.model.layers = nn.ModuleList([Layer() for _ in range(cfg["layers"])])
    top.model.norm = nn.RMSNorm(h)
    if not tie:
        top.lm_head = nn.Linear(h, cfg["vocab"], bias=False)
    return top


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_llama_preset_equals_init_module(dtype, tmp_path):
    torch = pytest.importorskip("torch")
    from fastinit.torch import init_module
    from safetensors.torch import load_file
    out = tmp_path / "llama.safetensors"
    spec = ck.llama_spec(**TINY_LLAMA, dtype=dtype)
    ck.write_checkpoint(spec, out, SEED, chunk_bytes=1000)
    model = _tiny_llama(torch, TINY_LLAMA).to(getattr(torch, dtype))
    init_module(model, {"*norm.weight": "ones", "*": ("normal", {"std": 0.02})}, seed=SEED)
    loaded = load_file(str(out))
    params = dict(model.named_parameters())
    assert sorted(params) == sorted(loaded)
    for name, p in params.items():
        assert torch.equal(p.detach(), loaded[name]), name
        assert same_bits(ck.regenerate(spec, name, SEED),
                     ck.regenerate({"preset": "llama", **TINY_LLAMA, "dtype": dtype},
                                   name, SEED))
    # the values load into the model with strict name and shape checks
    fresh = _tiny_llama(torch, TINY_LLAMA).to(getattr(torch, dtype))
    fresh.load_state_dict(loaded, strict=True)


def test_llama_names_and_shapes():
    s = ck.llama_spec(hidden=64, layers=3, heads=8, kv_heads=2, intermediate=160, vocab=500)
    names = [t.name for t in s]
    assert names[0] == "model.embed_tokens.weight" and names[-1] == "lm_head.weight"
    assert names[-2] == "model.norm.weight" and len(names) == 3 + 9 * 3
    sh = {t.name: t.shape for t in s}
    assert sh["model.layers.2.self_attn.q_proj.weight"] == (64, 64)
    assert sh["model.layers.2.self_attn.k_proj.weight"] == (16, 64)    # 2 kv heads of 8
    assert sh["model.layers.0.self_attn.o_proj.weight"] == (64, 64)
    assert sh["model.layers.1.mlp.gate_proj.weight"] == (160, 64)
    assert sh["model.layers.1.mlp.down_proj.weight"] == (64, 160)
    assert sh["model.layers.0.post_attention_layernorm.weight"] == (64,)
    assert sh["lm_head.weight"] == (500, 64)
    inits = {t.name: (t.init, t.args) for t in s}
    assert inits["model.norm.weight"] == ("ones", {})
    assert inits["lm_head.weight"] == ("normal", {"std": 0.02})
    tied = ck.llama_spec(hidden=64, layers=1, heads=8, intermediate=160, vocab=500,
                         tie_embeddings=True, initializer_range=0.01)
    assert "lm_head.weight" not in tied
    assert tied["model.embed_tokens.weight"].args == {"std": 0.01}
    ov = ck.llama_spec(**TINY_LLAMA, overrides=[
        '*.down_proj.weight=normal:{"std": 0.005}', "lm_head.weight=xavier_uniform"])
    assert ov["model.layers.1.mlp.down_proj.weight"].args == {"std": 0.005}
    assert ov["lm_head.weight"].init == "xavier_uniform"
    assert ov["model.layers.1.mlp.up_proj.weight"].args == {"std": 0.02}
    with pytest.raises(ck.SpecError, match="matches no tensor"):
        ck.llama_spec(**TINY_LLAMA, overrides=["*.bias=zeros"])
    with pytest.raises(ck.SpecError, match="multiple of kv_heads"):
        ck.llama_spec(hidden=64, layers=1, heads=8, kv_heads=3, intermediate=8, vocab=8)


# --- the command line ------------------------------------------------------------------
def _run(*args, timeout=300, **kw):
    return subprocess.run([PY, "-m", "fastinit", "checkpoint", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout, **kw)


def _preset_args(cfg=TINY_LLAMA):
    out = ["--preset", "llama"]
    for k, v in cfg.items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def test_cli_preset_end_to_end_with_verify(tmp_path):
    from safetensors.torch import load_file
    out = tmp_path / "m.safetensors"
    proc = _run(*_preset_args(), "--dtype", "bfloat16", "--seed", "7", "-o", str(out),
                "--verify", "--override", "lm_head.weight=zeros")
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout and "peak RSS" in proc.stdout
    assert f"verified {out}" in proc.stdout
    assert proc.stderr == ""                     # no progress bar: stderr is not a TTY
    loaded = load_file(str(out))
    assert len(loaded) == 3 + 9 * TINY_LLAMA["layers"]
    assert all(str(v.dtype) == "torch.bfloat16" for v in loaded.values())
    assert not loaded["lm_head.weight"].any()
    spec = ck.llama_spec(**TINY_LLAMA, dtype="bfloat16")
    name = "model.layers.1.mlp.up_proj.weight"
    torch = pytest.importorskip("torch")
    assert torch.equal(loaded[name], fi.to_torch(ck.regenerate(spec, name, 7)))
    assert _leftovers(tmp_path) == []


def test_cli_in_process_spec_file(spec_file, tmp_path, capsys):
    out = tmp_path / "s.safetensors"
    assert cli.main(["checkpoint", str(spec_file), "-o", str(out), "--seed", str(SEED),
                     "--dtype", "float64", "--chunk-mib", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    with safe_open(str(out), framework="np") as f:
        # --dtype is the default dtype: tensors that name theirs keep it
        assert f.get_slice("lin.weight").get_dtype() == "F64"
        assert f.get_slice("emb.weight").get_dtype() == "BF16"
        lin = f.get_tensor("lin.weight")
    t = dict(SPEC["tensors"][0], dtype="float64")
    assert same_bits(lin, _direct(t, SEED))


def test_progress_bar_only_on_request(spec_file, tmp_path, capsys):
    """--progress: the bar reaches 100% and counts every tensor, for the write and for
    --verify; without it (stderr is not a terminal here) or with --no-progress,
    nothing on stderr."""
    out = tmp_path / "p.safetensors"
    n = len(SPEC["tensors"])
    assert cli.main(["checkpoint", str(spec_file), "-o", str(out), "--progress"]) == 0
    err = capsys.readouterr().err
    assert "fastinit checkpoint: 100%" in err and f"{n}/{n} tensors" in err, err
    assert cli.main(["checkpoint", str(spec_file), "-o", str(out), "--progress",
                     "--verify-only"]) == 0
    err = capsys.readouterr().err
    assert "fastinit verify: 100%" in err and f"{n}/{n} tensors" in err, err
    assert cli.main(["checkpoint", str(spec_file), "-o", str(out)]) == 0
    assert capsys.readouterr().err == ""
    assert cli.main(["checkpoint", str(spec_file), "-o", str(out), "--no-progress",
                     "--verify"]) == 0
    assert capsys.readouterr().err == ""


def test_verify_catches_one_corrupted_byte(spec_file, tmp_path, capsys):
    out = tmp_path / "v.safetensors"
    base = ["checkpoint", str(spec_file), "-o", str(out), "--seed", str(SEED)]
    assert cli.main(base + ["--verify"]) == 0
    assert "verified" in capsys.readouterr().out
    assert cli.main(base + ["--verify-only"]) == 0
    capsys.readouterr()
    good = out.read_bytes()
    (n,) = struct.unpack("<Q", good[:8])
    header = json.loads(good[8:8 + n])
    b, _ = header["kn.weight"]["data_offsets"]
    flip_bit(out, 8 + n + b + 2 * 13 + 1)          # a bit of element 13 of kn.weight
    assert cli.main(base + ["--verify-only"]) == 3
    err = capsys.readouterr().err
    assert "does not match" in err and "'kn.weight'" in err
    assert "first at index (1, 3)" in err
    out.write_bytes(good)
    flip_bit(out, 8 + good[8:8 + n].index(b'"shape":[33,17]') + 10)     # 33 -> 32
    assert cli.main(base + ["--verify-only"]) == 3
    assert "lin.weight" in capsys.readouterr().err
    out.write_bytes(good)
    assert cli.main(base[:-1] + [str(SEED + 1), "--verify-only"]) == 3
    assert f"written with seed {SEED}" in capsys.readouterr().err
    out.write_bytes(good[:-1])                    # truncated
    assert cli.main(base + ["--verify-only"]) == 3
    assert "bytes, expected" in capsys.readouterr().err
    os.unlink(out)
    assert cli.main(base + ["--verify-only"]) == 1
    assert "No such file" in capsys.readouterr().err


# --- errors: a clear message, a non-zero exit, no file ---------------------------------
def _bad_spec(tmp_path, text):
    p = tmp_path / f"bad_{uuid.uuid4().hex[:8]}.json"
    p.write_text(text if isinstance(text, str) else json.dumps(text))
    return p


def _t(**kw):
    base = {"name": "w", "shape": [4, 4], "init": "normal"}
    base.update(kw)
    return {"tensors": [{k: v for k, v in base.items() if v is not None}]}


BAD_SPECS = [
    (_t(init="gaussian"), "unknown init 'gaussian'"),
    (_t(init="trunc_normal"), "did you mean 'truncated_normal'"),
    (_t(shape=[4, -1]), "shape must be a list of non-negative integers"),
    (_t(shape="4x4"), "shape must be a list of non-negative integers"),
    (_t(shape=[4, 2.5]), "shape must be a list of non-negative integers"),
    (_t(shape=None), "'shape' is missing"),
    ({"tensors": [{"name": "w", "shape": [2], "init": "zeros"},
                  {"name": "w", "shape": [3], "init": "ones"}]}, "duplicate tensor name 'w'"),
    (_t(dtype="int8"), "unknown dtype 'int8'"),
    ({"dtype": "float8", "tensors": _t()["tensors"]}, "unknown dtype 'float8'"),
    ("{\"tensors\": [", "is not valid JSON"),
    ('{"tensors": [], "tensors": []}', "duplicate key 'tensors'"),
    ({"tensors": []}, "'tensors' is empty"),
    (_t(args={"sigma": 1}), "normal has no argument 'sigma'"),
    (_t(args={"seed": 1}), "argument 'seed' is not allowed"),
    (_t(args={"std": -1}), "std must be >= 0"),
    (_t(init="constant"), "constant needs argument(s) value"),
    (_t(init="xavier_uniform", shape=[10]), "at least 2 dimensions"),
    (_t(std=0.02), "unknown key(s) 'std'"),
    (_t(name=""), "'name' must be a non-empty string"),
    (_t(name="__metadata__"), "reserved"),
    (_t(init="uniform", args={"low": 0, "high": 1e6}, dtype="float16"), "past the largest"),
    ({"tensors": _t()["tensors"], "metadata": {"fastinit.seed": "1"}}, "written by fastinit"),
    ({"preset": "gpt"}, "unknown preset 'gpt'"),
    ({"preset": "llama", "hidden": 64}, "needs layers, heads, intermediate, vocab"),
]


@pytest.mark.parametrize("spec, message", BAD_SPECS)
def test_bad_spec_exit_1_and_no_file(spec, message, tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    status = cli.main(["checkpoint", str(_bad_spec(tmp_path, spec)), "-o", str(out)])
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("fastinit checkpoint: error: ") and message in err, err
    assert not out.exists() and _leftovers(tmp_path) == []


def test_missing_spec_file(tmp_path, capsys):
    assert cli.main(["checkpoint", str(tmp_path / "nope.json"), "-o",
                     str(tmp_path / "o.safetensors")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["checkpoint", "-o", "x.safetensors"], "give a SPEC file or --preset llama"),
    (["checkpoint", "s.json"], "-o/--output OUT.safetensors is required"),
    (["checkpoint", "s.json", "--preset", "llama", "-o", "x"], "either SPEC or --preset"),
    (["checkpoint", "--preset", "llama", "--hidden", "64", "-o", "x"],
     "needs --layers, --heads, --intermediate, --vocab"),
    (["checkpoint", "s.json", "--hidden", "64", "-o", "x"], "only apply to --preset"),
    (["checkpoint", "--preset", "bert", "-o", "x"], "invalid choice: 'bert'"),
    (["checkpoint", "s.json", "-o", "x", "--dtype", "int8"], "unknown dtype 'int8'"),
    (["checkpoint", "s.json", "-o", "x", "--seed", "-1"], "--seed must be in [0, 2**64)"),
    (["checkpoint", "s.json", "-o", "x", "--seed", "abc"], "--seed must be an integer"),
    (["checkpoint", "--preset", "llama", "--hidden", "0", "-o", "x"], "--hidden must be >= 1"),
    (["checkpoint", "s.json", "-o", "x", "--verify", "--verify-only"], "not allowed with"),
])
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: fastinit checkpoint" in err and message in err, err


def test_bad_override_exit_1(spec_file, tmp_path, capsys):
    out = tmp_path / "o.safetensors"
    for ov, message in (("lin.weight", "expected GLOB=INIT"),
                        ("lin.weight=normal:{std:1}", "not valid JSON"),
                        ("lin.weight=fancy", "unknown init 'fancy'"),
                        ("nothing.*=zeros", "matches no tensor")):
        assert cli.main(["checkpoint", str(spec_file), "-o", str(out), "--override", ov]) == 1
        assert message in capsys.readouterr().err
    assert not out.exists()


def _unwritable_paths(tmp_path):
    regular = tmp_path / "regular_file"
    regular.write_text("x")
    return [(tmp_path / "missing" / "o.safetensors", "does not exist"),
            (regular / "o.safetensors", "is not a directory"),
            (tmp_path, "is a directory")]


def test_output_paths_that_cannot_be_written(spec_file, tmp_path, capsys):
    for out, message in _unwritable_paths(tmp_path):
        assert cli.main(["checkpoint", str(spec_file), "-o", str(out)]) == 1, out
        err = capsys.readouterr().err
        assert "fastinit checkpoint: error:" in err and message in err, err
    assert _leftovers(tmp_path) == []


def _mount_tmpfs(d, options):
    """Mount a tmpfs at ``d`` (root only); True when it worked."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
        return False
    d.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)],
                       capture_output=True)
    return r.returncode == 0


def _umount(d):
    subprocess.run(["umount", str(d)], capture_output=True)


def test_read_only_filesystem(spec_file, tmp_path, capsys):
    """Tests run as root, for whom permission bits do not stop a write: a read-only
    tmpfs does."""
    ro = tmp_path / "ro"
    if not _mount_tmpfs(ro, "ro,size=1m"):
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        out = ro / "o.safetensors"
        assert cli.main(["checkpoint", str(spec_file), "-o", str(out)]) == 1
        err = capsys.readouterr().err
        assert "cannot create a file in" in err and "Read-only file system" in err, err
        assert os.listdir(ro) == []
    finally:
        _umount(ro)


def test_full_disk_on_a_small_tmpfs(tmp_path, capsys):
    small = tmp_path / "small"
    if not _mount_tmpfs(small, "size=1m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        spec = _bad_spec(tmp_path, {"tensors": [{"name": "w", "shape": [1024, 1024],
                                                  "init": "normal"}]})       # 4 MiB
        out = small / "o.safetensors"
        assert cli.main(["checkpoint", str(spec), "-o", str(out)]) == 1
        err = capsys.readouterr().err
        assert "not enough space" in err and "No space left on device" in err, err
        assert os.listdir(small) == []          # no file, no temporary
    finally:
        _umount(small)


def test_full_disk_simulated(spec_file, tmp_path, capsys, monkeypatch):
    """Anywhere (no root needed): posix_fallocate reporting ENOSPC."""
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    out = tmp_path / "o.safetensors"
    assert cli.main(["checkpoint", str(spec_file), "-o", str(out)]) == 1
    assert "not enough space" in capsys.readouterr().err
    assert not out.exists() and _leftovers(tmp_path) == []


def test_failure_mid_write_keeps_the_old_file(spec_file, tmp_path, monkeypatch):
    """An error after some chunks were written: the temp file goes, OUT is untouched."""
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"old contents")
    calls = []
    real = ck_writer.fill_range

    def flaky(*a, **kw):
        calls.append(1)
        if len(calls) == 5:
            raise OSError(errno.EIO, "simulated I/O error")
        return real(*a, **kw)
    monkeypatch.setattr(ck_writer, "fill_range", flaky)
    with pytest.raises(OSError, match="simulated"):
        ck.write_checkpoint(str(spec_file), out, SEED, chunk_bytes=64)
    assert out.read_bytes() == b"old contents"
    assert _leftovers(tmp_path) == []
    monkeypatch.setattr(ck_writer, "fill_range", real)
    ck.write_checkpoint(str(spec_file), out, SEED)              # replaced when complete
    assert out.read_bytes()[8:9] == b"{"


# Signals and SIGKILL while writing (what stays on disk, the messages, exit statuses):
# tests/test_checkpoint_faults.py.


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB and MADV_DONTNEED "
                                                    "as on Linux")
def test_peak_rss_stays_far_below_the_file_size(tmp_path):
    """A ~0.5 GB float32 file in 8 MiB chunks: the write adds well under 100 MiB of RSS."""
    code = r"""
import resource, sys, json
import fastinit as fi
from fastinit.cli import checkpoint as ck
spec = ck.llama_spec(hidden=1024, layers=6, heads=8, intermediate=2816, vocab=32000)
fi.normal(fi.empty(1 << 16, "float32"), seed=0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rep = ck.write_checkpoint(spec, sys.argv[1], 0, chunk_bytes=8 << 20)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"nbytes": rep.nbytes, "growth": (after - before) * 1024}))
"""
    out = tmp_path / "rss.safetensors"
    proc = subprocess.run([PY, "-c", code, str(out)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["nbytes"] > 400e6 and out.stat().st_size == r["nbytes"]
    assert r["growth"] < 100 * 2 ** 20, r


def test_help_lists_checkpoint():
    parser = cli.build_parser()
    assert "checkpoint" in parser.format_help()
    sub = parser._subparsers._group_actions[0].choices["checkpoint"]
    text = sub.format_help()
    for opt in ("--preset", "--hidden", "--kv-heads", "--tie-embeddings", "--seed", "--dtype",
                "--verify", "--verify-only", "--progress", "--override", "-o"):
        assert opt in text
