"""fastinit.torch.init_module and materialize."""

import math
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

import fastinit as fi
import fastinit.torch as ft
from fastinit import _progress

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

def same(a, b):
    return torch.equal(a.detach(), b.detach())


class Block(nn.Module):
    def __init__(self, d=16, order=("attn", "mlp")):
        super().__init__()
        for name in order:                       # registration order is a parameter
            if name == "attn":
                self.attn = nn.Linear(d, 3 * d)
            else:
                self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.norm = nn.LayerNorm(d)


class Net(nn.Module):
    def __init__(self, d=16, vocab=50, order=("attn", "mlp")):
        super().__init__()
        self.embed = nn.Embedding(vocab, d, padding_idx=0)
        self.layers = nn.ModuleList([Block(d, order) for _ in range(2)])
        self.head = nn.Linear(d, vocab, bias=False)


# --- default rules -------------------------------------------------------------
def test_default_linear_matches_twins_and_torch_bounds():
    m = nn.Linear(30, 20)
    r = ft.init_module(m, seed=3)
    w, b = m.weight, m.bias
    want = torch.empty(20, 30)
    ft.kaiming_uniform_(want, a=math.sqrt(5), seed=3, stream=ft.stream_for("weight"))
    assert same(w, want)
    bound = 1 / math.sqrt(30)                  # torch: kaiming a=sqrt(5) == U(+-1/sqrt(fan_in))
    assert float(w.abs().max()) <= bound and float(b.abs().max()) <= bound
    want_b = torch.empty(20)
    ft.uniform_(want_b, -bound, bound, seed=3, stream=ft.stream_for("bias"))
    assert same(b, want_b)
    assert [p.name for p in r] == ["weight", "bias"]
    assert r["weight"].stream == ft.stream_for("weight")
    assert r["weight"].shape == (20, 30) and r["weight"].dtype == torch.float32
    assert all(p.status == "initialized" for p in r)


def test_defaults_of_builtin_modules():
    torch.manual_seed(0)
    m = nn.ModuleDict(dict(
        emb=nn.Embedding(40, 8, padding_idx=5), bag=nn.EmbeddingBag(30, 8, padding_idx=2),
        ln=nn.LayerNorm(8), gn=nn.GroupNorm(2, 8), rms=nn.RMSNorm(8), bn=nn.BatchNorm1d(8),
        conv=nn.Conv2d(3, 6, 3), convt=nn.ConvTranspose1d(4, 6, 5),
        mha=nn.MultiheadAttention(8, 2, add_bias_kv=True),
        mha2=nn.MultiheadAttention(8, 2, kdim=6, vdim=4, bias=False),
        lstm=nn.LSTM(5, 7), cell=nn.GRUCell(5, 7), prelu=nn.PReLU(3, init=0.1),
        bil=nn.Bilinear(4, 5, 6)))
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(123.0)
        m["bn"].running_mean.fill_(5)
        m["bn"].num_batches_tracked.fill_(9)
    r = ft.init_module(m, seed=1)
    assert not r.unmatched and len(r) == len(list(m.parameters()))
    emb = m["emb"].weight
    assert bool((emb[5] == 0).all()) and 0.8 < float(emb.std()) < 1.2
    assert bool((m["bag"].weight[2] == 0).all())
    for k in ("ln", "gn", "bn"):
        assert bool((m[k].weight == 1).all()) and bool((m[k].bias == 0).all())
    assert bool((m["rms"].weight == 1).all())
    assert bool((m["bn"].running_mean == 0).all()) and bool((m["bn"].running_var == 1).all())
    assert int(m["bn"].num_batches_tracked) == 0
    conv = m["conv"]
    fan_in = 3 * 9
    assert float(conv.weight.abs().max()) <= 1 / math.sqrt(fan_in)
    assert float(conv.bias.abs().max()) <= 1 / math.sqrt(fan_in)
    convt = m["convt"]                         # torch's fan_in: weight.size(1) * k = 6 * 5
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(convt.weight)
    assert fan_in == 30
    want = torch.empty(6)
    ft.uniform_(want, -1 / math.sqrt(30), 1 / math.sqrt(30), seed=1,
                stream=ft.stream_for("convt.bias"))
    assert same(convt.bias, want)
    mha = m["mha"]
    xb = math.sqrt(6 / (8 + 24))
    assert float(mha.in_proj_weight.abs().max()) <= xb
    assert bool((mha.in_proj_bias == 0).all()) and bool((mha.out_proj.bias == 0).all())
    assert float(mha.out_proj.weight.abs().max()) <= 1 / math.sqrt(8)
    assert float(mha.bias_k.abs().max()) < 10 and float(mha.bias_k.abs().max()) > 0
    # torch's own reset_parameters ran under the redirect, children first: out_proj's
    # Linear draw, then MultiheadAttention's constant_ on it
    assert (r["mha.out_proj.bias"].rule
            == "MultiheadAttention._reset_parameters: constant_(val=0.0)")
    assert r["mha.out_proj.bias"].history[0].startswith("Linear.reset_parameters: uniform_(")
    mha2 = m["mha2"]
    assert float(mha2.k_proj_weight.abs().max()) <= math.sqrt(6 / (8 + 6))
    for p in m["lstm"].parameters():
        assert float(p.abs().max()) <= 1 / math.sqrt(7)
    for p in m["cell"].parameters():
        assert float(p.abs().max()) <= 1 / math.sqrt(7)
    assert bool((m["prelu"].weight == torch.tensor(0.1)).all())
    assert float(m["bil"].weight.abs().max()) <= 1 / math.sqrt(4)
    assert not any(bool((p == 123).any()) for p in m.parameters())


