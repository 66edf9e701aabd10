"""Bad input: every public fill refuses it clearly and leaves the buffer untouched."""

import math
import re

import ml_dtypes
import numpy as np
import pytest
import torch

import fastinit as fi

U64 = 2 ** 64
NAN, INF = float("nan"), float("inf")

# name -> (function, valid parameters)
FILLS = {
    "uniform": (fi.uniform, dict(low=-1.0, high=1.0)),
    "normal": (fi.normal, dict(mean=0.0, std=1.0)),
    "truncated_normal": (fi.truncated_normal, dict(mean=0.0, std=1.0, a=-2.0, b=2.0)),
    "masked_uniform": (fi.masked_uniform, dict(low=-1.0, high=1.0, threshold=0.1)),
    "constant": (fi.constant, dict(value=0.5)),
    "zeros": (fi.zeros, {}),
    "ones": (fi.ones, {}),
    "xavier_uniform": (fi.xavier_uniform, dict(gain=1.0)),
    "xavier_normal": (fi.xavier_normal, dict(gain=1.0)),
    "kaiming_uniform": (fi.kaiming_uniform, dict(a=0.0)),
    "kaiming_normal": (fi.kaiming_normal, dict(a=0.0)),
    "lecun_uniform": (fi.lecun_uniform, {}),
    "lecun_normal": (fi.lecun_normal, {}),
    "variance_scaling": (fi.variance_scaling, dict(scale=1.0)),
}
UNSEEDED = {"constant", "zeros", "ones"}
SEEDED = [n for n in FILLS if n not in UNSEEDED]
FAN_BASED = ["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
             "lecun_uniform", "lecun_normal", "variance_scaling"]
FLOAT_PARAMS = [(n, p) for n, (_, params) in FILLS.items() for p in params]
# the name a message must use for a parameter (kaiming's ``a`` is the leaky_relu slope)
NAME_RE = {"a": r"\ba\b|slope"}

TORCH_DTYPES = {torch.float32: np.float32, torch.float64: np.float64,
                torch.float16: np.float16, torch.bfloat16: ml_dtypes.bfloat16}
TORCH_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def call(name, out, **over):
    fn, params = FILLS[name]
    kw = dict(params, **over)
    if name not in UNSEEDED:
        kw.setdefault("seed", 1)
    return fn(out, **kw)


def raw(x):
    """The bytes of an array's whole memory (its base for a view), or a torch tensor's."""
    if isinstance(x, Producer):
        x = x.array
    if isinstance(x, torch.Tensor):
        x = x.detach()
        return x.view(TORCH_BITS[x.element_size()]).numpy().tobytes()
    while x.base is not None and isinstance(x.base, np.ndarray):
        x = x.base
    return x.tobytes()


def expect_refusal(name, out, exc, pattern, **over):
    before = raw(out)
    with pytest.raises(exc) as info:
        call(name, out, **over)
    assert re.search(pattern, str(info.value)), str(info.value)
    assert raw(out) == before, "the failed call wrote to the buffer"


# --- buffers --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, np.uint64,
                                   np.bool_, np.complex64])
@pytest.mark.parametrize("name", FILLS)
def test_non_float_dtype(name, dtype, poison):
    x = poison(np.empty((8, 16), dtype))
    expect_refusal(name, x, TypeError, r"\bout\b")


@pytest.mark.parametrize("name", FILLS)
def test_read_only_buffer(name, poisoned):
    x = poisoned((8, 16))
    x.flags.writeable = False
    expect_refusal(name, x, ValueError, r"\bout\b.*read-only")


@pytest.mark.parametrize("view", ["cols", "T", "rows"])
@pytest.mark.parametrize("name", FILLS)
def test_non_contiguous_buffer(name, view, poisoned):
    base = poisoned((8, 16))
    x = {"cols": base[:, ::2], "T": base.T, "rows": base[::2]}[view]
    expect_refusal(name, x, ValueError, r"\bout\b.*contiguous")


