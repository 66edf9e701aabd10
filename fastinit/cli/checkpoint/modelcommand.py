"""``fastinit checkpoint --config``: the command line of a model directory write.

Options, messages and exit statuses as for a single file (command.py);
the work is modeldir's.
"""

import sys

from .exits import (EXIT_ERROR, _err, _os_message, _peak_rss_mib, _Terminated, interrupted,
                    mismatch, sigterm_raises)
from .spec import SpecError


def run_model(args, parser):
    if args.config is not None and args.model_type is not None:
        parser.error("give either --config or --model-type, not both")
    if args.spec is not None or args.preset is not None:
        parser.error("--config/--model-type replace SPEC and --preset: give one of them")
    if args.output is None:
        parser.error("-o/--output DIR is required")
    if args.workers != 1 and args.shard is not None:
        parser.error("give either --workers or --shard, not both")
    if args.workers != 1 and args.verify_only:
        parser.error("--workers applies to a write, not to --verify-only")
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    with sigterm_raises():
        return _run(args, progress)


def _run(args, progress):
    from .modeldir import verify_model_dir, write_model_dir
    common = dict(config=args.config, model_type=args.model_type, sets=args.sets,
                  dtype=args.dtype, seed=args.seed, overrides=args.override,
                  max_shard_size=args.max_shard_size)
    written = False
    try:
        if not args.verify_only:
            try:
                rep = write_model_dir(args.output, workers=args.workers, job=args.shard,
                                      progress=progress, **common)
            except (OSError, SpecError, ValueError, TypeError, RuntimeError) as exc:
                _err(_os_message(exc, args.output))
                return EXIT_ERROR
            written = True
            rss = _peak_rss_mib()
            what = (f"{len(rep.files)} file(s)" if args.shard is None else
                    f"job {args.shard[0]}/{args.shard[1]}: {len(rep.files)} file(s)")
            print(f"wrote {args.output}: {what}, {rep.tensors} tensors, "
                  f"{rep.nbytes / 1e9:.3f} GB in {rep.seconds:.2f} s "
                  f"({rep.nbytes / max(rep.seconds, 1e-9) / 1e9:.2f} GB/s), seed {rep.seed}"
                  + (f", {args.workers} workers" if args.workers != 1 else "")
                  + (f", peak RSS {rss:.0f} MiB (this process)" if rss else ""), flush=True)
            for name in rep.removed:
                print(f"fastinit checkpoint: removed {name} (not part of this layout)",
                      file=sys.stderr, flush=True)
        if args.verify or args.verify_only:
            try:
                problems = verify_model_dir(args.output, job=args.shard, progress=progress,
                                            **common)
            except (OSError, SpecError, ValueError, TypeError, RuntimeError) as exc:
                _err(_os_message(exc, args.output))
                return EXIT_ERROR
            if problems:
                return mismatch(args.output, "a regeneration", problems)
            print(f"verified {args.output}: index and every file match a regeneration "
                  f"(seed {args.seed})", flush=True)
        return 0
    except (KeyboardInterrupt, _Terminated) as exc:
        name, status = interrupted(exc)
        _err(f"interrupted ({name}) while verifying {args.output}" if written or
             args.verify_only else f"interrupted ({name}); no file of this run was kept")
        return status