def test_default_transformer_xavier_on_matrices():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = nn.Transformer(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                           dim_feedforward=16)
    r = ft.init_module(m, seed=2)
    lin = m.encoder.layers[0].linear1
    assert (r["encoder.layers.0.linear1.weight"].rule
            == "Transformer._reset_parameters: xavier_uniform_(gain=1.0)")
    want = torch.empty(16, 8)
    ft.xavier_uniform_(want, seed=2, stream=ft.stream_for("encoder.layers.0.linear1.weight"))
    assert same(lin.weight, want)
    assert r["encoder.layers.0.linear1.bias"].rule.startswith("Linear.reset_parameters")
    assert bool((m.encoder.layers[0].self_attn.out_proj.bias == 0).all())


def test_same_values_for_other_registration_order():
    a, b = Net(order=("attn", "mlp")), Net(order=("mlp", "attn"))
    ra, rb = ft.init_module(a, seed=9), ft.init_module(b, seed=9)
    assert [p.name for p in ra] != [p.name for p in rb]
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys()
    for k in pa:
        assert same(pa[k], pb[k]), k
        assert ra[k].stream == rb[k].stream == ft.stream_for(k)


def test_streams_are_blake2b_of_the_name():
    import hashlib
    name = "layers.0.attn.weight"
    h = hashlib.blake2b(name.encode(), digest_size=8).digest()
    assert ft.stream_for(name) == int.from_bytes(h, "little")
    assert ft.stream_for("a") != ft.stream_for("b")


def test_prefix_reproduces_a_submodule_inside_the_model():
    net = Net()
    ft.init_module(net, seed=4)
    block = Block()
    r = ft.init_module(block, seed=4, prefix="layers.1.")
    assert r["attn.weight"].stream == ft.stream_for("layers.1.attn.weight")
    for k, p in block.named_parameters():
        assert same(p, dict(net.named_parameters())["layers.1." + k]), k


def test_seed_changes_values_and_none_means_process_seed():
    a, b, c = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
    ft.init_module(a, seed=1)
    ft.init_module(b, seed=2)
    assert not same(a.weight, b.weight)
    fi.manual_seed(1)
    r = ft.init_module(c)
    fi.manual_seed(fi.DEFAULT_SEED)
    assert r.seed == 1 and same(a.weight, c.weight)


# --- rules ---------------------------------------------------------------------
def test_rules_globs_types_specs_callables_first_match_wins():
    net = Net()
    seen = {}

    def custom(t, *, seed, stream, name, module):
        seen[name] = (stream, type(module).__name__)
        return ft.normal_(t, 0.0, 0.5, seed=seed, stream=stream)
    rules = {
        "head.weight": custom,
        "*.bias": "zeros",
        "layers.0.*": None,                       # keep (biases matched above)
        nn.LayerNorm: {"weight": ("constant", 2.0)},
        nn.Embedding: ("normal", {"std": 0.02}),
        nn.Linear: ("trunc_normal", {"std": 0.02, "a": -0.04, "b": 0.04}),
    }
    before = {k: p.detach().clone() for k, p in net.named_parameters()}
    r = ft.init_module(net, rules, seed=5)
    assert seen == {"head.weight": (ft.stream_for("head.weight"), "Linear")}
    assert all(bool((p == 0).all()) for k, p in net.named_parameters() if k.endswith("bias"))
    assert bool((net.layers[1].norm.weight == 2).all())
    assert same(net.layers[0].norm.weight, before["layers.0.norm.weight"])   # kept
    assert r["layers.0.norm.weight"].status == "kept"
    assert same(net.layers[0].attn.weight, before["layers.0.attn.weight"])
    w = net.layers[1].attn.weight
    assert float(w.abs().max()) <= 0.04
    e = net.embed.weight
    assert 0.015 < float(e.std()) < 0.025 and float(e[0].abs().sum()) > 0   # no padding rule
    assert "rule nn.Embedding" not in r["embed.weight"].rule
    assert r["embed.weight"].rule.startswith("rule Embedding")
    assert r["layers.1.attn.bias"].rule == "rule '*.bias': zeros_()"
    want = torch.empty(50, 16)
    ft.normal_(want, 0.0, 0.5, seed=5, stream=ft.stream_for("head.weight"))
    assert same(net.head.weight, want)


