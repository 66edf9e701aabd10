"""fastinit.torch's twins of torch.nn.init, and to_torch.

Every twin must write, bit for bit, what the matching fastinit fill writes
into a NumPy buffer of the same shape, seed and stream; in place, keeping
the tensor's identity, storage and requires_grad.
"""

import math
import warnings

import ml_dtypes
import numpy as np
import pytest
import torch
from torch import nn

import fastinit as fi
import fastinit.torch as ft
from fastinit.torch import views
from conftest import bits

TORCH_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
NP_OF = {torch.float16: np.float16, torch.bfloat16: ml_dtypes.bfloat16,
         torch.float32: np.float32, torch.float64: np.float64}
SHAPE = (37, 29)                          # odd sizes: normal pairs straddle rows


# twin, its fastinit fill on NumPy, the twin's positional arguments
CASES = [
    ("uniform_", lambda a, **kw: fi.uniform(a, -0.3, 0.7, **kw), (-0.3, 0.7)),
    ("normal_", lambda a, **kw: fi.normal(a, 0.5, 2.0, **kw), (0.5, 2.0)),
    ("trunc_normal_", lambda a, **kw: fi.truncated_normal(a, 0.1, 1.5, -1.0, 2.5, **kw),
     (0.1, 1.5, -1.0, 2.5)),
    ("masked_uniform_", lambda a, **kw: fi.masked_uniform(a, -10, 10, 5, **kw), (-10, 10, 5)),
    ("xavier_uniform_", lambda a, **kw: fi.xavier_uniform(a, 1.7, **kw), (1.7,)),
    ("xavier_normal_", lambda a, **kw: fi.xavier_normal(a, 0.9, **kw), (0.9,)),
    ("kaiming_uniform_", lambda a, **kw: fi.kaiming_uniform(a, math.sqrt(5), **kw),
     (math.sqrt(5),)),
    ("kaiming_normal_", lambda a, **kw: fi.kaiming_normal(a, 0, "fan_out", "relu", **kw),
     (0, "fan_out", "relu")),
]


@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=str)
@pytest.mark.parametrize("name,ref,args", CASES, ids=[c[0] for c in CASES])
def test_twin_bit_equal_to_numpy_fill(name, ref, args, dtype):
    t = torch.empty(SHAPE, dtype=dtype)
    ptr = t.data_ptr()
    out = getattr(ft, name)(t, *args, seed=1234, stream=7)
    assert out is t and t.data_ptr() == ptr
    a = np.empty(SHAPE, NP_OF[dtype])
    ref(a, seed=1234, stream=7)
    np.testing.assert_array_equal(bits(t), bits(a))


@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=str)
@pytest.mark.parametrize("name,value", [("constant_", 0.1), ("zeros_", 0.0), ("ones_", 1.0)])
def test_constants_bit_equal(name, value, dtype):
    t = torch.full(SHAPE, 7.0, dtype=dtype)
    args = (value,) if name == "constant_" else ()
    assert getattr(ft, name)(t, *args) is t
    a = np.empty(SHAPE, NP_OF[dtype])
    fi.constant(a, value)
    np.testing.assert_array_equal(bits(t), bits(a))


def test_large_parallel_fill_bit_equal():
    t = torch.empty(300, 1000, dtype=torch.bfloat16)     # past the parallel threshold
    ft.normal_(t, 0.0, 0.02, seed=5, stream=9)
    a = np.empty((300, 1000), ml_dtypes.bfloat16)
    fi.normal(a, 0.0, 0.02, seed=5, stream=9)
    np.testing.assert_array_equal(bits(t), bits(a))


def test_parameter_requires_grad_kept():
    lin = nn.Linear(29, 37)
    w = lin.weight
    ptr, version = w.data_ptr(), w._version
    out = ft.kaiming_uniform_(w, a=math.sqrt(5), seed=3)
    assert out is w and w.requires_grad and w.is_leaf and w.grad is None
    assert w.data_ptr() == ptr and lin.weight is w
    assert w._version > version                 # bumped, as torch's in-place ops do
    a = np.empty(SHAPE, np.float32)
    fi.kaiming_uniform(a, math.sqrt(5), seed=3)
    np.testing.assert_array_equal(w.detach().numpy(), a)
    # still trains
    lin(torch.ones(2, 29)).sum().backward()
    assert w.grad is not None


