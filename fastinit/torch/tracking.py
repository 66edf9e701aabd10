"""What the redirect knows about a model during an init run: names, writes, scopes.

``Tracker`` maps the model's parameters and buffers by object and by storage
(so a view, ``p.data`` or ``p.detach()`` is found), follows identity changes
(``.data =``, new Parameters), records every write and whether it covered
the tensor, finds the module whose init code is running (for the streams of
temporaries and the report), and fills a parameter's view by position. The
mode itself is fastinit.torch.redirect. docs/torch.md, section 6.
"""

import sys
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef

from .. import _contract
from .._contract import stream_for
from . import twins
from .dtensor import is_dtensor, local_block, write_positions
from .views import bump_version, overlap_error

WHOLE = "whole"
_SKIP_SCOPE = ("torch.nn.init", "torch.overrides", "transformers.initialization")
_SCOPE_DEPTH = 64              # frames searched for the module whose init code is running


@dataclass
class Named:
    """A parameter or buffer of the model, as the redirect tracks it."""
    name: str                       # qualified name (the first one, for tied tensors)
    kind: str                       # "parameter" or "buffer"
    tensor: object
    aliases: list = field(default_factory=list)
    writes: list = field(default_factory=list)     # labels, in order
    skipped: list = field(default_factory=list)    # writes skipped (through a tied name)
    stream: int = None              # stream of the last random fill
    covered: bool = False           # a write (or writes) covered every element
    moved: bool = False             # now another object or storage than at the start
    mask: object = None             # positions written so far, while partially written
    repeats: dict = field(default_factory=dict)
    protected: bool = False         # a rule keeps it: every write is skipped


@dataclass
class TorchDraw:
    """A draw left to torch's generator (reported, and named in one warning)."""
    target: str
    label: str
    reason: str


