"""fastinit.torch.redirect: a model's own init code, every random draw from fastinit.

One test per init pattern: fills of parameters and of their views, draws into
temporaries written afterwards (copy_, cat, .data =, new Parameters), calls with
generator=, parameters the init never writes, vendored samplers, torch's
structured initializers; plus ties, rules that keep a parameter, and rules
that match nothing.
"""

import math
import warnings

import pytest
import torch
from torch import nn

import fastinit.torch as ft

SEED = 11


def bits(t):
    t = t.detach().contiguous()
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def same_bits(a, b):
    return a.shape == b.shape and torch.equal(bits(a), bits(b))


def twin(fn, shape, *args, name, seed=SEED, **kw):
    """What the fastinit twin ``fn`` gives a fresh tensor from the stream of ``name``."""
    t = torch.empty(shape)
    fn(t, *args, seed=seed, stream=ft.stream_for(name), **kw)
    return t


def run(model, init, seed=SEED, torch_seed=0, **kw):
    """init(model) under the redirect, after torch.manual_seed(torch_seed)."""
    torch.manual_seed(torch_seed)
    with ft.redirect(model, seed=seed, **kw) as r:
        init(model)
    return r


def independent_of_torch(make, init):
    """The model comes out bit-identical under two torch seeds; returns it."""
    a, b = make(), make()
    run(a, init, torch_seed=1)
    run(b, init, torch_seed=2)
    for (k, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert same_bits(p, q), k
    return a


# --- parameters and their views ------------------------------------------------------
def test_nn_init_calls_on_parameters_equal_the_twins():
    m = nn.Linear(6, 5)

    def init(m):
        nn.init.xavier_uniform_(m.weight, gain=2.0)     # arrives as Tensor.uniform_
        nn.init.uniform_(m.bias, -0.3, 0.3)
    r = run(m, init)
    assert same_bits(m.weight, twin(ft.xavier_uniform_, (5, 6), 2.0, name="weight"))
    assert same_bits(m.bias, twin(ft.uniform_, (5,), -0.3, 0.3, name="bias"))
    # what the model's code called, and where: the function whose frame holds the module
    assert r.named["weight"].writes == ["test_nn_init_calls_on_parameters_equal_the_twins"
                                        ".<locals>.init: xavier_uniform_(gain=2.0)"]
    assert r.named["bias"].writes[-1].endswith("init: uniform_(a=-0.3, b=0.3)")
    for fn, args, name in ((nn.init.kaiming_normal_, dict(mode="fan_out"), "kaiming_normal_"),
                           (nn.init.normal_, dict(std=0.5), "normal_"),
                           (nn.init.trunc_normal_, dict(std=0.5, a=-0.6, b=0.6),
                            "trunc_normal_")):
        w = nn.Parameter(torch.empty(7, 3))
        holder = nn.Module()
        holder.w = w
        run(holder, lambda h: fn(h.w, **args))
        want = twin(getattr(ft, name), (7, 3), name="w", **args)
        assert same_bits(w, want), name


def test_contiguous_views_get_the_values_of_their_positions():
    e = nn.Embedding(10, 4, padding_idx=3)

    def init(m):
        nn.init.normal_(m.weight[2:6], std=0.5)        # rows 2..5
        nn.init.normal_(m.weight[7], std=0.5)          # one row
        nn.init.normal_(m.weight[:, 1:3], std=0.5)     # a non-contiguous view
    run(e, init)
    full = twin(ft.normal_, (10, 4), 0.0, 0.5, name="weight")
    w = e.weight.detach()
    assert same_bits(w[2:6, 0], full[2:6, 0]) and same_bits(w[2:6, 3], full[2:6, 3])
    assert same_bits(w[7, 0], full[7, 0])
    assert same_bits(w[:, 1:3], full[:, 1:3])          # positions in the parameter
    # a transposed whole view: each element gets its own position's value
    lin = nn.Linear(4, 3, bias=False)
    run(lin, lambda m: nn.init.normal_(m.weight.t()))
    assert same_bits(lin.weight, twin(ft.normal_, (3, 4), name="weight"))


def test_repeated_fills_take_new_streams_and_rejection_loops_end():
    m = nn.Linear(50, 40, bias=False)
    draws = []

    def init(m):                                      # redraw in place until in bounds
        while True:
            nn.init.normal_(m.weight)
            draws.append(m.weight.detach().clone())
            if float(m.weight.detach().abs().max()) < 3.5:
                break
    r = run(m, init)
    assert len(draws) >= 2                            # 2000 draws: a value >= 3.5 is likely
    assert not torch.equal(draws[0], draws[1])
    assert same_bits(draws[0], twin(ft.normal_, (40, 50), name="weight"))
    assert same_bits(draws[1], twin(ft.normal_, (40, 50), name="weight#1"))
    assert "[stream of 'weight#1']" in r.named["weight"].writes[1]


# --- temporaries ------------------------------------------------------------------------
class Fused(nn.Module):
    """q, k and v drawn separately into temporaries, then one fused parameter."""

    def __init__(self, d=8, order=("qkv", "out")):
        super().__init__()
        for name in order:
            setattr(self, name, nn.Linear(d, 3 * d if name == "qkv" else d, bias=False))

    def init_weights(self, how="copy"):
        d = self.out.weight.shape[0]
        q = torch.empty(d, d)
        nn.init.trunc_normal_(q, std=0.02, a=-0.04, b=0.04)
        k = torch.randn(d, d) * 0.02
        v = torch.empty(d, d).normal_(0, 0.02)
        fused = torch.cat([q, k, v])
        with torch.no_grad():
            if how == "copy":
                self.qkv.weight.copy_(fused)
            elif how == "data":
                self.qkv.weight.data = fused
            else:
                self.qkv.weight[...] = fused
        nn.init.xavier_normal_(self.out.weight)


class Outer(nn.Module):
    def __init__(self, order=("a", "b")):
        super().__init__()
        for name in order:
            setattr(self, name, Fused(order=("qkv", "out") if name == "a" else ("out", "qkv")))

    def init_weights(self, how="copy"):
        self.a.init_weights(how)
        self.b.init_weights(how)


@pytest.mark.parametrize("how", ["copy", "data", "setitem"])
def test_draws_into_temporaries_copied_concatenated_or_assigned(how):
    m = independent_of_torch(Outer, lambda m: m.init_weights(how))
    # a temporary's stream: the scope (the module whose init code drew it) and the
    # draw's order there
    q = twin(ft.trunc_normal_, (8, 8), 0.0, 0.02, -0.04, 0.04, name="a#tmp0")
    k = twin(ft.normal_, (8, 8), name="a#tmp1") * 0.02
    v = twin(ft.normal_, (8, 8), 0.0, 0.02, name="a#tmp2")
    assert same_bits(m.a.qkv.weight, torch.cat([q, k, v]))
    assert same_bits(m.a.out.weight, twin(ft.xavier_normal_, (8, 8), name="a.out.weight"))
    assert not torch.equal(m.a.qkv.weight, m.b.qkv.weight)     # another scope
    # another registration order, the same bits; another seed, other values
    other = Outer(order=("b", "a"))
    run(other, lambda m: m.init_weights(how))
    for k_, p in m.state_dict().items():
        assert same_bits(p, other.state_dict()[k_]), k_
    third = Outer()
    run(third, lambda m: m.init_weights(how), seed=SEED + 1)
    assert float((third.a.qkv.weight == m.a.qkv.weight).float().mean()) < 0.01


def test_data_assignment_and_new_parameters_are_followed():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def init_weights(self):
            self.lin.weight.data = torch.empty(3, 4)          # new storage, then filled
            nn.init.uniform_(self.lin.weight, -1, 1)
            self.scale = nn.Parameter(torch.empty(3))          # a parameter the mode had
            nn.init.normal_(self.scale, 1.0, 0.1)              # not seen
            self.lin.bias = nn.Parameter(torch.zeros(3))       # made by the init code
    m = independent_of_torch(M, lambda m: m.init_weights())
    assert same_bits(m.lin.weight, twin(ft.uniform_, (3, 4), -1, 1, name="lin.weight"))
    assert same_bits(m.scale, twin(ft.normal_, (3,), 1.0, 0.1, name="scale"))
    def unfilled(m):
        m.scale = nn.Parameter(torch.empty(3))                 # torch.empty, never filled
        nn.init.zeros_(m.lin.weight)
        nn.init.zeros_(m.lin.bias)
    with pytest.raises(ft.UnmatchedParametersError, match=r"not set: scale;"):
        ft.init_module(M(), init=unfilled, seed=SEED)
    r = ft.init_module(M(), seed=SEED)
    assert r.init == "M.init_weights()" and not r.unmatched


def test_generator_calls_go_to_torch_and_are_reported():
    m = nn.Linear(5, 4)

    def init(m):
        g = torch.Generator().manual_seed(7)
        nn.init.normal_(m.weight, generator=g)
        nn.init.zeros_(m.bias)
    with pytest.warns(UserWarning,
                      match=r"torch's generator.*weight: normal_\(.*generator=torch.Generator\)"):
        r = run(m, init)
    want = torch.empty(4, 5)
    nn.init.normal_(want, generator=torch.Generator().manual_seed(7))
    assert torch.equal(m.weight.detach(), want)
    assert [d.target for d in r.torch_draws] == ["weight"]
    assert r.named["weight"].writes[-1].endswith("[torch generator: generator=]")


def test_a_parameter_the_init_never_writes_raises_with_its_name():
    class WithScalar(nn.Module):                  # a learnable scalar set in __init__
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.alpha = nn.Parameter(torch.tensor(0.5))
    with torch.device("meta"):
        m = WithScalar()
    with pytest.raises(ft.UnmatchedParametersError) as info:
        ft.materialize(m, seed=SEED)
    assert "alpha" in str(info.value) and "rules={'alpha'" in str(info.value)
    assert info.value.report.unmatched == ["alpha"]
    with torch.device("meta"):
        m = WithScalar()
    r = ft.materialize(m, seed=SEED, rules={"alpha": ("constant", 0.5)})
    assert float(m.alpha.detach()) == 0.5 and r.untouched == ["alpha"]
    text = str(r).splitlines()
    assert "never written by the init code: alpha" in text      # the report names it
    row = next(line for line in text if line.startswith("lin.weight "))
    assert row.endswith("Linear.reset_parameters: kaiming_uniform_(a=2.23606797749979, "
                        "mode='fan_in', nonlinearity='leaky_relu')")   # what filled it last


def test_vendored_rejection_loop_truncated_normal_is_reproducible():
    def vendored_trunc_normal_(t, mean=0.0, std=1.0, a=-2.0, b=2.0):
        with torch.no_grad():                      # torch's own loop, as libraries copy it
            result = t.normal_(mean, std)
            while True:
                mask = (result < a) | (result > b)
                if not mask.any():
                    break
                result = torch.where(mask, torch.empty_like(result).normal_(mean, std),
                                     result)
            t.copy_(result)

    def timm_trunc_normal_(t, mean=0.0, std=1.0, a=-2.0, b=2.0):
        def cdf(x):
            return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0
        lo, hi = cdf((a - mean) / std), cdf((b - mean) / std)
        with torch.no_grad():
            t.uniform_(2 * lo - 1, 2 * hi - 1)
            t.erfinv_()
            t.mul_(std * math.sqrt(2.0)).add_(mean).clamp_(min=a, max=b)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.empty(64, 64))
            self.v = nn.Parameter(torch.empty(64, 64))

        def init_weights(self):
            vendored_trunc_normal_(self.w, std=0.5, a=-0.6, b=0.6)
            timm_trunc_normal_(self.v, std=0.5, a=-0.6, b=0.6)
    m = independent_of_torch(M, lambda m: m.init_weights())
    for p in (m.w.detach(), m.v.detach()):
        assert float(p.abs().max()) <= 0.6 and float(p.std()) > 0.2
    # the loop's first draw is the parameter's own stream, the redraws temporaries
    first = twin(ft.normal_, (64, 64), 0.0, 0.5, name="w")
    keep = first.abs() <= 0.6
    assert torch.equal(m.w.detach()[keep], first[keep])
    other = M()
    run(other, lambda m: m.init_weights(), seed=SEED + 1)
    assert not torch.equal(other.w, m.w) and not torch.equal(other.v, m.v)


