"""DTensor fills for fastinit.torch: each rank fills only its local shard.

The local shard of ``Shard``/``Replicate`` placements is a block of the full
tensor (:func:`local_block`); :func:`block_fill` draws that block by global
element offsets, so it holds exactly the same slice of a single-process
fill. On a device in ``views.ROW_FILL_DEVICES`` (CUDA) a column shard is one
row-strided fill. docs/torch.md, section 4.
"""

import math
import sys

import numpy as np
import torch

from .. import _contract
from . import views
from .views import overlap_error

# When a local row misses fewer than this many elements of its global row,
# whole global rows are drawn into a temporary (one call per chunk) rather
# than one call per local row: a call costs about as much as this many elements.
SPAN_SLACK = 4096
SPAN_CHUNK = 1 << 22            # elements per temporary in that mode


def _dtensor_class():
    """torch's DTensor class if torch.distributed.tensor is loaded, else None.

    A DTensor can only exist once its module has been imported, so checking
    ``sys.modules`` keeps plain fills free of the distributed import.
    """
    mod = sys.modules.get("torch.distributed.tensor")
    return getattr(mod, "DTensor", None) if mod is not None else None


def is_dtensor(t):
    cls = _dtensor_class()
    return cls is not None and isinstance(t, cls)


def local_block(t):
    """(local tensor, starts, local shape) of DTensor ``t`` on this rank.

    The local shard is the block ``full[starts[0]:starts[0]+shape[0], ...]``
    of the full tensor, split with torch.chunk's rule (uneven shards: the
    last ones are smaller or empty), mesh dimensions applied left to right.
    """
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    local = t.to_local()
    gshape = tuple(t.shape)
    mesh, placements = t.device_mesh, tuple(t.placements)
    coord = mesh.get_coordinate()
    if coord is None:                                   # this rank holds nothing
        return local, (0,) * len(gshape), tuple(local.shape)
    try:
        from torch.distributed.tensor._dtensor_spec import DTensorSpec
        order = getattr(t._spec, "shard_order", None)
        if order is not None and order != DTensorSpec.compute_default_shard_order(placements):
            raise NotImplementedError(
                f"DTensor with a non-default shard order {order}: fastinit.torch fills "
                f"Shard placements applied left to right over the mesh dimensions")
    except (ImportError, AttributeError):
        pass
    starts, sizes = [0] * len(gshape), list(gshape)
    for mesh_dim, p in enumerate(placements):
        if isinstance(p, _StridedShard):
            raise NotImplementedError(
                f"DTensor placement {p}: fastinit.torch fills Shard(d) and Replicate "
                f"placements; a strided shard's rows are not one block of the full tensor")
        if isinstance(p, Shard):
            d = p.dim % len(gshape)
            n, r = mesh.size(mesh_dim), coord[mesh_dim]
            full = -(-sizes[d] // n)
            begin = min(full * r, sizes[d])
            end = min(sizes[d], begin + full)
            starts[d] += begin
            sizes[d] = max(0, end - begin)
        elif isinstance(p, Replicate):
            continue
        elif p.is_partial():
            raise ValueError(
                f"DTensor placement {p}: a Partial DTensor holds addends of its value, "
                f"not the value; initialize it with Shard or Replicate placements")
        else:
            raise NotImplementedError(f"DTensor placement {p} is not supported")
    if tuple(local.shape) != tuple(sizes):
        raise NotImplementedError(
            f"DTensor local shard has shape {tuple(local.shape)} but placements "
            f"{placements} on mesh {tuple(mesh.shape)} give {tuple(sizes)}: this layout "
            f"is not one block of the full tensor")
    return local, tuple(starts), tuple(sizes)


def block_fill(buf, gshape, starts, lshape, draw, seed, stream):
    """Fill contiguous ``buf`` (shape ``lshape``) with the values of the block of a
    C-contiguous ``gshape`` tensor that starts at ``starts``; ``draw`` as in
    :func:`fastinit.torch.views.fill_view`."""
    if buf.numel() == 0:
        return
    nd = len(gshape)
    partial = [d for d in range(nd) if lshape[d] != gshape[d]]
    if not partial:                                    # the whole tensor
        draw(buf, 0, seed, stream)
        return
    k = partial[-1]
    inner = math.prod(gshape[k + 1:])
    row_len, global_row = lshape[k] * inner, gshape[k] * inner
    col0 = starts[k] * inner
    if k == 0:                                         # one contiguous range
        draw(buf, col0, seed, stream)
        return
    gstride = [math.prod(gshape[d + 1:]) for d in range(nd)]
    rows = math.prod(lshape[:k])
    base = np.zeros(1, dtype=np.int64)                 # global index of each row's col 0
    for d in range(k):
        base = (base[:, None] + (starts[d] + np.arange(lshape[d], dtype=np.int64))
                * gstride[d]).reshape(-1)
    flat = buf.view(rows, row_len)
    if buf.device.type in views.ROW_FILL_DEVICES:
        # One row-strided fill per run of rows that are global_row apart (all
        # rows, unless a dimension between 0 and k is split too).
        from ..backends.cuda import RowsOf
        cuts = [0, *(np.flatnonzero(np.diff(base) != global_row) + 1).tolist(), rows]
        for r0, r1 in zip(cuts[:-1], cuts[1:]):
            draw(RowsOf(flat[r0:r1], global_row), int(base[r0]) + col0, seed, stream)
        return
    if global_row - row_len < SPAN_SLACK:
        # Whole global rows into a temporary, the local columns copied out:
        # rows along dim k-1 are consecutive, global_row apart.
        per_group = lshape[k - 1]
        chunk = max(1, min(per_group, SPAN_CHUNK // global_row))
        tmp = torch.empty(chunk * global_row, dtype=buf.dtype, device=buf.device)
        for g0 in range(0, rows, per_group):
            for r0 in range(g0, g0 + per_group, chunk):
                c = min(chunk, g0 + per_group - r0)
                part = tmp[:c * global_row]
                draw(part, int(base[r0]), seed, stream)
                flat[r0:r0 + c].copy_(part.view(c, global_row)[:, col0:col0 + row_len])
        return
    for r in range(rows):
        draw(flat[r], int(base[r]) + col0, seed, stream)


def fill_dtensor(tensor, draw, seed, stream):
    """Fill this rank's shard of DTensor ``tensor`` (call under torch.no_grad())."""
    if seed is None:                      # one stream for all ranks' pieces
        seed, stream = _contract.take_stream()
    local, starts, lshape = local_block(tensor)
    # validate the parameters on every rank, empty shard or not
    draw(torch.empty(0, dtype=local.dtype, device=local.device), 0, seed, stream)
    local = local.detach()
    gshape = tuple(tensor.shape)
    if local.is_contiguous():
        block_fill(local, gshape, starts, lshape, draw, seed, stream)
    else:
        err = overlap_error(local)
        if err is not None:
            raise err
        tmp = torch.empty(lshape, dtype=local.dtype, device=local.device)
        block_fill(tmp, gshape, starts, lshape, draw, seed, stream)
        local.copy_(tmp)


def basic_index(index):
    """Whether ``index`` is basic indexing (ints, slices, None, Ellipsis): a view of
    the same elements, whose positions the index alone decides."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice)) or i is None or i is Ellipsis for i in items) \
        and not any(isinstance(i, bool) for i in items)


def positions_of(gshape, index):
    """int64 tensor of the positions (element offsets in a C-contiguous tensor of
    ``gshape``) of ``full[index]``, in the view's shape; ``index`` is basic."""
    g = torch.empty(gshape, device="meta")[index]          # the geometry alone
    pos = torch.full((), g.storage_offset(), dtype=torch.int64, device="cpu")
    for n, st in zip(g.shape, g.stride()):
        pos = pos.unsqueeze(-1) + torch.arange(n, dtype=torch.int64, device="cpu") * st
    return pos


def write_positions(d, pos, values):
    """Write into DTensor ``d``'s local shard the elements at global positions ``pos``
    that it holds. ``values(sel)`` returns the values of ``pos.reshape(-1)[sel]`` (a
    tensor, or a Python number for all of them). Call under torch.no_grad()."""
    local, starts, lshape = local_block(d)
    if local.numel() == 0 or pos.numel() == 0:
        return
    gshape = tuple(d.shape)
    rem = pos.reshape(-1).clone()
    inside = torch.ones_like(rem, dtype=torch.bool)
    lidx = torch.zeros_like(rem)
    for dim in range(len(gshape) - 1, -1, -1):
        g = rem % gshape[dim]
        rem = rem // gshape[dim]
        inside &= (g >= starts[dim]) & (g < starts[dim] + lshape[dim])
        lidx += (g - starts[dim]) * local.stride(dim)
    sel = inside.nonzero().reshape(-1)
    if sel.numel() == 0:
        return
    local = local.detach()
    span = 1 + sum((n - 1) * s for n, s in zip(local.shape, local.stride()))
    flat = local.as_strided((span,), (1,), local.storage_offset())
    v = values(sel)
    where = lidx[sel].to(local.device)
    if isinstance(v, torch.Tensor):
        flat[where] = v.to(dtype=local.dtype, device=local.device)
    else:
        flat[where] = v
