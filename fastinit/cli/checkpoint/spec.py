"""The spec of a checkpoint: which tensors, their shapes, dtypes and inits.

:func:`load_spec` checks a JSON spec (docs/checkpoint.md, "The spec"),
:func:`llama_spec` builds the Llama preset, overrides replace inits by
glob. A tensor's values are one fastinit call on its full shape with seed
``seed`` and stream ``stream_for(name)``: :func:`fill_range` gives any
range of them, :func:`regenerate` the whole tensor.
"""

import fnmatch
import inspect
import json
import math
import numbers
import os
from dataclasses import dataclass, field

import numpy as np

import fastinit

from ..._contract import check_u64, stream_for
from ...buffers import dtype_of, empty
from ...fans import fans as shape_fans

# name -> (safetensors code, itemsize, rank in safetensors' file order: larger first)
DTYPES = {"float64": ("F64", 8, 4), "float32": ("F32", 4, 3), "bfloat16": ("BF16", 2, 2),
          "float16": ("F16", 2, 1)}
_DTYPE_ALIASES = {"F64": "float64", "F32": "float32", "BF16": "bfloat16", "F16": "float16",
                  "fp64": "float64", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16",
                  "double": "float64", "float": "float32", "half": "float16"}
INITS = ("uniform", "normal", "truncated_normal", "masked_uniform", "constant", "zeros",
         "ones", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
         "lecun_uniform", "lecun_normal", "variance_scaling")
_FAN_RULES = ("xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
              "lecun_uniform", "lecun_normal", "variance_scaling")
CONSTANT_RULES = ("constant", "zeros", "ones")
_NOT_ARGS = ("out", "seed", "stream", "offset")
_TENSOR_KEYS = ("name", "shape", "dtype", "init", "args")
_SPEC_KEYS = ("tensors", "dtype", "metadata")
PRESETS = ("llama",)
_LLAMA_KEYS = ("preset", "hidden", "layers", "heads", "kv_heads", "intermediate", "vocab",
               "head_dim", "tie_embeddings", "initializer_range", "dtype", "overrides",
               "metadata")
DEFAULT_DTYPE = "float32"


class SpecError(ValueError):
    """A spec (or preset) that cannot be written; the message says where and why."""


def dtype_name(value, where):
    if isinstance(value, str):
        if value in DTYPES:
            return value
        if value in _DTYPE_ALIASES:
            return _DTYPE_ALIASES[value]
    raise SpecError(f"{where}: unknown dtype {value!r}; use one of {', '.join(DTYPES)} "
                    f"(or F64, F32, BF16, F16)")


def np_dtype(name):
    return dtype_of(name)


def _init_fn(name):
    return getattr(fastinit, name)


def _arg_names(init):
    params = inspect.signature(_init_fn(init)).parameters
    return [p for p in params if p not in _NOT_ARGS]


def _required_args(init):
    params = inspect.signature(_init_fn(init)).parameters
    return [p for p, v in params.items() if p not in _NOT_ARGS and v.default is v.empty]


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a checkpoint: its name, shape, dtype and init with its arguments."""
    name: str
    shape: tuple
    dtype: str
    init: str
    args: dict = field(default_factory=dict, hash=False)

    @property
    def numel(self):
        return math.prod(self.shape)

    @property
    def itemsize(self):
        return DTYPES[self.dtype][1]

    @property
    def nbytes(self):
        return self.numel * self.itemsize

    @property
    def stream(self):
        return stream_for(self.name)

    def to_json(self):
        out = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
               "init": self.init}
        if self.args:
            out["args"] = {k: list(v) if isinstance(v, tuple) else v
                           for k, v in self.args.items()}
        return out


@dataclass
class Spec:
    """A checked list of tensors plus the user's safetensors metadata."""
    tensors: list
    metadata: dict = field(default_factory=dict)
    source: str = "spec"

    def __post_init__(self):
        self._by_name = {t.name: t for t in self.tensors}

    def __getitem__(self, name):
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no tensor {name!r} in the spec") from None

    def __contains__(self, name):
        return name in self._by_name

    def __len__(self):
        return len(self.tensors)

    def __iter__(self):
        return iter(self.tensors)

    @property
    def nbytes(self):
        return sum(t.nbytes for t in self.tensors)

    @property
    def numel(self):
        return sum(t.numel for t in self.tensors)

    def to_json(self):
        return {"tensors": [t.to_json() for t in self.tensors],
                **({"metadata": dict(self.metadata)} if self.metadata else {})}


