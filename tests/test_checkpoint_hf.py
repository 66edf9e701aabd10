"""``fastinit checkpoint --config``: transformers model directories from configs.

Six causal LMs (Llama, Mistral, Qwen2, Gemma, GPT-2, Mixtral) with small
configs, no hub: each written directory loads with
AutoModelForCausalLM.from_pretrained with no missing, unexpected or
mismatched keys; every tensor is bit-equal to fastinit.torch.materialize of
the same model and seed; statistics match the model's own init (6 standard
errors, constants exact); logits are finite. Then the layout (shards, index,
ties, buffers), parallel and distributed writes (byte-identical), --verify,
and faults.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")
tr = pytest.importorskip("transformers")
pytest.importorskip("safetensors")
tr.logging.set_verbosity_error()
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

import fastinit.torch as ft  # noqa: E402
from fastinit.cli import main  # noqa: E402
from fastinit.cli.checkpoint.hfmodel import INDEX_NAME  # noqa: E402
from fastinit.cli.checkpoint.modeldir import verify_model_dir, write_model_dir  # noqa: E402

from conftest import flip_bit  # noqa: E402

PY = sys.executable
SEED = 77
VOCAB = 128
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
CONFIGS = {
    "llama": dict(COMMON, tie_word_embeddings=True),
    "mistral": dict(COMMON),
    "qwen2": dict(COMMON),
    "gemma": dict(COMMON, head_dim=16),
    "gpt2": dict(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                 bos_token_id=0, eos_token_id=0),
    "mixtral": dict(COMMON, num_local_experts=4, num_experts_per_tok=2),
}
MODELS = list(CONFIGS)


def config_file(tmp_path, name, **extra):
    path = tmp_path / f"{name}-config.json"
    path.write_text(json.dumps(dict(CONFIGS[name], model_type=name, **extra)))
    return str(path)


def bits(t):
    t = t.detach().contiguous()
    if not t.is_floating_point():
        return t
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[
        t.element_size()])


def load(d):
    model, info = tr.AutoModelForCausalLM.from_pretrained(d, local_files_only=True,
                                                          output_loading_info=True)
    return model, info


def materialized(config, seed=SEED):
    with torch.device("meta"):
        m = tr.AutoModelForCausalLM.from_config(config)
    ft.materialize(m, "cpu", seed=seed, progress=False)
    return m


def files_of(d):
    return sorted(n for n in os.listdir(d) if n.endswith(".safetensors"))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """{model: directory}: each model written once, one file, by the command line."""
    out = {}
    base = tmp_path_factory.mktemp("hf")
    for name in MODELS:
        d = str(base / name)
        assert main(["checkpoint", "--config", config_file(base, name), "-o", d,
                     "--seed", str(SEED)]) == 0
        out[name] = d
    return out


@pytest.mark.parametrize("name", MODELS)
def test_loads_and_equals_materialize(written, name):
    d = written[name]
    assert files_of(d) == ["model.safetensors"]
    assert not os.path.exists(os.path.join(d, INDEX_NAME))
    model, info = load(d)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"] and not info["error_msgs"]
    ref = materialized(model.config)
    got, want = model.state_dict(), ref.state_dict()
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k].dtype == v.dtype and torch.equal(bits(got[k]), bits(v)), k
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        y = model(input_ids=torch.randint(1, VOCAB, (2, 16), generator=g)).logits
    assert bool(torch.isfinite(y).all()) and float(y.std()) > 0


@pytest.mark.parametrize("name", MODELS)
def test_statistics_match_the_models_own_init(written, name):
    model, _ = load(written[name])
    torch.manual_seed(0)
    ref = type(model)(model.config)                  # transformers' own init, torch's RNG
    mine, theirs = dict(model.named_parameters()), dict(ref.named_parameters())
    assert mine.keys() == theirs.keys()
    for k, q in theirs.items():
        p, q = mine[k].detach().double(), q.detach().double()
        if bool((q == q.reshape(-1)[0]).all()):            # ones, zeros: exact
            assert torch.equal(p, q), k
            continue
        assert torch.equal(p == 0, q == 0), k              # padding rows
        n = q.numel()
        sp, sq = float(p.std()), float(q.std())
        assert abs(float(p.mean()) - float(q.mean())) <= 6 * math.sqrt((sp ** 2 + sq ** 2) / n), k
        assert abs(sp - sq) <= 6 * math.sqrt((sp ** 2 + sq ** 2) / (2 * n)), k


def test_directory_is_what_save_pretrained_writes(written, tmp_path):
    """Same file names, tensor names (ties saved once), shapes and dtypes as
    save_pretrained of the same model (with save_original_format=False: the model's
    own names, as for Mixtral's fused experts), config.json with the dtype."""
    from safetensors import safe_open
    for name in ("llama", "mixtral"):
        d = written[name]
        model, _ = load(d)
        ref_dir = tmp_path / f"ref-{name}"
        model.save_pretrained(ref_dir, save_original_format=False)
        assert files_of(d) == files_of(ref_dir)
        for f in files_of(d):
            with safe_open(os.path.join(d, f), "pt") as a, \
                    safe_open(str(ref_dir / f), "pt") as b:
                assert sorted(a.keys()) == sorted(b.keys())
                for k in a.keys():
                    sa, sb = a.get_slice(k), b.get_slice(k)
                    assert sa.get_shape() == sb.get_shape() and sa.get_dtype() == sb.get_dtype()
                md = a.metadata()
                assert md["format"] == "pt" and md["fastinit.seed"] == str(SEED)
                captured = json.loads(md["fastinit.init"])
                assert set(captured) == set(a.keys())
                assert all(captured[k] for k in captured)
        cfg = json.loads(open(os.path.join(d, "config.json")).read())
        assert cfg["model_type"] == name and cfg["dtype"] == "float32"
        assert cfg["architectures"] == [type(model).__name__]
    with safe_open(os.path.join(written["llama"], "model.safetensors"), "pt") as a:
        assert "lm_head.weight" not in a.keys()           # tied: saved once
        assert "model.embed_tokens.weight" in a.keys()


def test_sharded_write_loads_the_same(written, tmp_path):
    d = str(tmp_path / "sharded")
    cfg = config_file(tmp_path, "mistral")
    assert main(["checkpoint", "--config", cfg, "-o", d, "--seed", str(SEED),
                 "--max-shard-size", "20KB"]) == 0
    files = files_of(d)
    assert len(files) > 3 and all(f.endswith(f"-of-{len(files):05d}.safetensors")
                                  for f in files)
    index = json.loads(open(os.path.join(d, INDEX_NAME)).read())
    from safetensors import safe_open
    seen, total = {}, 0
    for f in files:
        with safe_open(os.path.join(d, f), "pt") as a:
            for k in a.keys():
                seen[k] = f
                t = a.get_tensor(k)
                total += t.numel() * t.element_size()
    assert index["weight_map"] == seen                     # complete, and right
    assert index["metadata"]["total_size"] == total
    model, info = load(d)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    one, _ = load(written["mistral"])
    for k, v in one.state_dict().items():
        assert torch.equal(bits(model.state_dict()[k]), bits(v)), k


def _tree(d):
    return {n: open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))}


