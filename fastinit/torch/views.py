"""Filling a plain torch tensor's memory, for the fastinit.torch twins.

A contiguous tensor goes to the core fill as it is; a non-contiguous view is
drawn into a small contiguous scratch, band by band, and copied in, so it
gets the values of a contiguous tensor of its shape. On a device in
:data:`ROW_FILL_DEVICES` (CUDA), a view whose elements are rows of
contiguous elements at one stride (``w[:, a:b]``, a slice of the last
dimensions) is filled in place by one row-strided fill instead
(``fastinit.backends.cuda.RowsOf``). Expanded and self-overlapping views
are refused. docs/torch.md, section 1.
"""

import torch

SCRATCH_ELEMENTS = 1 << 18     # a non-contiguous view is filled this much at a time
ROW_FILL_DEVICES = ("cuda",)   # devices whose backend fills a row-strided view in one launch


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


def rows_of(t):
    """(rows, cols, row stride) when ``t``'s elements are ``rows`` runs of ``cols``
    contiguous elements, ``row stride`` apart, in row-major order (its dimensions
    collapse to 2-D with a last stride of 1); else None."""
    dims = [(n, st) for n, st in zip(t.shape, t.stride()) if n != 1]
    if len(dims) < 2 or dims[-1][1] != 1:
        return None
    cols, rows = dims[-1][0], dims[-2][0]
    ld = dims[-2][1]
    for (n, st), (n_in, st_in) in zip(dims[-3::-1], dims[-2::-1]):
        if st != n_in * st_in:
            return None
        rows *= n
    return rows, cols, ld


def _row_fill(t):
    """``t`` as a 2-D view for one row-strided fill (``RowsOf``), or None."""
    if t.device.type not in ROW_FILL_DEVICES or t.is_neg() or t.is_conj() or (
            t.is_inference() and not torch.is_inference_mode_enabled()):
        return None                       # left to the scratch path and torch's own checks
    geometry = rows_of(t)
    if geometry is None:
        return None
    rows, cols, ld = geometry
    from ..backends.cuda import RowsOf
    return RowsOf(t.as_strided((rows, cols), (ld, 1)))


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
        rows = _row_fill(t)
        if rows is not None:
            draw(rows, 0, seed, stream)
        else:
            _fill_through_scratch(t, draw, seed, stream)
    bump_version(tensor)
    return tensor