def _check_shape(shape, where):
    if not isinstance(shape, (list, tuple)):
        raise SpecError(f"{where}: shape must be a list of non-negative integers, "
                        f"got {shape!r}")
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 0:
            raise SpecError(f"{where}: shape must be a list of non-negative integers, "
                            f"got {list(shape)!r}")
    shape = tuple(int(d) for d in shape)
    if math.prod(shape) >= 1 << 62:
        raise SpecError(f"{where}: shape {list(shape)} is too large")
    return shape


def _check_init(init, args, where):
    """(init name, args dict) checked against the fastinit function's signature."""
    if isinstance(init, (list, tuple)):
        if args is not None:
            raise SpecError(f"{where}: give the arguments either in 'args' or in the "
                            f"init pair, not both")
        if not 1 <= len(init) <= 2 or not isinstance(init[0], str) or (
                len(init) == 2 and not isinstance(init[1], dict)):
            raise SpecError(f"{where}: init must be a name or a [name, {{args}}] pair, "
                            f"got {init!r}")
        init, args = init[0], (init[1] if len(init) == 2 else None)
    if not isinstance(init, str):
        raise SpecError(f"{where}: init must be a name such as 'normal', got {init!r}")
    if init not in INITS:
        hint = {"trunc_normal": "truncated_normal"}.get(init.rstrip("_"))
        hint = f" (did you mean {hint!r}?)" if hint else ""
        raise SpecError(f"{where}: unknown init {init!r}{hint}; choose from "
                        f"{', '.join(INITS)}")
    args = {} if args is None else args
    if not isinstance(args, dict):
        raise SpecError(f"{where}: args must be an object of keyword arguments, "
                        f"got {args!r}")
    allowed = _arg_names(init)
    for k in args:
        if k in _NOT_ARGS:
            raise SpecError(f"{where}: {init} argument {k!r} is not allowed: the seed is "
                            f"--seed and the stream is stream_for(name)")
        if k not in allowed:
            raise SpecError(f"{where}: {init} has no argument {k!r}; its arguments are "
                            f"{', '.join(allowed) or '(none)'}")
    missing = [k for k in _required_args(init) if k not in args]
    if missing:
        raise SpecError(f"{where}: {init} needs argument(s) {', '.join(missing)}")
    out = {}
    for k, v in args.items():
        if k == "fans":
            if not (isinstance(v, (list, tuple)) and len(v) == 2):
                raise SpecError(f"{where}: fans must be [fan_in, fan_out], got {v!r}")
            v = tuple(v)
        out[k] = v
    return init, out


def fans_of(t):
    """The (fan_in, fan_out) a fan rule uses for ``t``'s full shape, or None."""
    if t.init not in _FAN_RULES or t.numel == 0:
        return None
    if "fans" in t.args:
        return tuple(t.args["fans"])
    return shape_fans(t.shape, t.args.get("layout", "torch"))


def _validate(t, where):
    """Run the init on an empty buffer: every argument check, no write."""
    empty_buffer = np.empty(t.shape if t.numel == 0 else 0, np_dtype(t.dtype))
    try:
        fill_range(t, empty_buffer, 0, 0, fans_of(t))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: {t.init}{_show_args(t.args)} on shape {list(t.shape)} "
                        f"{t.dtype}: {exc}") from None


def _show_args(args):
    return "(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")"


