"""``init_module``: rules, the torch defaults, the report, lazy parameters.

Every parameter is filled by the twin its rule names, from the stream of its
qualified name (``stream_for``), so a value depends on (seed, name, element
index) and never on traversal order. docs/torch.md, section 2.
"""

import fnmatch
import inspect
import math
import sys
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import _contract
from .._contract import stream_for
from . import twins
from .dtensor import is_dtensor, local_block
from .twins import (FLOAT_DTYPES, constant_, fans, is_uninitialized, kaiming_normal_,
                    kaiming_uniform_, masked_uniform_, normal_, ones_, trunc_normal_,
                    uniform_, xavier_normal_, xavier_uniform_, zeros_)

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
        if mod == twins.__name__:
            label = f"{spec.__name__}()"

        def call(t, seed, stream, module, name):
            kw = {"module": module, "name": name}
            return spec(t, seed=seed, stream=stream, **{k: kw[k] for k in extra})
        return _Init(label, call, custom=mod != twins.__name__)
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
        fan_in = fans(tuple(weight.shape))[0] if weight.dim() >= 2 else 0
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
        if is_dtensor(t):
            local, starts, lshape = local_block(t)
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
            if not is_uninitialized(p) and p.dim() > 1:
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


def plan(module, rules, seed, prefix, defaults, on_lazy, on_unmatched, fn):
    if on_lazy not in ("error", "defer"):
        raise ValueError(f"on_lazy must be 'error' or 'defer', got {on_lazy!r}")
    if on_unmatched not in ("error", "warn", "ignore"):
        raise ValueError(f"on_unmatched must be 'error', 'warn' or 'ignore', "
                         f"got {on_unmatched!r}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"{fn}: expected an nn.Module, got {type(module).__name__}")
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    seed = _contract.initial_seed() if seed is None else _contract.check_u64("seed", seed)
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
            lazy = is_uninitialized(p)
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


def run_item(item, seed):
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
            if any(is_uninitialized(getattr(it.owner, it.local)) for it in its):
                return None                      # not materialized yet: wait
            handle_ref[0].remove()
            for it in its:
                run_item(it, seed)
            return None
        handle_ref.append(owner.register_forward_pre_hook(hook))


def reset_buffers(module):
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
    report, items = plan(module, rules, seed, prefix, defaults, on_lazy, on_unmatched,
                         "init_module")
    meta = [it.record.name for it in items if it.init is not None
            and getattr(it.owner, it.local).is_meta
            and not is_uninitialized(getattr(it.owner, it.local))]
    if meta:
        raise ValueError(f"init_module: parameters on the meta device have no storage "
                         f"({', '.join(meta[:6])}{', ...' if len(meta) > 6 else ''}); use "
                         f"fastinit.torch.materialize(module, device=...)")
    for it in items:
        if it.init is not None and it.record.status == "planned":
            run_item(it, report.seed)
    _defer(items, report.seed)
    if defaults:
        report.buffers = reset_buffers(module)
    report.seconds = time.perf_counter() - t0
    return report