def test_runs_under_no_grad_inside_autograd_context():
    w = nn.Parameter(torch.empty(4, 6))
    with torch.enable_grad():
        ft.normal_(w, seed=1)
        ft.uniform_(w.t(), seed=1)            # a view of a leaf that requires grad
    assert w.requires_grad and w.grad_fn is None


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32, torch.float64), ids=str)
def test_noncontiguous_views_get_contiguous_values(dtype):
    w = torch.full((12, 16), 9.0, dtype=dtype)
    ft.normal_(w.t(), seed=11, stream=2)                # shape (16, 12)
    want = torch.empty(16, 12, dtype=dtype)
    ft.normal_(want, seed=11, stream=2)
    np.testing.assert_array_equal(bits(w.t()), bits(want))

    w = torch.full((12, 16), 9.0, dtype=dtype)
    view = w[:, 3:9]
    ft.uniform_(view, -1, 1, seed=4)
    a = np.empty((12, 6), NP_OF[dtype])
    fi.uniform(a, -1, 1, seed=4)
    np.testing.assert_array_equal(bits(view), bits(a))
    untouched = torch.cat([w[:, :3], w[:, 9:]], 1)
    assert bool((untouched == 9).all())


@pytest.mark.parametrize("shape,view", [
    ((700, 900), lambda w: w.t()),                       # bands of 291 rows, last one short
    ((3, 300, 400), lambda w: w.transpose(0, 2)),        # (400, 300, 3): rows of 900
    ((300_000, 2), lambda w: w[:, :1]),                  # rows of 1 element
    ((2, 600_000), lambda w: w[:, ::2]),                 # one row is bigger than a band
], ids=["t", "transpose3d", "column", "strided-rows"])
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32), ids=str)
def test_large_noncontiguous_views_are_filled_band_by_band(shape, view, dtype):
    """Views above views.SCRATCH_ELEMENTS go through the scratch in bands of
    leading rows; the values still equal a contiguous fill of the view's shape."""
    w = torch.full(shape, 9.0, dtype=dtype)
    v = view(w)
    assert not v.is_contiguous() and v.numel() > views.SCRATCH_ELEMENTS
    ft.normal_(v, 0.5, 2.0, seed=21, stream=4)
    want = torch.empty(v.shape, dtype=dtype)
    ft.normal_(want, 0.5, 2.0, seed=21, stream=4)
    np.testing.assert_array_equal(bits(v), bits(want))
    if v.numel() < w.numel():                               # the other column(s) stay
        assert bool((w[:, 1::2] == 9).all())


def test_fans_of_noncontiguous_view_are_the_views():
    w = torch.empty(20, 50)
    ft.xavier_uniform_(w.t(), seed=1)                   # view shape (50, 20): same fans sum
    ft.kaiming_uniform_(w.t(), seed=1)                  # fan_in of the view: 20
    a = np.empty((50, 20), np.float32)
    fi.kaiming_uniform(a, seed=1)
    np.testing.assert_array_equal(w.t().numpy(), a)
    assert float(w.abs().max()) <= math.sqrt(2.0) * math.sqrt(3 / 20)   # a=0: gain sqrt(2)


def test_channels_last_conv_weight():
    conv = nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    ft.kaiming_uniform_(conv.weight, a=math.sqrt(5), seed=2)
    assert not conv.weight.is_contiguous()              # layout kept
    a = np.empty((8, 3, 3, 3), np.float32)
    fi.kaiming_uniform(a, math.sqrt(5), seed=2)
    np.testing.assert_array_equal(conv.weight.detach().contiguous().numpy(), a)


def test_expanded_and_overlapping_views_refused():
    base = torch.zeros(5)
    with pytest.raises(ValueError, match="expanded view"):
        ft.uniform_(base.expand(4, 5), seed=1)
    with pytest.raises(ValueError, match="self-overlapping"):
        ft.normal_(base.as_strided((3, 3), (1, 1)), seed=1)
    assert bool((base == 0).all())                       # nothing written
    # a layout the quick test cannot prove, but does not overlap
    buf = torch.zeros(8)
    odd = buf.as_strided((3, 2), (2, 3))                 # offsets 0,3,2,5,4,7
    ft.uniform_(odd, 1, 2, seed=1)
    assert float(buf[[0, 2, 3, 4, 5, 7]].min()) >= 1 and buf[1] == 0 and buf[6] == 0