class Tracker:
    """Names, writes and scopes of one init run over ``module`` (the state behind
    :class:`fastinit.torch.redirect.Redirect`)."""

    def __init__(self, module, seed, prefix, protect, progress):
        self.module = module
        self.seed = _contract.initial_seed() if seed is None else _contract.check_u64("seed",
                                                                                      seed)
        self.prefix = prefix
        self._protect = set(protect)
        self._progress = progress
        self.named = {}
        self.log = []
        self.torch_draws = []
        self._temps = {}            # storage ptr -> [StorageWeakRef, label or None (garbage)]
        self._dviews = {}           # id(view of a DTensor entry) -> (weakref, Named, positions)
        self._tmp_count = {}
        self._codes = {}            # code object -> torch.nn.init name (set by the mode)
        self._dirty = True
        self.on_write = None        # callable(name) after each write to a named tensor
        self._reindex()
        for e in self.named.values():
            e.protected = e.name in self._protect

    def _on_registration(self, *args):
        self._dirty = True

    # --- names ------------------------------------------------------------------------
    def _reindex(self):
        """Map the model's parameters and buffers (by object and by storage)."""
        old = self.named
        named, by_id, by_ptr, mods = {}, {}, {}, {}
        for mname, mod in self.module.named_modules(remove_duplicate=False):
            mods.setdefault(id(mod), mname)
        for kind, items in (("parameter", self.module.named_parameters(remove_duplicate=False)),
                            ("buffer", self.module.named_buffers(remove_duplicate=False))):
            for name, t in items:
                e = by_id.get(id(t))
                if e is not None:
                    if name != e.name and name not in e.aliases:
                        e.aliases.append(name)
                    continue
                e = old.get(name)
                if e is None or e.kind != kind:
                    e = Named(name, kind, t, protected=name in self._protect)
                    e.moved = bool(old)                # registered during the run
                elif e.tensor is not t:
                    e.tensor, e.moved, e.covered, e.mask = t, True, False, None
                e.aliases = []
                named[name] = e
                by_id[id(t)] = e
                key = storage_key(t)
                if key is not None:
                    by_ptr.setdefault(key, []).append(e)
        self.named, self._by_id, self._by_ptr, self._mods = named, by_id, by_ptr, mods
        self._dirty = False

    def _resolve(self, t):
        """(Named, WHOLE or the view's geometry) for a tensor that is a model tensor or a
        view of one; None for anything else (a temporary, or a meta tensor)."""
        if self._dirty:
            self._reindex()
        e = self._by_id.get(id(t))
        if e is not None and e.tensor is t:
            return e, WHOLE
        if not isinstance(t, torch.Tensor):
            return None
        dv = self._dviews.get(id(t))
        if dv is not None and dv[0]() is t:
            return dv[1], ("dview", dv[2])
        key = storage_key(t)
        if key is None:
            return None
        cands = self._by_ptr.get(key)
        if not cands:
            return None
        dt = is_dtensor(t)
        for e in cands:
            p = e.tensor
            if dt:
                if (tuple(t.shape) == tuple(p.shape) and geometry(t._local_tensor)
                        == geometry(p._local_tensor)):
                    return e, WHOLE
                continue
            if is_dtensor(p) or t.dtype != p.dtype:
                continue
            if geometry(t) == geometry(p):
                return e, WHOLE
            lo, hi = span(t)
            plo, phi = span(p)
            if plo <= lo and hi <= phi:
                if (p.is_contiguous() and t.is_contiguous() and t.numel() == p.numel()
                        and lo == plo):
                    return e, WHOLE
                return e, geometry(t)
        return None

    def _scope(self):
        """(qualified name, code) of the module whose init code is running: the innermost
        frame outside fastinit, torch.nn.init and transformers' init wrappers with a
        local that is one of the model's modules (the deepest one, when a frame holds
        several); ("", None) when none is found."""
        if self._dirty:
            self._reindex()
        f = sys._getframe(2)
        for _ in range(_SCOPE_DEPTH):
            if f is None:
                break
            if f.f_globals.get("__name__", "") not in _SKIP_SCOPE and \
                    not f.f_globals.get("__name__", "").startswith("fastinit."):
                names = [self._mods[id(v)] for v in f.f_locals.values()
                         if isinstance(v, nn.Module) and id(v) in self._mods]
                if names:
                    return (max(names, key=lambda n: (n.count(".") + bool(n), len(n))),
                            getattr(f.f_code, "co_qualname", f.f_code.co_name))
            f = f.f_back
        return "", None

    def _through_alias(self, e, label):
        """Whether this write to the tied tensor ``e`` comes from the code of a module that
        holds only another name of it (``lm_head`` for ``lm_head.weight`` tied to
        ``embed.weight``): such writes are skipped, so the tensor gets what the code of
        its first name's module writes, as when ties are made after the init."""
        if not e.aliases:
            return False
        scope = self._scope()[0]
        best, best_len = None, -1
        for n in [e.name] + e.aliases:
            owner = n.rpartition(".")[0]
            if (owner == "" or scope == owner or scope.startswith(owner + ".")) and \
                    len(owner) > best_len:
                best, best_len = n, len(owner)
        if best is None or best == e.name:
            return False
        e.skipped.append(f"through {best}: {label}")
        self.log.append((e.name, f"skipped through {best}: {label}", None))
        return True

    def _temp_stream(self):
        scope = self._scope()[0]
        k = self._tmp_count.get(scope, 0)
        self._tmp_count[scope] = k + 1
        name = f"{scope}#tmp{k}"
        return name, stream_for(self.prefix + name)

    def _init_frame(self, depth=3):
        """(name, {argument: value}) of the torch.nn.init (or transformers) function
        that made this call, looking ``depth`` frames past fastinit's and the
        dispatcher's; (None, None) if none."""
        f = sys._getframe(1)
        while f is not None and (f.f_globals.get("__name__", "").startswith("fastinit.")
                                 or f.f_globals.get("__name__") == "torch.overrides"):
            f = f.f_back
        for _ in range(depth):
            if f is None:
                break
            name = self._codes.get(f.f_code)
            if name is not None:
                co = f.f_code
                names = co.co_varnames[:co.co_argcount + co.co_kwonlyargcount]
                loc = f.f_locals
                return name, {n: loc[n] for n in names if n in loc}
            f = f.f_back
        return None, None

    def _dview_random(self, e, geo, draw, stream, t):
        pos = geo[1].reshape(-1)

        def values(sel):
            p = pos[sel]
            lo = int(p.min())
            tmp = torch.empty(int(p.max()) - lo + 1, dtype=t.dtype,
                              device=e.tensor._local_tensor.device)
            draw(tmp, lo, self.seed, stream)
            return tmp[p - lo]
        self._dview_write(e, geo, values)

    def _fill_positions(self, t, e, draw, stream):
        """Fill the view ``t`` of the contiguous ``e.tensor`` with the values of its
        positions in the parameter (element offsets from the parameter's first)."""
        if t.numel() == 0 or t.is_meta:
            return
        base = t.storage_offset() - e.tensor.storage_offset()
        v = t.detach()
        if v.is_contiguous():
            draw(v, base, self.seed, stream)
        else:
            err = overlap_error(v)
            if err is not None:
                raise ValueError(f"fastinit.torch.redirect: {e.name}: {err}")
            n = span(v)[1] - span(v)[0]
            tmp = torch.empty(n, dtype=v.dtype, device=v.device)
            draw(tmp, base, self.seed, stream)
            v.copy_(tmp.as_strided(v.shape, v.stride(), 0))
        bump_version(t)

    def _dview_write(self, e, geo, values):
        with torch.no_grad():
            write_positions(e.tensor, geo[1], values)

    def _wrote(self, e, t, geo, label, index=None):
        if geo is not WHOLE or index is not None:
            label += f" (on {part_text(t, index)})"
        where = self._scope()[1]
        if where:
            label = f"{where}: {label}"
        e.writes.append(label)
        self.log.append((e.name, label, e.stream))
        if self.on_write is not None:
            self.on_write(e.name)
        if e.covered:
            return
        if geo is WHOLE and index is None:
            e.covered, e.mask = True, None
        elif is_dtensor(e.tensor) or e.tensor.is_meta:
            return                                      # partial writes of a DTensor: not tracked
        else:
            p = e.tensor
            if e.mask is None:
                e.mask = torch.zeros(span(p)[1] - span(p)[0], dtype=torch.bool,
                                     device="cpu")
            g = geometry(t) if geo is WHOLE else geo
            view = e.mask.as_strided(g[1], g[2], g[0] - p.storage_offset())
            if index is None:
                view.fill_(True)
            else:
                try:
                    view[index] = True
                except Exception:                       # an index only torch's own tensor takes
                    view.fill_(True)
            if bool(e.mask.as_strided(p.shape, p.stride(), 0).all()):
                e.covered, e.mask = True, None
        if e.covered and self._progress is not None and e.kind == "parameter":
            self._progress(e.tensor.numel())

    def _mark_temp(self, t, label):
        if t.is_meta or is_dtensor(t):
            return
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr:
            rec = self._temps.get(ptr)
            if rec is not None and not rec[0].expired():
                rec[1] = label
            else:
                self._temps[ptr] = [StorageWeakRef(st), label]

    def _temp_record(self, x):
        if not isinstance(x, torch.Tensor) or x.is_meta or is_dtensor(x):
            return None
        rec = self._temps.get(x.untyped_storage().data_ptr())
        if rec is None or rec[0].expired():
            return None
        return rec

    def _is_garbage(self, x):
        rec = self._temp_record(x)
        return rec is not None and rec[1] is None

    def _provenance(self, x):
        if not isinstance(x, torch.Tensor):
            return repr(x)
        hit = self._resolve(x)
        if hit is not None:
            return hit[0].name
        rec = self._temp_record(x)
        if rec is not None:
            return rec[1] or "torch.empty"
        return f"a tensor {tuple(x.shape)}"

    def _finish_moved(self):
        """Tensors that are other objects than at the start (``module.w = nn.Parameter(..)``
        in the init code) count as set unless their storage is fresh ``torch.empty``
        memory nothing wrote."""
        for e in self.named.values():
            if e.moved and not e.covered and not e.tensor.is_meta:
                if not self._is_garbage(e.tensor):
                    e.covered = True
                    e.writes.append(f"created by the init code ({self._provenance(e.tensor)})")

    def unset(self, kind="parameter"):
        """Names of the parameters (or buffers) the run did not set."""
        return [e.name for e in self.named.values() if e.kind == kind and not e.covered]


