"""Twins of torch.nn.init's structured initializers: orthogonal_, eye_, dirac_, sparse_.

Same names, arguments, defaults and errors as torch's, plus keyword-only
``seed`` and ``stream`` for the random ones. The values are those of
:mod:`fastinit.structured` for the tensor's (global) shape and dtype:
computed on the host into a CPU tensor, then copied into the tensor (any
view, any device). A DTensor: every rank computes the whole tensor on its
host and keeps its own block (docs/torch.md, "Structured initializers":
QR cannot be split by element offsets, so each rank pays for the full
matrix). On the meta device they are no-ops, as torch's are.
"""

import torch

from .. import _contract
from .. import structured as S
from .dtensor import is_dtensor, local_block
from .twins import _check_generator, _check_tensor, scalar
from .views import bump_version, overlap_error


def _write(tensor, fill_host, fn):
    """Fill ``tensor`` with what ``fill_host(cpu_tensor)`` writes into a contiguous CPU
    tensor of its global shape and dtype (the tensor itself when it is one)."""
    if tensor.is_meta:
        return tensor
    with torch.no_grad():
        if is_dtensor(tensor):
            local, starts, lshape = local_block(tensor)
            full = torch.empty(tuple(tensor.shape), dtype=tensor.dtype)
            fill_host(full)
            block = full[tuple(slice(s, s + n) for s, n in zip(starts, lshape))]
            if local.numel():
                local.detach().copy_(block)
            return tensor
        t = tensor.detach()
        if t.device.type == "cpu" and t.is_contiguous():
            fill_host(t)
        else:
            err = overlap_error(t)
            if err is not None:
                raise ValueError(f"fastinit.torch.{fn}: {err}")
            tmp = torch.empty(tuple(t.shape), dtype=t.dtype)
            fill_host(tmp)
            t.copy_(tmp)
    bump_version(tensor)
    return tensor


def _stream(seed, stream):
    """(seed, stream) for one call: None takes the process-wide generator's next stream
    (once, so every rank of a DTensor draws the same stream)."""
    seed, stream = _contract.resolve_stream(seed, stream)
    return _contract.take_stream() if seed is None else (seed, stream)


def torch_qr(a):
    """``numpy.linalg.qr``'s reduced (q, r) computed by ``torch.linalg.qr``: the LAPACK
    torch links (MKL on x86 wheels) is several times faster than NumPy's OpenBLAS."""
    q, r = torch.linalg.qr(torch.from_numpy(a))
    return q.numpy(), r.numpy()


def orthogonal_(tensor, gain=1, generator=None, *, seed=None, stream=0):
    """Fill ``tensor`` with a (semi-)orthogonal matrix times ``gain``, as torch's ``orthogonal_``.

    ``tensor.view(size(0), -1)`` is the matrix: orthonormal columns if it
    has at least as many rows as columns, else orthonormal rows. It is the QR
    factor of fastinit.normal(0, 1) values from (seed, stream), with torch's
    sign correction (``fastinit.orthogonal``), factored by ``torch.linalg.qr``
    (:func:`torch_qr`); bit for bit the same for the same torch build
    (docs/stream.md); ``fastinit.orthogonal`` with NumPy's LAPACK agrees to
    rounding. float16/bfloat16 are computed in
    float32 and rounded. A DTensor: each rank computes the whole matrix and
    keeps its block.

    Example: ``ft.orthogonal_(torch.empty(256, 128), gain=2 ** 0.5, seed=0)``
    """
    _check_generator(generator, "orthogonal_")
    _check_tensor(tensor, "orthogonal_")
    if tensor.dim() < 2:
        raise ValueError("Only tensors with 2 or more dimensions are supported")
    gain = scalar(gain, "gain", "orthogonal_")
    _contract.resolve_stream(seed, stream)
    if tensor.numel() == 0 or tensor.is_meta:
        return tensor
    if not is_dtensor(tensor):                 # the buffer's checks before the QR
        S._check_gain(gain, str(tensor.dtype).removeprefix("torch."))
    seed, stream = _stream(seed, stream)
    return _write(tensor, lambda t: S.orthogonal(t, gain, seed=seed, stream=stream,
                                                 qr=torch_qr), "orthogonal_")


def eye_(tensor):
    """Fill the 2-D ``tensor`` with the identity matrix, as ``torch.nn.init.eye_``.

    Example: ``ft.eye_(torch.empty(3, 5))``
    """
    _check_tensor(tensor, "eye_")
    if tensor.dim() != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    return _write(tensor, S.eye, "eye_")


def dirac_(tensor, groups=1):
    """Fill the {3, 4, 5}-D ``tensor`` with the Dirac delta, as ``torch.nn.init.dirac_``.

    Keeps the input channels of a convolution (per group): 1 at
    ``[g * out_per_group + d, d, k1 // 2, ...]``, 0 elsewhere.

    Example: ``ft.dirac_(torch.empty(16, 16, 3, 3))``
    """
    _check_tensor(tensor, "dirac_")
    if tensor.dim() not in (3, 4, 5):
        raise ValueError("Only tensors with 3, 4, or 5 dimensions are supported")
    groups = scalar(groups, "groups", "dirac_", integer=True)
    if groups < 1:
        raise ValueError(f"fastinit.torch.dirac_: groups must be >= 1, got {groups}")
    if tensor.size(0) % groups != 0:
        raise ValueError("dim 0 must be divisible by groups")
    return _write(tensor, lambda t: S.dirac(t, groups), "dirac_")


def sparse_(tensor, sparsity, std=0.01, generator=None, *, seed=None, stream=0):
    """Fill the 2-D ``tensor`` as torch's ``sparse_``: N(0, std^2), with
    ``ceil(sparsity * rows)`` zeros in every column.

    The zeros of column ``j`` are at the rows with the smallest float64
    uniform keys drawn for that column further along (seed, stream)
    (``fastinit.sparse``, docs/stream.md), so the result is reproducible.
    ``0 <= sparsity <= 1`` (torch takes any number).

    Example: ``ft.sparse_(torch.empty(100, 50), sparsity=0.1, seed=0)``
    """
    _check_generator(generator, "sparse_")
    _check_tensor(tensor, "sparse_")
    if tensor.dim() != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    sparsity = scalar(sparsity, "sparsity", "sparse_")
    std = scalar(std, "std", "sparse_")
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"fastinit.torch.sparse_: sparsity must be in [0, 1], got {sparsity}")
    if std < 0:
        raise ValueError(f"fastinit.torch.sparse_: std must be >= 0, got {std}")
    _contract.resolve_stream(seed, stream)
    if tensor.numel() == 0 or tensor.is_meta:
        return tensor
    seed, stream = _stream(seed, stream)
    return _write(tensor, lambda t: S.sparse(t, sparsity, std, seed=seed, stream=stream),
                  "sparse_")


__all__ = ["orthogonal_", "eye_", "dirac_", "sparse_"]
