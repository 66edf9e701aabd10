"""fastinit.torch: fastinit's fills for PyTorch tensors, modules and DTensors.

Four layers, each built on the one before (docs/torch.md has the details):

- **Twins of ``torch.nn.init``** (``uniform_``, ``normal_``, ``trunc_normal_``,
  ``constant_``, ``zeros_``, ``ones_``, ``xavier_uniform_``, ``xavier_normal_``,
  ``kaiming_uniform_``, ``kaiming_normal_``, ``calculate_gain``) with the same
  names, arguments and defaults, plus keyword-only ``seed`` and ``stream``,
  and ``masked_uniform_``. They fill in place, through the same ``fastinit``
  calls that fill NumPy buffers, so a tensor gets bit for bit what a NumPy
  buffer of its shape gets. A non-contiguous view gets the values its
  positions would get in a contiguous tensor of the view's shape.
- ``init_module(module, rules, seed=...)``: every parameter gets its own
  stream, a hash of its qualified name (``stream_for``), so a value depends
  on (seed, name, element index) and never on traversal order. The default
  rules draw what each built-in module's ``reset_parameters`` draws.
- ``materialize(module, device)``: a model built on the meta device,
  allocated once with ``to_empty`` and initialized in place.
- DTensor parameters (``Shard``/``Replicate`` placements, FSDP2): each rank
  fills only its local shard, with exactly the values of the same slice of
  the full tensor.

``to_torch(x)`` turns a fastinit/NumPy buffer (bfloat16 included) or a
cupy/DLPack array into a torch tensor over the same memory.
"""

import fnmatch
import inspect
import math
import sys
import time
import warnings
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
import torch
from torch import nn

import fastinit as fi
from fastinit import _contract as _C

__all__ = [
    "uniform_", "normal_", "trunc_normal_", "constant_", "zeros_", "ones_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
    "calculate_gain", "masked_uniform_", "init_module", "materialize", "stream_for",
    "InitReport", "ParamRecord", "UnmatchedParametersError", "to_torch",
]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# DTensor fills: when a local row misses fewer than this many elements of its
# global row, fill whole global rows into a temporary (one call per chunk)
# rather than one call per local row (a call costs about as much as this
# many elements).
SPAN_SLACK = 4096
SPAN_CHUNK = 1 << 22            # elements per temporary in that mode
PROGRESS_AFTER_S = 1.0          # materialize shows progress past this many seconds
PROGRESS_EVERY_S = 0.25


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------
def _dtensor_class():
    """torch's DTensor class if torch.distributed.tensor is loaded, else None.

    A DTensor can only exist once its module has been imported, so checking
    ``sys.modules`` keeps plain fills free of the distributed import.
    """
    mod = sys.modules.get("torch.distributed.tensor")
    return getattr(mod, "DTensor", None) if mod is not None else None


def _is_dtensor(t):
    cls = _dtensor_class()
    return cls is not None and isinstance(t, cls)


def _is_uninitialized(t):
    return isinstance(t, nn.parameter.UninitializedTensorMixin)


def _check_generator(generator, fn):
    if generator is not None:
        raise TypeError(
            f"fastinit.torch.{fn}: a torch.Generator is not supported: fastinit draws "
            f"from its own counter-based Philox stream, so a value depends only on "
            f"(seed, stream, element index). Pass seed= (and stream=) instead of "
            f"generator=, or generator=None.")


def _check_tensor(tensor, fn):
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"fastinit.torch.{fn}: expected a torch.Tensor, "
                        f"got {type(tensor).__name__}")
    if _is_uninitialized(tensor):
        raise ValueError(
            f"fastinit.torch.{fn}: the tensor is an uninitialized lazy parameter "
            f"(torch.nn.parameter.UninitializedParameter) with no shape yet; run a dry "
            f"forward pass first (module(example_input)) so it materializes, or use "
            f"fastinit.torch.init_module(..., on_lazy='defer')")
    if tensor.dtype not in FLOAT_DTYPES:
        raise TypeError(f"fastinit.torch.{fn}: the tensor must be float16, bfloat16, "
                        f"float32 or float64, got {tensor.dtype}")


def _fans(shape):
    """(fan_in, fan_out) exactly as torch.nn.init._calculate_fan_in_and_fan_out."""
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer "
                         "than 2 dimensions")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _overlap_error(t):
    """A ValueError if ``t``'s elements may share memory, else None."""
    dims = [(st, sz) for sz, st in zip(t.shape, t.stride()) if sz > 1]
    if any(st == 0 for st, _ in dims):
        return ValueError(
            f"the tensor is an expanded view (shape {tuple(t.shape)}, strides "
            f"{tuple(t.stride())}: stride 0 over a dimension of size > 1), so several "
            f"of its elements are one memory location and cannot hold independent "
            f"values; fill the tensor it was expanded from, or a .clone() of it")
    reach = 0
    for st, sz in sorted(dims):
        if st <= reach:
            break
        reach += (sz - 1) * st
    else:
        return None                                   # a mixed-radix layout: no overlap
    n = t.numel()
    if n <= 1 << 24:                                  # rare layouts: check exactly
        offs = torch.zeros((), dtype=torch.int64)
        for sz, st in zip(t.shape, t.stride()):
            offs = offs.unsqueeze(-1) + torch.arange(sz, dtype=torch.int64) * st
        if torch.unique(offs.reshape(-1)).numel() == n:
            return None
    return ValueError(
        f"the tensor is a self-overlapping view (shape {tuple(t.shape)}, strides "
        f"{tuple(t.stride())}): some of its elements share memory, so they cannot hold "
        f"independent values; fill the base tensor or a .clone()")


