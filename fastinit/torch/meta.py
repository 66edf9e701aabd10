"""``materialize``: a model built on the meta device, allocated once and initialized.

``to_empty`` allocates every tensor once (peak memory is the model's size),
then each parameter is filled in place as ``init_module`` fills it.
docs/torch.md, section 3.
"""

import math
import time
import warnings

import torch

from .. import _progress
from .module import plan, reset_buffers, run_item


def materialize(module, device="cpu", *, seed=None, rules=None, prefix="", defaults=True,
                on_unmatched="error", progress=None):
    """Allocate a meta-device ``module`` on ``device`` and initialize it in place.

    ``module.to_empty(device=device)`` allocates every parameter and buffer
    once (so peak memory is the model's size: no second copy), then each
    parameter is filled as init_module fills it (same rules, seed, prefix
    and streams: the values equal an init_module of the same model built on
    ``device``). Rules are checked before anything is allocated. Buffers
    torch's reset_parameters sets (norm running stats) are reset; buffers
    that were not on the meta device keep their values; any other buffer is
    left uninitialized and named in a warning. A progress bar on stderr
    (``fastinit._progress``) appears once the run passes about a second;
    ``progress=True``/``False`` forces it on/off. Returns the InitReport.
    """
    t0 = time.perf_counter()
    report, items = plan(module, rules, seed, prefix, defaults, "error", on_unmatched,
                         "materialize")
    kept = {}
    for mname, mod in module.named_modules():
        for bname, b in mod.named_buffers(recurse=False):
            if b is not None and not b.is_meta:
                kept[(id(mod), bname)] = (mod, bname, b, f"{mname}.{bname}" if mname else bname)
    module.to_empty(device=device)
    for mod, bname, old, qual in kept.values():
        new = mod._buffers.get(bname)
        if new is None:
            continue
        if new.device == old.device and new.dtype == old.dtype and new.shape == old.shape:
            mod._buffers[bname] = old
        else:
            with torch.no_grad():
                new.copy_(old)
    todo = [it for it in items if it.init is not None and it.record.status == "planned"]
    total = sum(math.prod(it.record.shape) for it in todo)
    with _progress.bar(total, "fastinit materialize", enabled=progress, unit="el") as bar:
        for it in todo:
            run_item(it, report.seed)
            bar.update(math.prod(it.record.shape))
    report.buffers = reset_buffers(module)
    done = {name for name, _ in report.buffers}
    unset = []
    for mname, mod in module.named_modules():
        for bname, b in mod.named_buffers(recurse=False):
            qual = f"{mname}.{bname}" if mname else bname
            if (id(mod), bname) in kept:
                report.buffers.append((qual, "kept (was not on the meta device)"))
            elif qual not in done:
                unset.append(qual)
                report.buffers.append((qual, "UNINITIALIZED (allocated by to_empty)"))
    if unset:
        warnings.warn(f"materialize: buffers {', '.join(unset)} were allocated by "
                      f"to_empty() and hold uninitialized memory; no built-in rule sets "
                      f"them: set them yourself", stacklevel=2)
    report.seconds = time.perf_counter() - t0
    return report
