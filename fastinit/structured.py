"""Layer 3: the structured initializers: orthogonal, delta_orthogonal, eye, dirac, sparse.

They are built on the public fills and the stream contract (docs/stream.md,
section "Structured initializers"):

- ``orthogonal``: the QR factorization (``numpy.linalg.qr``, LAPACK) of a
  matrix drawn by :func:`fastinit.normal` from ``(seed, stream)``, with the
  sign correction torch, Keras and JAX apply (``Q * sign(diag R)``), laid
  out as the framework named by ``layout`` lays out more than 2 dimensions;
- ``delta_orthogonal``: JAX's, an orthogonal matrix at the kernel's spatial
  centre and zeros elsewhere;
- ``eye`` and ``dirac``: no randomness, equal to torch's (and Keras's
  ``Identity``) exactly;
- ``sparse``: :func:`fastinit.normal` values, then ``ceil(sparsity * rows)``
  zeros in every column, at the rows with the smallest keys drawn for that
  column by :func:`fastinit.uniform` (float64) further along the same stream.

The values are computed on the host (QR has no kernel here), then stored in
``out``'s dtype (half types: rounded from float32 as docs/stream.md 5 says).
``out`` is a CPU buffer (a NumPy array, a torch CPU tensor, any CPU DLPack
producer); fastinit.torch's twins stage a CUDA tensor through host memory.
Every argument is checked before anything is written.
"""

import math
import threading

import numpy as np

from . import _contract as C
from ._dispatch import target_of
from .distributions import normal, uniform

LAYOUTS = ("torch", "keras")


def _host_target(out, fn):
    """The checked CPU target over ``out`` (any other device: a ValueError)."""
    backend, target = target_of(out)
    if not hasattr(target, "bits"):
        raise ValueError(f"fastinit.{fn}: out is not in host memory; the structured "
                         f"initializers compute on the host (QR): fill a CPU buffer and "
                         f"copy it (fastinit.torch's twins do this for CUDA tensors)")
    return target


def _compute_type(name):
    return np.float64 if name == "float64" else np.float32


def _to_bits(values, name):
    """The bits of ``values`` (compute type) stored as dtype ``name``, flat."""
    values = np.ascontiguousarray(values).reshape(-1)
    if name == "float64":
        return values.astype(np.float64).view(np.uint64)
    f32 = values.astype(np.float32)
    if name == "float32":
        return f32.view(np.uint32)
    if name == "float16":
        return f32.astype(np.float16).view(np.uint16)
    b = f32.view(np.uint32).astype(np.uint64)                  # docs/stream.md 5
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def _store(target, values):
    target.bits[...] = _to_bits(values, target.name)


def _resolve(seed, stream):
    """(seed, stream) checked; None takes the process-wide generator's next stream
    (call it only once every other check has passed)."""
    seed, stream = C.resolve_stream(seed, stream)
    if seed is None:
        seed, stream = C.take_stream()
    return seed, stream


def _check_gain(gain, name):
    gain = C.check_real("gain", gain)
    C.check_fits("gain", abs(gain), name)          # |Q| <= 1: gain bounds every value
    return gain


# --- orthogonal -----------------------------------------------------------------------
def matrix_of(shape, layout="torch", column_axis=-1):
    """(rows, cols) of the matrix that ``orthogonal`` makes orthogonal for ``shape``.

    torch: ``shape[0]`` rows of ``prod(shape[1:])`` (``tensor.view(rows, -1)``);
    keras: ``shape[column_axis]`` columns, the other axes' product rows (Keras:
    the last axis; JAX: ``column_axis``).
    """
    if layout == "torch":
        return shape[0], math.prod(shape[1:])
    c = column_axis % len(shape)
    return math.prod(shape[:c] + shape[c + 1:]), shape[c]