def _bump_version(tensor):
    """Fills that write through DLPack bypass autograd's version counter; bump it as
    torch's in-place ops do, so a stale tensor saved for backward is still caught."""
    try:
        torch.autograd.graph.increment_version(tensor)
    except Exception:                                 # inference tensors, subclasses
        pass


def _np_view(buf):
    """A NumPy view of a contiguous CPU torch tensor (bfloat16 included)."""
    if buf.dtype == torch.bfloat16:
        return buf.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return buf.numpy()


def _target(buf):
    """What a fill writes into: for a CPU tensor a NumPy view of the same memory
    (cheaper to hand to fastinit than a DLPack capsule), else the tensor itself
    (fastinit takes it through DLPack)."""
    if buf.device.type != "cpu" or buf.is_neg() or buf.is_conj():
        return buf                  # the core takes (or refuses, for neg views) it itself
    return _np_view(buf)


# --- DTensor: the local shard as a block of the global tensor ----------------
def _local_block(t):
    """(local tensor, starts, local shape) of DTensor ``t`` on this rank.

    The local shard of ``Shard``/``Replicate`` placements is the block
    ``full[starts[0]:starts[0]+shape[0], ...]`` of the full tensor, split
    with torch.chunk's rule (uneven shards: the last ones are smaller or
    empty), mesh dimensions applied left to right.
    """
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    local = t.to_local()
    gshape = tuple(t.shape)
    mesh, placements = t.device_mesh, tuple(t.placements)
    coord = mesh.get_coordinate()
    if coord is None:                                   # this rank holds nothing
        return local, (0,) * len(gshape), tuple(local.shape)
    try:
        from torch.distributed.tensor._dtensor_spec import DTensorSpec
        order = getattr(t._spec, "shard_order", None)
        if order is not None and order != DTensorSpec.compute_default_shard_order(placements):
            raise NotImplementedError(
                f"DTensor with a non-default shard order {order}: fastinit.torch fills "
                f"Shard placements applied left to right over the mesh dimensions")
    except (ImportError, AttributeError):
        pass
    starts, sizes = [0] * len(gshape), list(gshape)
    for mesh_dim, p in enumerate(placements):
        if isinstance(p, _StridedShard):
            raise NotImplementedError(
                f"DTensor placement {p}: fastinit.torch fills Shard(d) and Replicate "
                f"placements; a strided shard's rows are not one block of the full tensor")
        if isinstance(p, Shard):
            d = p.dim % len(gshape)
            n, r = mesh.size(mesh_dim), coord[mesh_dim]
            full = -(-sizes[d] // n)
            begin = min(full * r, sizes[d])
            end = min(sizes[d], begin + full)
            starts[d] += begin
            sizes[d] = max(0, end - begin)
        elif isinstance(p, Replicate):
            continue
        elif p.is_partial():
            raise ValueError(
                f"DTensor placement {p}: a Partial DTensor holds addends of its value, "
                f"not the value; initialize it with Shard or Replicate placements")
        else:
            raise NotImplementedError(f"DTensor placement {p} is not supported")
    if tuple(local.shape) != tuple(sizes):
        raise NotImplementedError(
            f"DTensor local shard has shape {tuple(local.shape)} but placements "
            f"{placements} on mesh {tuple(mesh.shape)} give {tuple(sizes)}: this layout "
            f"is not one block of the full tensor")
    return local, tuple(starts), tuple(sizes)


def _block_fill(buf, gshape, starts, lshape, draw, seed, stream):
    """Fill contiguous ``buf`` (shape ``lshape``) with the values of the block of a
    C-contiguous ``gshape`` tensor that starts at ``starts``."""
    if buf.numel() == 0:
        return
    nd = len(gshape)
    partial = [d for d in range(nd) if lshape[d] != gshape[d]]
    if not partial:                                    # the whole tensor
        draw(_target(buf), 0, seed, stream)
        return
    k = partial[-1]
    inner = math.prod(gshape[k + 1:])
    row_len, global_row = lshape[k] * inner, gshape[k] * inner
    col0 = starts[k] * inner
    if k == 0:                                         # one contiguous range
        draw(_target(buf), col0, seed, stream)
        return
    gstride = [math.prod(gshape[d + 1:]) for d in range(nd)]
    rows = math.prod(lshape[:k])
    base = np.zeros(1, dtype=np.int64)                 # global index of each row's col 0
    for d in range(k):
        base = (base[:, None] + (starts[d] + np.arange(lshape[d], dtype=np.int64))
                * gstride[d]).reshape(-1)
    flat = buf.view(rows, row_len)
    if global_row - row_len < SPAN_SLACK:
        # Whole global rows into a temporary, the local columns copied out:
        # rows along dim k-1 are consecutive, global_row apart.
        per_group = lshape[k - 1]
        chunk = max(1, min(per_group, SPAN_CHUNK // global_row))
        tmp = torch.empty(chunk * global_row, dtype=buf.dtype, device=buf.device)
        for g0 in range(0, rows, per_group):
            for r0 in range(g0, g0 + per_group, chunk):
                c = min(chunk, g0 + per_group - r0)
                part = tmp[:c * global_row]
                draw(_target(part), int(base[r0]), seed, stream)
                flat[r0:r0 + c].copy_(part.view(c, global_row)[:, col0:col0 + row_len])
        return
    rows_view = _target(flat)
    for r in range(rows):
        draw(rows_view[r], int(base[r]) + col0, seed, stream)


def _fill_dtensor(tensor, draw, seed, stream):
    if seed is None:                      # one stream for all ranks' pieces
        seed, stream = _C.take_stream()
    local, starts, lshape = _local_block(tensor)
    # validate the parameters on every rank, empty shard or not
    draw(_target(torch.empty(0, dtype=local.dtype, device=local.device)), 0, seed, stream)
    local = local.detach()
    gshape = tuple(tensor.shape)
    if local.is_contiguous():
        _block_fill(local, gshape, starts, lshape, draw, seed, stream)
    else:
        err = _overlap_error(local)
        if err is not None:
            raise err
        tmp = torch.empty(lshape, dtype=local.dtype, device=local.device)
        _block_fill(tmp, gshape, starts, lshape, draw, seed, stream)
        local.copy_(tmp)


SCRATCH_ELEMENTS = 1 << 18     # a non-contiguous view is filled this much at a time


def _fill_through_scratch(t, draw, seed, stream):
    """Fill the non-contiguous view ``t`` a band of leading-dimension rows at
    a time: each band is drawn into one small contiguous scratch tensor (it
    stays in cache and is allocated once) and copied into the view. The
    values are those of a contiguous tensor of ``t``'s shape: band rows
    [r0, r1) hold the elements r0 * row .. r1 * row - 1. (A view this
    small is one band; torch calls 0-d and empty tensors contiguous.)"""
    rows = t.shape[0]
    row = t.numel() // rows
    band = max(1, SCRATCH_ELEMENTS // row)
    scratch = torch.empty((min(band, rows), *t.shape[1:]), dtype=t.dtype, device=t.device)
    for r0 in range(0, rows, band):
        r1 = min(rows, r0 + band)
        tmp = scratch[:r1 - r0]
        draw(_target(tmp), r0 * row, seed, stream)
        t[r0:r1].copy_(tmp)


def _fill(tensor, draw, seed, stream, fn):
    """Run ``draw(buf, offset, seed, stream)`` over ``tensor``'s memory.

    ``buf`` is C-contiguous and element k of it has global index
    offset + k. Plain contiguous tensors are filled in place; a
    non-contiguous view through a small contiguous scratch, band by band; a
    DTensor shard by the block of the full tensor it holds.
    """
    if tensor.is_meta:                     # as torch.nn.init: no storage, nothing to draw
        return tensor
    if _is_dtensor(tensor):
        with torch.no_grad():
            _fill_dtensor(tensor, draw, seed, stream)
        return tensor
    t = tensor.detach()                    # fills write memory, never through autograd
    if t.is_contiguous():
        draw(_target(t), 0, seed, stream)
    else:
        err = _overlap_error(t)
        if err is not None:
            raise ValueError(f"fastinit.torch.{fn}: {err}")
        _fill_through_scratch(t, draw, seed, stream)
    _bump_version(tensor)
    return tensor


# ---------------------------------------------------------------------------
# 1. Twins of torch.nn.init
# ---------------------------------------------------------------------------
def calculate_gain(nonlinearity, param=None):
    """torch.nn.init.calculate_gain itself (same values, same errors)."""
    return torch.nn.init.calculate_gain(nonlinearity, param)


def uniform_(tensor, a=0.0, b=1.0, generator=None, *, seed=None, stream=0):
    """U[a, b) in place, as torch.nn.init.uniform_, from fastinit's stream."""
    _check_generator(generator, "uniform_")
    _check_tensor(tensor, "uniform_")

    def draw(buf, offset, seed, stream):
        fi.uniform(buf, a, b, seed=seed, stream=stream, offset=offset)
    return _fill(tensor, draw, seed, stream, "uniform_")


def normal_(tensor, mean=0.0, std=1.0, generator=None, *, seed=None, stream=0):
    """N(mean, std^2) in place, as torch.nn.init.normal_."""
    _check_generator(generator, "normal_")
    _check_tensor(tensor, "normal_")

    def draw(buf, offset, seed, stream):
        fi.normal(buf, mean, std, seed=seed, stream=stream, offset=offset)
    return _fill(tensor, draw, seed, stream, "normal_")


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None, *,
                  seed=None, stream=0):
    """N(mean, std^2) truncated to the absolute bounds [a, b], as torch's
    trunc_normal_ (fastinit draws it by inverse CDF, never by rejection).

    As torch, ``a = -inf`` / ``b = inf`` are one-sided bounds, and a mean far
    outside [a, b] warns but samples: correctly, however far out [a, b] lies
    (docs/stream.md 3.6)."""
    _check_generator(generator, "trunc_normal_")
    _check_tensor(tensor, "trunc_normal_")
    if (mean < a - 2 * std) or (mean > b + 2 * std):
        warnings.warn("mean is more than 2 std from [a, b] in nn.init.trunc_normal_. "
                      "The distribution of values may be incorrect.", stacklevel=2)

    def draw(buf, offset, seed, stream):
        fi.truncated_normal(buf, mean, std, a, b, seed=seed, stream=stream, offset=offset)
    return _fill(tensor, draw, seed, stream, "trunc_normal_")


def masked_uniform_(tensor, low, high, threshold, *, seed=None, stream=0):
    """U[low, high) with every value of |x| < threshold set to 0, in one pass."""
    _check_tensor(tensor, "masked_uniform_")

    def draw(buf, offset, seed, stream):
        fi.masked_uniform(buf, low, high, threshold, seed=seed, stream=stream,
                          offset=offset)
    return _fill(tensor, draw, seed, stream, "masked_uniform_")


def constant_(tensor, val, *, seed=None, stream=0):
    """Every element = val, as torch.nn.init.constant_ (seed and stream are
    accepted, and ignored, so that it fits as an init_module rule)."""
    _check_tensor(tensor, "constant_")
    _C.resolve_stream(seed, stream)

    def draw(buf, offset, seed, stream):
        fi.constant(buf, val)
    return _fill(tensor, draw, 0, 0, "constant_")


def zeros_(tensor, *, seed=None, stream=0):
    """0 everywhere, as torch.nn.init.zeros_."""
    return constant_(tensor, 0.0, seed=seed, stream=stream)


def ones_(tensor, *, seed=None, stream=0):
    """1 everywhere, as torch.nn.init.ones_."""
    return constant_(tensor, 1.0, seed=seed, stream=stream)


def xavier_uniform_(tensor, gain=1.0, generator=None, *, seed=None, stream=0):
    """U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)), fans of the (global) shape."""
    _check_generator(generator, "xavier_uniform_")
    _check_tensor(tensor, "xavier_uniform_")
    fans = _fans(tuple(tensor.shape))
    if tensor.numel() == 0:
        return tensor

    def draw(buf, offset, seed, stream):
        fi.xavier_uniform(buf, gain, fans=fans, seed=seed, stream=stream, offset=offset)
    return _fill(tensor, draw, seed, stream, "xavier_uniform_")


def xavier_normal_(tensor, gain=1.0, generator=None, *, seed=None, stream=0):
    """N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    _check_generator(generator, "xavier_normal_")
    _check_tensor(tensor, "xavier_normal_")
    fans = _fans(tuple(tensor.shape))
    if tensor.numel() == 0:
        return tensor

    def draw(buf, offset, seed, stream):
        fi.xavier_normal(buf, gain, fans=fans, seed=seed, stream=stream, offset=offset)
    return _fill(tensor, draw, seed, stream, "xavier_normal_")


def _kaiming_args(tensor, a, mode, nonlinearity, fn):
    _check_tensor(tensor, fn)
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)
        return None
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of "
                         f"['fan_in', 'fan_out']")
    fans = _fans(tuple(tensor.shape))
    calculate_gain(nonlinearity, a)                    # torch's checks and errors
    return mode, fans


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None,
                     *, seed=None, stream=0):
    """U(-b, b), b = gain * sqrt(3 / fan), as torch.nn.init.kaiming_uniform_."""
    _check_generator(generator, "kaiming_uniform_")
    args = _kaiming_args(tensor, a, mode, nonlinearity, "kaiming_uniform_")
    if args is None:
        return tensor
    mode, fans = args

    def draw(buf, offset, seed, stream):
        fi.kaiming_uniform(buf, a, mode, nonlinearity, fans=fans, seed=seed, stream=stream,
                           offset=offset)
    return _fill(tensor, draw, seed, stream, "kaiming_uniform_")


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None,
                    *, seed=None, stream=0):
    """N(0, std^2), std = gain / sqrt(fan), as torch.nn.init.kaiming_normal_."""
    _check_generator(generator, "kaiming_normal_")
    args = _kaiming_args(tensor, a, mode, nonlinearity, "kaiming_normal_")
    if args is None:
        return tensor
    mode, fans = args

    def draw(buf, offset, seed, stream):
        fi.kaiming_normal(buf, a, mode, nonlinearity, fans=fans, seed=seed, stream=stream,
                          offset=offset)
    return _fill(tensor, draw, seed, stream, "kaiming_normal_")


# ---------------------------------------------------------------------------
# 2. init_module
# ---------------------------------------------------------------------------
stream_for = fi.stream_for       # the stream of a parameter: BLAKE2b-64 of its name


SPECS = {
    "uniform": uniform_, "normal": normal_, "trunc_normal": trunc_normal_,
    "constant": constant_, "zeros": zeros_, "ones": ones_,
    "xavier_uniform": xavier_uniform_, "xavier_normal": xavier_normal_,
    "kaiming_uniform": kaiming_uniform_, "kaiming_normal": kaiming_normal_,
    "masked_uniform": masked_uniform_,
}
_PLACEHOLDER = torch.empty(2, 2)


class UnmatchedParametersError(ValueError):
    """init_module found parameters no rule matched; ``.report`` lists them all."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


@dataclass
class ParamRecord:
    """One parameter of an init_module report."""
    name: str
    shape: tuple
    dtype: object
    rule: str
    stream: int
    status: str                        # initialized | deferred | kept | unmatched | planned
    aliases: list = field(default_factory=list)


@dataclass
class InitReport:
    """What init_module/materialize did to every parameter, in module order."""
    seed: int
    params: list = field(default_factory=list)
    buffers: list = field(default_factory=list)      # (name, action)
    seconds: float = 0.0

    @property
    def unmatched(self):
        """Names of the parameters no rule matched."""
        return [p.name for p in self.params if p.status == "unmatched"]

    @property
    def deferred(self):
        """Names of lazy parameters waiting for their first forward."""
        return [p.name for p in self.params if p.status == "deferred"]

    def __getitem__(self, name):
        for p in self.params:
            if p.name == name or name in p.aliases:
                return p
        raise KeyError(name)

    def __iter__(self):
        return iter(self.params)

    def __len__(self):
        return len(self.params)

    def __str__(self):
        rows = [("name", "shape", "dtype", "stream", "status", "rule")]
        for p in self.params:
            shape = "?" if p.shape is None else "x".join(map(str, p.shape)) or "()"
            dtype = str(p.dtype).replace("torch.", "")
            name = p.name + (f" (= {', '.join(p.aliases)})" if p.aliases else "")
            rows.append((name, shape, dtype, f"{p.stream:016x}", p.status, p.rule))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5]
                 for r in rows]
        lines.append(f"{len(self.params)} parameters, seed {self.seed}, "
                     f"{len(self.unmatched)} unmatched, {len(self.deferred)} deferred")
        for name, action in self.buffers:
            lines.append(f"buffer {name}: {action}")
        return "\n".join(lines)


@dataclass
class _Init:
    """A resolved initializer: label for the report and fn(tensor, seed, stream, module, name);
    ``custom`` for a user's callable (which may handle any dtype)."""
    label: str
    fn: object
    custom: bool = False


def _spec_name(name):
    key = name[:-1] if name.endswith("_") else name
    if key not in SPECS:
        raise ValueError(f"unknown initializer {name!r}; use one of {sorted(SPECS)}, "
                         f"a (name, kwargs) pair, or a callable (tensor, *, seed, stream)")
    return key


def _resolve_spec(spec, where):
    """An _Init from a rule's value; None means 'leave the parameter as it is'."""
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = (spec,)
    if isinstance(spec, tuple) and spec and isinstance(spec[0], str):
        key = _spec_name(spec[0])
        rest = list(spec[1:])
        kwargs = rest.pop() if rest and isinstance(rest[-1], dict) else {}
        args = tuple(rest)
        fn = SPECS[key]
        try:
            inspect.signature(fn).bind(_PLACEHOLDER, *args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{where}: bad arguments for {key}_: {exc}") from None
        shown = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])
        return _Init(f"{key}_({shown})",
                     lambda t, seed, stream, module, name: fn(t, *args, **kwargs,
                                                              seed=seed, stream=stream))
    if callable(spec):
        try:
            params = inspect.signature(spec).parameters
        except (TypeError, ValueError):
            params = None
        if params is not None:
            var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
            if not var_kw and not ("seed" in params and "stream" in params):
                raise TypeError(
                    f"{where}: initializer {getattr(spec, '__name__', spec)!r} must accept "
                    f"keyword arguments seed and stream, as fastinit.torch's functions do; "
                    f"wrap it, e.g. lambda t, *, seed, stream: f(t), or use "
                    f"fastinit.torch's twin of it")
            extra = [k for k in ("module", "name") if k in params]
        else:
            extra = []
        label = getattr(spec, "__qualname__", None) or repr(spec)
        mod = getattr(spec, "__module__", "") or ""
        if mod == __name__:
            label = f"{spec.__name__}()"

        def call(t, seed, stream, module, name):
            kw = {"module": module, "name": name}
            return spec(t, seed=seed, stream=stream, **{k: kw[k] for k in extra})
        return _Init(label, call, custom=mod != __name__)
    raise TypeError(f"{where}: an initializer must be a callable (tensor, *, seed, stream), "
                    f"a name such as 'zeros', a (name, kwargs) pair or None; got {spec!r}")