def test_rules_as_list_and_twins_as_callables():
    m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    ft.init_module(m, [("0.*", ft.ones_), ("1.weight", ft.xavier_normal_),
                       ("1.bias", ("uniform", -1, 1))], seed=0, defaults=False)
    assert bool((m[0].weight == 1).all()) and bool((m[0].bias == 1).all())
    want = torch.empty(2, 4)
    ft.xavier_normal_(want, seed=0, stream=ft.stream_for("1.weight"))
    assert same(m[1].weight, want)


def test_user_rules_override_defaults_and_defaults_can_be_off():
    m = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    r = ft.init_module(m, {"0.weight": "zeros"}, seed=0)
    assert bool((m[0].weight == 0).all())
    assert r["0.bias"].rule.startswith("Linear.reset_parameters: uniform_(")
    assert r["0.weight"].rule == "rule '0.weight': zeros_()"
    with pytest.raises(ft.UnmatchedParametersError) as info:
        ft.init_module(m, {"0.weight": "zeros"}, seed=0, defaults=False)
    assert info.value.report.unmatched == ["0.bias", "1.weight", "1.bias"]


def test_bad_rules_fail_before_any_write():
    m = nn.Linear(3, 3)
    before = m.weight.detach().clone()
    with pytest.raises(TypeError, match="seed and stream"):
        ft.init_module(m, {"weight": torch.nn.init.zeros_}, seed=0)
    with pytest.raises(ValueError, match="unknown initializer"):
        ft.init_module(m, {"weight": "glorot"}, seed=0)
    with pytest.raises(TypeError, match="bad arguments"):
        ft.init_module(m, {"weight": ("normal", {"sigma": 1})}, seed=0)
    with pytest.raises(TypeError, match="key"):
        ft.init_module(m, {3: "zeros"}, seed=0)
    with pytest.raises(ValueError, match="on_lazy"):
        ft.init_module(m, seed=0, on_lazy="later")
    assert same(m.weight, before)


def test_non_float_parameters_refused_before_any_write():
    m = nn.Linear(3, 3)
    m.register_parameter("steps", nn.Parameter(torch.zeros(2, dtype=torch.int64),
                                               requires_grad=False))
    before = m.weight.detach().clone()
    with pytest.raises(TypeError, match="steps"):
        ft.init_module(m, {"steps": "zeros"}, seed=0)
    assert same(m.weight, before)
    seen = []
    ft.init_module(m, {"steps": lambda t, *, seed, stream: seen.append(t.dtype)}, seed=0)
    assert seen == [torch.int64]                       # a callable of one's own may
    ft.init_module(m, {"steps": None}, seed=0)


def test_running_stats_reset_only_with_defaults():
    bn = nn.BatchNorm1d(4)
    bn.running_mean.fill_(3)
    ft.init_module(bn, {"*": "ones"}, seed=0, defaults=False)
    assert bool((bn.running_mean == 3).all())
    r = ft.init_module(bn, seed=0)
    assert bool((bn.running_mean == 0).all())
    assert ("running_mean", "_NormBase.reset_running_stats: zero_()") in r.buffers


