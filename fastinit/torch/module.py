"""``init_module``: the model's own init code under the redirect, then rules; the report.

By default the model's own init runs (its root ``init_weights()``, else every
module's ``reset_parameters()``, children first) with every random draw
redirected to fastinit (``redirect``); user rules are applied after it. A
parameter's values depend on (seed, its qualified name, the init code), never
on traversal or registration order. docs/torch.md, sections 2 and 6.
"""

import sys
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import _contract
from .._contract import stream_for
from . import rules as _rules
from .redirect import Redirect
from .rules import SPECS  # noqa: F401  (public: the initializer names rules accept)
from .twins import FLOAT_DTYPES, is_uninitialized


class UnmatchedParametersError(ValueError):
    """Parameters that neither the init code nor a rule set; ``.report`` lists them all."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


@dataclass
class ParamRecord:
    """One parameter of an init_module/materialize report."""
    name: str
    shape: tuple
    dtype: object
    rule: str                          # what set it last: the init's call or the rule
    stream: int
    status: str                        # initialized | deferred | kept | unmatched | planned
    aliases: list = field(default_factory=list)
    history: list = field(default_factory=list)   # every write the init code made, in order


@dataclass
class InitReport:
    """What init_module/materialize did to every parameter, in module order."""
    seed: int
    params: list = field(default_factory=list)
    buffers: list = field(default_factory=list)      # (name, action)
    seconds: float = 0.0
    init: str = ""                                   # the init code that ran
    torch_draws: list = field(default_factory=list)  # draws left to torch's generator

    @property
    def unmatched(self):
        """Names of the parameters that neither the init code nor a rule set."""
        return [p.name for p in self.params if p.status == "unmatched"]

    @property
    def deferred(self):
        """Names of lazy parameters waiting for their first forward."""
        return [p.name for p in self.params if p.status == "deferred"]

    @property
    def untouched(self):
        """Names of the parameters the init code never wrote (rules may have)."""
        return [p.name for p in self.params if not p.history and p.status != "deferred"]

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
        rows = [("name", "shape", "dtype", "stream", "status", "set by")]
        for p in self.params:
            shape = "?" if p.shape is None else "x".join(map(str, p.shape)) or "()"
            dtype = str(p.dtype).replace("torch.", "")
            name = p.name + (f" (= {', '.join(p.aliases)})" if p.aliases else "")
            rows.append((name, shape, dtype, f"{p.stream:016x}", p.status, p.rule))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5]
                 for r in rows]
        lines.append(f"{len(self.params)} parameters, seed {self.seed}, "
                     f"{len(self.unmatched)} unmatched, {len(self.deferred)} deferred"
                     + (f"; init: {self.init}" if self.init else ""))
        untouched = self.untouched
        if self.init and untouched:
            lines.append(f"never written by the init code: {', '.join(untouched)}")
        for name, action in self.buffers:
            lines.append(f"buffer {name}: {action}")
        for d in self.torch_draws:
            lines.append(f"torch's generator: {d.target}: {d.label} ({d.reason})")
        return "\n".join(lines)


@dataclass
class _Item:
    record: ParamRecord
    owner: nn.Module
    local: str
    init: object                    # a rule's _Init, or None (no rule, or kept)
    ruled: bool = False             # a user rule matched (init None: keep)


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


# --- the model's own init ------------------------------------------------------------
def reset_all(module):
    """Every module's own ``reset_parameters()`` (``_reset_parameters()`` where that is
    all it has, as MultiheadAttention and Transformer), children before parents, each
    module once: the order the constructors ran them in."""
    seen = set()

    def visit(m):
        if id(m) in seen:
            return
        seen.add(id(m))
        for child in m.children():
            visit(child)
        fn = getattr(m, "reset_parameters", None)
        if not callable(fn):
            fn = getattr(m, "_reset_parameters", None)
        if callable(fn):
            fn()
    visit(module)


def resolve_init(module, init, defaults, fn):
    """(label, callable(module)) of the init code to run, or (None, None)."""
    if not defaults or init is False:
        return None, None
    if init is None:
        own = getattr(module, "init_weights", None)
        if callable(own):
            name = f"{type(module).__name__}.init_weights()"

            def run(m):
                try:
                    m.init_weights()
                except TypeError as exc:
                    if "argument" not in str(exc):
                        raise
                    raise TypeError(f"{fn}: {name} needs arguments ({exc}); name the init: "
                                    f"init=lambda m: m.init_weights(...)") from exc
            return name, run
        return "reset_parameters()", reset_all
    if callable(init):
        return getattr(init, "__qualname__", None) or repr(init), init
    raise TypeError(f"{fn}: init must be None (the model's own), a callable taking the "
                    f"module, or False (rules only), got {init!r}")


def plan(module, rules, seed, prefix, on_lazy, on_unmatched, fn, on_unused_rule="error"):
    """Check everything that can be checked before a write; the report and its items."""
    if on_lazy not in ("error", "defer"):
        raise ValueError(f"on_lazy must be 'error' or 'defer', got {on_lazy!r}")
    if on_unmatched not in ("error", "warn", "ignore"):
        raise ValueError(f"on_unmatched must be 'error', 'warn' or 'ignore', "
                         f"got {on_unmatched!r}")
    if on_unused_rule not in ("error", "warn", "ignore"):
        raise ValueError(f"on_unused_rule must be 'error', 'warn' or 'ignore', "
                         f"got {on_unused_rule!r}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"{fn}: expected an nn.Module, got {type(module).__name__}")
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    seed = _contract.initial_seed() if seed is None else _contract.check_u64("seed", seed)
    user = _rules.normalize(rules)
    report = InitReport(seed=seed)
    items, seen, used = [], {}, set()
    for mname, owner in module.named_modules(remove_duplicate=False):
        for local, p in owner.named_parameters(recurse=False):
            name = f"{mname}.{local}" if mname else local
            if id(p) in seen:
                rec = seen[id(p)]
                if name != rec.name and name not in rec.aliases:
                    rec.aliases.append(name)
                continue
            lazy = is_uninitialized(p)
            hit = _rules.match(user, name, local, owner)
            if hit is None:
                label, init, status, ruled = "", None, "planned", False
            else:
                label, init, rid = hit
                used.add(rid)
                ruled = True
                status = "kept" if init is None else "planned"
            if lazy:
                status = "deferred"
            rec = ParamRecord(name=name, shape=None if lazy else tuple(p.shape),
                              dtype=None if lazy else p.dtype, rule=label,
                              stream=stream_for(prefix + name), status=status)
            seen[id(p)] = rec
            report.params.append(rec)
            items.append(_Item(rec, owner, local, init, ruled))
    unused = [rid for rid in _rules.rule_ids(user) if rid not in used]
    if unused and on_unused_rule != "ignore":
        msg = _rules.unused_message(user, unused, [p.name for p in report.params], module, fn)
        if on_unused_rule == "error":
            raise ValueError(msg)
        warnings.warn(msg, stacklevel=3)
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
    return report, items


def unruled(report, items):
    """With no init code to run: mark the parameters no rule matched; their names."""
    out = []
    for it in items:
        if not it.ruled and it.record.status != "deferred":
            it.record.status, it.record.rule = "unmatched", "no rule matched"
            out.append(it.record.name)
    return out


def unmatched_error(report, names, fn, init_label, on_unmatched):
    """Raise or warn about parameters that nothing set (``on_unmatched``)."""
    if not names or on_unmatched == "ignore":
        return
    how = (f"the init code ({init_label}) did not write them and no rule matched them"
           if init_label else "no rule matched them")
    msg = (f"{fn}: {len(names)} parameter(s) were not set: {', '.join(names)}; {how}. "
           f"Provide each with a rule, a glob on its name (rules={{{names[0]!r}: "
           f"('normal', {{'std': 0.02}})}}) or its module type; a rule with value None "
           f"keeps its current values; or pass on_unmatched='warn'/'ignore'")
    if on_unmatched == "error":
        raise UnmatchedParametersError(msg, report)
    warnings.warn(msg, stacklevel=3)


def run(module, report, items, *, init_label, init_fn, prefix, progress=None,
        device=None, on_write=None):
    """Run ``init_fn`` under the redirect, then the rules; fill in the report. Returns the
    Redirect (its ``named`` tells which buffers the run set). ``on_write(name)`` is
    called after each write the init code makes to a parameter or buffer, and after
    each rule's fill."""
    kept = {it.record.name for it in items if it.record.status == "kept"}
    red = None
    if init_fn is not None:
        report.init = init_label
        red = Redirect(module, report.seed, prefix=prefix, protect=kept, progress=progress)
        red.on_write = on_write
        ctx = torch.device(device) if device is not None else _null()
        with ctx, red:
            init_fn(module)
        report.torch_draws = list(red.torch_draws)
    aliases = {}
    if red is not None:
        for e in red.named.values():
            for a in e.aliases:
                aliases[a] = e
    for it in items:
        rec = it.record
        e = red.named.get(rec.name) if red is not None else None
        if e is None and rec.name in aliases and rec.status == "planned" and it.init is None:
            e = aliases[rec.name]                         # the init code tied it
            rec.status, rec.rule = "initialized", f"tied to {e.name} by the init code"
            rec.history = list(e.writes)
            continue
        if e is not None:
            rec.history = list(e.writes)
        if rec.status in ("kept", "deferred", "unmatched"):
            if rec.status == "kept" and not rec.rule:
                rec.rule = "kept"
            continue
        if it.init is not None:
            run_item(it, report.seed)
            if on_write is not None:
                on_write(rec.name)
        elif e is not None and e.covered:
            rec.status = "initialized"
            rec.rule = e.writes[-1]
            if e.stream is not None:
                rec.stream = e.stream
            p = getattr(it.owner, it.local)
            rec.shape, rec.dtype = tuple(p.shape), p.dtype
        else:
            rec.status = "unmatched"
            rec.rule = (f"not written by {init_label}, no rule matched" if init_fn
                        else "no rule matched")
    if red is not None:                               # parameters the init code added
        planned = {it.record.name for it in items}
        for e in red.named.values():
            if e.kind != "parameter" or e.name in planned:
                continue
            p = e.tensor
            report.params.append(ParamRecord(
                name=e.name, shape=tuple(p.shape), dtype=p.dtype,
                rule=e.writes[-1] if e.covered else f"added by {init_label}, never written",
                stream=e.stream if e.stream is not None else stream_for(prefix + e.name),
                status="initialized" if e.covered else "unmatched", aliases=list(e.aliases),
                history=list(e.writes)))
    return red


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def run_item(item, seed):
    rec = item.record
    p = getattr(item.owner, item.local)
    item.init.fn(p, seed, rec.stream, item.owner, rec.name)
    rec.shape, rec.dtype, rec.status = tuple(p.shape), p.dtype, "initialized"
    return p