def orthogonal_matrix(rows, cols, dtype, *, seed, stream, qr=None):
    """The (rows, cols) matrix with orthonormal columns (rows, if fewer) in the compute
    type of ``dtype`` (a name): QR of the (max, min) matrix of fastinit.normal(0, 1)
    from (seed, stream), Q times the signs of R's diagonal, transposed if wide.
    ``qr`` (default ``numpy.linalg.qr``) factors it: ``qr(a) -> (q, r)``, NumPy
    arrays of ``a``'s dtype."""
    t = _compute_type(dtype)
    tall = (max(rows, cols), min(rows, cols))
    a = normal(np.empty(tall, t), 0.0, 1.0, seed=seed, stream=stream)
    q, r = (qr or np.linalg.qr)(a)
    q *= np.where(np.diagonal(r) < 0, t(-1), t(1))
    return q.T if rows < cols else q


def _check_layout(layout, column_axis, ndim):
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if isinstance(column_axis, bool) or not isinstance(column_axis, (int, np.integer)):
        raise TypeError(f"column_axis must be an int, got {type(column_axis).__name__}")
    if layout == "keras" and not -ndim <= column_axis < ndim:
        raise ValueError(f"column_axis {column_axis} is out of range for {ndim} dimensions")
    return int(column_axis)


def orthogonal_values(shape, dtype, gain=1.0, *, layout="torch", column_axis=-1, seed,
                      stream=0, qr=None):
    """The values ``orthogonal`` writes for ``shape`` and ``dtype`` (a name), in the
    compute type, as a new array of ``shape``; ``seed`` must be an int."""
    shape = tuple(shape)
    rows, cols = matrix_of(shape, layout, column_axis)
    q = orthogonal_matrix(rows, cols, dtype, seed=seed, stream=stream, qr=qr)
    if layout == "keras" and len(shape) > 2:        # JAX: the column axis moved back
        c = column_axis % len(shape)
        q = np.moveaxis(q.reshape(shape[:c] + shape[c + 1:] + (shape[c],)), -1, c)
    q = q.reshape(shape)
    return q * _compute_type(dtype)(gain)


def orthogonal(out, gain=1.0, *, layout="torch", column_axis=-1, seed=None, stream=0,
               qr=None):
    """Fill ``out`` with a (semi-)orthogonal matrix times ``gain``.

    The matrix is ``rows x cols`` (:func:`matrix_of`); its columns are
    orthonormal when ``rows >= cols``, else its rows. It is the QR factor of
    a matrix of :func:`fastinit.normal` (0, 1) values drawn from ``(seed,
    stream)`` in the compute type (float32; float64 for float64 buffers),
    of shape ``(max(rows, cols), min(rows, cols))`` in C order, with each
    column of Q multiplied by the sign of R's diagonal entry (Q is then
    Haar-distributed), transposed when ``rows < cols``.

    Deterministic for (seed, stream, shape, dtype, layout, column_axis) with
    the same LAPACK build: QR is ``numpy.linalg.qr`` (LAPACK ``geqrf``/``orgqr``),
    whose last bits depend on the LAPACK library, its version and the CPU's
    vector width (a blocked Householder QR sums in another order). The
    normal matrix itself is the same everywhere (docs/stream.md).

    Parameters
    ----------
    out : buffer
        A writable, C-contiguous float16, bfloat16, float32 or float64 CPU
        buffer with at least 2 dimensions. A zero-element buffer is left as it is.
    gain : float
        Multiplies the matrix.
    layout : {"torch", "keras"}
        torch: ``out.reshape(shape[0], -1)`` is the matrix. keras (Keras's
        ``Orthogonal`` and JAX's ``orthogonal``): ``shape[column_axis]``
        columns; the matrix is laid out over the other axes in C order and
        the column axis moved to ``column_axis`` (JAX's ``moveaxis``).
    column_axis : int
        For layout="keras" only.
    seed, stream : int, optional
        As for :func:`fastinit.normal`; seed=None takes the process-wide
        seed and its next stream.
    qr : callable, optional
        ``qr(a) -> (q, r)`` on a NumPy array, ``numpy.linalg.qr`` by
        default; fastinit.torch passes torch's (``torch.linalg.qr``, the
        LAPACK torch links, several times faster than NumPy's OpenBLAS at
        4096 x 4096 on the project's VM). Another LAPACK gives other last bits.

    Returns
    -------
    out
    """
    if qr is not None and not callable(qr):
        raise TypeError(f"fastinit.orthogonal: qr must be callable, got {type(qr).__name__}")
    target = _host_target(out, "orthogonal")
    shape = target.shape
    if len(shape) < 2:
        raise ValueError(f"fastinit.orthogonal: out must have at least 2 dimensions, got "
                         f"shape {shape}")
    column_axis = _check_layout(layout, column_axis, len(shape))
    gain = _check_gain(gain, target.name)
    seed, stream = C.resolve_stream(seed, stream)
    if target.size == 0:
        return out
    seed, stream = _resolve(seed, stream)
    _store(target, orthogonal_values(shape, target.name, gain, layout=layout,
                                     column_axis=column_axis, seed=seed, stream=stream,
                                     qr=qr))
    return out