@pytest.mark.parametrize("out", [[1.0, 2.0], 3.0, None, memoryview(bytearray(16))])
@pytest.mark.parametrize("name", ["uniform", "normal", "constant", "xavier_uniform"])
def test_not_a_buffer(name, out):
    over = {"fans": (2, 2)} if name in FAN_BASED else {}
    with pytest.raises(TypeError, match=r"\bout\b"):
        call(name, out, **over)


# --- float parameters -----------------------------------------------------------
# A truncated normal may be one-sided (docs/stream.md 3.6): a = -inf and b = +inf
# are drawn, not refused; a = +inf, b = -inf and NaN still are.
ACCEPTED_INFINITE = {("truncated_normal", "a", -INF), ("truncated_normal", "b", INF)}


@pytest.mark.parametrize("bad", [NAN, INF, -INF], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name, param", FLOAT_PARAMS)
def test_non_finite_parameter(name, param, bad, poisoned):
    if (name, param, bad) in ACCEPTED_INFINITE:
        x = poisoned((8, 16))
        call(name, x, **{param: bad})
        assert np.isfinite(x).all()
        return
    expect_refusal(name, poisoned((8, 16)), (ValueError, TypeError),
                   NAME_RE.get(param, rf"\b{param}\b"), **{param: bad})


@pytest.mark.parametrize("bad", ["1", True, np.bool_(False), 1j], ids=["str", "bool", "np.bool", "complex"])
@pytest.mark.parametrize("name, param", FLOAT_PARAMS)
def test_non_real_parameter(name, param, bad, poisoned):
    expect_refusal(name, poisoned((8, 16)), (ValueError, TypeError),
                   NAME_RE.get(param, rf"\b{param}\b"), **{param: bad})


@pytest.mark.parametrize("name, param", FLOAT_PARAMS)
def test_integer_parameter_past_float(name, param, poisoned):
    """A Python int too large for a float is refused like inf, not an OverflowError."""
    expect_refusal(name, poisoned((8, 16)), (ValueError, TypeError),
                   NAME_RE.get(param, rf"\b{param}\b"), **{param: 10 ** 400})


@pytest.mark.parametrize("name, over, pattern", [
    ("normal", dict(std=-1.0), r"\bstd\b"),
    ("truncated_normal", dict(std=-1.0), r"\bstd\b"),
    ("truncated_normal", dict(std=0.0), r"\bstd\b"),
    ("uniform", dict(low=2.0, high=1.0), r"\blow\b.*\bhigh\b"),
    ("uniform", dict(low=0.1, high=0.1 + 1e-12), r"\blow\b|\bhigh\b"),   # no float32 in it
    ("masked_uniform", dict(low=2.0, high=1.0), r"\blow\b.*\bhigh\b"),
    ("masked_uniform", dict(threshold=-0.1), r"\bthreshold\b"),
    ("truncated_normal", dict(a=1.0, b=1.0), r"\ba\b.*\bb\b"),
    ("truncated_normal", dict(a=2.0, b=-2.0), r"\ba\b.*\bb\b"),
    ("truncated_normal", dict(a=2.0 ** 61, b=2.0 ** 62), r"\ba\b"),      # past the far limit
    ("truncated_normal", dict(a=0.5, b=0.5 + 1e-12), r"\ba\b.*\bb\b"),     # no float32 in it
    ("xavier_uniform", dict(gain=-1.0), r"\bgain\b"),
    ("xavier_normal", dict(gain=-1.0), r"\bgain\b"),
    ("variance_scaling", dict(scale=0.0), r"\bscale\b"),
    ("variance_scaling", dict(scale=-1.0), r"\bscale\b"),
])
def test_parameter_out_of_range(name, over, pattern, poisoned):
    expect_refusal(name, poisoned((8, 16)), ValueError, pattern, **over)


@pytest.mark.parametrize("dtype, name, over, pattern", [
    (np.float16, "normal", dict(std=1e5), r"\bstd\b"),
    (np.float16, "normal", dict(mean=7e4), r"\bmean\b"),
    (np.float16, "normal", dict(mean=6e4, std=1e3), r"\bmean\b|\bstd\b"),
    (np.float16, "uniform", dict(low=-1e5), r"\blow\b"),
    (np.float16, "uniform", dict(high=1e5), r"\bhigh\b"),
    (np.float16, "masked_uniform", dict(high=1e5), r"\bhigh\b"),
    (np.float16, "truncated_normal", dict(a=-1e5, b=1e5, std=1e5), r"\ba\b|\bb\b"),
    (np.float16, "constant", dict(value=1e5), r"\bvalue\b"),
    (np.float16, "constant", dict(value=-65520.0), r"\bvalue\b"),
    (np.float16, "xavier_uniform", dict(gain=1e5), r"float16"),
    (np.float16, "xavier_normal", dict(gain=1e5), r"float16"),
    (np.float16, "variance_scaling", dict(scale=1e10, distribution="uniform"), r"float16"),
    (np.float16, "variance_scaling", dict(scale=1e10, distribution="truncated_normal"),
     r"float16"),
    (ml_dtypes.bfloat16, "constant", dict(value=1e39), r"\bvalue\b"),
    (ml_dtypes.bfloat16, "normal", dict(std=1e38), r"\bstd\b"),
    (np.float32, "normal", dict(std=1e38), r"\bstd\b"),
    (np.float32, "uniform", dict(low=-3e38, high=3e38), r"\blow\b|\bhigh\b"),
    (np.float32, "constant", dict(value=1e39), r"\bvalue\b"),
    (np.float64, "uniform", dict(low=-1e308, high=1e308), r"\blow\b|\bhigh\b"),
    (np.float64, "normal", dict(mean=1e308, std=1e308), r"\bmean\b|\bstd\b"),
])
def test_values_past_the_dtype(dtype, name, over, pattern, poisoned):
    expect_refusal(name, poisoned((4, 4), dtype), ValueError, pattern, **over)


# --- seed, stream, offset -------------------------------------------------------
BAD_U64 = [(-1, ValueError), (U64, ValueError), (U64 + 5, ValueError), (-U64, ValueError),
           (1.0, TypeError), (np.float64(2.0), TypeError), (True, TypeError),
           (np.bool_(True), TypeError), ("1", TypeError)]


@pytest.mark.parametrize("bad, exc", BAD_U64, ids=[repr(b) for b, _ in BAD_U64])
@pytest.mark.parametrize("arg", ["seed", "stream", "offset"])
@pytest.mark.parametrize("name", SEEDED)
def test_bad_seed_stream_offset(name, arg, bad, exc, poisoned):
    expect_refusal(name, poisoned((8, 16)), exc, rf"\b{arg}\b", **{arg: bad})


@pytest.mark.parametrize("name", SEEDED)
def test_offset_plus_size_past_2_64(name, poisoned):
    x = poisoned((8, 16))
    expect_refusal(name, x, ValueError, r"\boffset\b", offset=U64 - x.size + 1)
    call(name, x, seed=U64 - 1, stream=U64 - 1, offset=U64 - x.size)   # the last valid one
    assert np.isfinite(x).all()


@pytest.mark.parametrize("name", SEEDED)
def test_numpy_integers_accepted(name):
    a = call(name, np.empty((8, 16), np.float32), seed=np.uint64(U64 - 1),
             stream=np.int64(3), offset=np.uint32(17))
    b = call(name, np.empty((8, 16), np.float32), seed=U64 - 1, stream=3, offset=17)
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("stream", [0.0, False, 1.5, 3])
def test_unseeded_call_refuses_any_stream(stream, poisoned):
    """With seed=None a stream is refused; a float or bool one as a type error too."""
    x = poisoned((8, 16))
    before = raw(x)
    with pytest.raises((TypeError, ValueError), match=r"\bstream\b"):
        fi.normal(x, seed=None, stream=stream)
    assert raw(x) == before


def test_failed_unseeded_call_takes_no_stream():
    saved = fi.initial_seed()
    try:
        fi.manual_seed(1234)
        for bad in (dict(std=-1.0), dict(mean=NAN), dict(offset=-1)):
            with pytest.raises(ValueError):
                fi.normal(np.empty(100, np.float32), **bad)
        with pytest.raises(TypeError):
            fi.normal(np.empty(100, np.int32))
        x = fi.normal(np.empty(100, np.float32))
        y = fi.normal(np.empty(100, np.float32))
        assert np.array_equal(x, fi.normal(np.empty(100, np.float32), seed=1234, stream=0))
        assert np.array_equal(y, fi.normal(np.empty(100, np.float32), seed=1234, stream=1))
    finally:
        fi.manual_seed(saved)


# --- fans, modes, layouts ---------------------------------------------------------
@pytest.mark.parametrize("shape", [(16,), ()])
@pytest.mark.parametrize("name", FAN_BASED)
def test_fans_of_a_1d_tensor(name, shape, poisoned):
    expect_refusal(name, poisoned(shape), ValueError, r"\bfans\b")


@pytest.mark.parametrize("name, over, pattern", [
    ("kaiming_uniform", dict(nonlinearity="relu6"), r"\bnonlinearity\b"),
    ("kaiming_normal", dict(nonlinearity="gelu"), r"\bnonlinearity\b"),
    ("kaiming_uniform", dict(mode="fan_avg"), r"\bmode\b"),
    ("kaiming_normal", dict(mode="FAN_IN"), r"\bmode\b"),
    ("variance_scaling", dict(mode="avg"), r"\bmode\b"),
    ("variance_scaling", dict(distribution="gaussian"), r"\bdistribution\b"),
    ("variance_scaling", dict(distribution="normal_"), r"\bdistribution\b"),
    ("kaiming_uniform", dict(a="0.1"), r"\ba\b|slope"),
] + [(n, dict(layout="tf"), r"\blayout\b") for n in FAN_BASED]
  + [(n, dict(layout="keras ", fans=(3, 4)), r"\blayout\b") for n in FAN_BASED])
def test_unknown_choice(name, over, pattern, poisoned):
    expect_refusal(name, poisoned((8, 16)), ValueError, pattern, **over)


# --- empty buffers ------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(0,), (0, 5), (5, 0), (0, 0), (4, 3, 0)])
@pytest.mark.parametrize("name", FILLS)
def test_empty_is_a_no_op(name, shape):
    x = np.empty(shape, np.float32)
    over = {"fans": (3, 4)} if name in FAN_BASED and len(shape) < 2 else {}
    assert call(name, x, **over) is x


@pytest.mark.parametrize("name", FILLS)
def test_empty_still_checks_dtype(name):
    with pytest.raises(TypeError, match=r"\bout\b"):
        call(name, np.empty((0, 4), np.int32))


@pytest.mark.parametrize("name", FILLS)
def test_empty_torch_tensor(name):
    t = torch.empty((0, 4))
    assert call(name, t) is t


# --- torch tensors --------------------------------------------------------------------
@pytest.mark.parametrize("tdtype", list(TORCH_DTYPES), ids=str)
@pytest.mark.parametrize("name", FILLS)
def test_torch_tensor_filled_in_place(name, tdtype):
    for shape in [(24, 40), (300, 256)]:           # serial and parallel paths
        t = torch.full(shape, 7.0, dtype=tdtype)
        ptr = t.data_ptr()
        over = dict(offset=5) if name in SEEDED else {}
        assert call(name, t, **over) is t
        assert t.data_ptr() == ptr
        ref = call(name, np.empty(shape, TORCH_DTYPES[tdtype]), **over)
        assert raw(t) == ref.tobytes()


def test_torch_view_with_storage_offset(poison):
    base = torch.empty((10, 64))
    poison(base.numpy())
    before = raw(base)
    view = base[3:7]                                # contiguous, starts 3 rows in
    fi.normal(view, seed=2)
    ref = fi.normal(np.empty((4, 64), np.float32), seed=2)
    got = base.numpy()
    assert np.array_equal(got[3:7].view(np.uint32), ref.view(np.uint32))
    row = 64 * 4
    assert got.tobytes()[:3 * row] == before[:3 * row]
    assert got.tobytes()[7 * row:] == before[7 * row:]


@pytest.mark.parametrize("tdtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", FILLS)
def test_torch_requires_grad(name, tdtype):
    t = torch.full((8, 16), 3.0, dtype=tdtype, requires_grad=True)
    expect_refusal(name, t, (TypeError, ValueError), r"grad")


@pytest.mark.parametrize("view", ["t", "cols", "expand"])
@pytest.mark.parametrize("name", FILLS)
def test_torch_non_contiguous(name, view):
    base = torch.full((8, 16), 3.0)
    t = {"t": base.t(), "cols": base[:, ::2], "expand": base[:1].expand(8, 16)}[view]
    before = raw(base)
    with pytest.raises(ValueError, match=r"\bout\b.*contiguous"):
        call(name, t)
    assert raw(base) == before


@pytest.mark.parametrize("tdtype", [torch.int32, torch.int64, torch.uint8, torch.bool,
                                    torch.complex64, torch.float8_e4m3fn, torch.uint16],
                         ids=str)
@pytest.mark.parametrize("name", ["uniform", "normal", "constant", "kaiming_uniform"])
def test_torch_non_float(name, tdtype):
    t = torch.ones((8, 16), dtype=tdtype)
    expect_refusal(name, t, TypeError, r"\bout\b")


def test_torch_bfloat16_is_float32_rounded():
    t = torch.empty((64, 64), dtype=torch.bfloat16)
    fi.kaiming_uniform(t, a=math.sqrt(5), seed=3)
    ref = fi.kaiming_uniform(np.empty((64, 64), np.float32), a=math.sqrt(5), seed=3)
    assert raw(t) == ref.astype(ml_dtypes.bfloat16).tobytes()


# --- other DLPack producers -------------------------------------------------------------
class Producer:
    """Exports an array only through DLPack (no .shape, no buffer protocol)."""

    def __init__(self, array, device=None):
        self.array, self.device = array, device

    def __dlpack__(self, **kw):
        return self.array.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self.device or self.array.__dlpack_device__()


@pytest.mark.parametrize("name", FILLS)
def test_dlpack_producer_filled_in_place(name):
    x = np.zeros((24, 40), np.float32)
    over = {"offset": 3} if name in SEEDED else {}
    p = Producer(x)
    assert call(name, p, **over) is p
    # for the fan-based fills (no .shape here) the fans come from the DLPack view
    assert x.tobytes() == call(name, np.empty((24, 40), np.float32), **over).tobytes()


@pytest.mark.parametrize("name", FILLS)
def test_dlpack_producer_read_only(name, poisoned):
    x = poisoned((8, 16))
    x.flags.writeable = False
    expect_refusal(name, Producer(x), (ValueError, TypeError), r"read-only|readonly")


@pytest.mark.parametrize("device", [(2, 0), (13, 0), (4, 0), (10, 1)],
                         ids=["cuda", "cuda_managed", "opencl", "rocm"])
@pytest.mark.parametrize("name", ["uniform", "constant", "xavier_normal"])
def test_dlpack_producer_on_a_device(name, device, poisoned):
    x = poisoned((8, 16))
    over = {"fans": (2, 2)} if name in FAN_BASED else {}
    expect_refusal(name, Producer(x, device), ValueError, r"\bout\b|CUDA|device", **over)


def test_torch_negative_bit_view():
    """A torch view with the negative bit set reads its memory negated: fill it right
    (the tensor reads the fill's values) or refuse it, never store into it raw."""
    base = torch.zeros((4, 64))
    view = torch._neg_view(base)
    assert view.is_neg() and view.is_contiguous()
    before = raw(base)
    try:
        fi.uniform(view, 1.0, 2.0, seed=1)
    except (TypeError, ValueError) as exc:
        assert re.search(r"\bout\b", str(exc)), str(exc)
        assert raw(base) == before
        return
    got = view.resolve_neg().numpy()
    assert got.min() >= 1.0 and got.max() < 2.0, (got.min(), got.max())
