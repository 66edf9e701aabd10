"""DTensor parameters: each rank fills only its shard, with the full tensor's values.

Two process groups (world sizes 2 and 4) on the gloo backend, started with
torch.multiprocessing.spawn; every rank compares ``full_tensor()`` with a
single-process fill of the same shape, seed and stream, bit for bit.
"""

import datetime
import math
import os
import socket
import warnings

import pytest
import torch
from torch import nn

import fastinit as fi
import fastinit.torch as ft
from fastinit.torch import dtensor, twins

dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bits(t):
    t = t.detach().contiguous()
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def assert_bit_equal(a, b, what):
    assert a.shape == b.shape, (what, a.shape, b.shape)
    assert torch.equal(bits(a), bits(b)), what


class Counting:
    """Counts the elements the fastinit fills inside fastinit.torch.twins write,
    so a test can see that a rank filled only its shard."""

    FILLS = ("uniform", "normal", "truncated_normal", "masked_uniform", "constant",
             "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal")

    def __init__(self):
        self.elements = 0

    def wrap(self, fn):
        def wrapped(out, *args, **kw):
            self.elements += out.numel()
            return fn(out, *args, **kw)
        return wrapped


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 6, padding_idx=7)     # 11 rows: uneven on 2 and 4
        self.l1 = nn.Linear(6, 10)
        self.norm = nn.LayerNorm(10)
        self.l2 = nn.Linear(10, 3)                           # 3 rows: an empty shard on 4

    def forward(self, idx):
        return self.l2(self.norm(self.l1(self.embed(idx))))


def _dtensor(shape, mesh, placements, dtype=torch.float32):
    from torch.distributed.tensor import distribute_tensor
    return distribute_tensor(torch.zeros(shape, dtype=dtype), mesh, placements,
                             src_data_rank=None)


def _check(fill, shape, mesh, placements, what, dtype=torch.float32, expect_local=None):
    """fill(tensor) on a DTensor and on a plain tensor; full tensors bit equal."""
    d = _dtensor(shape, mesh, placements, dtype)
    local = d.to_local()
    ptr = local.data_ptr()
    counter = Counting()
    # a spawned rank has no pytest fixture: MonkeyPatch.context() undoes the patches
    with pytest.MonkeyPatch.context() as mp:
        for name in Counting.FILLS:
            mp.setattr(twins, name, counter.wrap(getattr(twins, name)))
        assert fill(d) is d
    assert d.to_local().data_ptr() == ptr, what               # in place
    if expect_local == "exact":                                # one pass over the shard
        assert counter.elements == local.numel(), (what, counter.elements, local.numel())
    ref = torch.empty(shape, dtype=dtype)
    fill(ref)
    with torch.no_grad():
        assert_bit_equal(d.full_tensor(), ref, what)


def _scenarios_1d(rank, world):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Partial, Replicate, Shard
    mesh = init_device_mesh("cpu", (world,))

    def ku(t):
        return ft.kaiming_uniform_(t, a=math.sqrt(5), seed=3, stream=1)

    def nrm(t):
        return ft.normal_(t, 0.0, 0.02, seed=3, stream=2)

    def xn(t):
        return ft.xavier_normal_(t, seed=4, stream=5)

    for dtype in (torch.float32, torch.bfloat16):
        _check(ku, (7, 5), mesh, [Shard(0)], f"Shard(0) uneven {dtype}", dtype, "exact")
        _check(nrm, (9, 3), mesh, [Shard(0)], f"Shard(0) normal odd offsets {dtype}", dtype,
               "exact")
    _check(ku, (5, 9), mesh, [Shard(1)], "Shard(1) uneven, short rows")
    _check(nrm, (3, 10001), mesh, [Shard(1)], "Shard(1) long rows", expect_local="exact")
    _check(xn, (4, 6, 3, 3), mesh, [Shard(1)], "Shard(1) of a conv weight")
    _check(xn, (4, 6, 3, 3), mesh, [Shard(2)], "Shard(2) of a conv weight")
    _check(nrm, (13,), mesh, [Shard(0)], "1-D Shard(0)", expect_local="exact")
    _check(ku, (6, 4), mesh, [Replicate()], "Replicate")
    _check(lambda t: ft.trunc_normal_(t, std=0.02, a=-0.04, b=0.04, seed=1), (2, 50),
           mesh, [Shard(0)], "empty shards", expect_local="exact")
    _check(lambda t: ft.constant_(t, 0.5), (5, 5), mesh, [Shard(1)], "constant")

    # unseeded: every rank takes the same process-wide stream
    fi.manual_seed(99)
    d = _dtensor((6, 7), mesh, [Shard(1)])
    ft.normal_(d)
    fi.manual_seed(99)
    ref = torch.empty(6, 7)
    ft.normal_(ref)
    with torch.no_grad():
        assert_bit_equal(d.full_tensor(), ref, "unseeded")
    fi.manual_seed(fi.DEFAULT_SEED)

    # fans come from the global shape: a (8, 4) weight sharded on dim 1 has fan_in 4
    d = _dtensor((8, 4), mesh, [Shard(1)])
    ft.kaiming_uniform_(d, a=math.sqrt(5), seed=0)
    assert float(d.to_local().abs().max()) <= 1 / math.sqrt(4)
    assert float(d.to_local().abs().max()) > 1 / math.sqrt(4) * 0.5

    from torch.distributed.tensor import DTensor
    p = DTensor.from_local(torch.zeros(3, 3), mesh, [Partial()])
    with pytest.raises(ValueError, match="Partial"):
        ft.normal_(p, seed=0)