def test_structured_initializers_are_fastinits_twins():
    """orthogonal_, sparse_, eye_ and dirac_ never reach a TorchFunctionMode as
    themselves: the redirect swaps their code while it is active, so each is one call
    to fastinit.torch's twin, from the parameter's stream (a temporary's: its scope's)."""
    from torch.nn.init import sparse_                  # a reference saved before the block

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.Linear(6, 4, bias=False)
            self.fused = nn.Linear(4, 8, bias=False)
            self.sp = nn.Linear(6, 8, bias=False)
            self.eye = nn.Linear(5, 3, bias=False)
            self.conv = nn.Conv2d(4, 4, 3, bias=False)

        def init_weights(self):
            nn.init.orthogonal_(self.rnn.weight, gain=2.0)
            a, b = torch.empty(4, 4), torch.empty(4, 4)     # two blocks, one weight
            nn.init.orthogonal_(a)
            nn.init.orthogonal_(b)
            with torch.no_grad():
                self.fused.weight.copy_(torch.cat([a, b]))
            sparse_(self.sp.weight, 0.5)
            nn.init.eye_(self.eye.weight)
            nn.init.dirac_(self.conv.weight)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # no torch draw left
        m = independent_of_torch(M, lambda m: m.init_weights())
    assert same_bits(m.rnn.weight, twin(ft.orthogonal_, (4, 6), gain=2.0, name="rnn.weight"))
    blocks = [twin(ft.orthogonal_, (4, 4), name=f"#tmp{k}") for k in (0, 1)]
    assert same_bits(m.fused.weight, torch.cat(blocks))
    assert same_bits(m.sp.weight, twin(ft.sparse_, (8, 6), 0.5, name="sp.weight"))
    assert torch.equal(m.eye.weight.detach(), torch.eye(3, 5))
    want = torch.empty(4, 4, 3, 3)
    nn.init.dirac_(want)                               # outside: torch's own, restored
    assert torch.equal(m.conv.weight.detach(), want)
    r = run(M(), lambda m: m.init_weights())
    where = "test_structured_initializers_are_fastinits_twins.<locals>.M.init_weights"
    assert r.named["rnn.weight"].writes == [f"{where}: orthogonal_(gain=2.0)"]
    assert r.named["sp.weight"].writes == [f"{where}: sparse_(sparsity=0.5, std=0.01)"]
    assert not r.unset()
    # an explicit generator stays with torch, as a whole, and is reported
    lin = nn.Linear(6, 6, bias=False)
    with pytest.warns(UserWarning, match=r"weight: orthogonal_\(gain=1, generator=torch.Gen"):
        r = run(lin, lambda m: nn.init.orthogonal_(m.weight,
                                                   generator=torch.Generator().manual_seed(3)))
    want = torch.empty(6, 6)
    nn.init.orthogonal_(want, generator=torch.Generator().manual_seed(3))
    assert torch.equal(lin.weight.detach(), want) and len(r.torch_draws) == 1
    assert r.named["weight"].writes[0].endswith("[torch generator: generator=]")


