"""The model side of ``fastinit checkpoint --config``: a transformers model from its config.

The model is built on the meta device by transformers itself, so its
names, shapes, dtypes and ties are the library's. What it saves is what
``save_pretrained`` saves (the state dict without non-persistent buffers,
one name per tie chosen as transformers chooses it), cut into files by
huggingface_hub's own splitter. Each file's tensors are then given storage
inside that file's memory mapping and the model's own init code runs over
them under fastinit's redirect (:func:`fastinit.torch.meta.materialize_into`):
the values are those ``materialize`` gives, bit for bit. docs/checkpoint.md,
"From a transformers config".
"""

import inspect
import json
import math
import os
import re
from dataclasses import dataclass, field

from ... import __version__
from ..._contract import STREAM_VERSION
from .safetensors import header_bytes
from .spec import SpecError, _check_init, _parse_override

# torch dtype name -> (safetensors code, rank in safetensors' file order: larger first)
_CODES = {"bool": ("BOOL", 0), "uint8": ("U8", 1), "int8": ("I8", 2), "int16": ("I16", 5),
          "float16": ("F16", 7), "bfloat16": ("BF16", 8), "int32": ("I32", 9),
          "float32": ("F32", 11), "float64": ("F64", 12), "int64": ("I64", 13)}
_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16",
           "float64": "float64", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16",
           "F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64",
           "float": "float32", "half": "float16", "double": "float64"}
# fastinit checkpoint's init names -> (fastinit.torch rule name, argument renames)
RULE_NAMES = {"uniform": ("uniform", {"low": "a", "high": "b"}),
              "normal": ("normal", {}), "truncated_normal": ("trunc_normal", {}),
              "constant": ("constant", {"value": "val"}), "zeros": ("zeros", {}),
              "ones": ("ones", {}), "xavier_uniform": ("xavier_uniform", {}),
              "xavier_normal": ("xavier_normal", {}),
              "kaiming_uniform": ("kaiming_uniform", {}),
              "kaiming_normal": ("kaiming_normal", {}),
              "masked_uniform": ("masked_uniform", {})}
INDEX_NAME = "model.safetensors.index.json"
FILE_PATTERN = "model{suffix}.safetensors"


def _transformers():
    try:
        import transformers
    except ImportError:
        raise SpecError("--config needs transformers (pip install transformers)") from None
    transformers.logging.set_verbosity_error()
    return transformers


def default_max_shard_size():
    """transformers' own default of ``save_pretrained(max_shard_size=)``."""
    tr = _transformers()
    return inspect.signature(tr.PreTrainedModel.save_pretrained).parameters[
        "max_shard_size"].default