def _parse_override(text):
    """'GLOB=INIT[:JSON]' -> (glob, init, args)."""
    glob, sep, rest = str(text).partition("=")
    if not sep or not glob or not rest:
        raise SpecError(f"--override {text!r}: expected GLOB=INIT or GLOB=INIT:JSON-ARGS, "
                        f"e.g. '*.down_proj.weight=normal:{{\"std\": 0.002}}'")
    init, sep, js = rest.partition(":")
    args = None
    if sep:
        try:
            args = json.loads(js)
        except json.JSONDecodeError as exc:
            raise SpecError(f"--override {text!r}: arguments are not valid JSON: "
                            f"{exc}") from None
        if not isinstance(args, dict):
            raise SpecError(f"--override {text!r}: arguments must be a JSON object")
    return glob, init.strip(), args


def _normalize_overrides(overrides):
    out = []
    for ov in overrides or ():
        if isinstance(ov, str):
            ov = _parse_override(ov)
        elif isinstance(ov, (list, tuple)) and len(ov) in (2, 3):
            ov = (ov[0], ov[1], ov[2] if len(ov) == 3 else None)
        else:
            raise SpecError(f"override {ov!r}: expected 'GLOB=INIT[:JSON]' or "
                            f"[glob, init, args]")
        glob, init, args = ov
        if not isinstance(glob, str) or not glob:
            raise SpecError(f"override {ov!r}: the glob must be a non-empty string")
        init, args = _check_init(init, args, f"override {glob!r}")
        out.append((glob, init, args))
    return out