def test_generator_refused_none_accepted():
    t = torch.empty(3, 4)
    for name, args in [("uniform_", ()), ("normal_", ()), ("trunc_normal_", ()),
                       ("xavier_uniform_", ()), ("xavier_normal_", ()),
                       ("kaiming_uniform_", ()), ("kaiming_normal_", ())]:
        with pytest.raises(TypeError, match="seed="):
            getattr(ft, name)(t, *args, generator=torch.Generator())
        getattr(ft, name)(t, *args, generator=None, seed=0)


def test_signatures_match_torch():
    import inspect
    for name in ("uniform_", "normal_", "trunc_normal_", "constant_", "zeros_", "ones_",
                 "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
                 "calculate_gain"):
        theirs = inspect.signature(getattr(torch.nn.init, name)).parameters
        ours = inspect.signature(getattr(ft, name)).parameters
        for pname, p in theirs.items():
            assert pname in ours, (name, pname)
            assert ours[pname].default == p.default, (name, pname)
            assert ours[pname].kind == p.kind, (name, pname)
        if name != "calculate_gain":
            assert ours["seed"].kind is inspect.Parameter.KEYWORD_ONLY
            assert ours["stream"].kind is inspect.Parameter.KEYWORD_ONLY


def test_calculate_gain_matches_torch():
    for nl in ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
               "conv_transpose2d", "conv_transpose3d", "sigmoid", "tanh", "relu", "selu",
               "leaky_relu"):
        assert ft.calculate_gain(nl) == torch.nn.init.calculate_gain(nl)
    for p in (0, 0.2, math.sqrt(5), 3):
        assert ft.calculate_gain("leaky_relu", p) == torch.nn.init.calculate_gain(
            "leaky_relu", p)
    with pytest.raises(ValueError):
        ft.calculate_gain("gelu")
    with pytest.raises(ValueError):
        ft.calculate_gain("leaky_relu", True)


def _torch_bound(kind, shape, gain=1.0, a=0, mode="fan_in", nl="leaky_relu"):
    """The bound/std torch.nn.init computes, by its own private helpers."""
    t = torch.empty(shape)
    if kind.startswith("xavier"):
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(t)
        std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    else:
        fan = torch.nn.init._calculate_correct_fan(t, mode)
        std = torch.nn.init.calculate_gain(nl, a) / math.sqrt(fan)
    return math.sqrt(3.0) * std if kind.endswith("uniform") else std


@pytest.mark.parametrize("shape", [(256, 512), (64, 32, 3, 3), (1000, 3)])
def test_bounds_and_stds_follow_torch_formulas(shape):
    t = torch.empty(shape, dtype=torch.float64)
    cases = [("xavier_uniform", dict(gain=2.0)), ("kaiming_uniform", dict(a=math.sqrt(5))),
             ("kaiming_uniform", dict(a=0, mode="fan_out", nonlinearity="relu"))]
    for kind, kw in cases:
        getattr(ft, kind + "_")(t, **kw, seed=8)
        bound = _torch_bound(kind, shape, gain=kw.get("gain", 1.0), a=kw.get("a", 0),
                             mode=kw.get("mode", "fan_in"),
                             nl=kw.get("nonlinearity", "leaky_relu"))
        assert float(t.abs().max()) <= bound
        assert float(t.abs().max()) > 0.99 * bound            # the range is used
    for kind, kw in [("xavier_normal", dict(gain=0.5)),
                     ("kaiming_normal", dict(mode="fan_out", nonlinearity="tanh"))]:
        getattr(ft, kind + "_")(t, **kw, seed=9)
        std = _torch_bound(kind, shape, gain=kw.get("gain", 1.0),
                           mode=kw.get("mode", "fan_in"),
                           nl=kw.get("nonlinearity", "leaky_relu"))
        n = t.numel()
        assert abs(float(t.std()) / std - 1) < 6 / math.sqrt(2 * n)
        assert abs(float(t.mean())) < 6 * std / math.sqrt(n)