def label_of(name, params):
    shown = ", ".join(f"{k}={value_text(v)}" for k, v in params.items()
                      if not (k == "generator" and v is None))
    return f"{name}({shown})"


def is_dview(geo):
    return isinstance(geo, tuple) and len(geo) == 2 and geo[0] == "dview"


def geo_key(geo):
    if is_dview(geo):
        p = geo[1].reshape(-1)
        return ("dview", tuple(geo[1].shape), int(p[0]) if p.numel() else 0,
                int(p[-1]) if p.numel() else 0)
    return geo


def values_of(op, args, pos):
    """values(sel) for a fill_/zero_/copy_ into a DTensor view with positions ``pos``."""
    if op == "zero_":
        return lambda sel: 0.0
    src = args[1]
    if op == "fill_":
        return lambda sel: src.item() if isinstance(src, torch.Tensor) else src
    if is_dtensor(src):
        src = src.full_tensor()
    return lambda sel: src.expand(pos.shape).reshape(-1)[sel]


def hashable(v):
    try:
        hash(v)
        return v
    except TypeError:
        return repr(v)


def index_text(idx):
    if isinstance(idx, tuple):
        return ", ".join(index_text(i) for i in idx)
    if isinstance(idx, slice):
        return ":".join("" if v is None else str(v) for v in (idx.start, idx.stop)) + (
            f":{idx.step}" if idx.step is not None else "")
    if isinstance(idx, torch.Tensor):
        return f"tensor{tuple(idx.shape)}"
    return repr(idx)


def part_text(t, index):
    if index is not None:
        return f"[{index_text(index)}]"
    return f"a view of {t.numel()} element(s)"


def value_text(v):
    if isinstance(v, torch.Tensor):
        return f"tensor{tuple(v.shape)}"
    if isinstance(v, torch.Generator):
        return "torch.Generator"
    return repr(v)


def storage_key(t):
    if is_dtensor(t):
        t = t._local_tensor
    if t.is_meta or twins.is_uninitialized(t):
        return None
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None
    return ptr or None


def geometry(t):
    return (t.storage_offset(), tuple(t.shape), tuple(t.stride()))


def span(t):
    """[first, last + 1) storage offsets of ``t``'s elements."""
    lo = t.storage_offset()
    if t.numel() == 0:
        return lo, lo
    return lo, lo + 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))


def copy_block(d, src):
    """Copy this rank's block of the full tensor ``src`` into DTensor ``d``."""
    local, starts, lshape = local_block(d)
    sl = tuple(slice(s, s + n) for s, n in zip(starts, lshape))
    with torch.no_grad():
        local.detach().copy_(src[sl])
    bump_version(d)