def test_protected_parameters_keep_their_values_and_rules_win():
    m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    keep = m[0].weight.detach().clone()

    def init(m):
        for lin in m:
            nn.init.normal_(lin.weight)
            with torch.no_grad():
                lin.weight.mul_(0.5)                   # in place on a kept parameter too
                lin.weight[0, 0] = 7.0                 # and written through an index
            nn.init.zeros_(lin.bias)
    r = ft.init_module(m, {"0.weight": None, "1.bias": ("constant", 3.0)}, init=init,
                       seed=SEED)
    assert torch.equal(m[0].weight.detach(), keep)
    assert r["0.weight"].status == "kept"
    assert bool((m[1].bias == 3).all()) and r["1.bias"].rule == "rule '1.bias': constant_(3.0)"
    want = twin(ft.normal_, (2, 4), name="1.weight") * 0.5
    want[0, 0] = 7.0
    assert same_bits(m[1].weight, want)


def test_rules_that_match_nothing_are_errors():
    net = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(1))
    net(torch.rand(2, 4))                                  # LazyLinear -> Linear
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(ValueError, match="LazyLinear becomes Linear"):
        ft.init_module(net, {nn.LazyLinear: ("normal", {"std": 0.01})}, seed=SEED)
    with pytest.raises(ValueError, match=r"rule '\*\.weights'.*close name"):
        ft.init_module(net, {"*.weights": "zeros"}, seed=SEED)
    with pytest.raises(ValueError, match=r"rule Linear\['wieght'\]"):
        ft.init_module(net, {nn.Linear: {"wieght": "zeros", "bias": "zeros"}}, seed=SEED)
    for p, q in zip(net.parameters(), before):             # nothing was written
        assert torch.equal(p, q)
    with pytest.warns(UserWarning, match="matched no parameter"):
        ft.init_module(net, {"*.weights": "zeros"}, seed=SEED, on_unused_rule="warn")


