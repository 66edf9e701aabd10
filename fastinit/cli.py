"""The ``fastinit`` command line: ``fastinit <command> [options]``.

Subcommands are plugged in through :data:`COMMANDS`, a map from the command
name to the module that implements it. Such a module provides

- ``configure_parser(parser)``: add its options to an ``argparse`` parser
  (its docstring's first line becomes the command's one-line help), and
- ``run(args, parser) -> int``: do the work and return the exit status;
  it may call ``parser.error(...)`` for argument errors (exit status 2).

A module is imported only to build the parser, so it must keep heavy
imports (torch, JAX, TensorFlow) inside ``run``.
"""

import argparse
import importlib
import sys

COMMANDS = {
    "bench": "fastinit.bench",
    "checkpoint": "fastinit.checkpoint",
}


def int_arg(what, minimum):
    """An argparse ``type`` for an integer option ``what`` that is at least ``minimum``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}, got {value}")
        return value
    return parse


def _summary(module):
    doc = (module.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def build_parser():
    from . import __version__
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
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its status."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args._argv = argv
    try:
        status = args._module.run(args, args._parser)
    except KeyboardInterrupt:
        print("fastinit: interrupted", file=sys.stderr)
        return 130
    return 0 if status is None else int(status)


if __name__ == "__main__":
    raise SystemExit(main())
