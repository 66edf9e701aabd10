"""The ``fastinit`` command line: ``fastinit <command> [options]``.

Subcommands are plugged in through :data:`COMMANDS`, a map from the command
name to the module that implements it. Such a module provides

- ``configure_parser(parser)``: add its options to an ``argparse`` parser
  (its docstring's first line becomes the command's one-line help), and
- ``run(args, parser) -> int``: do the work and return the exit status;
  it may call ``parser.error(...)`` for argument errors (exit status 2).

A module is imported only to build the parser, so it must keep heavy
imports (torch, JAX, TensorFlow) inside ``run``. Subcommand modules take
shared argument types from :mod:`fastinit.cli._args`, never from here.
"""

import argparse
import importlib
import sys

COMMANDS = {
    "bench": "fastinit.cli.bench",
    "checkpoint": "fastinit.cli.checkpoint.command",
    "warmup": "fastinit.cli.warmup",
}
EXIT_INTERRUPT = 130


def _summary(module):
    doc = (module.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def build_parser():
    from .. import __version__
    parser = argparse.ArgumentParser(
        prog="fastinit",
        description="fastinit: fast, reproducible weight initialization into "
                    "preallocated buffers.")
    parser.add_argument("--version", action="version", version=f"fastinit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        summary = _summary(module)
        p = sub.add_parser(name, help=summary, description=summary,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.configure_parser(p)
        p.set_defaults(_module=module, _parser=p)
    return parser


def main(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its status.

    Ctrl-C that a command does not handle itself prints
    ``fastinit <command>: error: interrupted`` and returns 130.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = "fastinit"
    try:
        args = build_parser().parse_args(argv)
        args._argv = argv
        prog = f"fastinit {args.command}"
        status = args._module.run(args, args._parser)
    except KeyboardInterrupt:
        print(f"{prog}: error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPT
    return 0 if status is None else int(status)