def _key_label(key):
    if isinstance(key, str):
        return repr(key)
    if isinstance(key, type):
        return key.__name__
    return "(" + ", ".join(k.__name__ for k in key) + ")"


def _normalize_rules(rules):
    """[(kind, key, value)] with kind 'glob' or 'type'; value an _Init, None or
    {local glob: _Init or None}."""
    if rules is None:
        return []
    items = list(rules.items()) if isinstance(rules, dict) else list(rules)
    out = []
    for i, item in enumerate(items):
        try:
            key, value = item
        except (TypeError, ValueError):
            raise TypeError(f"rules[{i}] must be a (key, initializer) pair, "
                            f"got {item!r}") from None
        where = f"rule {_key_label(key) if isinstance(key, (str, type, tuple)) else key!r}"
        if isinstance(key, str):
            out.append(("glob", key, _resolve_spec(value, where), _key_label(key)))
        elif (isinstance(key, type) and issubclass(key, nn.Module)) or (
                isinstance(key, tuple) and key and all(
                    isinstance(k, type) and issubclass(k, nn.Module) for k in key)):
            if isinstance(value, dict):
                value = {str(k): _resolve_spec(v, f"{where}[{k!r}]") for k, v in value.items()}
            else:
                value = _resolve_spec(value, where)
            out.append(("type", key, value, _key_label(key)))
        else:
            raise TypeError(f"a rule's key must be a glob on the parameter's qualified name "
                            f"(str) or an nn.Module subclass (or a tuple of them), got {key!r}")
    return out


