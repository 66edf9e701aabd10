"""Write a safetensors file of freshly initialized weights (a JSON spec or a Llama preset).

Every tensor is filled straight into the memory-mapped output file, a chunk
of rows at a time; nothing is built in RAM first. Tensor ``name`` gets
seed ``--seed`` and stream ``fastinit.stream_for(name)``, so its values
depend only on (seed, name, init, shape, dtype): ``regenerate`` gives any
one tensor alone, and ``fastinit.torch.init_module`` with the same seed and
rule gives the same parameter the same values.

SPEC is a JSON file::

    {"dtype": "float32",                        (optional default dtype)
     "metadata": {"key": "value"},              (optional, strings)
     "tensors": [
       {"name": "encoder.weight", "shape": [512, 256], "dtype": "bfloat16",
        "init": "kaiming_uniform", "args": {"a": 2.23606797749979}},
       {"name": "encoder.bias", "shape": [512], "init": "zeros"}]}

``init`` is one of fastinit's fills (uniform, normal, truncated_normal,
masked_uniform, constant, zeros, ones, xavier_uniform, xavier_normal,
kaiming_uniform, kaiming_normal, lecun_uniform, lecun_normal,
variance_scaling), ``args`` its keyword arguments, named as in fastinit;
``"init": ["normal", {"std": 0.02}]`` is the same as init plus args.
Rules that need fans take them from the tensor's full shape (or ``fans``).

--preset llama builds the tensors of a Hugging Face LlamaForCausalLM
(model.embed_tokens.weight, model.layers.N.self_attn.{q,k,v,o}_proj.weight,
model.layers.N.mlp.{gate,up,down}_proj.weight, the norms, lm_head.weight)
initialized as its _init_weights does: normal(0, --initializer-range) for
the linear and embedding weights, ones for the RMSNorm weights.
--override GLOB=INIT[:JSON] replaces the init of the tensors whose name
matches the glob (first match wins), e.g. '*.down_proj.weight=normal:{"std":0.002}'.

The file is written in the output's directory as an unnamed file (Linux
O_TMPFILE; elsewhere a hidden .OUT.fastinit-<host>-<pid>-<random>.part),
preallocated (a full disk is an error before any write), and given its
name only when complete: a failure, Ctrl-C or SIGTERM leaves no partial
file, and neither does SIGKILL where the file has no name; a named one of
a killed process is removed by the next write into that directory.
Exit status: 0 done, 1 error, 2 bad arguments, 3 --verify found a mismatch,
130 interrupted (SIGINT, Ctrl-C), 143 terminated (SIGTERM).
"""

import argparse
import errno
import fnmatch
import inspect
import json
import math
import mmap
import numbers
import os
import queue
import re
import secrets
import signal
import stat
import struct
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .cli import int_arg

__all__ = ["TensorSpec", "Spec", "SpecError", "VerifyError", "load_spec", "llama_spec",
           "regenerate", "write_checkpoint", "verify_checkpoint", "layout", "WriteReport",
           "INITS", "DTYPES"]

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
_CONSTANT_RULES = ("constant", "zeros", "ones")
_NOT_ARGS = ("out", "seed", "stream", "offset")
_TENSOR_KEYS = ("name", "shape", "dtype", "init", "args")
_SPEC_KEYS = ("tensors", "dtype", "metadata")
PRESETS = ("llama",)
_LLAMA_KEYS = ("preset", "hidden", "layers", "heads", "kv_heads", "intermediate", "vocab",
               "head_dim", "tie_embeddings", "initializer_range", "dtype", "overrides",
               "metadata")
DEFAULT_DTYPE = "float32"
DEFAULT_CHUNK_BYTES = 64 << 20
MAX_HEADER = 100_000_000            # safetensors refuses larger headers
EXIT_ERROR, EXIT_USAGE, EXIT_MISMATCH, EXIT_INTERRUPT, EXIT_TERM = 1, 2, 3, 130, 143


class SpecError(ValueError):
    """A spec (or preset) that cannot be written; the message says where and why."""


class VerifyError(Exception):
    """A written file that does not match its spec; ``problems`` lists what differs."""

    def __init__(self, problems):
        super().__init__("; ".join(problems))
        self.problems = list(problems)


# ---------------------------------------------------------------------------
# The spec
# ---------------------------------------------------------------------------
def _dtype_name(value, where):
    if isinstance(value, str):
        if value in DTYPES:
            return value
        if value in _DTYPE_ALIASES:
            return _DTYPE_ALIASES[value]
    raise SpecError(f"{where}: unknown dtype {value!r}; use one of {', '.join(DTYPES)} "
                    f"(or F64, F32, BF16, F16)")


def _np_dtype(name):
    from .buffers import dtype_of
    return dtype_of(name)


def _init_fn(name):
    import fastinit
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
        from ._contract import stream_for
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


def _fans_of(t):
    """The (fan_in, fan_out) a fan rule uses for ``t``'s full shape, or None."""
    if t.init not in _FAN_RULES or t.numel == 0:
        return None
    if "fans" in t.args:
        return tuple(t.args["fans"])
    from .fans import fans
    return fans(t.shape, t.args.get("layout", "torch"))


