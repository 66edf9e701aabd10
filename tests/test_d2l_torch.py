"""d2l's "Parameter Initialization" chapter, PyTorch examples, through fastinit.torch.

The chapter (shared/reference/d2l-parameter-initialization.txt) selects layers
with ``type(module) == nn.LazyLinear``. A LazyLinear turns itself into an
nn.Linear on its first forward, so after the chapter's dry run that test
matches nothing and every init it shows silently does nothing (its printed
weights are still torch's defaults). Here each example is replayed with
fastinit's rules, and the test checks the outcome the chapter intended, not
its printed numbers.
"""

import math

import pytest
import torch
from torch import nn

import fastinit.torch as ft

SEED = 2024


def lazy_net():
    return nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(1))


@pytest.fixture
def net():
    """The chapter's net, after its dry run ``net(X).shape``."""
    n = lazy_net()
    X = torch.rand(size=(2, 4))
    assert n(X).shape == torch.Size([2, 1])
    return n


def weights(net):
    return [net[0].weight, net[2].weight]


def biases(net):
    return [net[0].bias, net[2].bias]


# --- the chapter's own selection test -------------------------------------------------
def test_chapter_type_check_matches_nothing_after_first_forward(net):
    matched = []

    def init_normal(module):                              # the chapter's In [13], verbatim
        if type(module) == nn.LazyLinear:
            matched.append(module)
            nn.init.normal_(module.weight, mean=0, std=0.01)
            nn.init.zeros_(module.bias)
    before = [p.detach().clone() for p in net.parameters()]
    net.apply(init_normal)
    assert matched == []                                  # nothing matched...
    assert type(net[0]) is nn.Linear and type(net[2]) is nn.Linear
    for p, q in zip(net.parameters(), before):            # ...so nothing changed
        assert torch.equal(p, q)
    assert float(net[0].weight.detach().std()) > 0.1      # still torch's default init
    # fastinit's rules match by isinstance, so the same net is initialized
    r = ft.init_module(net, {nn.Linear: {"weight": ("normal", {"mean": 0, "std": 0.01}),
                                         "bias": "zeros"}}, seed=SEED)
    assert [p.name for p in r] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(p.rule.startswith("rule Linear") for p in r)


def test_chapter_type_check_before_forward_fails_instead():
    n = lazy_net()                          # before the dry run the type test matches,
    with pytest.raises(ValueError, match="uninitialized parameter"):   # but torch refuses
        n.apply(lambda m: nn.init.normal_(m.weight, std=0.01)
                if type(m) == nn.LazyLinear else None)
    with pytest.raises(ValueError, match="dry forward"):   # fastinit says what to do
        ft.init_module(n, seed=SEED)


# --- Built-in Initialization -----------------------------------------------------------
def test_normal_std_001_and_zero_bias(net):
    r = ft.init_module(net, {nn.Linear: {"weight": ("normal", {"mean": 0, "std": 0.01}),
                                         "bias": "zeros"}}, seed=SEED)
    w = torch.cat([p.detach().reshape(-1) for p in weights(net)])        # 32 + 8 values
    assert 0.006 < float(w.std()) < 0.014 and abs(float(w.mean())) < 0.006
    assert float(w.abs().max()) < 0.06
    for p in biases(net):
        assert bool((p == 0).all())
    for name in ("0.weight", "2.weight"):              # exactly the twin's values
        want = torch.empty(r[name].shape)
        ft.normal_(want, mean=0, std=0.01, seed=SEED, stream=ft.stream_for(name))
        assert torch.equal(dict(net.named_parameters())[name].detach(), want)
    # the same rule on a wide layer pins the std down
    wide = nn.Linear(1000, 1000)
    ft.init_module(wide, {nn.Linear: {"weight": ("normal", {"mean": 0, "std": 0.01}),
                                      "bias": "zeros"}}, seed=SEED)
    assert abs(float(wide.weight.detach().std()) - 0.01) < 0.0001


def test_constant_one(net):
    ft.init_module(net, {nn.Linear: {"weight": ("constant", 1), "bias": "zeros"}},
                   seed=SEED)
    for p in weights(net):
        assert bool((p == 1).all())
    for p in biases(net):
        assert bool((p == 0).all())


def test_xavier_first_layer_42_second(net):
    bias_before = [p.detach().clone() for p in biases(net)]
    first_before = net[0].weight.detach().clone()
    # the chapter applies init_xavier to net[0] and init_42 to net[2], weights only
    ft.init_module(net, {"0.weight": "xavier_uniform", "2.weight": ("constant", 42),
                         "*.bias": None}, seed=SEED)
    w0 = net[0].weight.detach()
    bound = math.sqrt(6 / (4 + 8))                     # fan_in 4, fan_out 8
    assert float(w0.abs().max()) <= bound and not torch.equal(w0, first_before)
    assert bool((net[2].weight == 42).all())
    for p, q in zip(biases(net), bias_before):         # untouched, as in the chapter
        assert torch.equal(p.detach(), q)
    # the same thing, one block at a time, with the block's own names
    ft.init_module(net[0], {"weight": "xavier_uniform", "bias": None}, seed=SEED,
                   prefix="0.")
    assert torch.equal(net[0].weight.detach(), w0)


