"""A small DLPack consumer: any CPU object with ``__dlpack__`` as a NumPy view.

``numpy.from_dlpack`` refuses bfloat16, so fastinit reads the capsule itself
(DLPack 1.x versioned capsules, with their read-only flag, and the older
unversioned ones). The view shares the producer's memory; the producer's
deleter runs when the view is garbage collected.
"""

import ctypes
import sys

import numpy as np

KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13
KDL_INT, KDL_UINT, KDL_FLOAT, KDL_BFLOAT, KDL_COMPLEX, KDL_BOOL = 0, 1, 2, 4, 5, 6
FLAG_READ_ONLY = 1


class _Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _Device), ("ndim", ctypes.c_int32),
                ("dtype", _DataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_Deleter = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class _Managed(ctypes.Structure):
    _fields_ = [("dl_tensor", _Tensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _Deleter)]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class _ManagedVersioned(ctypes.Structure):
    _fields_ = [("version", _Version), ("manager_ctx", ctypes.c_void_p), ("deleter", _Deleter),
                ("flags", ctypes.c_uint64), ("dl_tensor", _Tensor)]


_api = ctypes.pythonapi
_api.PyCapsule_IsValid.restype = ctypes.c_int
_api.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_SetName.restype = ctypes.c_int
_api.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]

_DTYPES = {
    (KDL_FLOAT, 16): "float16", (KDL_FLOAT, 32): "float32", (KDL_FLOAT, 64): "float64",
    (KDL_BFLOAT, 16): "bfloat16",
    (KDL_INT, 8): "int8", (KDL_INT, 16): "int16", (KDL_INT, 32): "int32", (KDL_INT, 64): "int64",
    (KDL_UINT, 8): "uint8", (KDL_UINT, 16): "uint16", (KDL_UINT, 32): "uint32",
    (KDL_UINT, 64): "uint64", (KDL_BOOL, 8): "bool", (KDL_COMPLEX, 64): "complex64",
    (KDL_COMPLEX, 128): "complex128",
}


def numpy_dtype(name):
    """The NumPy dtype of a dtype name; ml_dtypes is imported for bfloat16 only."""
    if name == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


class DLPackView:
    """What a DLPack capsule describes, before it becomes a NumPy view.

    ``dtype`` is the element type's name ("bfloat16", "float32", "int8",
    ...); ``strides`` are in elements.
    """

    def __init__(self, device_type, device_id, dtype, itemsize, shape, strides, pointer,
                 read_only, owner):
        self.device_type, self.device_id = device_type, device_id
        self.dtype, self.itemsize, self.shape, self.strides = dtype, itemsize, shape, strides
        self.pointer, self.read_only, self.owner = pointer, read_only, owner

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def c_contiguous(self):
        expected = 1
        for dim, stride in zip(reversed(self.shape), reversed(self.strides)):
            if dim != 1 and stride != expected:
                return False
            expected *= dim
        return True

    def check(self, dtypes, what="out"):
        """The checks every fill makes of a view, on any device; raises before any write.

        ``dtypes`` holds the names of the element types a fill accepts.
        """
        if self.dtype not in dtypes:
            names = ", ".join(dtypes[:-1]) + " or " + dtypes[-1]
            raise TypeError(f"{what} must hold {names}, got {self.dtype}")
        if self.read_only:
            raise ValueError(f"{what} is read-only")
        if not self.c_contiguous:
            raise ValueError(f"{what} must be C-contiguous (element strides {self.strides} "
                             f"for shape {self.shape}); use a framework adapter such as "
                             f"fastinit.torch for views")
        if self.pointer % self.itemsize:
            raise ValueError(f"{what}'s data pointer {self.pointer:#x} is not aligned to "
                             f"its {self.itemsize}-byte elements")

    def _raw(self, nbytes):
        raw = (ctypes.c_uint8 * nbytes).from_address(self.pointer)
        raw._fastinit_owner = self.owner   # keeps the producer's memory alive
        return raw

    def numpy(self):
        """A writable-or-not NumPy array over the same memory (CPU, C-contiguous only)."""
        dtype = numpy_dtype(self.dtype)
        nbytes = self.size * self.itemsize
        if nbytes == 0:
            arr = np.empty(self.shape, dtype=dtype)
        else:
            arr = np.frombuffer(self._raw(nbytes), dtype=dtype).reshape(self.shape)
        if self.read_only:
            arr.flags.writeable = False
        return arr

    def bits(self):
        """The elements as a flat array of unsigned integers of their width (CPU,
        C-contiguous only): what a fill kernel writes, with no element type needed."""
        bits = np.dtype(f"u{self.itemsize}")
        if self.size == 0:
            return np.empty(0, bits)
        return np.frombuffer(self._raw(self.size * self.itemsize), dtype=bits)


def is_torch_tensor(obj):
    """Whether ``obj`` is a torch tensor (torch is never imported to find out)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


class _Owner:
    """Calls the producer's deleter once the last view is gone."""

    def __init__(self, address, deleter):
        self._address, self._deleter = address, deleter

    def __del__(self):
        if self._deleter:
            self._deleter(self._address)


def consume(obj):
    """Read ``obj.__dlpack__()`` into a :class:`DLPackView`; the caller owns it."""
    try:
        capsule = obj.__dlpack__(max_version=(1, 0))
    except TypeError:
        capsule = obj.__dlpack__()
    if _api.PyCapsule_IsValid(capsule, b"dltensor_versioned"):
        address = _api.PyCapsule_GetPointer(capsule, b"dltensor_versioned")
        managed = _ManagedVersioned.from_address(address)
        read_only = bool(managed.flags & FLAG_READ_ONLY)
        _api.PyCapsule_SetName(capsule, b"used_dltensor_versioned")
    elif _api.PyCapsule_IsValid(capsule, b"dltensor"):
        address = _api.PyCapsule_GetPointer(capsule, b"dltensor")
        managed = _Managed.from_address(address)
        read_only = False
        _api.PyCapsule_SetName(capsule, b"used_dltensor")
    else:
        raise TypeError(f"{type(obj).__name__}.__dlpack__() returned no DLPack capsule")
    owner = _Owner(address, managed.deleter)
    t = managed.dl_tensor
    key = (t.dtype.code, t.dtype.bits)
    if t.dtype.lanes != 1 or key not in _DTYPES:
        raise TypeError(f"unsupported DLPack dtype (code {t.dtype.code}, "
                        f"{t.dtype.bits} bits, {t.dtype.lanes} lanes)")
    dtype = _DTYPES[key]
    shape = tuple(t.shape[i] for i in range(t.ndim))
    if t.strides:
        strides = tuple(t.strides[i] for i in range(t.ndim))
    else:
        strides, acc = [], 1
        for dim in reversed(shape):
            strides.append(acc)
            acc *= dim
        strides = tuple(reversed(strides))
    pointer = (t.data or 0) + t.byte_offset
    return DLPackView(t.device.device_type, t.device.device_id, dtype, t.dtype.bits // 8,
                      shape, strides, pointer, read_only, owner)