def _defer(items, report, prefix, init_label):
    """Forward pre-hooks that initialize lazy parameters once they materialize.

    LazyModuleMixin materializes its parameters in a forward pre-hook that
    it registered at construction (and runs the module's reset_parameters
    with torch's generator); ours is registered later, so it runs right
    after that one, in the same call: the owner's reset_parameters under
    the redirect (unless rules set every deferred parameter), then the
    rules, and it removes itself.
    """
    by_owner = {}
    for it in items:
        if it.record.status == "deferred":
            by_owner.setdefault(id(it.owner), (it.owner, []))[1].append(it)
    names = {id(m): n for n, m in _named_modules(items)}
    for owner, its in by_owner.values():
        handle_ref = []

        def hook(mod, args, its=its, handle_ref=handle_ref, owner=owner):
            if any(is_uninitialized(getattr(it.owner, it.local)) for it in its):
                return None                      # not materialized yet: wait
            handle_ref[0].remove()
            free = [it for it in its if not it.ruled]
            if free and init_label is not None:
                oname = names.get(id(owner), "")
                sub = InitReport(seed=report.seed)
                sub_items = []
                for it in free:
                    rec = it.record
                    sub_items.append(_Item(ParamRecord(it.local, None, None, "", rec.stream,
                                                       "planned"), owner, it.local, None))
                run(owner, sub, sub_items, init_label="reset_parameters()",
                    init_fn=reset_all, prefix=prefix + (f"{oname}." if oname else ""))
                for it, s in zip(free, sub_items):
                    it.record.status, it.record.rule = s.record.status, s.record.rule
                    it.record.history, it.record.stream = s.record.history, s.record.stream
                    it.record.shape, it.record.dtype = s.record.shape, s.record.dtype
            for it in its:
                if it.ruled and it.init is not None:
                    run_item(it, report.seed)
                elif it.ruled:
                    it.record.status = "kept"
            return None
        handle_ref.append(owner.register_forward_pre_hook(hook))