# --- Custom Initialization -------------------------------------------------------------
def test_custom_init_keeps_abs_at_least_5(net):
    printed = []

    def my_init(t, *, seed, stream, name):              # the chapter's my_init, as a rule
        printed.append(("Init", name, tuple(t.shape)))
        return ft.masked_uniform_(t, -10, 10, 5, seed=seed, stream=stream)
    r = ft.init_module(net, {"*.weight": my_init, "*.bias": None}, seed=SEED)
    assert printed == [("Init", "0.weight", (8, 4)), ("Init", "2.weight", (1, 8))]
    assert (r["0.weight"].shape, r["2.weight"].shape) == ((8, 4), (1, 8))
    for p in weights(net):
        v = p.detach()
        assert bool(((v == 0) | (v.abs() >= 5)).all())
        assert float(v.min()) >= -10 and float(v.max()) < 10
    # the chapter's two-step version (uniform, then multiply by the mask) agrees
    w = torch.empty(8, 4)
    ft.uniform_(w, -10, 10, seed=SEED, stream=ft.stream_for("0.weight"))
    w *= w.abs() >= 5
    assert torch.equal(w, net[0].weight.detach())      # (-0.0 == 0.0)
    # and with enough draws about half the values survive
    big = torch.empty(100_000)
    ft.masked_uniform_(big, -10, 10, 5, seed=SEED)
    assert 0.48 < float((big != 0).float().mean()) < 0.52


def test_defer_initializes_the_lazy_net_on_its_first_forward():
    n = lazy_net()                                       # no dry run
    r = ft.init_module(n, {nn.Linear: {"weight": ("constant", 1), "bias": "zeros"}},
                       seed=SEED, on_lazy="defer")
    assert r.deferred == ["0.weight", "0.bias", "2.weight", "2.bias"]
    y = n(torch.ones(2, 4))
    assert bool((n[0].weight == 1).all()) and bool((n[2].bias == 0).all())
    assert torch.equal(y.detach(), torch.full((2, 1), 32.0))     # relu(4 * 1) summed x 8
    assert r.deferred == []


# --- the chapter's own functions, through net.apply(...) under the redirect ---------------
# The chapter's code with one change: ``type(module) == nn.LazyLinear`` (which matches
# nothing once the net has run) becomes ``isinstance(module, nn.Linear)``, what it meant.
def init_normal(module):
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0, std=0.01)
        nn.init.zeros_(module.bias)


def init_constant(module):
    if isinstance(module, nn.Linear):
        nn.init.constant_(module.weight, 1)
        nn.init.zeros_(module.bias)


def init_xavier(module):
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)


def init_42(module):
    if isinstance(module, nn.Linear):
        nn.init.constant_(module.weight, 42)


def my_init(module):
    if isinstance(module, nn.Linear):
        print("Init", *[(name, param.shape)
                        for name, param in module.named_parameters()][0])
        nn.init.uniform_(module.weight, -10, 10)
        module.weight.data *= module.weight.data.abs() >= 5


def twin(fn, shape, *args, name, **kw):
    t = torch.empty(shape)
    fn(t, *args, seed=SEED, stream=ft.stream_for(name), **kw)
    return t


def test_chapter_apply_under_redirect_equals_the_twins(net, capsys):
    torch.manual_seed(0)
    with ft.redirect(net, seed=SEED):
        net.apply(init_normal)
    for name, shape in (("0.weight", (8, 4)), ("2.weight", (1, 8))):
        want = twin(ft.normal_, shape, 0.0, 0.01, name=name)
        assert torch.equal(dict(net.named_parameters())[name].detach(), want)
    assert all(bool((b == 0).all()) for b in biases(net))

    with ft.redirect(net, seed=SEED):
        net.apply(init_constant)
    assert all(bool((w == 1).all()) for w in weights(net))

    with ft.redirect(net, seed=SEED):
        net[0].apply(init_xavier)
        net[2].apply(init_42)
    assert torch.equal(net[0].weight.detach(), twin(ft.xavier_uniform_, (8, 4), name="0.weight"))
    assert bool((net[2].weight == 42).all())

    with ft.redirect(net, seed=SEED) as run:
        net.apply(my_init)
    assert capsys.readouterr().out.splitlines() == [
        "Init weight torch.Size([8, 4])", "Init weight torch.Size([1, 8])"]
    for name, shape in (("0.weight", (8, 4)), ("2.weight", (1, 8))):
        want = twin(ft.masked_uniform_, shape, -10, 10, 5, name=name)
        assert torch.equal(dict(net.named_parameters())[name].detach(), want)
        assert run.named[name].writes == ["my_init: uniform_(a=-10, b=10)"]


def test_chapter_apply_under_redirect_ignores_torch_seed():
    a, b = lazy_net(), lazy_net()
    X = torch.rand(size=(2, 4))
    a(X), b(X)
    for n, s in ((a, 1), (b, 2)):
        torch.manual_seed(s)
        with ft.redirect(n, seed=SEED):
            n.apply(my_init)
    for p, q in zip(weights(a), weights(b)):        # my_init writes the weights only
        assert torch.equal(p, q)
    c = lazy_net()
    c(X)
    for n, s in ((a, SEED), (c, SEED + 1)):           # another fastinit seed: other values
        with ft.redirect(n, seed=s):
            n.apply(init_normal)
    for p, q in zip(weights(a), weights(c)):
        assert float((p == q).float().mean()) < 0.2