_UNITS = {"": 1, "B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12,
          "KIB": 2 ** 10, "MIB": 2 ** 20, "GIB": 2 ** 30, "TIB": 2 ** 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text, where="--max-shard-size"):
    """Bytes of '5GB' (decimal units, as transformers reads them), '1MiB' (binary) or
    an integer number of bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        n = text
    else:
        m = _SIZE.match(str(text))
        unit = m.group(2).upper() if m else None
        if m is None or unit not in _UNITS:
            raise SpecError(f"{where}: expected a size such as 5GB, 500MB, 64MiB or a "
                            f"number of bytes; got {text!r}")
        n = int(float(m.group(1)) * _UNITS[unit])
    if n < 1:
        raise SpecError(f"{where}: must be at least 1 byte, got {text!r}")
    return n


def _json_value(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_config(path=None, model_type=None, sets=()):
    """The transformers config of a config.json (file or model directory) or of
    ``model_type``, with ``sets`` ('KEY=VALUE', VALUE read as JSON when it is JSON)
    applied. Raises SpecError with a one-line reason."""
    tr = _transformers()
    if (path is None) == (model_type is None):
        raise SpecError("give either --config CONFIG.json or --model-type TYPE")
    updates = {}
    for s in sets or ():
        key, sep, value = str(s).partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set {s!r}: expected KEY=VALUE, e.g. num_hidden_layers=4")
        updates[key.strip()] = _json_value(value)
    if path is not None:
        path = os.fspath(path)
        file = os.path.join(path, "config.json") if os.path.isdir(path) else path
        try:
            with open(file, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise SpecError(f"config {file!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"cannot read config {file!r}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise SpecError(f"config {file!r} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
            raise SpecError(f"config {file!r} has no 'model_type': not a transformers "
                            f"config.json")
        model_type, where = data.pop("model_type"), f"config {file!r}"
    else:
        data, where = {}, f"--model-type {model_type!r}"
    data.update(updates)
    try:
        return tr.AutoConfig.for_model(model_type, **data)
    except (ValueError, KeyError, TypeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpecError(f"{where}: transformers cannot build a config: {msg}") from None


def config_dtype(config, dtype):
    """The torch dtype name to build with: ``dtype`` if given, else the config's own
    (``dtype``/``torch_dtype``), else float32."""
    if dtype is None:
        dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        dtype = "float32" if dtype is None else str(dtype).replace("torch.", "")
        if dtype == "auto":
            dtype = "float32"
    name = _DTYPES.get(str(dtype))
    if name is None:
        raise SpecError(f"--dtype: {dtype!r} is not a float dtype fastinit fills; use "
                        f"float32, bfloat16, float16 or float64")
    return name


def model_class(config):
    """The class ``from_pretrained`` would build: the config's ``architectures[0]``
    where transformers has it, else AutoModelForCausalLM's choice."""
    tr = _transformers()
    for arch in getattr(config, "architectures", None) or ():
        cls = getattr(tr, arch, None)
        if cls is not None:
            return cls
    try:
        return tr.AutoModelForCausalLM._model_mapping[type(config)]
    except KeyError:
        pass
    try:
        return tr.AutoModel._model_mapping[type(config)]
    except KeyError:
        raise SpecError(f"transformers has no model for config {type(config).__name__}; "
                        f"set 'architectures' in the config") from None


def build_meta(config, dtype):
    """``model_class(config)`` built on the meta device in ``dtype``."""
    import torch
    cls = model_class(config)
    with torch.device("meta"):
        try:
            model = cls._from_config(config, dtype=getattr(torch, dtype))
        except TypeError:
            model = cls._from_config(config, torch_dtype=getattr(torch, dtype))
    model.eval()
    return model


def saved_names(model):
    """The state dict keys ``save_pretrained`` writes (non-persistent buffers and
    ``_keys_to_ignore_on_save`` left out, one name per tie), in state dict order."""
    from transformers.modeling_utils import remove_tied_weights_from_state_dict
    sd = model.state_dict()
    for k in getattr(model, "_keys_to_ignore_on_save", None) or ():
        sd.pop(k, None)
    sd = remove_tied_weights_from_state_dict(sd, model)
    return sd


def rules_of(overrides):
    """fastinit.torch rules from ``--override GLOB=INIT[:JSON]`` texts (fastinit's init
    names and arguments, as in a spec; fans come from the parameter's shape)."""
    rules = []
    for text in overrides or ():
        glob, init, args = _parse_override(text)
        init, args = _check_init(init, args, f"--override {glob!r}")
        if init not in RULE_NAMES:
            raise SpecError(f"--override {glob!r}: {init} is not available for a "
                            f"transformers model; use one of {', '.join(RULE_NAMES)}")
        fixed = [k for k in ("fans", "layout") if k in args]
        if fixed:
            raise SpecError(f"--override {glob!r}: {', '.join(fixed)} come from the "
                            f"parameter itself for a transformers model")
        name, rename = RULE_NAMES[init]
        rules.append((glob, (name, {rename.get(k, k): v for k, v in args.items()})))
    return rules


# --- files --------------------------------------------------------------------------
@dataclass
class FileEntry:
    name: str
    dtype: str                       # torch dtype name
    shape: tuple
    begin: int                       # offset of the data, from the file's data start

    @property
    def numel(self):
        return math.prod(self.shape)

    @property
    def nbytes(self):
        import torch
        return self.numel * getattr(torch, self.dtype).itemsize