def test_distributions_match_their_definitions():
    t = torch.empty(200_000, dtype=torch.float64)
    ft.uniform_(t, -2, 3, seed=1)
    assert float(t.min()) >= -2 and float(t.max()) < 3
    ft.normal_(t, 1.0, 0.01, seed=1)
    assert abs(float(t.std()) - 0.01) < 1e-4 and abs(float(t.mean()) - 1.0) < 1e-4
    ft.trunc_normal_(t, 0.0, 1.0, -0.5, 2.0, seed=1)
    assert float(t.min()) >= -0.5 and float(t.max()) <= 2.0
    ft.masked_uniform_(t, -10, 10, 5, seed=1)
    nz = t[t != 0]
    assert bool((nz.abs() >= 5).all()) and float(t.min()) >= -10 and float(t.max()) < 10
    assert 0.45 < nz.numel() / t.numel() < 0.55


def test_torch_errors_and_warnings_mirrored():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        ft.xavier_uniform_(torch.empty(5), seed=1)
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        ft.kaiming_uniform_(torch.empty(3, 3), mode="fan_avg", seed=1)
    ft.kaiming_uniform_(torch.empty(3, 3), mode="FAN_OUT", seed=1)      # torch lowers it
    with pytest.warns(UserWarning, match="zero-element"):
        ft.kaiming_normal_(torch.empty(0, 3), seed=1)
    with pytest.warns(UserWarning, match="more than 2 std"):
        ft.trunc_normal_(torch.empty(3), mean=10.0, std=1.0, a=-2, b=2, seed=1)
    with pytest.raises(ValueError):
        ft.uniform_(torch.empty(3), 1, 0, seed=1)


