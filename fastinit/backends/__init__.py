"""Layer 2b: the backends, peers behind one interface.

A backend is a module with three functions; the dispatcher
(``fastinit._dispatch``) picks one by the buffer's DLPack device type and
imports it on first use, so CPU-only users never import CuPy and CUDA users
never compile a Numba kernel:

- ``as_target(out) -> Target``: a checked view of ``out``'s memory (no copy);
  raises ``ValueError``/``TypeError`` naming ``out`` before any write.
- ``fill(target, kind, seed, stream, offset, params)``: draw ``kind``
  (``"uniform"``, ``"normal"``, ``"trunc"``) into every element; element
  ``k`` gets the stream's value for global index ``offset + k``; ``params``
  are the kind's parameters in the compute type (``fastinit._contract``).
- ``fill_constant(target, bits)``: every element = ``bits``, an unsigned
  integer of the element's width.

A backend may also take a 2-D row-strided destination (the CUDA backend
does; the CPU backend refuses non-contiguous buffers):

- ``as_rows_target(out, row_step=None)``: a checked (rows, cols) view whose
  rows are contiguous at a row stride ``ld >= cols`` elements (no overlap);
- ``fill_rows(target, kind, seed, stream, offset, row_step, params)``: element
  ``(r, c)`` gets the stream's value for global index
  ``offset + r * row_step + c``, in one launch. ``fill`` and
  ``fill_constant`` accept such a target too; the public fills reach it
  through ``fastinit.backends.cuda.RowsOf(buffer, row_step)`` (a non-contiguous
  torch view or a DTensor column shard, by ``fastinit.torch``).

Adding a backend is one module here and one line in
``fastinit._dispatch.BACKENDS``.
"""

import math
from typing import Protocol

import numpy as np

from ..kernels._abi import DTYPES

FLOAT_NAMES = tuple(DTYPES)
FLOAT_LIST = ", ".join(FLOAT_NAMES[:-1]) + " or " + FLOAT_NAMES[-1]     # for messages


class Target:
    """A checked, writable, C-contiguous float buffer: what a backend fills.

    ``name`` is the dtype's name (a key of ``fastinit.kernels._abi.DTYPES``),
    ``shape`` the caller's shape and ``size`` its element count.
    """

    __slots__ = ("name", "shape", "size")

    def __init__(self, name, shape):
        self.name, self.shape = name, tuple(shape)
        self.size = math.prod(self.shape)

    @property
    def compute(self):
        """The NumPy scalar type every value is computed in (float32 or float64)."""
        return np.float64 if DTYPES[self.name].compute == "float64" else np.float32


class Backend(Protocol):
    """What the dispatcher needs of a backend module."""

    def as_target(self, out) -> Target: ...

    def fill(self, target: Target, kind: str, seed: int, stream: int, offset: int,
             params: np.ndarray) -> None: ...

    def fill_constant(self, target: Target, bits: int) -> None: ...
