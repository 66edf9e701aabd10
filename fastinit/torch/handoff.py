"""``to_torch``: a torch tensor over another buffer's memory, zero copy.

docs/torch.md, section 5.
"""

import numpy as np
import torch

from ..interop import bfloat16_bits


def to_torch(x):
    """A torch tensor over ``x``'s memory, zero copy.

    NumPy arrays (fastinit buffers) go through torch.from_numpy, bfloat16
    ones as their bits viewed as torch.bfloat16; cupy arrays and other
    DLPack producers through torch.from_dlpack; a torch tensor is returned
    as is.
    """
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        bits = bfloat16_bits(x)
        if bits is not None:
            return torch.from_numpy(bits).view(torch.bfloat16)
        try:
            return torch.from_numpy(x)
        except TypeError as exc:
            raise TypeError(f"to_torch: torch has no dtype for NumPy {x.dtype}: "
                            f"{exc}") from None
    if hasattr(x, "__dlpack__"):
        return torch.from_dlpack(x)
    if hasattr(x, "__cuda_array_interface__"):
        return torch.as_tensor(x, device="cuda")
    raise TypeError(f"to_torch: expected a NumPy array, a torch tensor or an object with "
                    f"__dlpack__ (cupy, jax, ...), got {type(x).__name__}")