# --- unmatched parameters ------------------------------------------------------
class WithCustom(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.pos = nn.Parameter(torch.full((3, 4), 7.0))
        self.scale = nn.Parameter(torch.full((4,), 7.0))


def test_unmatched_raise_after_the_init_code_and_are_named():
    m = WithCustom()
    with pytest.raises(ft.UnmatchedParametersError, match="pos, scale") as info:
        ft.init_module(m, seed=0)
    assert "rules={'pos'" in str(info.value)                  # says how to provide them
    assert bool((m.pos == 7).all()) and bool((m.scale == 7).all())   # never written
    rep = info.value.report
    assert rep.unmatched == ["pos", "scale"] and rep.untouched == ["pos", "scale"]
    assert rep["pos"].shape == (3, 4)
    assert rep["pos"].rule == "not written by reset_parameters(), no rule matched"
    # with no init code the same parameters are known before any write
    before = m.lin.weight.detach().clone()
    with pytest.raises(ft.UnmatchedParametersError, match="pos, scale, lin.weight, lin.bias"):
        ft.init_module(m, seed=0, defaults=False)
    assert same(m.lin.weight, before)


def test_unmatched_warn_and_ignore():
    m = WithCustom()
    with pytest.warns(UserWarning, match=r"2 parameter\(s\) were not set"):
        r = ft.init_module(m, seed=0, on_unmatched="warn")
    assert r.unmatched == ["pos", "scale"] and bool((m.pos == 7).all())
    assert "not written by reset_parameters()" in str(r)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = ft.init_module(m, seed=0, on_unmatched="ignore")
    assert r.unmatched == ["pos", "scale"]
    r = ft.init_module(m, {"pos": ("normal", {"std": 0.02}), "scale": "ones"}, seed=0)
    assert not r.unmatched and bool((m.scale == 1).all())
    assert r.untouched == ["pos", "scale"]                    # rules set them, not the init


def test_report_lists_everything_and_tied_weights_once():
    net = Net()
    net.head.weight = net.embed.weight                     # tied
    r = ft.init_module(net, seed=0)
    names = [p.name for p in r]
    assert names == [n for n, _ in net.named_parameters()]
    assert r["embed.weight"].aliases == ["head.weight"] and r["head.weight"] is r["embed.weight"]
    text = str(r)
    for n in names:
        assert n in text
    assert f"{ft.stream_for('embed.weight'):016x}" in text
    assert "parameters, seed 0" in text


def test_half_precision_model():
    m = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)).to(torch.bfloat16)
    r = ft.init_module(m, seed=3)
    assert r["0.weight"].dtype == torch.bfloat16
    want = torch.empty(8, 8, dtype=torch.bfloat16)
    ft.kaiming_uniform_(want, a=math.sqrt(5), seed=3, stream=ft.stream_for("0.weight"))
    assert same(m[0].weight, want)


# --- lazy modules ----------------------------------------------------------------
def test_lazy_parameters_error_names_dry_forward():
    net = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(1))
    with pytest.raises(ValueError, match="dry forward"):
        ft.init_module(net, seed=0)


def test_lazy_defer_initializes_after_materialization():
    rules = {nn.Linear: {"weight": ("normal", {"std": 0.01}), "bias": "zeros"}}
    net = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(1))
    r = ft.init_module(net, rules, seed=6, on_lazy="defer")
    assert r.deferred == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert r["0.weight"].shape is None
    hooks_before = [len(m._forward_pre_hooks) for m in net]
    net(torch.rand(2, 4))
    assert not r.deferred and r["0.weight"].shape == (8, 4) and r["2.weight"].shape == (1, 8)
    assert all(p.status == "initialized" for p in r)
    assert [len(m._forward_pre_hooks) for m in net] == [0, 0, 0]     # all removed
    assert hooks_before[0] == 2
    # the same as a dry forward followed by init_module
    ref = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(1))
    ref(torch.rand(2, 4))
    ft.init_module(ref, rules, seed=6)
    for a, b in zip(net.parameters(), ref.parameters()):
        assert same(a, b)
    assert bool((net[0].bias == 0).all())
    before = net[0].weight.detach().clone()
    net(torch.rand(2, 4))                                    # hooks gone: no re-init
    assert same(net[0].weight, before)


def test_init_module_refuses_meta():
    with torch.device("meta"):
        m = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="materialize"):
        ft.init_module(m, seed=0)