def _duplicate_keys_hook(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise SpecError(f"duplicate key {k!r} in a JSON object")
        seen[k] = v
    return seen


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise SpecError(f"spec file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise SpecError(f"spec {str(path)!r} is a directory, not a JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec {str(path)!r}: {exc}") from None
    try:
        return json.loads(text, object_pairs_hook=_duplicate_keys_hook)
    except json.JSONDecodeError as exc:
        raise SpecError(f"spec {str(path)!r} is not valid JSON: {exc}") from None
    except SpecError as exc:
        raise SpecError(f"spec {str(path)!r}: {exc}") from None


def _check_metadata(md, where):
    if md is None:
        return {}
    if not isinstance(md, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in md.items()):
        raise SpecError(f"{where}: metadata must be an object of string keys and "
                        f"string values")
    bad = [k for k in md if k.startswith("fastinit.")]
    if bad:
        raise SpecError(f"{where}: metadata keys starting with 'fastinit.' are written by "
                        f"fastinit itself: {', '.join(bad)}")
    return dict(md)


def load_spec(source, *, dtype=None, overrides=None):
    """A checked :class:`Spec` from a JSON file path, a parsed dict or list, or a Spec.

    A dict with ``"preset": "llama"`` is a preset (see :func:`llama_spec`).
    ``dtype`` replaces the spec's default dtype (tensors that name their own
    dtype keep it); ``overrides`` is a list of ``"GLOB=INIT[:JSON]"`` strings
    or (glob, init, args) triples, first match wins. Raises SpecError.
    """
    if dtype is not None:
        dtype = dtype_name(dtype, "dtype")
    if isinstance(source, Spec):
        if dtype is not None or overrides:
            raise SpecError("dtype and overrides apply when a spec is loaded: pass them "
                            "with the JSON file, dict or preset, not with a loaded Spec")
        return source
    where = "spec"
    if isinstance(source, (str, os.PathLike)):
        where = f"spec {os.fspath(source)!r}"
        source = _read_json(source)
    if isinstance(source, dict) and "preset" in source:
        return _preset_spec(source, where, dtype, overrides)
    if isinstance(source, list):
        source = {"tensors": source}
    if not isinstance(source, dict):
        raise SpecError(f"{where}: expected an object with a 'tensors' list (or a list of "
                        f"tensors), got {type(source).__name__}")
    _check_keys(source, _SPEC_KEYS, where, note=" (or 'preset')")
    tensors = source.get("tensors")
    if not isinstance(tensors, list):
        raise SpecError(f"{where}: 'tensors' must be a list of tensors")
    if not tensors:
        raise SpecError(f"{where}: 'tensors' is empty: nothing to write")
    default = dtype_name(dtype or source.get("dtype") or DEFAULT_DTYPE, f"{where}: dtype")
    metadata = _check_metadata(source.get("metadata"), where)
    ovs = _normalize_overrides(overrides)
    out, seen = [], set()
    for i, entry in enumerate(tensors):
        t, w = _tensor_spec(entry, f"{where}: tensors[{i}]", default, seen)
        for glob, o_init, o_args in ovs:
            if fnmatch.fnmatchcase(t.name, glob):
                t = TensorSpec(t.name, t.shape, t.dtype, o_init, o_args)
                break
        _validate(t, w)
        out.append(t)
    for glob, _, _ in ovs:
        if not any(fnmatch.fnmatchcase(t.name, glob) for t in out):
            raise SpecError(f"override {glob!r} matches no tensor")
    return Spec(out, metadata)


def _check_keys(obj, allowed, where, kind="key(s)", shown=None, note=""):
    bad = [k for k in obj if k not in allowed]
    if bad:
        raise SpecError(f"{where}: unknown {kind} {', '.join(map(repr, bad))}; allowed: "
                        f"{', '.join(shown or allowed)}{note}")


def _preset_spec(source, where, dtype, overrides):
    """The spec of a preset dict such as ``{"preset": "llama", "hidden": 64, ...}``."""
    kw = dict(source)
    preset = kw.pop("preset")
    if preset not in PRESETS:
        raise SpecError(f"{where}: unknown preset {preset!r}; choose from "
                        f"{', '.join(PRESETS)}")
    _check_keys(kw, _LLAMA_KEYS, where, "preset key(s)", shown=_LLAMA_KEYS[1:])
    missing = [k for k in ("hidden", "layers", "heads", "intermediate", "vocab")
               if k not in kw]
    if missing:
        raise SpecError(f"{where}: preset {preset!r} needs {', '.join(missing)}")
    if dtype is not None:
        kw["dtype"] = dtype
    kw["overrides"] = list(kw.get("overrides") or []) + list(overrides or [])
    return llama_spec(**kw)


def _tensor_spec(entry, w, default, seen):
    """(TensorSpec, where) of one entry of 'tensors', its name added to ``seen``;
    ``w`` says where it is, ``default`` is the dtype of entries without one."""
    if not isinstance(entry, dict):
        raise SpecError(f"{w}: expected an object with name, shape, init, got {entry!r}")
    name = entry.get("name")
    if isinstance(name, str) and name:
        w = f"{w} ({name!r})"
    _check_keys(entry, _TENSOR_KEYS, w, note=" (an init's arguments go in 'args')")
    if not isinstance(name, str) or not name:
        raise SpecError(f"{w}: 'name' must be a non-empty string")
    if name == "__metadata__":
        raise SpecError(f"{w}: '__metadata__' is reserved by safetensors")
    if name in seen:
        raise SpecError(f"{w}: duplicate tensor name {name!r}")
    seen.add(name)
    if "shape" not in entry:
        raise SpecError(f"{w}: 'shape' is missing")
    shape = _check_shape(entry["shape"], w)
    dt = dtype_name(entry["dtype"], w) if "dtype" in entry else default
    if "init" not in entry:
        raise SpecError(f"{w}: 'init' is missing")
    init, args = _check_init(entry["init"], entry.get("args"), w)
    return TensorSpec(name, shape, dt, init, args), w


def llama_spec(hidden, layers, heads, intermediate, vocab, kv_heads=None, *, head_dim=None,
               tie_embeddings=False, initializer_range=0.02, dtype=DEFAULT_DTYPE,
               overrides=None, metadata=None):
    """The tensors of a Hugging Face LlamaForCausalLM, initialized as its _init_weights.

    Names and shapes as transformers' Llama (no biases): embed_tokens
    [vocab, hidden]; q_proj [heads*head_dim, hidden]; k_proj, v_proj
    [kv_heads*head_dim, hidden]; o_proj [hidden, heads*head_dim]; gate_proj,
    up_proj [intermediate, hidden]; down_proj [hidden, intermediate]; norms
    [hidden]; lm_head [vocab, hidden] unless ``tie_embeddings``.
    head_dim defaults to hidden // heads.
    """
    def pos(name, v, zero_ok=False):
        low = 0 if zero_ok else 1
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
            kind = "non-negative" if zero_ok else "positive"
            raise SpecError(f"llama preset: {name} must be a {kind} integer, got {v!r}")
        return int(v)
    hidden, heads, vocab = pos("hidden", hidden), pos("heads", heads), pos("vocab", vocab)
    layers, intermediate = pos("layers", layers, True), pos("intermediate", intermediate)
    kv_heads = heads if kv_heads is None else pos("kv_heads", kv_heads)
    if heads % kv_heads:
        raise SpecError(f"llama preset: heads ({heads}) must be a multiple of kv_heads "
                        f"({kv_heads})")
    if head_dim is None:
        if hidden % heads:
            raise SpecError(f"llama preset: hidden ({hidden}) must be a multiple of heads "
                            f"({heads}), or give head_dim")
        head_dim = hidden // heads
    head_dim = pos("head_dim", head_dim)
    if not isinstance(tie_embeddings, bool):
        raise SpecError(f"llama preset: tie_embeddings must be true or false, "
                        f"got {tie_embeddings!r}")
    std = initializer_range
    if isinstance(std, bool) or not isinstance(std, numbers.Real) or not std >= 0 \
            or not math.isfinite(std):
        raise SpecError(f"llama preset: initializer_range must be a finite number >= 0, "
                        f"got {std!r}")
    lin = ["normal", {"std": float(std)}]
    ones = ["ones"]
    q, kv = heads * head_dim, kv_heads * head_dim
    tensors = [("model.embed_tokens.weight", [vocab, hidden], lin)]
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors += [(p + "self_attn.q_proj.weight", [q, hidden], lin),
                    (p + "self_attn.k_proj.weight", [kv, hidden], lin),
                    (p + "self_attn.v_proj.weight", [kv, hidden], lin),
                    (p + "self_attn.o_proj.weight", [hidden, q], lin),
                    (p + "mlp.gate_proj.weight", [intermediate, hidden], lin),
                    (p + "mlp.up_proj.weight", [intermediate, hidden], lin),
                    (p + "mlp.down_proj.weight", [hidden, intermediate], lin),
                    (p + "input_layernorm.weight", [hidden], ones),
                    (p + "post_attention_layernorm.weight", [hidden], ones)]
    tensors.append(("model.norm.weight", [hidden], ones))
    if not tie_embeddings:
        tensors.append(("lm_head.weight", [vocab, hidden], lin))
    spec = {"dtype": dtype, "metadata": _check_metadata(metadata, "llama preset"),
            "tensors": [{"name": n, "shape": s, "init": i} for n, s, i in tensors]}
    out = load_spec(spec, overrides=overrides)
    out.source = (f"llama preset: hidden {hidden}, layers {layers}, heads {heads}, kv_heads "
                  f"{kv_heads}, head_dim {head_dim}, intermediate {intermediate}, vocab "
                  f"{vocab}{', tied embeddings' if tie_embeddings else ''}")
    return out


def fill_range(t, buf, start, seed, fans):
    """Fill ``buf`` (n elements) with elements [start, start + n) of tensor ``t``;
    ``fans``: :func:`fans_of` ``t`` (None: from ``buf``'s shape)."""
    fn = _init_fn(t.init)
    if t.init in CONSTANT_RULES:
        fn(buf, **t.args)
        return
    kw = dict(t.args)
    if fans is not None:
        kw["fans"] = fans
    fn(buf, **kw, seed=seed, stream=t.stream, offset=start)


def regenerate(spec, name, seed):
    """Tensor ``name`` of ``spec`` (a Spec, a JSON path, a parsed spec or preset dict)
    as a new NumPy array, exactly as a checkpoint written with ``seed`` holds it.

    One fastinit call on the full shape: ``fastinit.<init>(out, **args,
    seed=seed, stream=fastinit.stream_for(name))``.
    """
    t = load_spec(spec)[name]
    seed = check_u64("seed", seed)
    out = empty(t.shape, t.dtype)
    fill_range(t, out, 0, seed, None)
    return out