def test_workers_and_jobs_write_the_same_bytes(tmp_path):
    cfg = config_file(tmp_path, "qwen2")
    args = ["--config", cfg, "--seed", str(SEED), "--max-shard-size", "30KB",
            "--dtype", "bfloat16"]
    one, two, jobs = (str(tmp_path / n) for n in ("one", "two", "jobs"))
    assert main(["checkpoint", *args, "-o", one]) == 0
    assert main(["checkpoint", *args, "-o", two, "--workers", "2"]) == 0
    # job 2 first: the index and configs come with job 1, whenever it runs
    assert main(["checkpoint", *args, "-o", jobs, "--shard", "2/2"]) == 0
    assert INDEX_NAME not in os.listdir(jobs)
    assert main(["checkpoint", *args, "-o", jobs, "--shard", "1/2"]) == 0
    a = _tree(one)
    assert len([n for n in a if n.endswith(".safetensors")]) >= 3
    assert _tree(two) == a
    assert _tree(jobs) == a
    model, _ = load(one)
    assert model.dtype == torch.bfloat16


def test_verify_regenerates_and_catches_one_byte(tmp_path, capsys):
    cfg = config_file(tmp_path, "gpt2")
    d = str(tmp_path / "g")
    args = ["checkpoint", "--config", cfg, "-o", d, "--seed", "5", "--max-shard-size", "60KB"]
    assert main([*args, "--verify"]) == 0
    assert "verified" in capsys.readouterr().out
    assert verify_model_dir(d, config=cfg, seed=5, max_shard_size="60KB") == []
    assert verify_model_dir(d, config=cfg, seed=6, max_shard_size="60KB")   # another seed
    last = files_of(d)[-1]
    path = os.path.join(d, last)
    flip_bit(path, os.path.getsize(path) - 3)
    assert main([*args, "--verify-only"]) == 3
    err = capsys.readouterr().err
    assert last in err and "differs" in err
    flip_bit(path, os.path.getsize(path) - 3)
    index = os.path.join(d, INDEX_NAME)
    data = json.loads(open(index).read())
    data["metadata"]["total_size"] += 1
    open(index, "w").write(json.dumps(data))
    assert main([*args, "--verify-only"]) == 3
    assert "total_size" in capsys.readouterr().err


