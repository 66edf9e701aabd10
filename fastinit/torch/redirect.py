"""``redirect``: run a model's own init code with every random draw from fastinit.

A ``TorchFunctionMode`` sees each call the init code makes. A random fill of
a parameter or buffer (or of a view of one) goes to the fastinit twin, drawn
from the stream of the tensor's qualified name at the view's positions; a
random draw into any other tensor (a temporary) gets a stream from the module
whose init code drew it and the draw's order there. Every other call runs as
it is; writes (``fill_``, ``zero_``, ``copy_``, ``x[...] = ``, ``.data =``,
``out=``) are recorded, so the run knows which parameters and buffers it set
and what set each last. docs/torch.md, section 6; the streams are
docs/stream.md, "Parameter streams under the redirect".
"""

import inspect
import sys
import types
import warnings
import weakref

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode, handle_torch_function, has_torch_function_unary

from .._contract import stream_for
from . import structured, twins
from .dtensor import basic_index, is_dtensor, positions_of
from .tracking import (WHOLE, TorchDraw, Tracker, copy_block, geo_key, hashable,
                       index_text, is_dview, label_of, value_text, values_of)
from .twins import FLOAT_DTYPES

_T = torch.Tensor
_INIT = torch.nn.init
# torch.nn.init functions that reach the mode as themselves (handle_torch_function)
# and the ones whose inner Tensor.uniform_/normal_ the mode recognises by frame.
TWIN_NAMES = ("uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "xavier_normal_",
              "kaiming_uniform_", "kaiming_normal_")
# torch.nn.init's structured initializers: they do not reach a TorchFunctionMode as
# themselves, so their code is swapped while a redirect is active (see _Structured)
STRUCTURED = ("orthogonal_", "sparse_", "eye_", "dirac_")
WRITE_NAMES = ("constant_", "ones_", "zeros_")
EMPTY_FUNCS = (torch.empty, torch.empty_like, torch.empty_strided, _T.new_empty,
               _T.new_empty_strided)
OTHER_RANDOM = (_T.random_, _T.bernoulli_, _T.exponential_, _T.geometric_, _T.log_normal_,
                _T.cauchy_, torch.randint, torch.randint_like, torch.randperm, torch.bernoulli,
                torch.multinomial, torch.poisson, _T.bernoulli, _T.multinomial)
_DATA_SET = torch._C.TensorBase.data.__set__


def _originals():
    """{name: torch's own function}, even while transformers has rebound them."""
    hf = sys.modules.get("transformers.initialization")
    table = getattr(hf, "TORCH_INIT_FUNCTIONS", {}) if hf is not None else {}
    out = {}
    for name in TWIN_NAMES + STRUCTURED + WRITE_NAMES:
        fn = table.get(name) or getattr(_INIT, name)
        if getattr(fn, "__module__", "") != "torch.nn.init":
            fn = getattr(_INIT, name)
        out[name] = fn
    return out


def _wrappers():
    """transformers' own init wrappers (transformers.initialization), if loaded: during
    ``init_weights()`` they are bound to torch.nn.init's names, so the mode sees them."""
    hf = sys.modules.get("transformers.initialization")
    if hf is None:
        return {}
    return {name: getattr(hf, name) for name in TWIN_NAMES + STRUCTURED + WRITE_NAMES + ("copy_",)
            if callable(getattr(hf, name, None))}


