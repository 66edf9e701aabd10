"""Argument types and checks shared by the subcommands.

Each ``*_arg`` is an argparse ``type``: it returns the parsed value or
raises ``argparse.ArgumentTypeError`` with a message that names the option,
which argparse prints as ``fastinit <command>: error: argument --opt:
<message>`` (exit status 2). :func:`output_problem` checks a path a command
will write.
"""

import argparse
import math
import os


def int_arg(what, minimum):
    """An integer option ``what`` that is at least ``minimum``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}, got {value}")
        return value
    return parse


def seed_arg(what="--seed"):
    """A seed in [0, 2**64): decimal, ``0x`` hex or with ``_`` separators."""
    def parse(text):
        try:
            value = int(str(text).replace("_", ""), 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if not 0 <= value < 1 << 64:
            raise argparse.ArgumentTypeError(f"{what} must be in [0, 2**64), got {value}")
        return value
    return parse


def float_arg(what):
    """A finite number >= 0 for option ``what``."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not (math.isfinite(value) and value >= 0):
            raise argparse.ArgumentTypeError(f"{what} must be a finite number >= 0, "
                                             f"got {value}")
        return value
    return parse


def checked_arg(check):
    """``check(text)`` as an argparse type: its ValueError becomes the option's error."""
    def parse(text):
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def split_list(text, what):
    """A comma-separated list, stripped, without repeats, order kept; empty items refused."""
    items = [s.strip() for s in str(text).split(",")]
    if not str(text).strip() or any(not s for s in items):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, "
                                         f"got {text!r}")
    return list(dict.fromkeys(items))


def list_arg(item, what):
    """A comma-separated list of ``item(text)`` values (a ValueError names the item)."""
    check = checked_arg(item)

    def parse(text):
        return list(dict.fromkeys(check(s) for s in split_list(text, what)))
    return parse


def choices_arg(allowed, what):
    """A comma-separated list from ``allowed``, or ``all`` for all of them."""
    def parse(text):
        items = split_list(text, what)
        if items == ["all"]:
            return list(allowed)
        bad = [s for s in items if s not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(map(repr, bad))}; choose from "
                f"{', '.join(allowed)} (or 'all')")
        return items
    return parse


def output_problem(path, *, hint="", writable=True):
    """Why no file can be written at ``path``, as an OSError to raise or report, or None.

    The message starts with ``repr(path)``: a directory (``hint`` is added to
    "give a file path"), a missing directory or a regular file on the way, or
    (with ``writable``) no write permission.
    """
    full = os.path.abspath(path)
    d = os.path.dirname(full)
    if os.path.isdir(full):
        return IsADirectoryError(f"{path!r} is a directory; give a file path{hint}")
    if not os.path.isdir(d):
        parent = d
        while parent and not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if parent and not os.path.isdir(parent):
            return NotADirectoryError(f"{path!r}: {parent!r} is not a directory")
        return FileNotFoundError(f"{path!r}: directory {d!r} does not exist")
    if writable and (not os.access(d, os.W_OK)
                     or (os.path.exists(full) and not os.access(full, os.W_OK))):
        return PermissionError(f"{path!r} is not writable")
    return None