def _validate(t, where):
    """Run the init on an empty buffer: every argument check, no write."""
    fn = _init_fn(t.init)
    dt = _np_dtype(t.dtype)
    try:
        if t.init in _CONSTANT_RULES:
            fn(np.empty(0, dt), **t.args)
        elif t.numel == 0:
            fn(np.empty(t.shape, dt), **t.args, seed=0, stream=t.stream)
        else:
            kw = dict(t.args)
            fans = _fans_of(t)
            if fans is not None:
                kw["fans"] = fans
            fn(np.empty(0, dt), **kw, seed=0, stream=t.stream)
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
        dtype = _dtype_name(dtype, "dtype")
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
        kw = dict(source)
        preset = kw.pop("preset")
        if preset not in PRESETS:
            raise SpecError(f"{where}: unknown preset {preset!r}; choose from "
                            f"{', '.join(PRESETS)}")
        bad = [k for k in kw if k not in _LLAMA_KEYS]
        if bad:
            raise SpecError(f"{where}: unknown preset key(s) {', '.join(map(repr, bad))}; "
                            f"allowed: {', '.join(_LLAMA_KEYS[1:])}")
        missing = [k for k in ("hidden", "layers", "heads", "intermediate", "vocab")
                   if k not in kw]
        if missing:
            raise SpecError(f"{where}: preset {preset!r} needs {', '.join(missing)}")
        if dtype is not None:
            kw["dtype"] = dtype
        kw["overrides"] = list(kw.get("overrides") or []) + list(overrides or [])
        return llama_spec(**kw)
    if isinstance(source, list):
        source = {"tensors": source}
    if not isinstance(source, dict):
        raise SpecError(f"{where}: expected an object with a 'tensors' list (or a list of "
                        f"tensors), got {type(source).__name__}")
    bad = [k for k in source if k not in _SPEC_KEYS]
    if bad:
        raise SpecError(f"{where}: unknown key(s) {', '.join(map(repr, bad))}; allowed: "
                        f"{', '.join(_SPEC_KEYS)} (or 'preset')")
    tensors = source.get("tensors")
    if not isinstance(tensors, list):
        raise SpecError(f"{where}: 'tensors' must be a list of tensors")
    if not tensors:
        raise SpecError(f"{where}: 'tensors' is empty: nothing to write")
    default = _dtype_name(dtype or source.get("dtype") or DEFAULT_DTYPE, f"{where}: dtype")
    metadata = _check_metadata(source.get("metadata"), where)
    ovs = _normalize_overrides(overrides)
    out, seen = [], set()
    for i, entry in enumerate(tensors):
        w = f"{where}: tensors[{i}]"
        if not isinstance(entry, dict):
            raise SpecError(f"{w}: expected an object with name, shape, init, got {entry!r}")
        name = entry.get("name")
        if isinstance(name, str) and name:
            w = f"{where}: tensors[{i}] ({name!r})"
        bad = [k for k in entry if k not in _TENSOR_KEYS]
        if bad:
            raise SpecError(f"{w}: unknown key(s) {', '.join(map(repr, bad))}; allowed: "
                            f"{', '.join(_TENSOR_KEYS)} (an init's arguments go in 'args')")
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
        dt = _dtype_name(entry["dtype"], w) if "dtype" in entry else default
        if "init" not in entry:
            raise SpecError(f"{w}: 'init' is missing")
        init, args = _check_init(entry["init"], entry.get("args"), w)
        for glob, o_init, o_args in ovs:
            if fnmatch.fnmatchcase(name, glob):
                init, args = o_init, o_args
                break
        t = TensorSpec(name, shape, dt, init, args)
        _validate(t, w)
        out.append(t)
    for glob, _, _ in ovs:
        if not any(fnmatch.fnmatchcase(t.name, glob) for t in out):
            raise SpecError(f"override {glob!r} matches no tensor")
    return Spec(out, metadata)


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


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------
def _fill_range(t, buf, start, seed, fans):
    """Fill ``buf`` (1-D, n elements) with elements [start, start + n) of tensor ``t``."""
    fn = _init_fn(t.init)
    if t.init in _CONSTANT_RULES:
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
    from ._contract import check_u64
    from .buffers import empty
    spec = load_spec(spec)
    t = spec[name]
    seed = check_u64("seed", seed)
    out = empty(t.shape, t.dtype)
    fn = _init_fn(t.init)
    if t.init in _CONSTANT_RULES:
        fn(out, **t.args)
    else:
        fn(out, **t.args, seed=seed, stream=t.stream)
    return out


# ---------------------------------------------------------------------------
# The file
# ---------------------------------------------------------------------------
@dataclass
class Layout:
    """Where everything goes: header bytes, then each tensor at data_start + begin."""
    header: bytes
    entries: list                    # [(TensorSpec, begin, end)] in file order
    data_start: int
    total: int
    metadata: dict


def _file_order(tensors):
    """safetensors' own order: larger dtypes first, then by name, so every tensor
    starts on a multiple of its itemsize."""
    return sorted(tensors, key=lambda t: (-DTYPES[t.dtype][2], t.name.encode("utf-8")))


def file_metadata(spec, seed):
    """The ``__metadata__`` a checkpoint of ``spec`` written with ``seed`` carries."""
    from . import __version__
    from ._contract import STREAM_VERSION
    md = {"format": "pt"}            # transformers refuses files without it
    md.update(spec.metadata)
    md["fastinit.seed"] = str(seed)
    md["fastinit.stream"] = STREAM_VERSION
    md["fastinit.version"] = __version__
    md["fastinit.spec"] = json.dumps([t.to_json() for t in spec.tensors],
                                     separators=(",", ":"), ensure_ascii=False)
    return md