class Redirect(Tracker, TorchFunctionMode):
    """The mode behind :func:`redirect`; use it as a context manager.

    After the block: ``.named`` ({name: Named}), ``.torch_draws``,
    ``.unset(kind)`` and ``.log`` (every fill and write, in order).
    """

    def __init__(self, module, seed=None, *, prefix="", protect=(), progress=None,
                 on_torch_draw="warn"):
        if not isinstance(module, nn.Module):
            raise TypeError(f"redirect: expected an nn.Module, got {type(module).__name__}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        if on_torch_draw not in ("warn", "ignore"):
            raise ValueError(f"on_torch_draw must be 'warn' or 'ignore', got {on_torch_draw!r}")
        TorchFunctionMode.__init__(self)
        Tracker.__init__(self, module, seed, prefix, protect, progress)
        self.on_torch_draw = on_torch_draw
        self._hooks = []
        self._saved_trunc = None
        self._swapped = False

    # --- entering and leaving ---------------------------------------------------------
    def __enter__(self):
        originals = _originals()
        wrappers = _wrappers()
        kinds = {}
        for name, fn in list(originals.items()) + list(wrappers.items()):
            if name in TWIN_NAMES:
                kinds[fn] = ("init", name)
            elif name in STRUCTURED:
                kinds[fn] = ("structured", name)
            elif name in WRITE_NAMES or name == "copy_":
                kinds[fn] = ("write_fn", name)
        kinds[_T.uniform_] = ("tensor_random", "uniform_")
        kinds[_T.normal_] = ("tensor_random", "normal_")
        for fn, name in ((torch.randn, "normal_"), (torch.randn_like, "normal_"),
                         (torch.rand, "uniform_"), (torch.rand_like, "uniform_"),
                         (torch.normal, "normal_")):
            kinds[fn] = ("create_random", name)
        for fn in OTHER_RANDOM:
            kinds[fn] = ("other_random", getattr(fn, "__name__", repr(fn)))
        for fn in (_T.fill_, _T.zero_, _T.copy_, _T.__setitem__):
            kinds[fn] = ("write", fn.__name__)
        kinds[_DATA_SET] = ("data_set", ".data =")
        kinds[_T.__getitem__] = ("getitem", "__getitem__")
        for fn in EMPTY_FUNCS:
            kinds[fn] = ("empty", fn.__name__)
        kinds[_trunc_helper] = ("trunc", "trunc_normal_")
        self._kinds = kinds
        self._sigs = {name: inspect.signature(fn) for name, fn in originals.items()}
        self._codes = {}
        for name, fn in originals.items():
            self._codes[fn.__code__] = name
        for name, fn in wrappers.items():
            code = getattr(fn, "__code__", None)
            if code is not None:
                self._codes.setdefault(code, name)
        # torch's trunc_normal_ runs a rejection loop: catch it as a whole
        if _INIT._no_grad_trunc_normal_ is not _trunc_helper:
            self._saved_trunc = _INIT._no_grad_trunc_normal_
            _INIT._no_grad_trunc_normal_ = _trunc_helper
        # orthogonal_, sparse_, eye_, dirac_ reach the mode as one call (the function
        # objects keep their identity, so transformers' saved references see it too)
        self._swapped = _STRUCTURED.swap_in()
        mm = torch.nn.modules.module
        for reg in (mm.register_module_parameter_registration_hook,
                    mm.register_module_buffer_registration_hook,
                    mm.register_module_module_registration_hook):
            self._hooks.append(reg(self._on_registration))
        _clear_hf_flags(self.module)
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            if self._saved_trunc is not None:
                _INIT._no_grad_trunc_normal_ = self._saved_trunc
                self._saved_trunc = None
            if self._swapped:
                _STRUCTURED.swap_out()
                self._swapped = False
            for h in self._hooks:
                h.remove()
            self._hooks = []
            if self._dirty:
                self._reindex()
            self._finish_moved()
            if self.torch_draws and self.on_torch_draw == "warn" and exc[0] is None:
                shown = "; ".join(f"{d.target}: {d.label} ({d.reason})"
                                  for d in self.torch_draws[:8])
                more = f"; and {len(self.torch_draws) - 8} more" if len(
                    self.torch_draws) > 8 else ""
                warnings.warn(f"fastinit.torch.redirect: {len(self.torch_draws)} draw(s) came "
                              f"from torch's generator, not fastinit's stream: {shown}{more}",
                              stacklevel=2)

    # --- the mode -----------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            kind = self._kinds.get(func)
        except TypeError:                                    # an unhashable callable
            kind = None
        if kind is None:
            out = kwargs.get("out")
            if out is not None:
                return self._on_out(func, args, kwargs, out)
            if self._protect and args and isinstance(args[0], torch.Tensor):
                name = getattr(func, "__name__", "")
                if name.endswith("_") and not name.startswith("__"):
                    hit = self._resolve(args[0])
                    if hit is not None and hit[0].protected:
                        return args[0]
            return func(*args, **kwargs)
        return getattr(self, "_on_" + kind[0])(kind[1], func, args, kwargs)

    # random fills --------------------------------------------------------------------------
    def _on_init(self, name, func, args, kwargs):
        try:
            bound = self._sigs[name].bind(*args, **kwargs)
        except TypeError:
            return func(*args, **kwargs)                     # torch raises its own error
        params = dict(bound.arguments)           # as the code passed them
        t = params.pop("tensor")
        return self._random(t, name, params, lambda: func(*args, **kwargs))

    def _on_trunc(self, name, func, args, kwargs):
        params = inspect.signature(_trunc_helper).bind(*args, **kwargs)
        params.apply_defaults()
        params = dict(params.arguments)
        t = params.pop("tensor")
        return self._random(t, "trunc_normal_", params,
                            lambda: self._saved_trunc_or_original()(*args, **kwargs))

    def _saved_trunc_or_original(self):
        return self._saved_trunc or _ORIGINAL_TRUNC

    def _on_tensor_random(self, name, func, args, kwargs):
        t = args[0]
        init, fargs = self._init_frame()
        if init in ("orthogonal_", "sparse_"):                # torch's own code running
            target = fargs.get("tensor")
            label = label_of(init, {k: v for k, v in fargs.items() if k != "tensor"})
            hit = self._resolve(target) if isinstance(target, torch.Tensor) else None
            self.torch_draws.append(TorchDraw(hit[0].name if hit else "a temporary", label,
                                              f"torch's own {init}"))
            out = func(*args, **kwargs)
            if hit is not None and target is t:            # sparse_ draws in place
                self._wrote(hit[0], t, hit[1], f"{label} [torch generator]")
            else:                                          # orthogonal_ into a temporary
                self._mark_temp(t, label)
            return out
        if init in ("xavier_uniform_", "xavier_normal_", "kaiming_normal_") and \
                fargs.get("tensor") is t:
            params = {k: v for k, v in fargs.items() if k != "tensor"}
            return self._random(t, init, params, lambda: func(*args, **kwargs))
        rest = list(args[1:])
        if name == "uniform_":
            params = {"a": rest[0] if len(rest) > 0 else kwargs.get("from", 0.0),
                      "b": rest[1] if len(rest) > 1 else kwargs.get("to", 1.0)}
        else:
            params = {"mean": rest[0] if len(rest) > 0 else kwargs.get("mean", 0.0),
                      "std": rest[1] if len(rest) > 1 else kwargs.get("std", 1.0)}
        params["generator"] = kwargs.get("generator")
        label = f"Tensor.{name}"
        return self._random(t, name, params, lambda: func(*args, **kwargs), shown=label)

    def _on_create_random(self, name, func, args, kwargs):
        fname = func.__name__
        if kwargs.get("generator") is not None:
            out = func(*args, **kwargs)
            self._torch_draw(kwargs.get("out", out), f"torch.{fname}", "generator=")
            return out
        params = {}
        if fname == "normal":
            if len(args) < 2 or not all(isinstance(a, (int, float)) for a in args[:2]):
                out = func(*args, **kwargs)
                self._torch_draw(out, "torch.normal", "tensor mean or std")
                return out
            params = {"mean": args[0], "std": args[1]}
        elif name == "uniform_":
            params = {"a": 0.0, "b": 1.0}
        out = func(*args, **kwargs)
        target = kwargs.get("out")
        target = out if target is None else target
        shown = f"torch.{fname}"
        return self._random(target, name, params, lambda: out, shown=shown, done=True)

    def _random(self, t, name, params, passthrough, shown=None, done=False):
        """Fill ``t`` as the twin ``name`` with ``params`` would (``passthrough`` runs
        torch's own call when the draw must stay with torch)."""
        label = label_of(shown or name, params)
        hit = self._resolve(t)
        if hit is not None and hit[0].protected:
            return t
        gen = params.pop("generator", None)
        if gen is not None or not isinstance(t, torch.Tensor) or t.dtype not in FLOAT_DTYPES:
            out = passthrough()
            reason = "generator=" if gen is not None else f"dtype {getattr(t, 'dtype', None)}"
            self._torch_draw(t, label, reason, hit)
            return out
        draw = twins.DRAWS[name](t, **params)
        if hit is None:
            if t.is_meta:
                return t
            sname, stream = self._temp_stream()
            twins._fill(t, draw, self.seed, stream, name)
            self._mark_temp(t, label)
            self.log.append((sname, label, stream))
            return t
        e, geo = hit
        if self._through_alias(e, label):
            return t
        key = (name, tuple((k, hashable(v)) for k, v in params.items()),
               geo_key(geo))
        j = e.repeats.get(key, 0)
        e.repeats[key] = j + 1
        sname = e.name if j == 0 else f"{e.name}#{j}"
        stream = stream_for(self.prefix + sname)
        if is_dview(geo):
            self._dview_random(e, geo, draw, stream, t)
        elif geo is WHOLE or is_dtensor(t) or not e.tensor.is_contiguous():
            twins._fill(t, draw, self.seed, stream, name)
        else:
            self._fill_positions(t, e, draw, stream)
        e.stream = stream
        self._wrote(e, t, geo, label + (f" [stream of {sname!r}]" if j else ""))
        return t

    def _on_structured(self, name, func, args, kwargs):
        """orthogonal_, sparse_, eye_, dirac_: fastinit.torch.structured's twins, the
        random ones from the tensor's stream (as a whole: the view's own shape); torch's
        own code with ``generator=``, for dtypes fastinit does not fill and for writes
        into a gathered view of a DTensor parameter (reported)."""
        try:
            bound = self._sigs[name].bind(*args, **kwargs)
        except (TypeError, KeyError):
            return _STRUCTURED.original(name)(*args, **kwargs)   # torch raises its own error
        params = dict(bound.arguments)
        t = params.pop("tensor")
        gen = params.pop("generator", None)
        label = label_of(name, dict(params, **({"generator": gen} if gen is not None else {})))
        hit = self._resolve(t) if isinstance(t, torch.Tensor) else None
        if hit is not None and (hit[0].protected or self._through_alias(hit[0], label)):
            return t
        if (gen is not None or not isinstance(t, torch.Tensor) or t.dtype not in FLOAT_DTYPES
                or (hit is not None and is_dview(hit[1]))):
            out = _STRUCTURED.original(name)(*args, **kwargs)
            if isinstance(t, torch.Tensor):
                if name in ("orthogonal_", "sparse_"):
                    reason = ("generator=" if gen is not None else f"dtype {t.dtype}"
                              if t.dtype not in FLOAT_DTYPES else "a DTensor view")
                    self._torch_draw(t, label, reason, hit)
                elif hit is not None:
                    self._wrote(hit[0], t, hit[1], label + " [torch's own]")
                else:
                    self._mark_temp(t, label)
            return out
        fn = getattr(structured, name)
        if name in ("eye_", "dirac_"):                    # deterministic: no stream
            fn(t, **params)
            if hit is not None:
                self._wrote(hit[0], t, hit[1], label)
            else:
                self._mark_temp(t, label)
            return t
        if hit is None:
            if t.is_meta:
                return t
            sname, stream = self._temp_stream()
            fn(t, **params, seed=self.seed, stream=stream)
            self._mark_temp(t, label)
            self.log.append((sname, label, stream))
            return t
        e, geo = hit
        key = (name, tuple((k, hashable(v)) for k, v in params.items()), geo_key(geo))
        j = e.repeats.get(key, 0)
        e.repeats[key] = j + 1
        sname = e.name if j == 0 else f"{e.name}#{j}"
        stream = stream_for(self.prefix + sname)
        fn(t, **params, seed=self.seed, stream=stream)
        e.stream = stream
        self._wrote(e, t, geo, label + (f" [stream of {sname!r}]" if j else ""))
        return t

    def _on_other_random(self, name, func, args, kwargs):
        out = func(*args, **kwargs)
        target = args[0] if name.endswith("_") and args else kwargs.get("out", out)
        init, _ = self._init_frame()
        if init != "sparse_":                               # sparse_ is reported once
            self._torch_draw(target, f"{name}", "no fastinit version")
        return out

    def _torch_draw(self, t, label, reason, hit=None):
        hit = hit if hit is not None else (self._resolve(t) if isinstance(t, torch.Tensor)
                                           else None)
        target = hit[0].name if hit is not None else "a temporary"
        self.torch_draws.append(TorchDraw(target, label, reason))
        if hit is not None:
            self._wrote(hit[0], t, hit[1], f"{label} [torch generator: {reason}]")
        elif isinstance(t, torch.Tensor):
            self._mark_temp(t, label)

    # writes ----------------------------------------------------------------------------------
    def _write_label(self, op, args):
        init, fargs = self._init_frame()
        if init is not None:
            if init == "copy_":
                return f"copy_({self._provenance(args[1])})"
            shown = {k: v for k, v in fargs.items() if k != "tensor"}
            tag = " [torch generator]" if init in ("orthogonal_", "sparse_") else ""
            return label_of(init, shown) + tag
        if op == "fill_":
            return f"fill_({args[1]!r})" if len(args) > 1 else "fill_"
        if op == "__setitem__":
            return f"[{index_text(args[1])}] = {value_text(args[2])}"
        if op == "copy_":
            return f"copy_({self._provenance(args[1])})"
        return f"{op}()"

    def _on_write(self, op, func, args, kwargs):
        t = args[0]
        hit = self._resolve(t)
        if hit is None:
            out = func(*args, **kwargs)
            if isinstance(t, torch.Tensor):
                self._mark_temp(t, self._write_label(op, args))
            return out
        e, geo = hit
        label = self._write_label(op, args)
        if e.protected or self._through_alias(e, label):
            return None if op == "__setitem__" else t
        if op == "copy_" and is_dtensor(t) and geo is WHOLE and isinstance(args[1], torch.Tensor) \
                and not is_dtensor(args[1]) and tuple(args[1].shape) == tuple(t.shape):
            copy_block(t, args[1])                        # each rank copies its block
            self._wrote(e, t, geo, label)
            return t
        out = func(*args, **kwargs)
        if is_dview(geo) and op in ("fill_", "zero_", "copy_"):
            self._dview_write(e, geo, values_of(op, args, geo[1]))
        self._wrote(e, t, geo, label, index=args[1] if op == "__setitem__" else None)
        return out

    def _on_write_fn(self, name, func, args, kwargs):
        """constant_ (and transformers' own constant_/ones_/zeros_/copy_ when they reach the
        mode): torch's own call, recorded as a write."""
        sig = self._sigs.get(name)
        try:
            bound = sig.bind(*args, **kwargs) if sig is not None else None
        except TypeError:
            bound = None
        if bound is None:
            t = args[0] if args else kwargs.get("tensor")
            params = {}
        else:
            params = dict(bound.arguments)
            t = params.pop("tensor")
        hit = self._resolve(t) if isinstance(t, torch.Tensor) else None
        label = label_of(name, params)
        if hit is not None and (hit[0].protected or self._through_alias(hit[0], label)):
            return t
        out = func(*args, **kwargs)
        if hit is not None:
            if is_dview(hit[1]) and name in ("constant_", "ones_", "zeros_"):
                val = {"ones_": 1.0, "zeros_": 0.0}.get(name, params.get("val"))
                self._dview_write(hit[0], hit[1], lambda sel: val)
            self._wrote(hit[0], t, hit[1], label)
        elif isinstance(t, torch.Tensor):
            self._mark_temp(t, label)
        return out

    def _on_data_set(self, name, func, args, kwargs):
        t, x = args[0], args[1]
        hit = self._resolve(t)
        if hit is None:
            return func(*args, **kwargs)
        e, geo = hit
        if e.protected:
            return None
        same = self._resolve(x) if isinstance(x, torch.Tensor) else None
        if same is not None and same[0] is e and same[1] is WHOLE:
            return func(*args, **kwargs)          # its own memory back (``p.data *= m``)
        label = f".data = {self._provenance(x)}"
        if is_dtensor(t) and not is_dtensor(x) and tuple(x.shape) == tuple(t.shape):
            copy_block(t, x)                              # keep the DTensor, copy its block
            self._wrote(e, t, WHOLE, label)
            return None
        garbage = self._is_garbage(x)
        if t.is_meta and isinstance(x, torch.Tensor) and not x.is_meta:
            out = None              # a meta tensor stays on meta: a write there does nothing
        else:
            out = func(*args, **kwargs)
        self._dirty = True
        e.writes.append(label)
        was, e.mask = e.covered, None
        e.covered = not garbage
        self.log.append((e.name, label, None))
        if self.on_write is not None:
            self.on_write(e.name)
        if e.covered and not was and self._progress is not None and e.kind == "parameter":
            self._progress(e.tensor.numel())
        return out

    def _on_out(self, func, args, kwargs, out):
        outs = out if isinstance(out, (tuple, list)) else (out,)
        hits = [(o, self._resolve(o)) for o in outs if isinstance(o, torch.Tensor)]
        if any(h is not None and h[0].protected for _, h in hits):
            return out
        res = func(*args, **kwargs)
        init, fargs = self._init_frame()
        label = (label_of(init, {k: v for k, v in fargs.items() if k != "tensor"}) if init
                 else f"{getattr(func, '__name__', func)}(out=)")
        for o, h in hits:
            if h is not None:
                self._wrote(h[0], o, h[1], label)
            else:
                self._mark_temp(o, label)
        return res

    def _on_getitem(self, name, func, args, kwargs):
        """``param[index]`` of a DTensor parameter is not a view of its shard (torch
        gathers it): remember which global positions it stands for, so writes into it
        reach the shards (each rank writes the positions it holds)."""
        out = func(*args, **kwargs)
        t = args[0] if args else None
        if (is_dtensor(t) and isinstance(out, torch.Tensor) and len(args) > 1
                and basic_index(args[1])):
            hit = self._resolve(t)
            if hit is not None and hit[1] is WHOLE:
                self._dviews[id(out)] = (weakref.ref(out), hit[0],
                                         positions_of(tuple(t.shape), args[1]))
        return out

    def _on_empty(self, name, func, args, kwargs):
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and not out.is_meta and not is_dtensor(out):
            st = out.untyped_storage()
            if st.data_ptr():
                self._temps[st.data_ptr()] = [StorageWeakRef(st), None]
        return out

    # bookkeeping ----------------------------------------------------------------------------


def _clear_hf_flags(module):
    """transformers marks modules and tensors ``_is_hf_initialized`` (accelerate's
    init_empty_weights does it at construction), and its init functions then skip
    them; a redirected run initializes everything, so the flags go."""
    for m in module.modules():
        if "_is_hf_initialized" in m.__dict__:
            del m.__dict__["_is_hf_initialized"]
        for t in list(m._parameters.values()) + list(m._buffers.values()):
            if t is not None and "_is_hf_initialized" in getattr(t, "__dict__", {}):
                del t.__dict__["_is_hf_initialized"]


_ORIGINAL_TRUNC = _INIT._no_grad_trunc_normal_


def _tramp_orthogonal_(tensor, gain=1, generator=None):
    import sys
    return sys.modules["fastinit.torch.redirect"]._STRUCTURED.call(
        "orthogonal_", tensor, gain=gain, generator=generator)


def _tramp_sparse_(tensor, sparsity, std=0.01, generator=None):
    import sys
    return sys.modules["fastinit.torch.redirect"]._STRUCTURED.call(
        "sparse_", tensor, sparsity=sparsity, std=std, generator=generator)


def _tramp_eye_(tensor):
    import sys
    return sys.modules["fastinit.torch.redirect"]._STRUCTURED.call("eye_", tensor)


def _tramp_dirac_(tensor, groups=1):
    import sys
    return sys.modules["fastinit.torch.redirect"]._STRUCTURED.call("dirac_", tensor,
                                                                    groups=groups)


class _Structured:
    """torch.nn.init's orthogonal_, sparse_, eye_ and dirac_ never call
    handle_torch_function, so a TorchFunctionMode sees only their inner
    calls. While a redirect is active their code objects are swapped for
    trampolines (the same function objects, so references saved elsewhere,
    such as transformers' TORCH_INIT_FUNCTIONS and ``from torch.nn.init
    import orthogonal_``, see them too): under a torch function mode the call
    reaches the mode as the function itself; otherwise (another thread) it
    runs torch's own code, unchanged."""

    def __init__(self):
        self.depth = 0
        self.fits = None
        self.codes = {}            # name -> torch's own code object
        self.copies = {}           # name -> a copy of torch's own function

    def original(self, name):
        if name not in self.copies:
            fn = _ORIGINAL_FUNCS[name]
            code = self.codes.get(name, fn.__code__)
            self.copies[name] = types.FunctionType(code, fn.__globals__, name,
                                                   fn.__defaults__, fn.__closure__)
        return self.copies[name]

    def call(self, name, tensor, **kwargs):
        if has_torch_function_unary(tensor):
            return handle_torch_function(_ORIGINAL_FUNCS[name], (tensor,), tensor, **kwargs)
        return self.original(name)(tensor, **kwargs)

    def swap_in(self):
        if self.fits is None:                        # the same arguments as torch's
            self.fits = all(_args(_ORIGINAL_FUNCS[name]) == _args(fn)
                            for name, fn in _TRAMP_FUNCS.items())
        if not self.fits:
            return False                             # another torch: leave it alone
        self.depth += 1
        if self.depth == 1:
            for name in STRUCTURED:
                fn = _ORIGINAL_FUNCS[name]
                self.codes[name] = fn.__code__
                self.original(name)
                fn.__code__ = _TRAMPS[name]
        return True

    def swap_out(self):
        self.depth -= 1
        if self.depth == 0:
            for name in STRUCTURED:
                _ORIGINAL_FUNCS[name].__code__ = self.codes[name]


def _args(fn):
    code = fn.__code__
    return (code.co_varnames[:code.co_argcount + code.co_kwonlyargcount], code.co_freevars)


_ORIGINAL_FUNCS = {name: _originals()[name] for name in STRUCTURED}
_TRAMP_FUNCS = {"orthogonal_": _tramp_orthogonal_, "sparse_": _tramp_sparse_,
                "eye_": _tramp_eye_, "dirac_": _tramp_dirac_}
_TRAMPS = {name: fn.__code__ for name, fn in _TRAMP_FUNCS.items()}
_STRUCTURED = _Structured()


def _trunc_helper(tensor, mean, std, a, b, generator=None):
    """Stands in for torch.nn.init's private rejection sampler while a redirect is
    active, so the mode sees one trunc_normal_ call, never its inner draws."""
    if has_torch_function_unary(tensor):
        return handle_torch_function(_trunc_helper, (tensor,), tensor, mean, std, a, b,
                                     generator=generator)
    return _ORIGINAL_TRUNC(tensor, mean, std, a, b, generator=generator)


def redirect(module, seed=None, *, prefix="", protect=(), on_torch_draw="warn"):
    """A context manager that runs init code with every random draw from fastinit.

    Inside the block every random fill of one of ``module``'s parameters or
    buffers (or of a view of one) made through ``torch.nn.init`` (or
    transformers' wrappers of it), ``Tensor.uniform_``/``normal_`` or
    ``torch.randn``/``rand``/``normal`` is drawn by the fastinit twin from
    the stream of the tensor's qualified name (``prefix + name``), at the
    view's positions in the tensor; draws into any other tensor get the
    stream of the module whose code drew them (docs/stream.md).
    ``orthogonal_``, ``sparse_``, ``eye_`` and ``dirac_`` are
    fastinit.torch's twins of them, each as one call. Constants, copies and
    other operations run as they are. Calls with ``generator=`` and random
    functions fastinit has no version of stay with torch (one warning at
    the end names them; ``on_torch_draw="ignore"`` silences it).
    ``protect``: names whose writes are skipped. Returns the mode; after
    the block ``.named``, ``.log``, ``.torch_draws`` and ``.unset()`` tell
    what was written::

        with ft.redirect(model, seed=0) as run:
            model.apply(my_init)
        run.unset()            # parameters my_init never wrote
    """
    return Redirect(module, seed, prefix=prefix, protect=protect, on_torch_draw=on_torch_draw)