def _scenarios_2d(rank, world):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard
    mesh = init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("dp", "tp"))

    def ku(t):
        return ft.kaiming_uniform_(t, seed=8, stream=3)

    def nrm(t):
        return ft.normal_(t, 1.0, 0.5, seed=8, stream=4)
    for placements in ([Shard(0), Shard(1)], [Shard(1), Shard(0)], [Replicate(), Shard(1)],
                       [Shard(0), Replicate()], [Shard(0), Shard(0)], [Shard(1), Shard(1)]):
        for shape in ((9, 7), (16, 8), (5, 3, 4)):
            _check(ku, shape, mesh, placements, f"2-D mesh {placements} {shape}")
            _check(nrm, shape, mesh, placements, f"2-D mesh normal {placements} {shape}",
                   torch.bfloat16)


def _scenarios_fsdp(rank, world):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    mesh = init_device_mesh("cpu", (world,))
    with torch.device("meta"):
        model = Tiny()
    fully_shard(model.l1, mesh=mesh)
    fully_shard(model, mesh=mesh)
    assert all(isinstance(p, DTensor) for p in model.parameters())
    r = ft.materialize(model, "cpu", seed=21)
    assert not r.unmatched
    ref = Tiny()
    ft.init_module(ref, seed=21)
    with torch.no_grad():
        for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
            assert isinstance(p, DTensor) and not p.to_local().is_meta, name
            assert_bit_equal(p.full_tensor(), q, f"FSDP2 {name}")
    assert bool((ref.embed.weight[7] == 0).all())
    # the sharded model runs and computes what the single-process one computes
    idx = torch.tensor([[1, 7, 3], [10, 0, 2]])
    with torch.no_grad():
        torch.testing.assert_close(model(idx), ref(idx))
    # and init_module on an already materialized FSDP2 model: same values
    ft.init_module(model, {"l2.weight": "zeros"}, seed=21)
    with torch.no_grad():
        assert bool((model.l2.weight.full_tensor() == 0).all())
        assert_bit_equal(model.l1.weight.full_tensor(), ref.l1.weight, "re-init")


class OwnAttention(nn.Module):
    """q, k and v drawn separately in the init code and assembled into one fused weight."""

    def __init__(self, d):
        super().__init__()
        self.wqkv = nn.Linear(d, 3 * d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)

    def init_weights(self, std, depth):
        d = self.wo.weight.shape[1]
        q = torch.empty(d, d)
        nn.init.trunc_normal_(q, std=std, a=-2 * std, b=2 * std)
        k = torch.randn(d, d) * std
        v = torch.empty(d, d).normal_(0.0, std)
        with torch.no_grad():
            self.wqkv.weight.copy_(torch.cat([q, k, v]))
        nn.init.trunc_normal_(self.wo.weight, std=std / math.sqrt(2 * depth))