def test_refusals():
    with pytest.raises(TypeError, match="float16, bfloat16"):
        ft.uniform_(torch.empty(3, dtype=torch.int32), seed=1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        ft.normal_(np.empty(3, np.float32), seed=1)
    with pytest.raises(ValueError, match="dry forward"):
        ft.normal_(nn.LazyLinear(3).weight, seed=1)
    with pytest.raises(ValueError, match="resolve_neg"):          # the core's refusal
        ft.uniform_(torch._neg_view(torch.zeros(3)), seed=1)
    m = torch.empty(3, 4, device="meta")
    assert ft.kaiming_uniform_(m, seed=1) is m                     # torch: a no-op on meta


# every twin with torch's positional arguments
TWINS = [("uniform_", (-0.3, 0.7)), ("normal_", (0.5, 2.0)), ("trunc_normal_", ()),
         ("constant_", (0.25,)), ("zeros_", ()), ("ones_", ()), ("xavier_uniform_", (1.5,)),
         ("xavier_normal_", ()), ("kaiming_uniform_", (math.sqrt(5),)),
         ("kaiming_normal_", (0, "fan_out", "relu"))]
# zero-element tensors: alone, and views into a filled tensor (contiguous or not)
ZERO_ELEMENT = {
    "(0,)": lambda base: torch.empty(0), "(0, 4)": lambda base: torch.empty(0, 4),
    "(2, 0, 3)": lambda base: torch.empty(2, 0, 3), "rows 2:2": lambda base: base[2:2],
    "cols 3:3": lambda base: base[:, 3:3], "t()[1:1]": lambda base: base.t()[1:1],
    "[1:1, 2:2]": lambda base: base[1:1, 2:2], "1-D [4:4]": lambda base: base[1][4:4],
}


def _outcome(fn, make, *args, **kw):
    """(result, warnings, base) of ``fn(make(base), ...)`` on a fresh base of 7s:
    result "the tensor" or (exception type, message); warnings (category, message)."""
    base = torch.full((5, 6), 7.0)
    t = make(base)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn(t, *args, **kw)
            result = "the tensor" if out is t else ("returned", out)
        except Exception as exc:
            result = (type(exc), str(exc))
    return result, [(w.category, str(w.message)) for w in caught], base


@pytest.mark.parametrize("make", ZERO_ELEMENT.values(), ids=ZERO_ELEMENT.keys())
def test_zero_element_tensors(make):
    """Each twin on a zero-element tensor does what its torch.nn.init original
    does (returns the tensor, or raises the same error; the same warnings:
    kaiming's "no-op", none for the others) and writes nothing around it.
    One difference, on purpose: where both fans are 0 torch's xavier divides
    by zero; the twin returns the tensor, as for any other empty one."""
    for name, args in TWINS:
        want, want_warnings, _ = _outcome(getattr(torch.nn.init, name), make, *args)
        got, got_warnings, base = _outcome(getattr(ft, name), make, *args, seed=1, stream=2)
        if want == (ZeroDivisionError, "float division by zero"):
            assert name.startswith("xavier") and make(torch.empty(5, 6)).shape == (0, 0)
            want = "the tensor"
        assert got == want, name
        assert got_warnings == want_warnings, name
        assert bool((base == 7).all()), name
    got, got_warnings, base = _outcome(ft.masked_uniform_, make, -1, 1, 0.5, seed=1)
    assert got == "the tensor" and got_warnings == [] and bool((base == 7).all())


def test_unseeded_calls_follow_the_process_stream():
    fi.manual_seed(77)
    t1, t2 = torch.empty(5, 7), torch.empty(5, 7)
    ft.normal_(t1)
    ft.uniform_(t2.t())                                          # temp path: one stream
    fi.manual_seed(77)
    a1, a2 = np.empty((5, 7), np.float32), np.empty((7, 5), np.float32)
    fi.normal(a1)
    fi.uniform(a2)
    np.testing.assert_array_equal(t1.numpy(), a1)
    np.testing.assert_array_equal(t2.t().numpy(), a2)
    fi.manual_seed(fi.DEFAULT_SEED)


def test_streams_and_offsets_are_independent_of_layout():
    """A slice filled as its own tensor equals the same slice of nothing else:
    positions, not memory, decide values."""
    w = torch.empty(10, 10)
    ft.uniform_(w, seed=5, stream=1)
    v = torch.empty(10, 10)
    ft.uniform_(v, seed=5, stream=2)
    assert not torch.equal(w, v)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensor_matches_cpu():
    t = torch.empty(SHAPE, device="cuda")
    ft.normal_(t, seed=3)
    c = torch.empty(SHAPE)
    ft.normal_(c, seed=3)
    assert torch.equal(t.cpu(), c)
    ft.uniform_(t.t(), seed=3)                     # temp on the same device


# --- to_torch -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", ("float16", "bfloat16", "float32", "float64"))
def test_to_torch_zero_copy(dtype):
    a = fi.empty((6, 5), dtype)
    fi.normal(a, seed=2)
    t = fi.to_torch(a)
    assert t.data_ptr() == a.ctypes.data
    assert t.dtype == getattr(torch, dtype) and tuple(t.shape) == (6, 5)
    np.testing.assert_array_equal(bits(t), bits(a))
    t[0, 0] = 3.0                                   # same memory both ways
    assert float(a[0, 0]) == 3.0
    # and a fill through torch lands in the array
    ft.uniform_(t, seed=4)
    b = np.empty((6, 5), a.dtype)
    fi.uniform(b, seed=4)
    np.testing.assert_array_equal(bits(a), bits(b))


def test_to_torch_other_inputs():
    t = torch.ones(3)
    assert ft.to_torch(t) is t
    a = np.arange(12, dtype=np.float32).reshape(3, 4)[:, 1:]       # strided
    v = ft.to_torch(a)
    assert v.data_ptr() == a.ctypes.data and v.stride() == (4, 1)
    bf = np.zeros((4, 4), ml_dtypes.bfloat16)[:, ::2]
    assert ft.to_torch(bf).stride() == (4, 2)

    class Producer:                                 # any DLPack producer (cupy, jax, ...)
        def __init__(self, arr):
            self.arr = arr

        def __dlpack__(self, **kw):
            return self.arr.__dlpack__(**kw)

        def __dlpack_device__(self):
            return self.arr.__dlpack_device__()
    src = np.zeros(5, np.float32)
    out = ft.to_torch(Producer(src))
    assert out.data_ptr() == src.ctypes.data
    with pytest.raises(TypeError, match="__dlpack__"):
        ft.to_torch([1.0, 2.0])


def test_to_torch_cupy():
    cp = pytest.importorskip("cupy")
    try:
        x = cp.zeros((4, 4), dtype=cp.float32)
    except Exception as exc:                        # installed, but no device
        pytest.skip(str(exc))
    t = ft.to_torch(x)
    assert t.is_cuda and t.data_ptr() == x.data.ptr
