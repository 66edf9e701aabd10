"""Filling a plain torch tensor's memory, for the fastinit.torch twins.

A contiguous tensor goes to the core fill as it is; a non-contiguous view is
drawn into a small contiguous scratch, band by band, and copied in, so it
gets the values of a contiguous tensor of its shape. Expanded and
self-overlapping views are refused. docs/torch.md, section 1.
"""

import torch

SCRATCH_ELEMENTS = 1 << 18     # a non-contiguous view is filled this much at a time


def overlap_error(t):
    """A ValueError if ``t``'s elements may share memory, else None."""
    dims = [(st, sz) for sz, st in zip(t.shape, t.stride()) if sz > 1]
    if any(st == 0 for st, _ in dims):
        return ValueError(
            f"the tensor is an expanded view (shape {tuple(t.shape)}, strides "
            f"{tuple(t.stride())}: stride 0 over a dimension of size > 1), so several "
            f"of its elements are one memory location and cannot hold independent "
            f"values; fill the tensor it was expanded from, or a .clone() of it")
    reach = 0
    for st, sz in sorted(dims):
        if st <= reach:
            break
        reach += (sz - 1) * st
    else:
        return None                                   # a mixed-radix layout: no overlap
    n = t.numel()
    if n <= 1 << 24:                                  # rare layouts: check exactly
        offs = torch.zeros((), dtype=torch.int64)
        for sz, st in zip(t.shape, t.stride()):
            offs = offs.unsqueeze(-1) + torch.arange(sz, dtype=torch.int64) * st
        if torch.unique(offs.reshape(-1)).numel() == n:
            return None
    return ValueError(
        f"the tensor is a self-overlapping view (shape {tuple(t.shape)}, strides "
        f"{tuple(t.stride())}): some of its elements share memory, so they cannot hold "
        f"independent values; fill the base tensor or a .clone()")


def bump_version(tensor):
    """Fills write memory outside autograd; bump its version counter as torch's
    in-place ops do, so a stale tensor saved for backward is still caught."""
    try:
        torch.autograd.graph.increment_version(tensor)
    except Exception:                                 # inference tensors, subclasses
        pass


def _fill_through_scratch(t, draw, seed, stream):
    """Fill the non-contiguous view ``t`` a band of leading-dimension rows at a
    time, each band drawn into one small contiguous scratch (allocated once, it
    stays in cache) and copied in: band rows [r0, r1) hold the elements
    r0 * row .. r1 * row - 1 of a contiguous tensor of ``t``'s shape."""
    rows = t.shape[0]
    row = t.numel() // rows
    band = max(1, SCRATCH_ELEMENTS // row)
    scratch = torch.empty((min(band, rows), *t.shape[1:]), dtype=t.dtype, device=t.device)
    for r0 in range(0, rows, band):
        r1 = min(rows, r0 + band)
        tmp = scratch[:r1 - r0]
        draw(tmp, r0 * row, seed, stream)
        t[r0:r1].copy_(tmp)


def fill_view(tensor, draw, seed, stream, fn):
    """Run ``draw(buf, offset, seed, stream)`` over the plain tensor ``tensor``.

    ``buf`` is a C-contiguous tensor whose element k has index offset + k in
    a contiguous tensor of ``tensor``'s shape: ``tensor``'s own memory when it
    is contiguous, else the scratch. Returns ``tensor``.
    """
    t = tensor.detach()                    # fills write memory, never through autograd
    if t.is_contiguous():                  # torch calls 0-d and empty tensors contiguous
        draw(t, 0, seed, stream)
    else:
        err = overlap_error(t)
        if err is not None:
            raise ValueError(f"fastinit.torch.{fn}: {err}")
        _fill_through_scratch(t, draw, seed, stream)
    bump_version(tensor)
    return tensor
