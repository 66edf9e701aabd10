"""Rules of ``init_module`` and ``materialize``: parsing, matching, rules that match nothing.

A rule maps a glob on a parameter's qualified name, or an nn.Module type, to an
initializer (a twin's name, a (name, kwargs) pair, a callable taking seed and
stream, or None to keep the parameter). docs/torch.md, section 2.
"""

import difflib
import fnmatch
import inspect
from dataclasses import dataclass

import torch
from torch import nn

from . import twins
from .twins import (constant_, kaiming_normal_, kaiming_uniform_, masked_uniform_, normal_,
                    ones_, trunc_normal_, uniform_, xavier_normal_, xavier_uniform_, zeros_)

SPECS = {
    "uniform": uniform_, "normal": normal_, "trunc_normal": trunc_normal_,
    "constant": constant_, "zeros": zeros_, "ones": ones_,
    "xavier_uniform": xavier_uniform_, "xavier_normal": xavier_normal_,
    "kaiming_uniform": kaiming_uniform_, "kaiming_normal": kaiming_normal_,
    "masked_uniform": masked_uniform_,
}
_PLACEHOLDER = torch.empty(2, 2)


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


def resolve_spec(spec, where):
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


def normalize(rules):
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
            out.append(("glob", key, resolve_spec(value, where), _key_label(key)))
        elif (isinstance(key, type) and issubclass(key, nn.Module)) or (
                isinstance(key, tuple) and key and all(
                    isinstance(k, type) and issubclass(k, nn.Module) for k in key)):
            if isinstance(value, dict):
                value = {str(k): resolve_spec(v, f"{where}[{k!r}]") for k, v in value.items()}
            else:
                value = resolve_spec(value, where)
            out.append(("type", key, value, _key_label(key)))
        else:
            raise TypeError(f"a rule's key must be a glob on the parameter's qualified name "
                            f"(str) or an nn.Module subclass (or a tuple of them), got {key!r}")
    return out


def match(rules, name, local, owner):
    """(label, _Init or None, rule id) of the first rule that matches, or None; the id
    is (rule index, local glob or None)."""
    for i, (kind, key, value, shown) in enumerate(rules):
        if kind == "glob":
            if fnmatch.fnmatchcase(name, key):
                return f"rule {shown}: " + (value.label if value else "kept"), value, (i, None)
        elif isinstance(owner, key):
            if isinstance(value, dict):
                for lk, init in value.items():
                    if fnmatch.fnmatchcase(local, lk):
                        return (f"rule {shown}[{lk!r}]: " + (init.label if init else "kept"),
                                init, (i, lk))
            else:
                return f"rule {shown}: " + (value.label if value else "kept"), value, (i, None)
    return None


def rule_ids(rules):
    """Every (rule index, local glob or None) a parameter can be matched by."""
    out = []
    for i, (kind, key, value, shown) in enumerate(rules):
        if kind == "type" and isinstance(value, dict):
            out.extend((i, lk) for lk in value)
        else:
            out.append((i, None))
    return out


def unused_message(rules, unused, names, module, fn):
    """The error for rules that matched no parameter, with a hint for each."""
    parts = []
    for i, lk in unused:
        kind, key, value, shown = rules[i]
        text = f"rule {shown}" + (f"[{lk!r}]" if lk is not None else "")
        hint = ""
        if kind == "glob":
            close = difflib.get_close_matches(key, names, n=2, cutoff=0.6)
            if close:
                hint = f" (parameters with a close name: {', '.join(close)})"
        else:
            types = key if isinstance(key, tuple) else (key,)
            became = [t for t in types if getattr(t, "cls_to_become", None) is not None]
            if became:
                what = ", ".join(f"{t.__name__} becomes {t.cls_to_become.__name__}"
                                 for t in became)
                hint = (f" ({what} on its first forward: use the class it becomes, which "
                        f"matches before and after)")
            elif lk is not None:
                hint = " (no such parameter name on those modules)"
            elif not any(isinstance(m, types) for m in module.modules()):
                hint = " (no module of that type in the model)"
        parts.append(text + hint)
    return (f"{fn}: {len(unused)} rule(s) matched no parameter (or only parameters an "
            f"earlier rule took): {'; '.join(parts)}. Fix or remove them, or pass "
            f"on_unused_rule='warn'/'ignore'")