def _match_user(rules, name, local, owner):
    """(label, _Init or None) of the first user rule that matches, or None."""
    for kind, key, value, shown in rules:
        if kind == "glob":
            if fnmatch.fnmatchcase(name, key):
                return f"rule {shown}: " + (value.label if value else "kept"), value
        elif isinstance(owner, key):
            if isinstance(value, dict):
                for lk, init in value.items():
                    if fnmatch.fnmatchcase(local, lk):
                        return (f"rule {shown}[{lk!r}]: " + (init.label if init else "kept"),
                                init)
            else:
                return f"rule {shown}: " + (value.label if value else "kept"), value
    return None


# --- default rules: what each built-in module's reset_parameters draws --------
def _linear_bias(module):
    def init(t, seed, stream, mod, name):
        weight = module.weight
        fan_in = _fans(tuple(weight.shape))[0] if weight.dim() >= 2 else 0
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        return uniform_(t, -bound, bound, seed=seed, stream=stream)
    return init


def _kaiming_a5(t, seed, stream, mod, name):
    return kaiming_uniform_(t, a=math.sqrt(5), seed=seed, stream=stream)


def _uniform_bound(get_bound):
    def init(t, seed, stream, mod, name):
        b = get_bound()
        return uniform_(t, -b, b, seed=seed, stream=stream)
    return init