def test_plain_torch_ties_stay_tied_and_are_allocated_once(monkeypatch, empty_like_shapes):
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(20, 8, padding_idx=0)
            self.body = nn.Linear(8, 8)
            self.head = nn.Linear(8, 20, bias=False)
            self.head.weight = self.embed.weight
    with torch.device("meta"):
        m = LM()
    allocated = empty_like_shapes
    r = ft.materialize(m, seed=SEED)
    monkeypatch.undo()
    assert allocated.count((20, 8)) == 1            # the tied weight: once
    assert m.head.weight is m.embed.weight
    assert m.head.weight.data_ptr() == m.embed.weight.data_ptr()
    assert r["embed.weight"].aliases == ["head.weight"]
    # the embedding's init (the first name) decides: normal, padding row zero; the
    # head's Linear init is skipped, as when the tie is made after the init
    want = twin(ft.normal_, (20, 8), name="embed.weight")
    want[0] = 0
    assert same_bits(m.embed.weight, want)
    cpu = LM()
    ft.init_module(cpu, seed=SEED)
    for (k, p), (_, q) in zip(m.named_parameters(), cpu.named_parameters()):
        assert same_bits(p, q), k


def test_redirect_refuses_bad_arguments():
    with pytest.raises(TypeError, match="nn.Module"):
        ft.redirect(torch.empty(3), seed=0)
    with pytest.raises(TypeError, match="prefix"):
        ft.redirect(nn.Linear(2, 2), seed=0, prefix=3)
    with pytest.raises(ValueError, match="on_torch_draw"):
        ft.redirect(nn.Linear(2, 2), seed=0, on_torch_draw="raise")
    with pytest.raises(TypeError, match="seed"):
        ft.redirect(nn.Linear(2, 2), seed=1.5)
    with pytest.raises(TypeError, match="init must be"):
        ft.init_module(nn.Linear(2, 2), seed=0, init="reset")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ft.redirect(nn.Linear(2, 2), seed=0):
            pass
    assert torch.nn.init._no_grad_trunc_normal_.__module__ == "torch.nn.init"   # restored
