"""The host/kernel interface, defined once: kinds, formats, control words, dtypes.

Plain Python with no imports, so every layer can read it for free: the
stream contract's host side (``fastinit._contract``) builds control words
with it, the backends pick kernels with it, and the Numba kernels
(``fastinit.kernels.cpu``) compile its integers in as constants. The CUDA
kernels (``cuda/fill.cu``) take the same values as arguments; their names
are :func:`cuda_kernel_name`, which tests/test_cuda_compile.py checks
against the compiled module.
"""

from typing import NamedTuple

# --- distributions: what a fill kernel draws ---------------------------------------
KIND_UNIFORM, KIND_NORMAL, KIND_TRUNC = 0, 1, 2
KINDS = {"uniform": KIND_UNIFORM, "normal": KIND_NORMAL, "trunc": KIND_TRUNC}
# parameters of each kind, in the compute type (docs/stream.md section 3)
PARAMS = {
    "uniform": ("lo", "d", "floor", "top", "thr"),
    "normal": ("mean", "std"),
    "trunc": ("e0", "de", "mean", "ss", "a", "b", "tail", "sign"),
}

# --- output formats: what the stored bits mean ---------------------------------------
FMT_F32, FMT_BF16, FMT_F16, FMT_F64 = 0, 1, 2, 3


class DType(NamedTuple):
    """One output dtype as the kernels see it."""
    name: str           # "bfloat16"
    fmt: int            # FMT_*
    itemsize: int       # bytes per element
    compute: str        # "float32" or "float64": the type every value is computed in
    bits: str           # the unsigned type the kernels store: "uint16", "uint32", "uint64"
    suffix: str         # CUDA kernel suffix: fastinit_<kind>_<suffix>
    max: float          # largest finite value


DTYPES = {
    "float16": DType("float16", FMT_F16, 2, "float32", "uint16", "f16", 65504.0),
    "bfloat16": DType("bfloat16", FMT_BF16, 2, "float32", "uint16", "bf16",
                      3.3895313892515355e38),
    "float32": DType("float32", FMT_F32, 4, "float32", "uint32", "f32", 3.4028234663852886e38),
    "float64": DType("float64", FMT_F64, 8, "float64", "uint64", "f64",
                     1.7976931348623157e308),
}

# --- control words: one uint64 array per launch -----------------------------------
CTL_OFFSET, CTL_K0, CTL_K1, CTL_S0, CTL_S1, CTL_FMT, CTL_KIND = range(7)
CTL_WORDS = 7

# --- CPU entry points ------------------------------------------------------------------
TILE = 2048                 # elements per tile of the CPU kernels: a multiple of 4
CPU_SCRATCH = 2 * TILE      # elements of each scratch array an entry point is handed

# one C entry point per (kind, compute precision, stored bits): kernels/cpu/entry.py
CPU_ENTRIES = tuple(sorted({(kind, spec.compute, spec.bits)
                            for kind in KINDS for spec in DTYPES.values()}))


def cpu_entry_name(kind, compute, bits):
    """The symbol of the CPU C entry point for (``kind``, ``compute``, ``bits``)."""
    return f"fastinit_cpu_{kind}_{compute}_{bits}"


# --- CUDA -----------------------------------------------------------------------------
CUDA_THREADS = 256          # threads per block: FILL_THREADS in cuda/fill.cu


def cuda_kernel_name(kind, dtype):
    """The extern "C" kernel of cuda/fill.cu for ``kind`` and dtype name ``dtype``."""
    return f"fastinit_{kind}_{DTYPES[dtype].suffix}"