def _simple(fn, **kw):
    return lambda t, seed, stream, mod, name: fn(t, **kw, seed=seed, stream=stream)


def _embedding(module):
    def init(t, seed, stream, mod, name):
        normal_(t, seed=seed, stream=stream)
        if module.padding_idx is not None:
            _zero_row(t, module.padding_idx)
        return t
    return init


def _zero_row(t, row):
    """t[row] = 0, for a plain tensor or the part of it a DTensor shard holds."""
    with torch.no_grad():
        if _is_dtensor(t):
            local, starts, lshape = _local_block(t)
            if local.numel() and starts[0] <= row < starts[0] + lshape[0]:
                local.detach()[row - starts[0]].zero_()
        elif not t.is_meta:
            t.detach()[row].zero_()


def _default_claims(module):
    """[(relative parameter path, label, init)] for ``module``'s torch defaults."""
    m = module
    out = []
    if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
        kind = "Linear" if isinstance(m, nn.Linear) else "Conv"
        out.append(("weight", f"default {kind}: kaiming_uniform_(a=sqrt(5))", _kaiming_a5))
        out.append(("bias", f"default {kind}: uniform_(+-1/sqrt(fan_in))", _linear_bias(m)))
    elif isinstance(m, nn.Bilinear):
        init = _uniform_bound(lambda: 1 / math.sqrt(m.weight.size(1)))
        out.append(("weight", "default Bilinear: uniform_(+-1/sqrt(in1_features))", init))
        out.append(("bias", "default Bilinear: uniform_(+-1/sqrt(in1_features))", init))
    elif isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
        label = "default Embedding: normal_(0, 1)"
        if m.padding_idx is not None:
            label += f", row {m.padding_idx} (padding_idx) zeroed"
        out.append(("weight", label, _embedding(m)))
    elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm,
                        nn.RMSNorm)):
        out.append(("weight", "default norm: ones_", _simple(ones_)))
        out.append(("bias", "default norm: zeros_", _simple(zeros_)))
    elif isinstance(m, nn.MultiheadAttention):
        xu = _simple(xavier_uniform_)
        for p in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            out.append((p, "default MultiheadAttention: xavier_uniform_", xu))
        if m.in_proj_bias is not None:
            out.append(("in_proj_bias", "default MultiheadAttention: zeros_", _simple(zeros_)))
            out.append(("out_proj.bias", "default MultiheadAttention: zeros_",
                        _simple(zeros_)))
        for p in ("bias_k", "bias_v"):
            out.append((p, "default MultiheadAttention: xavier_normal_",
                        _simple(xavier_normal_)))
    elif isinstance(m, (nn.RNNBase, nn.RNNCellBase)):
        init = _uniform_bound(lambda: 1.0 / math.sqrt(m.hidden_size) if m.hidden_size > 0
                              else 0)
        for name, _ in m.named_parameters(recurse=False):
            out.append((name, "default RNN: uniform_(+-1/sqrt(hidden_size))", init))
    elif isinstance(m, nn.PReLU):
        out.append(("weight", f"default PReLU: constant_({m.init})",
                    _simple(constant_, val=m.init)))
    elif isinstance(m, nn.Transformer):
        for name, p in m.named_parameters():
            if not _is_uninitialized(p) and p.dim() > 1:
                out.append((name, "default Transformer: xavier_uniform_",
                            _simple(xavier_uniform_)))
    return out


