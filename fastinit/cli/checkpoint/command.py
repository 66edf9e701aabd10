"""Write a safetensors file of freshly initialized weights (a JSON spec or a Llama preset).

The ``fastinit checkpoint`` command: its options, the spec they ask for,
the write and ``--verify``, the messages and exit statuses, and SIGTERM
handled like Ctrl-C (no partial file either way).
"""

import sys

from ..._contract import DEFAULT_SEED
from .._args import checked_arg, float_arg, int_arg, seed_arg
from .exits import (EXIT_ERROR, _err, _os_message, _peak_rss_mib, _Terminated, interrupted,
                    mismatch, sigterm_raises)
from .mmapio import DEFAULT_CHUNK_BYTES
from .spec import DEFAULT_DTYPE, PRESETS, SpecError, dtype_name, llama_spec, load_spec
from .verify import verify_checkpoint
from .writer import write_checkpoint

# ``fastinit checkpoint --help``
DESCRIPTION = """\
Write a safetensors file of freshly initialized weights (a JSON spec or a Llama preset).

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
--config CONFIG.json (or --model-type TYPE with --set KEY=VALUE) writes a
transformers model directory instead, as save_pretrained writes one: the
model is built on the meta device by transformers, its own init code runs
under fastinit's redirect straight into the memory-mapped files (the values
are fastinit.torch.materialize's), cut at --max-shard-size (default
transformers'), with model.safetensors.index.json, config.json and
generation_config.json. --workers N writes the files in N processes;
--shard K/N writes only files K, K+N, ... (and, for K=1, the index and
configs), so N jobs on N machines fill one shared directory with the same
bytes one process writes.

Exit status: 0 done, 1 error, 2 bad arguments, 3 --verify found a mismatch,
130 interrupted (SIGINT, Ctrl-C), 143 terminated (SIGTERM).
"""


def _dtype(text):
    return dtype_name(text, "--dtype")


def _job(text):
    k, sep, n = str(text).partition("/")
    try:
        k, n = int(k), int(n)
    except ValueError:
        k = n = 0
    if not sep or not 1 <= k <= n:
        raise ValueError(f"--shard: expected K/N with 1 <= K <= N, e.g. 1/4; got {text!r}")
    return k, n


def configure_parser(parser):
    """Add ``fastinit checkpoint``'s options to ``parser`` (see :mod:`fastinit.cli`)."""
    parser.description = DESCRIPTION
    parser.add_argument("spec", nargs="?", metavar="SPEC",
                        help="JSON file listing the tensors (or use --preset or --config)")
    parser.add_argument("-o", "--output", metavar="OUT.safetensors|DIR",
                        help="the file to write (replaced if it exists); with --config, "
                             "the model directory")
    parser.add_argument("--seed", type=seed_arg("--seed"), default=DEFAULT_SEED, metavar="S",
                        help=f"seed of every tensor; tensor NAME uses stream "
                             f"stream_for(NAME) (default {DEFAULT_SEED}, fastinit's and "
                             f"torch's default seed)")
    parser.add_argument("--dtype", type=checked_arg(_dtype), default=None, metavar="D",
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
    g.add_argument("--initializer-range", type=float_arg("--initializer-range"),
                   default=0.02, metavar="STD",
                   help="std of the linear and embedding weights (default 0.02, as HF)")
    parser.add_argument("--override", action="append", default=[], metavar="GLOB=INIT[:JSON]",
                        help="init of the tensors whose name matches GLOB, e.g. "
                             "'lm_head.weight=xavier_uniform' or "
                             "'*.down_proj.weight=normal:{\"std\": 0.002}' (repeatable; "
                             "first match wins)")
    h = parser.add_argument_group("transformers model directory")
    h.add_argument("--config", metavar="CONFIG.json",
                   help="a transformers config.json (or a directory holding one)")
    h.add_argument("--model-type", metavar="TYPE",
                   help="a transformers model type (llama, mistral, qwen2, gemma, gpt2, "
                        "mixtral, ...) with its default config, changed by --set")
    h.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="change a config value, e.g. num_hidden_layers=4 (VALUE is read as "
                        "JSON when it is JSON; repeatable)")
    h.add_argument("--max-shard-size", metavar="SIZE",
                   help="largest file, e.g. 5GB or 500MB (default: transformers' "
                        "save_pretrained default)")
    h.add_argument("--workers", type=int_arg("--workers", 1), default=1, metavar="N",
                   help="write the files in N processes (default 1)")
    h.add_argument("--shard", type=checked_arg(_job), default=None, metavar="K/N",
                   help="write only files K, K+N, K+2N, ... (and for K=1 the index and "
                        "configs): job K of N jobs writing one directory")
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


def _model_args_given(args):
    return [f for f, v in (("--set", args.sets), ("--max-shard-size", args.max_shard_size),
                           ("--workers", args.workers != 1), ("--shard", args.shard))
            if v]


def run(args, parser):
    """Entry point of ``fastinit checkpoint``."""
    if args.config is not None or args.model_type is not None:
        from .modelcommand import run_model
        return run_model(args, parser)
    extra = _model_args_given(args)
    if extra:
        parser.error(f"{', '.join(extra)} only apply to --config/--model-type")
    if args.output is None:
        parser.error("-o/--output OUT.safetensors is required")
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    chunk = args.chunk_mib << 20
    with sigterm_raises():
        return _run_file(args, parser, progress, chunk)


def _run_file(args, parser, progress, chunk):
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
                return mismatch(args.output, "the spec", problems)
            print(f"verified {args.output}: header and all {len(spec)} tensors match "
                  f"(seed {args.seed})", flush=True)
        return 0
    except (KeyboardInterrupt, _Terminated) as exc:
        name, status = interrupted(exc)
        if written or getattr(exc, "checkpoint_written", None):
            _err(f"interrupted ({name}) while verifying; {args.output} was written but "
                 f"not verified" if written else
                 f"interrupted ({name}) just after {args.output} was written")
        elif args.verify_only:
            _err(f"interrupted ({name}) while verifying {args.output}")
        else:
            _err(f"interrupted ({name}); no output written")
        return status
