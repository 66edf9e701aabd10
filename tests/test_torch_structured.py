"""fastinit.torch's orthogonal_, eye_, dirac_, sparse_ and the scalar arguments of the twins.

Values: those of fastinit.structured for the tensor's shape (views and
DTensors included); exact ones equal torch's; errors torch's. A DTensor is
filled by computing the whole tensor on every rank and keeping the local
block (two gloo ranks, spawned as in tests/test_torch_dtensor.py).
"""

import datetime
import math
import os
import socket
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

import fastinit as fi
import fastinit.torch as ft
from conftest import assert_same_bits

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def core(fill, shape, dtype=torch.float32, *args, **kw):
    """The core fill into a fresh CPU tensor."""
    return fill(torch.empty(shape, dtype=dtype), *args, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
def test_orthogonal_matches_core_and_is_orthogonal(dtype):
    t = ft.orthogonal_(torch.empty(12, 3, 2, dtype=dtype), 0.5, seed=1, stream=2)
    assert_same_bits(t, core(fi.orthogonal, (12, 3, 2), dtype, 0.5, seed=1, stream=2,
                             qr=ft.structured.torch_qr))
    m = t.double().view(12, -1) / 0.5
    tol = 1e-12 if dtype == torch.float64 else 1e-5 if dtype == torch.float32 else 1e-2
    assert (m.T @ m - torch.eye(6, dtype=torch.float64)).abs().max() < tol


def test_orthogonal_factors_with_torch(monkeypatch):
    """The twin factors with torch.linalg.qr (torch's LAPACK, faster than NumPy's at
    large sizes); the core with NumPy's agrees to rounding."""
    calls = []
    real = torch.linalg.qr

    def spy(a, *args, **kw):
        calls.append(tuple(a.shape))
        return real(a, *args, **kw)
    monkeypatch.setattr(torch.linalg, "qr", spy)
    t = ft.orthogonal_(torch.empty(40, 30, dtype=torch.float64), seed=5)
    assert calls == [(40, 30)]
    ref = fi.orthogonal(np.empty((40, 30)), seed=5)
    assert np.abs(t.numpy() - ref).max() < 1e-12
    with pytest.raises(TypeError, match="qr"):
        fi.orthogonal(np.empty((4, 3)), seed=5, qr="numpy")


def test_orthogonal_views_and_parameters():
    base = torch.zeros(10, 8)
    view = base[:, 2:6]                                  # non-contiguous
    ft.orthogonal_(view, seed=3)
    assert_same_bits(view, core(fi.orthogonal, (10, 4), seed=3, qr=ft.structured.torch_qr))
    assert (base[:, :2] == 0).all() and (base[:, 6:] == 0).all()
    p = torch.nn.Parameter(torch.empty(5, 7))
    v = p._version
    assert ft.orthogonal_(p, seed=0) is p and p.requires_grad and p._version > v
    assert p.grad_fn is None
    with pytest.raises(ValueError, match="expanded"):
        ft.orthogonal_(torch.zeros(1, 4).expand(3, 4), seed=0)


def test_exact_twins_equal_torch():
    for dtype in DTYPES:
        for shape in ((3, 5), (5, 3)):
            assert_same_bits(ft.eye_(torch.full(shape, 7.0, dtype=dtype)),
                             torch.nn.init.eye_(torch.empty(shape, dtype=dtype)))
        for shape, groups in (((6, 4, 3), 1), ((8, 3, 3, 3), 2), ((4, 6, 2, 3, 3), 1)):
            assert_same_bits(ft.dirac_(torch.full(shape, 7.0, dtype=dtype), groups),
                             torch.nn.init.dirac_(torch.empty(shape, dtype=dtype), groups))
    w = torch.full((8, 6), 3.0)
    ft.eye_(w.t())                                      # a transposed view: its own eye
    assert_same_bits(w.t(), torch.eye(6, 8))


def test_sparse_matches_core_and_counts():
    t = ft.sparse_(torch.empty(50, 20, dtype=torch.bfloat16), 0.25, 0.1, seed=4)
    assert_same_bits(t, core(fi.sparse, (50, 20), torch.bfloat16, 0.25, 0.1, seed=4))
    assert ((t == 0).sum(0) == math.ceil(0.25 * 50)).all()


@pytest.mark.parametrize("call, exc, match", [
    (lambda t: ft.orthogonal_(t[0]), ValueError, "2 or more dimensions"),
    (lambda t: ft.orthogonal_(t, generator=torch.Generator()), TypeError, "Generator"),
    (lambda t: ft.orthogonal_(t, torch.ones(2)), TypeError, "gain"),
    (lambda t: ft.orthogonal_(t.half(), 1e6, seed=0), ValueError, "gain"),
    (lambda t: ft.eye_(t.view(2, 3, 2)), ValueError, "2 dimensions"),
    (lambda t: ft.dirac_(t), ValueError, "3, 4, or 5"),
    (lambda t: ft.dirac_(t.view(4, 3, 1), 3), ValueError, "divisible"),
    (lambda t: ft.dirac_(t.view(4, 3, 1), 1.5), TypeError, "groups"),
    (lambda t: ft.sparse_(t, 2.0), ValueError, "sparsity"),
    (lambda t: ft.sparse_(t, 0.1, -1.0), ValueError, "std"),
    (lambda t: ft.sparse_(t.view(2, 3, 2), 0.1), ValueError, "2 dimensions"),
    (lambda t: ft.sparse_(t.int(), 0.1), TypeError, "float16"),
])
def test_structured_refusals(call, exc, match):
    t = torch.full((4, 3), 5.0)
    with pytest.raises(exc, match=match):
        call(t)
    assert (t == 5.0).all()


def test_meta_and_empty_are_noops():
    for fn, args in ((ft.orthogonal_, ()), (ft.sparse_, (0.5,)), (ft.eye_, ())):
        assert fn(torch.empty(3, 4, device="meta"), *args).is_meta
    assert ft.orthogonal_(torch.empty(0, 4), seed=0).shape == (0, 4)


# --- scalar arguments ---------------------------------------------------------------
def test_zero_dim_tensors_and_numpy_scalars():
    t = torch.empty(1000)
    want = ft.uniform_(torch.empty(1000), -1.0, 1.0, seed=0)
    assert_same_bits(ft.uniform_(t, torch.tensor(-1.0), torch.tensor(1.0), seed=0), want)
    assert_same_bits(ft.uniform_(t, np.float32(-1.0), np.array(1.0), seed=0), want)
    want = ft.normal_(torch.empty(1000), 0.5, 2.0, seed=1)
    assert_same_bits(ft.normal_(t, torch.tensor(0.5), torch.tensor(2.0), seed=1), want)
    want = ft.trunc_normal_(torch.empty(1000), 0.0, 1.0, -1.0, 1.0, seed=2)
    assert_same_bits(ft.trunc_normal_(t, torch.tensor(0.0), np.float64(1.0),
                                      torch.tensor(-1.0), torch.tensor(1.0), seed=2), want)
    w = torch.empty(10, 100)
    want = ft.xavier_uniform_(torch.empty(10, 100), 2.0, seed=3)
    assert_same_bits(ft.xavier_uniform_(w, torch.tensor(2.0), seed=3), want)
    assert_same_bits(ft.orthogonal_(w, torch.tensor(2.0), seed=3),
                     ft.orthogonal_(torch.empty(10, 100), 2.0, seed=3))
    assert_same_bits(ft.constant_(t, torch.tensor(0.25)), torch.full((1000,), 0.25))
    assert_same_bits(ft.uniform_(t, False, True, seed=0),          # torch reads bools as 0, 1
                     ft.uniform_(torch.empty(1000), 0.0, 1.0, seed=0))
    with pytest.raises(TypeError, match="std"):
        ft.normal_(t, 0.0, torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match="a must be"):
        ft.uniform_(t, np.zeros(2), 1.0)


@pytest.mark.parametrize("val", [math.nan, math.inf, -math.inf, True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_nonfinite_and_bool(val, dtype):
    got = ft.constant_(torch.empty(5, 7, dtype=dtype), val)
    want = torch.nn.init.constant_(torch.empty(5, 7, dtype=dtype), val)
    assert_same_bits(got, want)
    view = torch.zeros(6, 8, dtype=dtype)
    ft.constant_(view[:, 1:3], val)                     # a view: only its elements
    want = torch.zeros(6, 8, dtype=dtype)
    torch.nn.init.constant_(want[:, 1:3], val)
    assert_same_bits(view, want)


def test_trunc_normal_one_sided():
    for a, b in ((0.0, math.inf), (-math.inf, 0.0), (1.0, math.inf)):
        t = ft.trunc_normal_(torch.empty(100_000, dtype=torch.float64), 0.0, 1.0, a, b, seed=5)
        assert (t >= a).all() and (t <= b).all()
        law = stats.truncnorm(a, b)          # torch's own rejection fails at (1, inf)
        assert abs(t.mean() - law.mean()) < 0.01, (a, b)     # half-normal mean 0.798
        assert abs(t.std() - law.std()) < 0.01, (a, b)


# --- DTensor: the whole tensor on every rank, the local block kept ----------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dtensor_worker(rank, world, port):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    try:
        mesh = init_device_mesh("cpu", (world,))
        cases = [(lambda t: ft.orthogonal_(t, 1.5, seed=3, stream=1), (9, 6),
                  (Shard(0), Shard(1))),
                 (lambda t: ft.orthogonal_(t, seed=3), (5, 4, 3), (Shard(1),)),
                 (lambda t: ft.sparse_(t, 0.3, 0.5, seed=2), (7, 5), (Shard(1), Replicate())),
                 (ft.eye_, (5, 7), (Shard(0),)), (lambda t: ft.dirac_(t, 1), (4, 3, 3),
                                                   (Shard(1),))]
        for fill, shape, placements in cases:
            for placement in placements:
                d = distribute_tensor(torch.zeros(shape), mesh, [placement],
                                      src_data_rank=None)
                ptr = d.to_local().data_ptr()
                assert fill(d) is d
                assert d.to_local().data_ptr() == ptr
                ref = fill(torch.empty(shape))
                got = d.full_tensor()
                assert torch.equal(got.view(torch.int32), ref.view(torch.int32)), \
                    (shape, placement)
        fi.manual_seed(7)                           # unseeded: one stream, every rank
        d = distribute_tensor(torch.zeros(6, 4), mesh, [Shard(0)], src_data_rank=None)
        ft.orthogonal_(d)
        fi.manual_seed(7)
        assert torch.equal(d.full_tensor(), ft.orthogonal_(torch.empty(6, 4)))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_dtensor_full_matrix_local_block(monkeypatch):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    import torch.multiprocessing as mp
    monkeypatch.setenv("FASTINIT_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for attempt in range(3):
        try:
            mp.spawn(_dtensor_worker, args=(2, _free_port()), nprocs=2, join=True)
            return
        except mp.ProcessRaisedException as exc:
            if attempt == 2 or "address already in use" not in str(exc).lower():
                raise
