"""The Numba CPU kernels: ``philox`` (Philox4x32-10 and the transforms, the one
Numba definition of docs/stream.md), ``fills`` (the fill kernels built on it),
``entry`` (their C entry points, compiled to object code) and ``_config``
(Numba options)."""
