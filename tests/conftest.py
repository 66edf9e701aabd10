"""Shared fixtures for the fastinit tests."""

import ml_dtypes
import numpy as np
import pytest

# Every float dtype fastinit fills, and the two it computes in.
ALL_DTYPES = (np.float16, ml_dtypes.bfloat16, np.float32, np.float64)
POISON = bytes.fromhex("ADDEC07F")        # little-endian float32 0x7FC0DEAD (a NaN)


def poison_fill(arr):
    """Overwrite every byte of a contiguous array with the poison pattern."""
    raw = arr.reshape(-1).view(np.uint8)
    reps = -(-raw.size // len(POISON))
    raw[:] = np.frombuffer(POISON * reps, dtype=np.uint8)[:raw.size]
    return arr


@pytest.fixture
def poisoned():
    """``poisoned(shape, dtype)``: a C-contiguous array full of the poison pattern."""
    def make(shape, dtype=np.float32):
        return poison_fill(np.empty(shape, dtype=dtype))
    return make


@pytest.fixture
def poison():
    """``poison(arr)``: overwrite ``arr`` (contiguous) with the poison pattern; returns it."""
    return poison_fill
