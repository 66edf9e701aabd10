"""``materialize``: a model built on the meta device, allocated once and initialized.

Tied tensors are recorded and each is allocated once (``to_empty`` would
allocate every name and un-tie them); buffers that were not on the meta
device keep their values; then the model's own init code runs under the
redirect, as ``init_module`` runs it, and the rules after it. Parameters
and buffers that nothing set are errors. docs/torch.md, section 3.
"""

import math
import time
import warnings

import torch

from .. import _progress
from .module import (buffer_actions, plan, reset_buffers, resolve_init, run,
                     unmatched_error, unruled)


class UnsetBuffersError(ValueError):
    """materialize found buffers that nothing set; ``.report`` lists everything."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


def _ties(module):
    """[(canonical (module, local, kind), [alias (module, local, kind), ...])] for every
    parameter or buffer registered under more than one name."""
    groups = {}
    for mod in module.modules():
        for kind, slots in (("p", mod._parameters), ("b", mod._buffers)):
            for local, t in slots.items():
                if t is not None:
                    groups.setdefault(id(t), []).append((mod, local, kind))
    return [(g[0], g[1:]) for g in groups.values() if len(g) > 1]


def _slots(mod, kind):
    return mod._parameters if kind == "p" else mod._buffers


def _allocate(module, device, ties):
    """``to_empty`` with each tied tensor allocated once and re-tied afterwards."""
    for _, aliases in ties:
        for mod, local, kind in aliases:
            _slots(mod, kind)[local] = None                 # to_empty skips None slots
    try:
        module.to_empty(device=device)
    finally:
        for (cmod, clocal, ckind), aliases in ties:
            t = _slots(cmod, ckind)[clocal]
            for mod, local, kind in aliases:
                _slots(mod, kind)[local] = t


def materialize(module, device="cpu", *, seed=None, rules=None, init=None, prefix="",
                defaults=True, on_unmatched="error", on_buffers="error",
                on_unused_rule="error", progress=None):
    """Allocate a meta-device ``module`` on ``device`` and initialize it in place.

    1. Rules are checked (as init_module checks them) before anything is
       allocated.
    2. ``to_empty(device=device)`` allocates every parameter and buffer once
       (peak memory is the model's size); tied parameters (``lm_head.weight
       = embed.weight``) are allocated once and stay tied; buffers that were
       not on the meta device are put back with their values.
    3. The model's own init code runs with every random draw redirected to
       fastinit (see :func:`fastinit.torch.redirect`): ``init=None`` picks
       the root's ``init_weights()`` (transformers' models, torchtitan-style
       models) or else every module's ``reset_parameters()``, children
       first; ``init=callable(module)`` names it; ``defaults=False`` runs
       none. It runs under ``torch.device(device)``, so its temporaries and
       recomputed buffers are made there.
    4. Rules are applied (they win).
    5. A parameter that nothing set raises UnmatchedParametersError naming
       each one and how to provide it (``on_unmatched="warn"``/``"ignore"``);
       a buffer that was on the meta device and that nothing set raises
       UnsetBuffersError (``on_buffers="warn"`` warns instead).

    A progress bar on stderr (``fastinit._progress``) appears once the run
    passes about a second; ``progress=True``/``False`` forces it on/off.
    Returns the InitReport.
    """
    return materialize_into(
        module, lambda m, ties: _allocate(m, device, ties), device=device, seed=seed,
        rules=rules, init=init, prefix=prefix, defaults=defaults, on_unmatched=on_unmatched,
        on_buffers=on_buffers, on_unused_rule=on_unused_rule, progress=progress)


def materialize_into(module, allocate, *, device="cpu", seed=None, rules=None, init=None,
                     prefix="", defaults=True, on_unmatched="error", on_buffers="error",
                     on_unused_rule="error", progress=None, on_write=None, checked=None):
    """:func:`materialize` with the storage chosen by the caller.

    ``allocate(module, ties)`` replaces ``to_empty``: it gives each meta
    parameter and buffer the storage it should be initialized in (memory of
    the caller's choosing, such as a memory-mapped output file) or leaves it
    on the meta device, where the init code's writes to it do nothing, and
    keeps each group of ``ties`` (from :func:`_ties`) one tensor. The init
    code then runs as in materialize; ``on_write(name)`` is called after each
    write it makes to a parameter or buffer (the canonical name of a tied
    one); ``checked`` (a set of names, None for all) limits the unset
    checks to those tensors (the others may stay on meta).
    """
    t0 = time.perf_counter()
    if on_buffers not in ("error", "warn"):
        raise ValueError(f"on_buffers must be 'error' or 'warn', got {on_buffers!r}")
    report, items = plan(module, rules, seed, prefix, "error", on_unmatched, "materialize",
                         on_unused_rule)
    label, init_fn = resolve_init(module, init, defaults, "materialize")
    if init_fn is None:
        unmatched_error(report, unruled(report, items), "materialize", None, on_unmatched)
    kept = {}
    for mname, mod in module.named_modules():
        for bname, b in mod.named_buffers(recurse=False):
            if b is not None and not b.is_meta:
                kept[(id(mod), bname)] = (mod, bname, b, f"{mname}.{bname}" if mname else bname)
    allocate(module, _ties(module))
    for mod, bname, old, qual in kept.values():
        new = mod._buffers.get(bname)
        if new is None:
            continue
        if new.device == old.device and new.dtype == old.dtype and new.shape == old.shape:
            mod._buffers[bname] = old
        else:
            with torch.no_grad():
                new.copy_(old)
    total = sum(math.prod(it.record.shape) for it in items)
    with _progress.bar(total, "fastinit materialize", enabled=progress, unit="el") as bar:
        red = run(module, report, items, init_label=label, init_fn=init_fn, prefix=prefix,
                  progress=bar.update, device=device, on_write=on_write)
        bar.update(total - bar.n)
    written = dict(buffer_actions(red)) if red is not None else dict(reset_buffers(module))
    report.buffers = []
    unset = []
    for mname, mod in module.named_modules():
        for bname, b in mod.named_buffers(recurse=False):
            qual = f"{mname}.{bname}" if mname else bname
            if qual in written:
                report.buffers.append((qual, written[qual]))
            elif (id(mod), bname) in kept:
                report.buffers.append((qual, "kept (was not on the meta device)"))
            elif checked is not None and qual not in checked:
                report.buffers.append((qual, "not checked"))
            else:
                unset.append(qual)
                report.buffers.append((qual, "UNSET (allocated by to_empty, nothing wrote it)"))
    unmatched = report.unmatched
    if checked is not None:
        unmatched = [n for n in unmatched if n in checked]
    unmatched_error(report, unmatched, "materialize", label, on_unmatched)
    if unset:
        msg = (f"materialize: {len(unset)} buffer(s) were on the meta device and nothing "
               f"set them, so they hold to_empty's uninitialized memory: {', '.join(unset)}. "
               f"Set them in the init code (init=callable), assign them after materialize "
               f"(module.get_buffer(name).copy_(...)), or create them off the meta device; "
               f"on_buffers='warn' warns instead")
        if on_buffers == "error":
            raise UnsetBuffersError(msg, report)
        warnings.warn(msg, stacklevel=2)
    report.seconds = time.perf_counter() - t0
    return report
