"""``python -m fastinit``: the command-line interface (see :mod:`fastinit.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