def _default_plan(module):
    """{qualified name: (label, _Init)}; a parent's claim (MultiheadAttention's
    out_proj.bias, Transformer's matrices) wins over its children's, as in torch."""
    claims = {}
    for mname, mod in module.named_modules():
        for rel, label, fn in _default_claims(mod):
            qual = f"{mname}.{rel}" if mname else rel
            claims.setdefault(qual, (label, _Init(label, fn)))
    return claims


@dataclass
class _Item:
    record: ParamRecord
    owner: nn.Module
    local: str
    init: object                    # _Init or None


def _reshard_fsdp(module):
    """FSDP2 swaps in unsharded parameters for a forward (and keeps the root's
    until the next one); writes into those would be lost, so put every
    FSDPModule back on its sharded DTensor parameters first."""
    mod = sys.modules.get("torch.distributed.fsdp")
    cls = getattr(mod, "FSDPModule", None) if mod is not None else None
    if cls is None:
        return
    for m in module.modules():
        if isinstance(m, cls):
            m.reshard()


def _plan(module, rules, seed, prefix, defaults, on_lazy, on_unmatched, fn):
    if on_lazy not in ("error", "defer"):
        raise ValueError(f"on_lazy must be 'error' or 'defer', got {on_lazy!r}")
    if on_unmatched not in ("error", "warn", "ignore"):
        raise ValueError(f"on_unmatched must be 'error', 'warn' or 'ignore', "
                         f"got {on_unmatched!r}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"{fn}: expected an nn.Module, got {type(module).__name__}")
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    seed = fi.initial_seed() if seed is None else _C.check_u64("seed", seed)
    user = _normalize_rules(rules)
    default = _default_plan(module) if defaults else {}
    report = InitReport(seed=seed)
    items, seen = [], {}
    for mname, owner in module.named_modules(remove_duplicate=False):
        for local, p in owner.named_parameters(recurse=False):
            name = f"{mname}.{local}" if mname else local
            if id(p) in seen:
                rec = seen[id(p)]
                if name != rec.name and name not in rec.aliases:
                    rec.aliases.append(name)
                continue
            lazy = _is_uninitialized(p)
            hit = _match_user(user, name, local, owner)
            if hit is None and name in default:
                hit = default[name]
            if hit is None:
                label, init, status = "no rule matched", None, "unmatched"
            else:
                label, init = hit
                status = ("planned" if not lazy else "deferred") if init else "kept"
            rec = ParamRecord(name=name, shape=None if lazy else tuple(p.shape),
                              dtype=None if lazy else p.dtype, rule=label,
                              stream=stream_for(prefix + name), status=status)
            seen[id(p)] = rec
            report.params.append(rec)
            items.append(_Item(rec, owner, local, init))
    lazy = [it.record.name for it in items if it.record.status == "deferred"]
    if lazy and on_lazy == "error":
        raise ValueError(
            f"{fn}: {len(lazy)} parameter(s) are uninitialized lazy parameters "
            f"({', '.join(lazy[:6])}{', ...' if len(lazy) > 6 else ''}): their shapes are "
            f"not known yet. Run a dry forward pass first (module(example_input)) so they "
            f"materialize, then call {fn}; or pass on_lazy='defer' to initialize each one "
            f"right after it materializes")
    odd = [f"{it.record.name} ({it.record.dtype})" for it in items
           if it.init is not None and not it.init.custom and it.record.dtype is not None
           and it.record.dtype not in FLOAT_DTYPES]
    if odd:
        raise TypeError(f"{fn}: fastinit fills float16, bfloat16, float32 and float64; "
                        f"{', '.join(odd)} would get a built-in initializer: give them a "
                        f"rule with value None (keep) or a callable of your own")
    missing = report.unmatched
    if missing:
        msg = (f"{fn}: no rule matched {len(missing)} parameter(s): {', '.join(missing)}. "
               f"Add a rule for them (a glob on the name such as {missing[0]!r}, or the "
               f"module type), a rule with value None to keep their current values, or "
               f"on_unmatched='warn'/'ignore'")
        if on_unmatched == "error":
            raise UnmatchedParametersError(msg, report)
        if on_unmatched == "warn":
            warnings.warn(msg, stacklevel=3)
    return report, items


def _run_item(item, seed):
    rec = item.record
    p = getattr(item.owner, item.local)
    item.init.fn(p, seed, rec.stream, item.owner, rec.name)
    rec.shape, rec.dtype, rec.status = tuple(p.shape), p.dtype, "initialized"
    return p


def _defer(items, seed):
    """Forward pre-hooks that initialize lazy parameters once they materialize.

    LazyModuleMixin materializes its parameters in a forward pre-hook that
    it registered at construction; ours is registered later, so it runs right
    after that one, in the same call, and then removes itself.
    """
    by_owner = {}
    for it in items:
        if it.record.status == "deferred":
            by_owner.setdefault(id(it.owner), (it.owner, []))[1].append(it)
    for owner, its in by_owner.values():
        handle_ref = []

        def hook(mod, args, its=its, handle_ref=handle_ref):
            if any(_is_uninitialized(getattr(it.owner, it.local)) for it in its):
                return None                      # not materialized yet: wait
            handle_ref[0].remove()
            for it in its:
                _run_item(it, seed)
            return None
        handle_ref.append(owner.register_forward_pre_hook(hook))


def _reset_buffers(module):
    """Buffers torch's reset_parameters sets: BatchNorm/InstanceNorm running stats."""
    done = []
    for mname, mod in module.named_modules():
        if isinstance(mod, nn.modules.batchnorm._NormBase) and mod.track_running_stats:
            if mod.running_mean is not None and not mod.running_mean.is_meta:
                mod.reset_running_stats()
                for b in ("running_mean", "running_var", "num_batches_tracked"):
                    done.append((f"{mname}.{b}" if mname else b, "reset_running_stats()"))
    return done


def init_module(module, rules=None, *, seed=None, prefix="", defaults=True,
                on_lazy="error", on_unmatched="error"):
    """Initialize every parameter of ``module`` in place; returns an InitReport.

    rules: a dict (or list of pairs), tried in order, first match wins;
    a key is a glob on the parameter's qualified name (fnmatch, e.g.
    ``"*.bias"``) or an nn.Module subclass (isinstance on the module that
    holds the parameter; its value may be a dict from the local name glob
    to an initializer). An initializer is a callable
    ``(tensor, *, seed, stream) -> tensor`` (it may also take ``name=`` and
    ``module=``), a name such as ``"zeros"``, a pair such as
    ``("normal", {"std": 0.02})``, or None to keep the current values.
    With ``defaults=True`` the parameters no rule matched get what their
    built-in module's reset_parameters draws.

    seed: None means ``fastinit.initial_seed()``. Each parameter's stream is
    ``stream_for(prefix + name)``, so values do not depend on traversal
    order; ``prefix`` lets a submodule initialized alone get the streams it
    has inside the full model (``init_module(model.layers[3],
    prefix="layers.3.")``).

    With ``defaults=True`` BatchNorm/InstanceNorm running statistics are
    reset too, as their reset_parameters does.

    on_lazy: "error" (uninitialized lazy parameters raise before any
    write) or "defer" (each is initialized right after it materializes).
    on_unmatched: "error" (default: raise UnmatchedParametersError before
    any write), "warn" or "ignore" (the parameter keeps its values).
    """
    t0 = time.perf_counter()
    _reshard_fsdp(module)
    report, items = _plan(module, rules, seed, prefix, defaults, on_lazy, on_unmatched,
                          "init_module")
    meta = [it.record.name for it in items if it.init is not None
            and getattr(it.owner, it.local).is_meta
            and not _is_uninitialized(getattr(it.owner, it.local))]
    if meta:
        raise ValueError(f"init_module: parameters on the meta device have no storage "
                         f"({', '.join(meta[:6])}{', ...' if len(meta) > 6 else ''}); use "
                         f"fastinit.torch.materialize(module, device=...)")
    for it in items:
        if it.init is not None and it.record.status == "planned":
            _run_item(it, report.seed)
    _defer(items, report.seed)
    if defaults:
        report.buffers = _reset_buffers(module)
    report.seconds = time.perf_counter() - t0
    return report


# ---------------------------------------------------------------------------
# 3. materialize
# ---------------------------------------------------------------------------
class _Progress:
    """A progress line on stderr (tqdm when installed), shown once a run passes
    PROGRESS_AFTER_S seconds (``enabled=True``: at once; False: never)."""

    def __init__(self, total, tensors, enabled):
        self.total, self.tensors = max(total, 1), tensors
        self.enabled, self.done, self.count = enabled, 0, 0
        self.t0 = time.perf_counter()
        self.last = -1.0
        self.bar = None
        self.shown = False

    def update(self, n):
        self.done += n
        self.count += 1
        if self.enabled is False:
            return
        now = time.perf_counter() - self.t0
        if not self.shown and (self.enabled is True or now >= PROGRESS_AFTER_S):
            self.shown = True
            try:
                import tqdm
                self.bar = tqdm.tqdm(total=self.total, initial=self.done, unit="el",
                                     unit_scale=True, desc="fastinit materialize",
                                     file=sys.stderr)
                return                           # ``initial`` already counts this one
            except ImportError:
                self.bar = None
        if not self.shown:
            return
        if self.bar is not None:
            self.bar.update(n)
        elif now - self.last >= PROGRESS_EVERY_S or self.count == self.tensors:
            self.last = now
            sys.stderr.write(
                f"\rfastinit materialize: {100 * self.done / self.total:5.1f}% "
                f"({self.count}/{self.tensors} tensors, {self.done / 1e9:.2f}/"
                f"{self.total / 1e9:.2f} G elements, {now:.1f} s)")
            sys.stderr.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def materialize(module, device="cpu", *, seed=None, rules=None, prefix="", defaults=True,
                on_unmatched="error", progress=None):
    """Allocate a meta-device ``module`` on ``device`` and initialize it in place.

    ``module.to_empty(device=device)`` allocates every parameter and buffer
    once (so peak memory is the model's size: no second copy), then each
    parameter is filled as init_module fills it (same rules, seed, prefix
    and streams: the values equal an init_module of the same model built on
    ``device``). Rules are checked before anything is allocated. Buffers
    torch's reset_parameters sets (norm running stats) are reset; buffers
    that were not on the meta device keep their values; any other buffer is
    left uninitialized and named in a warning. Shows progress on stderr
    (tqdm when installed) once it runs past about a second;
    ``progress=True``/``False`` forces it on/off. Returns the InitReport.
    """
    t0 = time.perf_counter()
    report, items = _plan(module, rules, seed, prefix, defaults, "error", on_unmatched,
                          "materialize")
    kept = {}
    for mname, mod in module.named_modules():
        for bname, b in mod.named_buffers(recurse=False):
            if b is not None and not b.is_meta:
                kept[(id(mod), bname)] = (mod, bname, b, f"{mname}.{bname}" if mname else bname)
    module.to_empty(device=device)
    for mod, bname, old, qual in kept.values():
        new = mod._buffers.get(bname)
        if new is None:
            continue
        if new.device == old.device and new.dtype == old.dtype and new.shape == old.shape:
            mod._buffers[bname] = old
        else:
            with torch.no_grad():
                new.copy_(old)
    todo = [it for it in items if it.init is not None and it.record.status == "planned"]
    total = sum(math.prod(it.record.shape) for it in todo)
    bar = _Progress(total, len(todo), progress)
    try:
        for it in todo:
            _run_item(it, report.seed)
            bar.update(math.prod(it.record.shape))
    finally:
        bar.close()
    report.buffers = _reset_buffers(module)
    done = {name for name, _ in report.buffers}
    unset = []
    for mname, mod in module.named_modules():
        for bname, b in mod.named_buffers(recurse=False):
            qual = f"{mname}.{bname}" if mname else bname
            if (id(mod), bname) in kept:
                report.buffers.append((qual, "kept (was not on the meta device)"))
            elif qual not in done:
                unset.append(qual)
                report.buffers.append((qual, "UNINITIALIZED (allocated by to_empty)"))
    if unset:
        warnings.warn(f"materialize: buffers {', '.join(unset)} were allocated by "
                      f"to_empty() and hold uninitialized memory; no built-in rule sets "
                      f"them: set them yourself", stacklevel=2)
    report.seconds = time.perf_counter() - t0
    return report


# ---------------------------------------------------------------------------
# 5. to_torch
# ---------------------------------------------------------------------------
def to_torch(x):
    """A torch tensor over ``x``'s memory, zero copy.

    NumPy arrays (fastinit buffers) go through torch.from_numpy, bfloat16
    ones as their int16 bits viewed as torch.bfloat16; cupy arrays and other
    DLPack producers through torch.from_dlpack; a torch tensor is returned
    as is.
    """
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype == np.dtype(ml_dtypes.bfloat16):
            return torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
        try:
            return torch.from_numpy(x)
        except TypeError as exc:
            raise TypeError(f"to_torch: torch has no dtype for NumPy {x.dtype}: "
                            f"{exc}") from None
    if hasattr(x, "__dlpack__"):
        return torch.from_dlpack(x)
    if hasattr(x, "__cuda_array_interface__"):
        return torch.as_tensor(x, device="cuda")
    raise TypeError(f"to_torch: expected a NumPy array, a torch tensor or an object with "
                    f"__dlpack__ (cupy, jax, ...), got {type(x).__name__}")