@dataclass
class FilePlan:
    filename: str
    entries: list                    # [FileEntry] in file order
    header: bytes
    total: int

    @property
    def data_start(self):
        return len(self.header)


@dataclass
class DirPlan:
    files: list                      # [FilePlan]
    weight_map: dict                 # name -> filename
    total_size: int                  # data bytes of all files
    total_parameters: int
    config: object
    dtype: str
    model_class: str
    captured: dict = field(default_factory=dict)    # name -> [write labels]

    @property
    def sharded(self):
        return len(self.files) > 1

    def index(self):
        """The ``model.safetensors.index.json`` contents, as save_pretrained writes it."""
        return {"metadata": {"total_parameters": self.total_parameters,
                             "total_size": self.total_size},
                "weight_map": dict(sorted(self.weight_map.items()))}


def _file_plan(filename, tensors, metadata):
    """Layout of one file: safetensors' own order (larger dtypes first, then name)."""
    order = sorted(tensors, key=lambda kv: (-_CODES[kv[1][0]][1], kv[0].encode("utf-8")))
    header = {"__metadata__": metadata}
    entries, pos = [], 0
    for name, (dtype, shape) in order:
        e = FileEntry(name, dtype, tuple(shape), pos)
        header[name] = {"dtype": _CODES[dtype][0], "shape": list(shape),
                        "data_offsets": [pos, pos + e.nbytes]}
        entries.append(e)
        pos += e.nbytes
    blob = header_bytes(header, f"{filename}: the safetensors header")
    return FilePlan(filename, entries, blob, len(blob) + pos)


def capture(config, dtype, seed, rules):
    """{name: [what wrote it, in order]} from a run of the model's init code over a
    meta build (nothing allocated): the captured init each file's metadata carries."""
    from ...torch.meta import materialize_into
    model = build_meta(config, dtype)
    report = materialize_into(model, lambda m, ties: None, seed=seed, rules=rules,
                              on_unmatched="ignore", on_buffers="warn", checked=set(),
                              progress=False)
    out = {}
    for rec in report.params:
        out[rec.name] = list(rec.history) or [rec.rule]
        for a in rec.aliases:
            out.setdefault(a, out[rec.name])
    return out


def plan_dir(config, dtype, seed, *, rules=(), max_shard_size):
    """The :class:`DirPlan` of the model directory: files, their layouts, index."""
    from huggingface_hub import split_torch_state_dict_into_shards
    model = build_meta(config, dtype)
    sd = saved_names(model)
    odd = [f"{k} ({t.dtype})" for k, t in sd.items()
           if str(t.dtype).replace("torch.", "") not in _CODES]
    if odd:
        raise SpecError(f"cannot write tensors of these dtypes: {', '.join(odd)}")
    split = split_torch_state_dict_into_shards(sd, filename_pattern=FILE_PATTERN,
                                               max_shard_size=max_shard_size)
    captured = capture(config, dtype, seed, rules)
    total = sum(t.numel() * t.element_size() for t in sd.values())
    n_params = sum(p.numel() for p in model.parameters())
    files = []
    for filename, names in split.filename_to_tensors.items():
        md = {"format": "pt", "fastinit.seed": str(seed), "fastinit.stream": STREAM_VERSION,
              "fastinit.version": __version__, "fastinit.model": type(model).__name__,
              "fastinit.init": json.dumps({n: captured.get(n, []) for n in sorted(names)},
                                          separators=(",", ":"), ensure_ascii=False)}
        tensors = [(n, (str(sd[n].dtype).replace("torch.", ""), tuple(sd[n].shape)))
                   for n in names]
        files.append(_file_plan(filename, tensors, md))
    return DirPlan(files=files, weight_map=dict(split.tensor_to_filename), total_size=total,
                   total_parameters=n_params, config=config, dtype=dtype,
                   model_class=type(model).__name__, captured=captured)
