"""fastinit: fast, reproducible weight initialization into preallocated buffers.

Every fill draws from one counter-based Philox4x32-10 stream, so an
element's value depends only on (seed, stream, element index, parameters):
see docs/stream.md. Typical use::

    import fastinit as fi
    w = fi.empty((4096, 4096), "bfloat16")
    fi.kaiming_uniform(w, a=5 ** 0.5, seed=0)
"""

from ._contract import DEFAULT_SEED, STREAM_VERSION, initial_seed, manual_seed, stream_for
from .backends._threads import get_num_threads, set_num_threads
from .buffers import empty
from .distributions import (constant, masked_uniform, normal, ones, truncated_normal,
                            uniform, zeros)
from .fans import (calculate_gain, fans, kaiming_normal, kaiming_uniform, lecun_normal,
                   lecun_uniform, variance_scaling, xavier_normal, xavier_uniform)
from .structured import delta_orthogonal, dirac, eye, orthogonal, sparse

__version__ = "0.1.0"


def to_torch(x):
    """A torch tensor sharing ``x``'s memory (NumPy, cupy or DLPack), zero copy."""
    from .torch import to_torch as convert
    return convert(x)


def to_tensorflow(x):
    """A tf.Tensor sharing ``x``'s memory (NumPy incl. bfloat16, cupy or DLPack), zero copy."""
    from .interop import to_tensorflow as convert
    return convert(x)


def to_jax(x):
    """A jax.Array sharing ``x``'s memory (NumPy incl. bfloat16, cupy or DLPack), zero copy."""
    from .interop import to_jax as convert
    return convert(x)


__all__ = [
    "STREAM_VERSION", "DEFAULT_SEED", "manual_seed", "initial_seed", "stream_for", "empty",
    "uniform", "normal", "truncated_normal", "masked_uniform", "constant", "zeros", "ones",
    "fans", "calculate_gain", "xavier_uniform", "xavier_normal", "kaiming_uniform",
    "kaiming_normal", "lecun_uniform", "lecun_normal", "variance_scaling", "to_torch",
    "to_tensorflow", "to_jax", "orthogonal", "delta_orthogonal", "eye", "dirac", "sparse",
    "get_num_threads", "set_num_threads",
]