def test_overrides_replace_the_init_and_unknown_ones_fail(tmp_path, capsys):
    cfg = config_file(tmp_path, "llama")
    d = str(tmp_path / "o")
    assert main(["checkpoint", "--config", cfg, "-o", d, "--override",
                 "*.mlp.down_proj.weight=zeros", "--override",
                 'model.layers.0.self_attn.q_proj.weight=uniform:{"low": 2, "high": 3}']) == 0
    model, _ = load(d)
    for i in range(2):
        assert not model.get_parameter(f"model.layers.{i}.mlp.down_proj.weight").any()
    q = model.get_parameter("model.layers.0.self_attn.q_proj.weight")
    assert float(q.min()) >= 2 and float(q.max()) < 3
    assert float(model.get_parameter("model.layers.1.self_attn.q_proj.weight").abs().max()) < 1
    e = str(tmp_path / "e")
    capsys.readouterr()
    for bad, message in (("*.nothing=zeros", "*.nothing"),
                         ("*.bias=lecun_normal", "not available"),
                         ('*.weight=xavier_uniform:{"fans": [1, 2]}', "come from the parameter")):
        assert main(["checkpoint", "--config", cfg, "-o", e, "--override", bad]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not os.path.exists(e)


def test_a_tensor_the_init_code_misses_is_an_error_naming_it(tmp_path, monkeypatch):
    cfg = config_file(tmp_path, "llama")
    own = tr.LlamaPreTrainedModel._init_weights

    def skip_embeddings(self, module):
        if isinstance(module, torch.nn.Embedding):
            return
        own(self, module)
    monkeypatch.setattr(tr.LlamaPreTrainedModel, "_init_weights", skip_embeddings)
    d = str(tmp_path / "m")
    with pytest.raises(ValueError, match="model.embed_tokens.weight"):
        write_model_dir(d, config=cfg, seed=1)
    assert not os.path.exists(d)               # the directory it made is gone again
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(ValueError, match="model.embed_tokens.weight"):
        write_model_dir(str(kept), config=cfg, seed=1)
    assert kept.is_dir() and files_of(str(kept)) == []      # one it was given stays
    rep = write_model_dir(d, config=cfg, seed=1,
                          overrides=['model.embed_tokens.weight=normal:{"std": 0.5}'])
    assert rep.files == ["model.safetensors"]
    monkeypatch.undo()
    model, _ = load(d)
    assert 0.4 < float(model.get_input_embeddings().weight.std()) < 0.6


def test_persistent_buffers_are_written_with_their_init_values(tmp_path):
    """ResNet's BatchNorm statistics are persistent buffers (num_batches_tracked is
    int64): saved with the values the init code gives them."""
    cfg = tmp_path / "resnet.json"
    cfg.write_text(json.dumps(dict(model_type="resnet", embedding_size=16,
                                   hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic")))
    d = str(tmp_path / "r")
    rep = write_model_dir(d, config=str(cfg), seed=3)
    from safetensors import safe_open
    with safe_open(os.path.join(d, rep.files[0]), "pt") as a:
        keys = list(a.keys())
        var = [k for k in keys if k.endswith("running_var")]
        count = [k for k in keys if k.endswith("num_batches_tracked")]
        assert var and count
        for k in var:
            assert torch.equal(a.get_tensor(k), torch.ones_like(a.get_tensor(k)))
        for k in count:
            t = a.get_tensor(k)
            assert t.dtype == torch.int64 and int(t) == 0
    model = tr.AutoModel.from_pretrained(d, local_files_only=True)
    with torch.device("meta"):
        ref = tr.AutoModel.from_config(model.config)
    ft.materialize(ref, "cpu", seed=3, progress=False)
    for k, v in ref.state_dict().items():
        assert torch.equal(bits(model.state_dict()[k]), bits(v)), k


def test_killed_run_leaves_nothing_and_a_rerun_completes(tmp_path):
    cfg = config_file(tmp_path, "mistral")
    d = str(tmp_path / "k")
    os.mkdir(d)
    args = [PY, "-m", "fastinit", "checkpoint", "--config", cfg, "-o", d,
            "--max-shard-size", "50KB", "--seed", "9"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(4)                          # somewhere in import, planning or filling
    p.send_signal(signal.SIGKILL)
    p.wait()
    left = os.listdir(d)
    if p.returncode != 0:                  # killed: no weight file has a name
        assert not [n for n in left if n.endswith(".safetensors") or ".part" in n], left
    r = subprocess.run(args + ["--verify"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert INDEX_NAME in os.listdir(d)


@pytest.mark.parametrize("argv, message", [
    (["--model-type", "llama", "--config", "x.json"], "either --config or --model-type"),
    (["--model-type", "llama", "--preset", "llama"], "replace SPEC"),
    (["--model-type", "llama"], "-o/--output DIR is required"),
    (["--model-type", "llama", "-o", "d", "--workers", "2", "--shard", "1/2"],
     "either --workers or --shard"),
    (["--model-type", "llama", "-o", "d", "--shard", "3/2"], "--shard"),
    (["--preset", "llama", "-o", "x.safetensors", "--max-shard-size", "1MB"],
     "only apply to --config"),
])
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["checkpoint", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ('{"hidden_size": 8}', "no 'model_type'"),
    ('{"model_type": "no-such-model"}', "cannot build a config"),
])
def test_bad_config_exit_1_one_line_and_no_output(tmp_path, capsys, content, message):
    cfg = tmp_path / "c.json"
    cfg.write_text(content)
    d = tmp_path / "out"
    assert main(["checkpoint", "--config", str(cfg), "-o", str(d)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not d.exists()


def test_a_data_replacement_by_the_init_code_reaches_the_file(tmp_path, monkeypatch):
    """``module.weight.data = new`` moves the parameter off its file memory: what it
    holds at the end is copied into the file."""
    cfg = config_file(tmp_path, "llama")
    own = tr.LlamaPreTrainedModel._init_weights

    def replace_norms(self, module):
        own(self, module)
        if type(module).__name__ == "LlamaRMSNorm":
            module.weight.data = torch.full(module.weight.shape, 3.0,
                                            dtype=module.weight.dtype)
    monkeypatch.setattr(tr.LlamaPreTrainedModel, "_init_weights", replace_norms)
    d, jobs = str(tmp_path / "r"), str(tmp_path / "j")
    write_model_dir(d, config=cfg, seed=2, max_shard_size="40KB")
    for k in (1, 2):                  # the other job's norms stay on meta there
        write_model_dir(jobs, config=cfg, seed=2, max_shard_size="40KB", job=(k, 2))
    monkeypatch.undo()
    assert len(files_of(d)) > 2 and _tree(jobs) == _tree(d)
    model, _ = load(d)
    norms = [k for k in model.state_dict() if k.endswith("norm.weight")]
    assert len(norms) == 5                               # 2 layers x 2, and the final one
    for k in norms:
        assert bool((model.state_dict()[k] == 3.0).all()), k