def _named_modules(items):
    seen = {}
    for it in items:
        name = it.record.name
        local = it.local
        mname = name[:-len(local) - 1] if name != local else ""
        seen.setdefault(id(it.owner), (mname, it.owner))
    return list(seen.values())


def reset_buffers(module):
    """Buffers torch's reset_parameters sets: BatchNorm/InstanceNorm running stats
    (for ``defaults=False``, where no init code runs)."""
    done = []
    for mname, mod in module.named_modules():
        if isinstance(mod, nn.modules.batchnorm._NormBase) and mod.track_running_stats:
            if mod.running_mean is not None and not mod.running_mean.is_meta:
                mod.reset_running_stats()
                for b in ("running_mean", "running_var", "num_batches_tracked"):
                    done.append((f"{mname}.{b}" if mname else b, "reset_running_stats()"))
    return done


def init_module(module, rules=None, *, seed=None, prefix="", init=None, defaults=True,
                on_lazy="error", on_unmatched="error", on_unused_rule="error"):
    """Initialize every parameter of ``module`` in place; returns an InitReport.

    The model's own init code runs first, with every random draw redirected
    to fastinit (see :func:`fastinit.torch.redirect`): ``init=None`` picks
    it (the root's ``init_weights()`` if it has one, as transformers'
    models and torchtitan-style models do; else every module's
    ``reset_parameters()``, children before parents); a callable
    ``init(module)`` names it; ``defaults=False`` (or ``init=False``) runs
    none. Then the rules, which win.

    rules: a dict (or list of pairs), tried in order, first match wins;
    a key is a glob on the parameter's qualified name (fnmatch, e.g.
    ``"*.bias"``) or an nn.Module subclass (isinstance on the module that
    holds the parameter; its value may be a dict from the local name glob
    to an initializer). An initializer is a callable
    ``(tensor, *, seed, stream) -> tensor`` (it may also take ``name=`` and
    ``module=``), a name such as ``"zeros"``, a pair such as
    ``("normal", {"std": 0.02})``, or None to keep the current values (the
    init code's writes to it are skipped). A rule that matches no
    parameter is an error (``on_unused_rule="warn"``/``"ignore"``).

    seed: None means ``fastinit.initial_seed()``. A parameter's stream is
    ``stream_for(prefix + name)`` (docs/stream.md), so values do not depend
    on traversal order; ``prefix`` lets a submodule initialized alone get
    the streams it has inside the full model (``init_module(model.layers[3],
    prefix="layers.3.")``).

    on_lazy: "error" (uninitialized lazy parameters raise before any
    write) or "defer" (each is initialized right after it materializes).
    on_unmatched: parameters that neither the init code nor a rule set
    raise UnmatchedParametersError (default; after the init code ran, or
    before any write when no init code runs), or "warn"/"ignore" (they keep
    their values).
    """
    t0 = time.perf_counter()
    _reshard_fsdp(module)
    report, items = plan(module, rules, seed, prefix, on_lazy, on_unmatched, "init_module",
                         on_unused_rule)
    meta = [it.record.name for it in items if it.record.status != "deferred"
            and getattr(it.owner, it.local).is_meta]
    if meta:
        raise ValueError(f"init_module: parameters on the meta device have no storage "
                         f"({', '.join(meta[:6])}{', ...' if len(meta) > 6 else ''}); use "
                         f"fastinit.torch.materialize(module, device=...)")
    label, init_fn = resolve_init(module, init, defaults, "init_module")
    if init_fn is None:                      # rules only: unmatched ones are known now
        unmatched_error(report, unruled(report, items), "init_module", None, on_unmatched)
    red = run(module, report, items, init_label=label, init_fn=init_fn, prefix=prefix)
    _defer(items, report, prefix, label)
    if init_fn is None:
        report.buffers = reset_buffers(module) if defaults else []
    else:
        report.buffers = buffer_actions(red)
        unmatched_error(report, report.unmatched, "init_module", label, on_unmatched)
    report.seconds = time.perf_counter() - t0
    return report


def buffer_actions(red):
    """(name, what the init code wrote last) for each buffer it wrote."""
    return [(e.name, e.writes[-1]) for e in red.named.values()
            if e.kind == "buffer" and e.writes]


__all__ = ["init_module", "InitReport", "ParamRecord", "UnmatchedParametersError",
           "reset_all", "resolve_init", "plan", "run", "run_item", "reset_buffers",
           "buffer_actions", "unmatched_error", "unruled"]