def layout(spec, seed):
    """The :class:`Layout` of ``spec``'s checkpoint: an 8-byte little-endian header
    length, the JSON header padded with spaces to a multiple of 8, then the
    tensors back to back."""
    md = file_metadata(spec, seed)
    header = {"__metadata__": md}
    entries, pos = [], 0
    for t in _file_order(spec.tensors):
        header[t.name] = {"dtype": DTYPES[t.dtype][0], "shape": list(t.shape),
                          "data_offsets": [pos, pos + t.nbytes]}
        entries.append((t, pos, pos + t.nbytes))
        pos += t.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    if len(text) > MAX_HEADER:
        raise SpecError(f"the safetensors header would be {len(text)} bytes, past the "
                        f"format's limit of {MAX_HEADER}")
    blob = struct.pack("<Q", len(text)) + text
    return Layout(blob, entries, len(blob), len(blob) + pos, md)


def _chunks(t, chunk_bytes):
    """(start, count) element ranges of ``t``: whole rows of at most chunk_bytes
    when a row fits, else pieces of a row."""
    n = t.numel
    if n == 0:
        return
    per = max(1, chunk_bytes // t.itemsize)
    row = math.prod(t.shape[1:]) if len(t.shape) > 1 else 1
    if 0 < row <= per:
        per -= per % row
    for start in range(0, n, per):
        yield start, min(per, n - start)


class _Libc:
    """msync and madvise through ctypes, which releases the GIL (mmap.flush does not),
    so pages are written back while the next chunk is filled."""

    MS_SYNC = 4
    MADV_DONTNEED = 4

    def __init__(self):
        import ctypes
        self.ctypes = ctypes
        lib = ctypes.CDLL(None, use_errno=True)
        self.msync_fn = lib.msync
        self.madvise_fn = lib.madvise
        for f in (self.msync_fn, self.madvise_fn):
            f.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            f.restype = ctypes.c_int

    def _check(self, rc, what):
        if rc != 0:
            err = self.ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def msync(self, addr, length):
        self._check(self.msync_fn(addr, length, self.MS_SYNC), "msync")

    def madvise(self, addr, length):
        self._check(self.madvise_fn(addr, length, self.MADV_DONTNEED), "madvise")


def _libc():
    if sys.platform != "linux":
        return None
    try:
        return _Libc()
    except (OSError, AttributeError):
        return None


class _Flusher:
    """Writes back and drops finished page ranges of the mapping.

    On Linux a background thread does it (msync MS_SYNC, madvise
    MADV_DONTNEED, posix_fadvise DONTNEED) while the main thread fills on;
    at most ``depth`` ranges wait, so resident dirty memory stays bounded.
    Elsewhere it runs inline with mmap.flush / mmap.madvise.
    """

    def __init__(self, mm, fd, base_addr, depth=2):
        self.mm, self.fd, self.base = mm, fd, base_addr
        self.page = mmap.PAGESIZE
        self.mark = 0                       # everything below is handed over
        self.libc = _libc() if base_addr is not None else None
        self.error = None
        self.thread = None
        if self.libc is not None:
            self.q = queue.Queue(maxsize=depth)
            self.thread = threading.Thread(target=self._loop, name="fastinit-flush",
                                           daemon=True)
            self.thread.start()

    def _drop(self, begin, end):
        if self.libc is not None:
            self.libc.msync(self.base + begin, end - begin)
            self.libc.madvise(self.base + begin, end - begin)
        else:
            self.mm.flush(begin, end - begin)
            if hasattr(self.mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                self.mm.madvise(mmap.MADV_DONTNEED, begin, end - begin)
        if hasattr(os, "posix_fadvise"):
            try:
                os.posix_fadvise(self.fd, begin, end - begin, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass

    def _loop(self):
        while True:
            item = self.q.get()
            if item is None:
                return
            if self.error is None:
                try:
                    self._drop(*item)
                except BaseException as exc:         # reported to the main thread
                    self.error = exc

    def _raise(self):
        if self.error is not None:
            err, self.error = self.error, None
            raise err

    def done_up_to(self, pos, final=False):
        """Bytes [0, pos) of the file are final: write back and drop their pages."""
        self._raise()
        end = pos if final else pos - pos % self.page
        if end <= self.mark:
            return
        begin, self.mark = self.mark, end
        if self.thread is not None:
            self.q.put((begin, end))
        else:
            self._drop(begin, end)

    def close(self, wait=True):
        """Stop the thread (after the queued ranges when ``wait``)."""
        if self.thread is not None:
            if not wait:
                try:
                    while True:
                        self.q.get_nowait()
                except queue.Empty:
                    pass
            self.q.put(None)
            self.thread.join()
            self.thread = None
        self._raise()


class _Progress:
    """A progress bar on stderr over bytes (tqdm when installed, else a plain line)."""

    EVERY_S = 0.25

    def __init__(self, total_bytes, tensors, enabled, desc="fastinit checkpoint"):
        self.total, self.tensors, self.enabled = max(total_bytes, 1), tensors, enabled
        self.done = self.count = 0
        self.t0 = time.perf_counter()
        self.last = -1.0
        self.bar = None
        self.desc = desc
        if enabled:
            try:
                import tqdm
                self.bar = tqdm.tqdm(total=total_bytes, unit="B", unit_scale=True,
                                     unit_divisor=1000, desc=desc, file=sys.stderr,
                                     dynamic_ncols=True, leave=True)
                self.bar.set_postfix_str(f"0/{tensors} tensors")
            except ImportError:
                self.bar = None

    def bytes(self, n):
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter() - self.t0
        if now - self.last >= self.EVERY_S or self.done >= self.total:
            self.last = now
            sys.stderr.write(f"\r{self.desc}: {100 * self.done / self.total:5.1f}% "
                             f"({self.count}/{self.tensors} tensors, "
                             f"{self.done / 1e9:.2f}/{self.total / 1e9:.2f} GB, {now:.1f} s)")
            sys.stderr.flush()

    def tensor_done(self):
        self.count += 1
        if self.enabled and self.bar is not None:
            self.bar.set_postfix_str(f"{self.count}/{self.tensors} tensors", refresh=False)

    def close(self):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        else:
            self.last = -1.0
            self.bytes(0)
            sys.stderr.write("\n")
            sys.stderr.flush()


@dataclass
class WriteReport:
    """What write_checkpoint did."""
    path: str
    tensors: int
    numel: int
    nbytes: int                      # file size
    seconds: float                   # preallocate, fill, write back, rename
    fill: str
    seed: int
    removed: list = field(default_factory=list)   # [(path, bytes)]: stale temporaries


def _load_kernels(spec):
    """Run the serial and the parallel kernel of every dtype the spec draws once, on
    scratch buffers, before the output file exists: Numba loads a kernel on its first
    call, and a Ctrl-C that lands inside Numba's loader can be swallowed (a ctypes
    callback) or end the process by SIGINT; this way it never finds a file open."""
    from .backends.cpu import PARALLEL_MIN
    from .buffers import empty
    from .distributions import uniform
    for dt in sorted({t.dtype for t in spec.tensors
                      if t.init not in _CONSTANT_RULES and t.numel}):
        for n in (1, PARALLEL_MIN):
            uniform(empty(n, dt), seed=0)


# The file is filled under no name at all where the system allows it: an
# O_TMPFILE file in the output's directory, linked into place when complete.
# A process killed with SIGKILL (or a machine that goes down) then leaves
# nothing behind: the kernel frees an unnamed file's blocks. Where O_TMPFILE
# is missing (not Linux, or a file system without it) the file gets a name
# that carries its writer's process id, and the next write into that
# directory removes the ones whose process is gone.
NO_TMPFILE_ENV = "FASTINIT_CHECKPOINT_NO_TMPFILE"   # "1": always use a named file (tests)
_PROC_FD = "/proc/self/fd"
_PART_RE = re.compile(r"^\.(?P<base>.+)\.fastinit-(?P<tag>[0-9a-f]{8})-(?P<pid>[1-9][0-9]*)"
                      r"-(?P<rand>[0-9a-f]{8})\.part$")
_TMPFILE_UNSUPPORTED = frozenset(
    getattr(errno, n) for n in ("EOPNOTSUPP", "ENOTSUP", "EISDIR", "EINVAL")
    if hasattr(errno, n))
_REUSE_MARGIN_S = 60.0


def _host_tag():
    """8 hex digits for this machine and process-id namespace: a process id in a
    temporary file's name is only looked up where it means the same process."""
    import hashlib
    import socket
    try:
        ns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        ns = ""
    return hashlib.blake2b(f"{socket.gethostname()}\0{ns}".encode("utf-8", "replace"),
                           digest_size=4).hexdigest()


def _part_name(base):
    """A fresh ``.BASE.fastinit-<host>-<pid>-<random>.part`` (BASE cut to keep the
    name under the usual 255-byte limit)."""
    short = base.encode("utf-8")[:160].decode("utf-8", "ignore")
    return f".{short}.fastinit-{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}.part"


def _tmpfile_wanted():
    return (os.environ.get(NO_TMPFILE_ENV, "") in ("", "0") and hasattr(os, "O_TMPFILE")
            and os.path.isdir(_PROC_FD))


def _cannot_create(exc, d, path):
    return type(exc)(exc.errno, f"cannot create a file in {d!r} for {path!r}: "
                                f"{exc.strerror or exc}")


def _open_output(path):
    """(fd, name): an unnamed O_TMPFILE file in the output's directory (name None),
    or, where O_TMPFILE is not available, a new file named by :func:`_part_name`."""
    d, base = os.path.split(os.path.abspath(path))
    if _tmpfile_wanted():
        try:
            return os.open(d, os.O_TMPFILE | os.O_RDWR, 0o666), None
        except OSError as exc:
            if exc.errno not in _TMPFILE_UNSUPPORTED:
                raise _cannot_create(exc, d, path) from None
    while True:
        tmp = os.path.join(d, _part_name(base))
        try:
            return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise _cannot_create(exc, d, path) from None


def _link_into_place(fd, path):
    """Give the unnamed file ``fd`` the name ``path``: linkat of /proc/self/fd/N
    (AT_SYMLINK_FOLLOW) straight to ``path`` when nothing is there, else to a
    tagged temporary name and os.replace onto ``path`` (atomic)."""
    d, base = os.path.split(os.path.abspath(path))
    src = f"{_PROC_FD}/{fd}"
    dfd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        def link(dst):
            # the dir_fd arguments make CPython call linkat(..., AT_SYMLINK_FOLLOW);
            # without them it calls link(), which links the /proc symlink itself (EXDEV)
            os.link(src, dst, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=True)
        try:
            link(base)
            return
        except FileExistsError:
            pass
        while True:
            tmp = _part_name(base)
            try:
                link(tmp)
                break
            except FileExistsError:
                continue
        try:
            os.replace(tmp, base, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
            raise
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot give the written file the name {path!r}: "
                                   f"{exc.strerror or exc}") from None
    finally:
        os.close(dfd)


def _process_start(pid):
    """When process ``pid`` started (seconds since the epoch), or None where unknown
    (Linux /proc only)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            st = f.read()
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        ticks = int(st[st.rindex(b")") + 2:].split()[19])       # field 22, starttime
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _writer_gone(pid, mtime):
    """True when process ``pid`` cannot be writing a file last modified at ``mtime``:
    there is no such process, or it started after that (the pid was reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:                 # a process of another user: alive
        pass
    except OSError:
        return False
    started = _process_start(pid)
    return started is not None and started > mtime + _REUSE_MARGIN_S


def _remove_stale(d):
    """Remove the temporary files of earlier writes into ``d`` whose process is gone.

    Only regular files named exactly as :func:`_part_name` names them, with this
    machine's tag, and whose process is gone (see :func:`_writer_gone`: a file
    with this very process's id is kept unless it predates the process, as
    another thread may be writing it). Returns [(path, size)] of the removed
    files."""
    if os.name != "posix":                  # os.kill(pid, 0) is not a probe elsewhere
        return []
    try:
        names = os.listdir(d)
    except OSError:
        return []
    tag, removed = None, []
    for name in names:
        m = _PART_RE.match(name)
        if m is None:
            continue
        tag = tag or _host_tag()
        pid = int(m["pid"])
        if m["tag"] != tag:
            continue
        p = os.path.join(d, name)
        try:
            st = os.lstat(p)
            if not stat.S_ISREG(st.st_mode) or not _writer_gone(pid, st.st_mtime):
                continue
            os.unlink(p)
        except OSError:
            continue
        removed.append((p, st.st_size))
    return removed


def _same_file(fd, path):
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _check_output(path):
    """A clear OSError for output paths that cannot work, before any work is done."""
    path = os.fspath(path)
    full = os.path.abspath(path)
    d = os.path.dirname(full)
    if os.path.isdir(full):
        raise IsADirectoryError(f"output {path!r} is a directory; give a file path")
    if not os.path.exists(d):
        parent = d
        while parent and not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if parent and not os.path.isdir(parent):
            raise NotADirectoryError(f"output {path!r}: {parent!r} is not a directory")
        raise FileNotFoundError(f"output {path!r}: directory {d!r} does not exist")
    if not os.path.isdir(d):
        raise NotADirectoryError(f"output {path!r}: {d!r} is not a directory")


def _preallocate(fd, size, path):
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, size)
        else:                                   # macOS: no fallocate; may SIGBUS when full
            os.ftruncate(fd, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(exc.errno, f"not enough space for {path!r}: the file needs "
                                     f"{size / 1e9:.3f} GB ({size} bytes) "
                                     f"({os.strerror(exc.errno)})") from None
        raise OSError(exc.errno, f"cannot preallocate {size} bytes for {path!r}: "
                                 f"{exc.strerror or exc}") from None


def write_checkpoint(spec, path, seed, *, chunk_bytes=DEFAULT_CHUNK_BYTES, progress=False,
                     fill="init", flush_depth=1):
    """Write ``spec`` (see :func:`load_spec`) to the safetensors file ``path``.

    Each tensor is filled in place in the memory-mapped, preallocated file
    in chunks of at most ``chunk_bytes`` (whole rows where a row fits); the
    pages of each finished chunk are written back (msync) and dropped
    (madvise DONTNEED) so resident memory stays near ``chunk_bytes`` times
    a few, whatever the file size. The file appears at ``path`` only when
    complete. It is written as an unnamed O_TMPFILE file in ``path``'s
    directory and linked into place at the end (an existing file is replaced
    atomically), so even SIGKILL leaves nothing behind; where O_TMPFILE is
    not available (or the environment sets FASTINIT_CHECKPOINT_NO_TMPFILE=1,
    for tests) it has a temporary name ``.NAME.fastinit-<host>-<pid>-<random>.part``
    and is renamed into place. On any error or KeyboardInterrupt the temporary
    file is removed; one left by a killed process is removed by the next write
    into the directory, once that process is gone (``WriteReport.removed``).
    An exception raised after the file got its name carries
    ``checkpoint_written = path``.

    ``fill="zeros"`` writes zeros instead of the inits through the very same
    path: the write-bandwidth reference of bench/bench_checkpoint.py.
    """
    from ._contract import check_u64
    if fill not in ("init", "zeros"):
        raise ValueError(f"fill must be 'init' or 'zeros', got {fill!r}")
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, numbers.Integral) \
            or chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be a positive integer, got {chunk_bytes!r}")
    spec = load_spec(spec)
    seed = check_u64("seed", seed)
    path = os.fspath(path)
    lay = layout(spec, seed)
    _check_output(path)
    if fill == "init":
        _load_kernels(spec)
    t0 = time.perf_counter()
    removed = _remove_stale(os.path.dirname(os.path.abspath(path)))
    fd, tmp = _open_output(path)
    mm = flusher = bar = None
    ok = False
    try:
        _preallocate(fd, lay.total, path)
        mm = mmap.mmap(fd, lay.total)
        mm[:lay.data_start] = lay.header
        base = np.frombuffer(mm, dtype=np.uint8)
        addr = base.ctypes.data
        del base
        flusher = _Flusher(mm, fd, addr, depth=flush_depth)
        bar = _Progress(lay.total - lay.data_start, len(lay.entries), progress)
        _fill_file(mm, lay, seed, chunk_bytes, fill, flusher, bar)
        flusher.done_up_to(lay.total, final=True)
        flusher.close()
        flusher = None
        bar.close()
        bar = None
        mm.close()
        mm = None
        os.fsync(fd)
        if tmp is None:
            _link_into_place(fd, path)
        else:
            os.replace(tmp, path)
        ok = True
        os.close(fd)
        fd = None
        _fsync_dir(os.path.dirname(os.path.abspath(path)))
    except BaseException as exc:
        if ok or (fd is not None and _same_file(fd, path)):
            # interrupted after the complete file got its name: say so to the caller
            exc.checkpoint_written = path
        raise
    finally:
        if not ok:
            if flusher is not None:
                try:
                    flusher.close(wait=False)
                except BaseException:
                    pass
            if bar is not None:
                try:
                    bar.close()
                except BaseException:
                    pass
            if mm is not None:
                try:
                    mm.close()
                except BaseException:       # views still alive in a traceback: GC
                    pass
            if tmp is not None:             # (an unnamed file goes with its last fd)
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
    return WriteReport(path=path, tensors=len(spec), numel=spec.numel, nbytes=lay.total,
                       seconds=time.perf_counter() - t0, fill=fill, seed=seed,
                       removed=removed)


def _fsync_dir(d):
    try:
        dfd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _fill_file(mm, lay, seed, chunk_bytes, fill, flusher, bar):
    for t, begin, _ in lay.entries:
        dt = _np_dtype(t.dtype)
        fans = _fans_of(t) if fill == "init" else None
        for start, n in _chunks(t, chunk_bytes):
            pos = lay.data_start + begin + start * t.itemsize
            view = np.frombuffer(mm, dtype=dt, count=n, offset=pos)
            if fill == "init":
                _fill_range(t, view, start, seed, fans)
            else:
                view.view(np.dtype(f"u{t.itemsize}")).fill(0)
            del view
            flusher.done_up_to(pos + n * t.itemsize)
            bar.bytes(n * t.itemsize)
        bar.tensor_done()


# ---------------------------------------------------------------------------
# Verify
# ---------------------------------------------------------------------------
def _describe(a):
    return repr(float(a)) if a.dtype.kind == "f" or a.dtype.name == "bfloat16" else repr(a)


def verify_checkpoint(path, spec, seed, *, chunk_bytes=DEFAULT_CHUNK_BYTES, progress=False,
                      max_problems=20):
    """Re-read checkpoint ``path`` and compare it with ``spec`` written with ``seed``.

    Checks the header (exactly the JSON fastinit writes: names, dtypes,
    shapes, offsets, metadata), the file size, and every value, recomputed
    chunk by chunk (memory stays near ``chunk_bytes``). Returns the list of
    problems, empty when the file matches.
    """
    from ._contract import check_u64
    from .buffers import empty
    spec = load_spec(spec)
    seed = check_u64("seed", seed)
    lay = layout(spec, seed)
    problems = []
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        raw = f.read(8)
        if len(raw) < 8:
            return [f"{path}: {size} bytes, too short for a safetensors file"]
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER or 8 + n > size:
            return [f"{path}: header length {n} is not possible in a {size}-byte file"]
        text = f.read(n)
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [f"{path}: the header is not valid JSON: {exc}"]
    if not isinstance(header, dict):
        return [f"{path}: the header is not a JSON object"]
    expected = json.loads(lay.header[8:].decode("utf-8"))
    if header != expected:
        got_md, want_md = header.get("__metadata__", {}), expected["__metadata__"]
        if isinstance(got_md, dict) and got_md.get("fastinit.seed") not in (None, str(seed)):
            problems.append(f"the file was written with seed {got_md['fastinit.seed']}, "
                            f"not {seed} (pass that --seed)")
        for k in sorted(set(want_md) | set(got_md if isinstance(got_md, dict) else {})):
            if isinstance(got_md, dict) and got_md.get(k) != want_md.get(k) \
                    and k != "fastinit.seed":
                problems.append(f"metadata {k!r}: expected {want_md.get(k)!r}, "
                                f"found {got_md.get(k)!r}")
        for name in expected:
            if name != "__metadata__" and name not in header:
                problems.append(f"tensor {name!r} is missing from the file")
        for name in header:
            if name not in expected:
                problems.append(f"unexpected tensor {name!r} in the file")
            elif name != "__metadata__" and header[name] != expected[name]:
                problems.append(f"tensor {name!r}: header {header[name]} != expected "
                                f"{expected[name]}")
        if not problems:
            problems.append("the header differs from the expected one")
        return problems[:max_problems]
    if text != lay.header[8:]:
        problems.append("the header bytes differ from fastinit's (same content)")
    if size != lay.total:
        return problems + [f"{path}: {size} bytes, expected {lay.total}"]
    if lay.total == lay.data_start:
        return problems
    scratch = {}
    bar = _Progress(lay.total - lay.data_start, len(lay.entries), progress,
                    desc="fastinit verify")
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), lay.total, access=mmap.ACCESS_READ)
        try:
            for t, begin, _ in lay.entries:
                dt = _np_dtype(t.dtype)
                bits = np.dtype(f"u{t.itemsize}")
                fans = _fans_of(t)
                for start, cnt in _chunks(t, chunk_bytes):
                    pos = lay.data_start + begin + start * t.itemsize
                    got = np.frombuffer(mm, dtype=dt, count=cnt, offset=pos)
                    buf = scratch.get(t.dtype)
                    if buf is None or buf.size < cnt:
                        buf = scratch[t.dtype] = empty(max(cnt, chunk_bytes // t.itemsize),
                                                       t.dtype)
                    want = buf[:cnt]
                    _fill_range(t, want, start, seed, fans)
                    diff = np.flatnonzero(got.view(bits) != want.view(bits))
                    if diff.size:
                        i = int(diff[0])
                        idx = np.unravel_index(start + i, t.shape) if t.shape else ()
                        problems.append(
                            f"tensor {t.name!r}: {diff.size} element(s) differ in elements "
                            f"[{start}, {start + cnt}); first at index "
                            f"{tuple(int(x) for x in idx)}: expected {_describe(want[i])}, "
                            f"found {_describe(got[i])}")
                        del got
                        break
                    del got
                    bar.bytes(cnt * t.itemsize)
                    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                        a = pos - pos % mmap.PAGESIZE
                        e = pos + cnt * t.itemsize
                        e -= e % mmap.PAGESIZE
                        if e > a:
                            mm.madvise(mmap.MADV_DONTNEED, a, e - a)
                bar.tensor_done()
                if len(problems) >= max_problems:
                    break
        finally:
            bar.close()
            try:
                mm.close()
            except BufferError:             # a view still alive in a traceback: GC
                pass
    return problems


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------
def _seed_arg(text):
    try:
        v = int(str(text).replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed must be an integer, got {text!r}") from None
    if not 0 <= v < 1 << 64:
        raise argparse.ArgumentTypeError(f"--seed must be in [0, 2**64), got {v}")
    return v


def _float_arg(what):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not (math.isfinite(v) and v >= 0):
            raise argparse.ArgumentTypeError(f"{what} must be a finite number >= 0, got {v}")
        return v
    return parse


def _dtype_arg(text):
    try:
        return _dtype_name(text, "--dtype")
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure_parser(parser):
    """Add ``fastinit checkpoint``'s options to ``parser`` (see :mod:`fastinit.cli`)."""
    from ._contract import DEFAULT_SEED
    parser.description = __doc__
    parser.add_argument("spec", nargs="?", metavar="SPEC",
                        help="JSON file listing the tensors (or use --preset)")
    parser.add_argument("-o", "--output", metavar="OUT.safetensors",
                        help="the file to write (replaced if it exists)")
    parser.add_argument("--seed", type=_seed_arg, default=DEFAULT_SEED, metavar="S",
                        help=f"seed of every tensor; tensor NAME uses stream "
                             f"stream_for(NAME) (default {DEFAULT_SEED}, fastinit's and "
                             f"torch's default seed)")
    parser.add_argument("--dtype", type=_dtype_arg, default=None, metavar="D",
                        help="dtype of the tensors that do not name one: float32 (default), "
                             "bfloat16, float16 or float64")
    g = parser.add_argument_group("preset")
    g.add_argument("--preset", choices=PRESETS, default=None,
                   help="a Hugging Face Llama-style decoder instead of a SPEC file")
    g.add_argument("--hidden", type=int_arg("--hidden", 1), metavar="N", help="hidden size")
    g.add_argument("--layers", type=int_arg("--layers", 0), metavar="N",
                   help="decoder layers")
    g.add_argument("--heads", type=int_arg("--heads", 1), metavar="N",
                   help="attention heads")
    g.add_argument("--kv-heads", type=int_arg("--kv-heads", 1), metavar="N",
                   help="key/value heads (default --heads)")
    g.add_argument("--intermediate", type=int_arg("--intermediate", 1), metavar="N",
                   help="MLP intermediate size")
    g.add_argument("--vocab", type=int_arg("--vocab", 1), metavar="N", help="vocabulary size")
    g.add_argument("--head-dim", type=int_arg("--head-dim", 1), metavar="N",
                   help="head dimension (default hidden / heads)")
    g.add_argument("--tie-embeddings", action="store_true",
                   help="no lm_head.weight (it is model.embed_tokens.weight)")
    g.add_argument("--initializer-range", type=_float_arg("--initializer-range"),
                   default=0.02, metavar="STD",
                   help="std of the linear and embedding weights (default 0.02, as HF)")
    parser.add_argument("--override", action="append", default=[], metavar="GLOB=INIT[:JSON]",
                        help="init of the tensors whose name matches GLOB, e.g. "
                             "'lm_head.weight=xavier_uniform' or "
                             "'*.down_proj.weight=normal:{\"std\": 0.002}' (repeatable; "
                             "first match wins)")
    v = parser.add_mutually_exclusive_group()
    v.add_argument("--verify", action="store_true",
                   help="after writing, re-read the file and check header and values")
    v.add_argument("--verify-only", action="store_true",
                   help="check an existing OUT against the spec and seed; write nothing")
    p = parser.add_mutually_exclusive_group()
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show a progress bar (default: when stderr is a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="never show a progress bar")
    parser.add_argument("--chunk-mib", type=int_arg("--chunk-mib", 1),
                        default=DEFAULT_CHUNK_BYTES >> 20, metavar="N",
                        help=f"fill at most N MiB at a time (default "
                             f"{DEFAULT_CHUNK_BYTES >> 20})")
    return parser


_PRESET_ARGS = ("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab",
                "head_dim")


def spec_from_args(args, parser):
    """The Spec the command line asks for; argument errors go to ``parser.error``."""
    given = [f"--{k.replace('_', '-')}" for k in _PRESET_ARGS if getattr(args, k) is not None]
    if args.tie_embeddings:
        given.append("--tie-embeddings")
    if args.spec is not None and args.preset is not None:
        parser.error("give either SPEC or --preset, not both")
    if args.spec is None and args.preset is None:
        parser.error("give a SPEC file or --preset llama with its sizes")
    if args.spec is not None:
        if given:
            parser.error(f"{', '.join(given)} only apply to --preset")
        return load_spec(args.spec, dtype=args.dtype, overrides=args.override)
    missing = [f"--{k}" for k in ("hidden", "layers", "heads", "intermediate", "vocab")
               if getattr(args, k) is None]
    if missing:
        parser.error(f"--preset {args.preset} needs {', '.join(missing)}")
    return llama_spec(args.hidden, args.layers, args.heads, args.intermediate, args.vocab,
                      args.kv_heads, head_dim=args.head_dim,
                      tie_embeddings=args.tie_embeddings,
                      initializer_range=args.initializer_range,
                      dtype=args.dtype or DEFAULT_DTYPE, overrides=args.override)


class _Terminated(BaseException):
    """SIGTERM while writing: clean up as for Ctrl-C, exit 143."""


def _err(msg):
    print(f"fastinit checkpoint: error: {msg}", file=sys.stderr, flush=True)


def _peak_rss_mib():
    try:
        import resource
    except ImportError:
        return None
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2 ** 20 if sys.platform == "darwin" else r / 1024


def run(args, parser):
    """Entry point of ``fastinit checkpoint``."""
    if args.output is None:
        parser.error("-o/--output OUT.safetensors is required")
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    chunk = args.chunk_mib << 20
    old = None
    if threading.current_thread() is threading.main_thread():
        def on_term(signum, frame):
            raise _Terminated()
        old = signal.signal(signal.SIGTERM, on_term)
    written = False
    try:
        try:
            spec = spec_from_args(args, parser)
        except SpecError as exc:
            _err(str(exc))
            return EXIT_ERROR
        if not args.verify_only:
            try:
                rep = write_checkpoint(spec, args.output, args.seed, chunk_bytes=chunk,
                                       progress=progress)
            except (OSError, SpecError, ValueError) as exc:
                _err(_os_message(exc, args.output))
                return EXIT_ERROR
            written = True
            for p, size in rep.removed:
                print(f"fastinit checkpoint: removed a stale temporary file of a process "
                      f"that is gone: {p} ({size / 1e9:.3f} GB)", file=sys.stderr,
                      flush=True)
            rss = _peak_rss_mib()
            print(f"wrote {args.output}: {rep.tensors} tensors, {rep.numel / 1e9:.3f} G "
                  f"elements, {rep.nbytes / 1e9:.3f} GB in {rep.seconds:.2f} s "
                  f"({rep.nbytes / max(rep.seconds, 1e-9) / 1e9:.2f} GB/s), seed {rep.seed}"
                  + (f", peak RSS {rss:.0f} MiB" if rss else ""), flush=True)
        if args.verify or args.verify_only:
            try:
                problems = verify_checkpoint(args.output, spec, args.seed, chunk_bytes=chunk,
                                             progress=progress)
            except (OSError, SpecError, ValueError) as exc:
                _err(_os_message(exc, args.output))
                return EXIT_ERROR
            if problems:
                _err(f"verify: {args.output} does not match the spec:")
                for p in problems:
                    print(f"  {p}", file=sys.stderr)
                return EXIT_MISMATCH
            print(f"verified {args.output}: header and all {len(spec)} tensors match "
                  f"(seed {args.seed})", flush=True)
        return 0
    except (KeyboardInterrupt, _Terminated) as exc:
        name, status = (("SIGINT", EXIT_INTERRUPT) if isinstance(exc, KeyboardInterrupt)
                        else ("SIGTERM", EXIT_TERM))
        if written or getattr(exc, "checkpoint_written", None):
            _err(f"interrupted ({name}) while verifying; {args.output} was written but "
                 f"not verified" if written else
                 f"interrupted ({name}) just after {args.output} was written")
        elif args.verify_only:
            _err(f"interrupted ({name}) while verifying {args.output}")
        else:
            _err(f"interrupted ({name}); no output written")
        return status
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _os_message(exc, path):
    if isinstance(exc, OSError) and exc.filename is None and exc.strerror:
        return exc.strerror if path in exc.strerror else f"{path}: {exc.strerror}"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)