# --- materialize ----------------------------------------------------------------
class WithBuffers(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = Net()
        self.bn = nn.BatchNorm1d(16)
        self.register_buffer("inv_freq", torch.arange(4.0), persistent=False)


def test_materialize_equals_init_module_on_cpu():
    with torch.device("meta"):
        meta = Net()
    assert meta.head.weight.is_meta
    r = ft.materialize(meta, "cpu", seed=12)
    cpu = Net()
    ft.init_module(cpu, seed=12)
    for (k, a), (_, b) in zip(meta.named_parameters(), cpu.named_parameters()):
        assert a.device.type == "cpu" and same(a, b), k
    assert not r.unmatched and r.seconds > 0


def test_materialize_buffers_error_warn_and_kept():
    with torch.device("meta"):
        m = WithBuffers()
    with pytest.raises(ft.UnsetBuffersError, match="inv_freq") as info:
        ft.materialize(m, seed=1)
    assert "module.get_buffer(name)" in str(info.value)
    actions = dict(info.value.report.buffers)
    assert actions["inv_freq"].startswith("UNSET")
    with torch.device("meta"):
        m = WithBuffers()
    with pytest.warns(UserWarning, match="inv_freq"):
        r = ft.materialize(m, seed=1, on_buffers="warn")
    assert bool((m.bn.running_var == 1).all()) and bool((m.bn.running_mean == 0).all())
    actions = dict(r.buffers)
    assert actions["bn.running_mean"] == "_NormBase.reset_running_stats: zero_()"
    # a buffer created off the meta device keeps its values
    with torch.device("meta"):
        m = WithBuffers()
    m.inv_freq = torch.arange(4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = ft.materialize(m, seed=1)
    assert torch.equal(m.inv_freq, torch.arange(4.0))
    assert dict(r.buffers)["inv_freq"].startswith("kept")
    with pytest.raises(ValueError, match="on_buffers"):
        ft.materialize(m, seed=1, on_buffers="ignore")


def test_materialize_checks_rules_before_allocating_and_names_unset_parameters():
    with torch.device("meta"):
        m = WithCustom()
    for bad, err in (({"pos": "glorot"}, "unknown initializer"),
                     ({"*.weights": "zeros"}, "matched no parameter")):
        with pytest.raises(ValueError, match=err):
            ft.materialize(m, seed=0, rules=bad)
        assert m.lin.weight.is_meta and m.pos.is_meta               # nothing allocated
    with pytest.raises(ft.UnmatchedParametersError, match="pos, scale"):
        ft.materialize(m, seed=0)                 # pos and scale: to_empty memory, named
    with torch.device("meta"):
        m = WithCustom()
    r = ft.materialize(m, seed=0, rules={"pos": ("normal", {"std": 0.02}), "scale": "ones"})
    assert not m.pos.is_meta and bool((m.scale == 1).all())
    assert abs(float(m.pos.std()) - 0.02) < 0.02
    assert r["pos"].rule == "rule 'pos': normal_(std=0.02)"


def test_materialize_progress_line(capsys, monkeypatch):
    """The bar (fastinit._progress, tqdm) counts elements and ends its line."""
    import tqdm
    monkeypatch.setattr(_progress, "DELAY_S", 0.0)           # shown from the start
    with torch.device("meta"):
        m = Net()
    ft.materialize(m, seed=0)
    err = capsys.readouterr().err
    assert "fastinit materialize" in err and "100%" in err and err.endswith("\n")
    total = tqdm.tqdm.format_sizeof(sum(p.numel() for p in m.parameters()))
    assert f"{total}/{total} [" in err
    with torch.device("meta"):
        m = Net()
    ft.materialize(m, seed=0, progress=False)
    assert capsys.readouterr().err == ""


def test_materialize_progress_tqdm(capsys, monkeypatch):
    tqdm = pytest.importorskip("tqdm")
    counted = []

    class Bar(tqdm.tqdm):
        def close(self):
            counted.append((self.n, self.total))
            super().close()
    monkeypatch.setattr(tqdm, "tqdm", Bar)
    monkeypatch.setattr(_progress, "DELAY_S", 0.0)
    with torch.device("meta"):
        m = Net()
    ft.materialize(m, seed=0)
    total = sum(p.numel() for p in m.parameters())
    assert counted and set(counted) == {(total, total)}       # (tqdm closes twice)
    assert "fastinit materialize" in capsys.readouterr().err


def test_materialize_bfloat16():
    with torch.device("meta"):
        m = Net().to(torch.bfloat16)
    ft.materialize(m, seed=2)
    want = torch.empty(50, 16, dtype=torch.bfloat16)
    ft.normal_(want, seed=2, stream=ft.stream_for("embed.weight"))
    want[0] = 0
    assert same(m.embed.weight, want)


MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys, torch
    from torch import nn
    import fastinit.torch as ft
    w = torch.empty(64, 64); ft.normal_(w, seed=0); ft.uniform_(w, seed=0)
    ft.kaiming_uniform_(w, seed=0)                         # load the kernels
    with torch.device("meta"):
        m = nn.Sequential(*[nn.Linear(2048, 2048) for _ in range(12)],
                          nn.Embedding(8192, 2048), nn.LayerNorm(2048))
    size = sum(p.numel() * p.element_size() for p in m.parameters())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ft.materialize(m, seed=0, progress=False)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(size, before, after)
""")


def test_materialize_peak_memory_is_the_model_size():
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True,
                         text=True, timeout=300, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    size, before, after = map(int, out.stdout.split())
    assert size > 250e6
    grew = after - before
    assert grew < 1.1 * size + 32e6, (grew / size)     # no second copy of the model