def delta_orthogonal(out, gain=1.0, *, column_axis=-1, seed=None, stream=0):
    """Fill the (*kernel, in, out) conv kernel ``out`` as ``jax.nn.initializers.delta_orthogonal``.

    Zeros, except at the spatial centre ``((k1 - 1) // 2, ...)``, which holds
    ``orthogonal`` of the ``(in, out)`` matrix (layout="keras" with
    ``column_axis``, JAX's choice), times ``gain``. 3, 4 or 5 dimensions,
    ``in <= out``.
    """
    target = _host_target(out, "delta_orthogonal")
    shape = target.shape
    if len(shape) not in (3, 4, 5):
        raise ValueError("Delta orthogonal initializer requires a 3D, 4D or 5D shape.")
    if shape[-1] < shape[-2]:
        raise ValueError("`fan_in` must be less or equal than `fan_out`. ")
    column_axis = _check_layout("keras", column_axis, 2)
    gain = _check_gain(gain, target.name)
    seed, stream = C.resolve_stream(seed, stream)
    if target.size == 0:
        return out
    seed, stream = _resolve(seed, stream)
    values = np.zeros(shape, _compute_type(target.name))
    if shape[-2] and shape[-1]:
        centre = tuple((k - 1) // 2 for k in shape[:-2])
        values[centre] = orthogonal_values(shape[-2:], target.name, gain, layout="keras",
                                           column_axis=column_axis, seed=seed,
                                           stream=stream)
    _store(target, values)
    return out


# --- eye, dirac ---------------------------------------------------------------------
def eye(out, gain=1.0):
    """Fill the 2-D ``out`` with ``gain * I`` (ones on the main diagonal for gain 1).

    As ``torch.nn.init.eye_`` (gain 1) and Keras's ``Identity(gain)``: the
    diagonal holds ``gain`` rounded to the dtype (docs/stream.md 3.7), the
    rest ``0 * gain`` (-0.0 for a negative gain, as Keras's product gives).
    """
    target = _host_target(out, "eye")
    if len(target.shape) != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    gain = _check_gain(gain, target.name)
    rows, cols = target.shape
    bits = target.bits.reshape(rows, cols)
    bits[...] = C.constant_bits(math.copysign(0.0, gain), target.name)
    n = min(rows, cols)
    bits[np.arange(n), np.arange(n)] = C.constant_bits(gain, target.name)
    return out


def dirac(out, groups=1):
    """Fill the (out, in, *kernel) conv kernel ``out`` as ``torch.nn.init.dirac_``.

    Zeros, and 1 at ``[g * out_per_group + d, d, k1 // 2, ...]`` for every
    group ``g`` and ``d < min(out_per_group, in)``: a convolution with it
    keeps the input channels (per group). 3, 4 or 5 dimensions.
    """
    target = _host_target(out, "dirac")
    shape = target.shape
    if len(shape) not in (3, 4, 5):
        raise ValueError("Only tensors with 3, 4, or 5 dimensions are supported")
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)):
        raise TypeError(f"groups must be an int, got {type(groups).__name__}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if shape[0] % groups != 0:
        raise ValueError("dim 0 must be divisible by groups")
    per_group = shape[0] // groups
    n = min(per_group, shape[1])
    bits = target.bits.reshape(shape)
    bits[...] = 0
    centre = tuple(k // 2 for k in shape[2:])
    one = C.constant_bits(1.0, target.name)
    for g in range(groups):
        for d in range(n):
            bits[(g * per_group + d, d) + centre] = one
    return out


# --- sparse ------------------------------------------------------------------------
def sparse_zeros(rows, cols, sparsity, *, seed, stream):
    """Boolean (rows, cols) mask of sparse's zeros: in column ``j`` the
    ``ceil(sparsity * rows)`` rows with the smallest keys, ties to the smaller row.

    Column ``j``'s keys are float64 :func:`fastinit.uniform` (0, 1) values at
    indices ``rows * cols + j * rows + i`` (i = 0 .. rows - 1) of (seed, stream):
    after the ``rows * cols`` values of the normal draw, one column's keys in a row.
    """
    zeros = math.ceil(sparsity * rows)
    mask = np.zeros((rows, cols), bool)
    if zeros == 0 or rows * cols == 0:
        return mask
    keys = uniform(np.empty((cols, rows), np.float64), 0.0, 1.0, seed=seed, stream=stream,
                   offset=rows * cols)
    picked = np.argsort(keys, axis=1, kind="stable")[:, :zeros]       # (cols, zeros)
    mask[picked, np.arange(cols)[:, None]] = True
    return mask


def sparse(out, sparsity, std=0.01, *, seed=None, stream=0):
    """Fill the 2-D ``out`` as ``torch.nn.init.sparse_``: N(0, std^2), and
    ``ceil(sparsity * rows)`` zeros in every column.

    Element ``(i, j)`` is :func:`fastinit.normal` (0, std) at index
    ``i * cols + j`` of (seed, stream) unless it is one of column ``j``'s zeros
    (:func:`sparse_zeros`; docs/stream.md gives the rule). So the result is
    reproducible and any block of it can be computed on its own.
    ``0 <= sparsity <= 1`` (torch takes any number: a difference).
    """
    target = _host_target(out, "sparse")
    if len(target.shape) != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    sparsity = C.check_real("sparsity", sparsity)
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    std = C.check_real("std", std)
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    t = _compute_type(target.name)
    C.check_fits("std", std * C.NORMAL_RADIUS[t], target.name)
    seed, stream = C.resolve_stream(seed, stream)
    if target.size == 0:
        return out
    seed, stream = _resolve(seed, stream)
    rows, cols = target.shape
    values = normal(np.empty((rows, cols), t), 0.0, std, seed=seed, stream=stream)
    values[sparse_zeros(rows, cols, sparsity, seed=seed, stream=stream)] = 0
    _store(target, values)
    return out


# --- parts of a whole array (sharded Keras and JAX initializers) -------------------
_whole = {}                    # key -> the whole array of the last part asked for
_whole_lock = threading.Lock()


def fill_part(out, shape, offset, key, fill_whole):
    """Fill the C-contiguous ``out`` with the C-order elements ``offset ..`` of the
    ``shape`` array that ``fill_whole(buffer)`` writes into a buffer of ``out``'s dtype.

    A whole ``out`` (offset 0, as many elements) is filled directly; a part
    (a shard's run) is copied out of the whole array, computed once per
    ``key`` (the last key's array is kept, so the runs and tiles of one array,
    on any thread, share one computation, such as one QR).
    """
    shape = tuple(shape)
    if offset == 0 and out.size == math.prod(shape):
        fill_whole(out.reshape(shape))
        return out
    with _whole_lock:
        whole = _whole.get(key)
        if whole is None:
            whole = fill_whole(np.empty(shape, out.dtype))
            _whole.clear()
            _whole[key] = whole
    out.reshape(-1)[...] = whole.reshape(-1)[offset:offset + out.size]
    return out


__all__ = ["orthogonal", "delta_orthogonal", "eye", "dirac", "sparse", "orthogonal_values",
           "orthogonal_matrix", "matrix_of", "sparse_zeros", "fill_part"]