class OwnBlock(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.RMSNorm(d)
        self.attn = OwnAttention(d)
        self.w1 = nn.Linear(d, 2 * d, bias=False)
        self.w2 = nn.Linear(2 * d, d, bias=False)

    def forward(self, h):
        h = h + self.attn.wo(self.attn.wqkv(self.norm(h))[..., :h.shape[-1]])
        return h + self.w2(torch.relu(self.w1(h)))


class OwnLlama(nn.Module):
    """A torchtitan-style model: its own init_weights() decides every value."""

    def __init__(self, vocab=37, d=8, layers=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([OwnBlock(d) for _ in range(layers)])
        self.norm = nn.RMSNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.register_buffer("inv_freq", torch.empty(d // 2), persistent=False)

    def init_weights(self):
        d = self.embed.weight.shape[1]
        nn.init.normal_(self.embed.weight)
        for layer in self.layers:
            nn.init.ones_(layer.norm.weight)
            layer.attn.init_weights(0.02, len(self.layers))
            nn.init.xavier_uniform_(layer.w1.weight)
            nn.init.kaiming_normal_(layer.w2.weight, nonlinearity="relu")
        nn.init.ones_(self.norm.weight)
        std = d ** -0.5
        nn.init.trunc_normal_(self.head.weight, std=std, a=-3 * std, b=3 * std)
        with torch.no_grad():
            self.inv_freq.copy_(1.0 / 10000 ** (torch.arange(0, d, 2).float() / d))

    def forward(self, idx):
        h = self.embed(idx)
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h))


def _scenarios_own_init(rank, world):
    """The model's own init code under the redirect, on FSDP2 shards: fully_shard on the
    meta model then materialize, or fully_shard after to_empty then init_module; both
    bit-equal to the single-process run, whatever torch's generator holds on each rank."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    mesh = init_device_mesh("cpu", (world,))
    ref = OwnLlama()
    torch.manual_seed(7)
    r = ft.init_module(ref, seed=33)
    assert r.init == "OwnLlama.init_weights()" and not r.unmatched
    for before in (True, False):
        torch.manual_seed(1000 + rank)                  # torch's state differs per rank
        with torch.device("meta"):
            model = OwnLlama()
        if before:
            for layer in model.layers:
                fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)
            rep = ft.materialize(model, "cpu", seed=33)
        else:
            model.to_empty(device="cpu")
            for layer in model.layers:
                fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)
            rep = ft.init_module(model, seed=33)
        assert not rep.unmatched
        with torch.no_grad():
            for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
                assert isinstance(p, DTensor), name
                assert_bit_equal(p.full_tensor(), q, f"own init ({before}) {name}")
            assert_bit_equal(model.inv_freq, ref.inv_freq, "inv_freq")
        idx = torch.tensor([[1, 7, 3], [10, 0, 2]])
        with torch.no_grad():
            torch.testing.assert_close(model(idx), ref(idx))


def _worker(rank, world, port, names):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    try:
        for name in names:
            globals()[name](rank, world)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(world, names, monkeypatch):
    import torch.multiprocessing as mp
    monkeypatch.setenv("FASTINIT_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for attempt in range(3):
        try:
            mp.spawn(_worker, args=(world, free_port(), names), nprocs=world, join=True)
            return
        except mp.ProcessRaisedException as exc:
            # the free port can be taken by another process before rank 0 binds it
            if attempt == 2 or "address already in use" not in str(exc).lower():
                raise


def test_dtensor_world_2(monkeypatch):
    _spawn(2, ["_scenarios_1d", "_scenarios_fsdp", "_scenarios_own_init"], monkeypatch)


def test_dtensor_world_4(monkeypatch):
    _spawn(4, ["_scenarios_1d", "_scenarios_2d", "_scenarios_fsdp", "_scenarios_own_init"],
           monkeypatch)


def test_block_fill_without_processes(monkeypatch):
    """The shard arithmetic alone: every block of a tensor, filled by offsets,
    equals the same slice of the full fill (fast, single process)."""
    full = torch.empty(6, 5, 7)
    ft.normal_(full, seed=2, stream=3)
    for starts, lshape in [((0, 0, 0), (6, 5, 7)), ((2, 0, 0), (3, 5, 7)),
                           ((1, 2, 0), (4, 3, 7)), ((0, 1, 3), (6, 2, 4)),
                           ((5, 4, 6), (1, 1, 1)), ((0, 0, 0), (0, 5, 7))]:
        for slack in (0, 1 << 20):                      # per-row and whole-row modes
            buf = torch.empty(lshape)
            monkeypatch.setattr(dtensor, "SPAN_SLACK", slack)
            dtensor.block_fill(buf, (6, 5, 7), starts, lshape,
                               lambda b, off, seed, stream: fi.normal(
                                   b, seed=seed, stream=stream, offset=off), 2, 3)
            sl = tuple(slice(s, s + n) for s, n in zip(starts, lshape))
            assert_bit_equal(buf, full[sl], (starts, lshape, slack))
