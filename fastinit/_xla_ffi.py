"""A Python function as an XLA FFI handler on the CPU, through ctypes.

XLA calls an FFI handler with one ``XLA_FFI_CallFrame*`` (the stable C ABI
of ``xla/ffi/api/c_api.h``, API version 0.x): the operand and result
buffers (device pointers with dtype and dims), the attributes, and the
execution stage. :func:`register` wraps ``fn(frame)`` in a C function
pointer and registers it with ``jax.ffi.register_ffi_target`` for the CPU,
so ``jax.ffi.ffi_call(name, ...)`` runs ``fn`` inside a compiled program,
on each device's own buffers, with no copy in or out.

Only the fields fastinit reads are decoded: buffers (:class:`Frame`
``.arg(i)`` / ``.result(i)`` as NumPy views) and unsigned 64-bit scalar
attributes (``.attr_u64(name)``). The handler answers XLA's metadata query
(the API version it was written against) and runs only at the execute
stage. A Python exception becomes an XLA error with its message, so the
caller of the compiled program sees a ``jax.errors.JaxRuntimeError``.
"""

import ctypes
import threading

import ml_dtypes
import numpy as np

API_VERSION = (0, 1)            # the call-frame fields read here are all in API 0.1
_METADATA = 1                   # XLA_FFI_Extension_Metadata
_EXECUTE = 3                    # XLA_FFI_ExecutionStage_EXECUTE
_SCALAR = 3                     # XLA_FFI_AttrType_SCALAR
_ERROR_INTERNAL = 13            # XLA_FFI_Error_Code_INTERNAL

_DTYPES = {                     # XLA_FFI_DataType -> NumPy
    4: np.dtype(np.int32), 5: np.dtype(np.int64), 8: np.dtype(np.uint32),
    9: np.dtype(np.uint64), 10: np.dtype(np.float16), 11: np.dtype(np.float32),
    12: np.dtype(np.float64), 16: np.dtype(ml_dtypes.bfloat16),
}
_U64 = 9

_size_t, _p, _i64 = ctypes.c_size_t, ctypes.c_void_p, ctypes.c_int64


class _Extension(ctypes.Structure):
    pass


_Extension._fields_ = [("struct_size", _size_t), ("type", ctypes.c_int),
                       ("next", ctypes.POINTER(_Extension))]


class _Version(ctypes.Structure):
    _fields_ = [("struct_size", _size_t), ("extension_start", _p),
                ("major", ctypes.c_int), ("minor", ctypes.c_int)]


class _Metadata(ctypes.Structure):
    _fields_ = [("struct_size", _size_t), ("api_version", _Version),
                ("traits", ctypes.c_uint32)]


class _MetadataExtension(ctypes.Structure):
    _fields_ = [("base", _Extension), ("metadata", ctypes.POINTER(_Metadata))]


class _Buffer(ctypes.Structure):
    _fields_ = [("struct_size", _size_t), ("extension_start", _p), ("dtype", ctypes.c_int),
                ("data", _p), ("rank", _i64), ("dims", ctypes.POINTER(_i64))]


class _List(ctypes.Structure):                   # XLA_FFI_Args and XLA_FFI_Rets
    _fields_ = [("struct_size", _size_t), ("extension_start", _p), ("size", _i64),
                ("types", _p), ("items", ctypes.POINTER(ctypes.POINTER(_Buffer)))]


class _ByteSpan(ctypes.Structure):
    _fields_ = [("ptr", _p), ("len", _size_t)]


class _Scalar(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int), ("value", _p)]


class _Attrs(ctypes.Structure):
    _fields_ = [("struct_size", _size_t), ("extension_start", _p), ("size", _i64),
                ("types", ctypes.POINTER(ctypes.c_int)),
                ("names", ctypes.POINTER(ctypes.POINTER(_ByteSpan))),
                ("attrs", ctypes.POINTER(_p))]


class _CallFrame(ctypes.Structure):
    _fields_ = [("struct_size", _size_t), ("extension_start", ctypes.POINTER(_Extension)),
                ("api", _p), ("ctx", _p), ("stage", ctypes.c_int), ("args", _List),
                ("rets", _List), ("attrs", _Attrs), ("future", _p)]


class _ErrorCreateArgs(ctypes.Structure):
    _fields_ = [("struct_size", _size_t), ("extension_start", _p),
                ("message", ctypes.c_char_p), ("errc", ctypes.c_int)]


_ErrorCreate = ctypes.CFUNCTYPE(_p, ctypes.POINTER(_ErrorCreateArgs))


class _Api(ctypes.Structure):                    # the leading fields of XLA_FFI_Api
    _fields_ = [("struct_size", _size_t), ("extension_start", _p), ("api_version", _Version),
                ("internal_api", _p), ("error_create", _ErrorCreate)]


_HANDLER = ctypes.CFUNCTYPE(_p, ctypes.POINTER(_CallFrame))


def _view(buf, what):
    """A NumPy array over an ``XLA_FFI_Buffer`` (no copy)."""
    dtype = _DTYPES.get(buf.dtype)
    if dtype is None:
        raise TypeError(f"{what}: XLA data type {buf.dtype} is not one fastinit reads")
    shape = tuple(buf.dims[i] for i in range(buf.rank))
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0:
        return np.empty(shape, dtype)
    raw = (ctypes.c_char * nbytes).from_address(buf.data)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


class Frame:
    """The parts of one call frame a handler reads."""

    __slots__ = ("_frame",)

    def __init__(self, frame):
        self._frame = frame

    def arg(self, i):
        """Operand ``i`` as a NumPy view (read it only)."""
        return _view(self._frame.args.items[i].contents, f"operand {i}")

    def result(self, i):
        """Result ``i`` as a writable NumPy view of XLA's output buffer."""
        return _view(self._frame.rets.items[i].contents, f"result {i}")

    def attr_u64(self, name):
        """The unsigned 64-bit scalar attribute ``name``."""
        attrs = self._frame.attrs
        key = name.encode()
        for i in range(attrs.size):
            span = attrs.names[i].contents
            if ctypes.string_at(span.ptr, span.len) != key:
                continue
            if attrs.types[i] != _SCALAR:
                break
            scalar = ctypes.cast(attrs.attrs[i], ctypes.POINTER(_Scalar)).contents
            if scalar.dtype != _U64:
                break
            return ctypes.c_uint64.from_address(scalar.value).value
        raise KeyError(f"the call has no uint64 attribute {name!r}")


def _error(frame, message):
    """An ``XLA_FFI_Error*`` carrying ``message`` (XLA takes ownership)."""
    api = ctypes.cast(frame.api, ctypes.POINTER(_Api)).contents
    args = _ErrorCreateArgs(ctypes.sizeof(_ErrorCreateArgs), None,
                            message.encode("utf-8", "replace"), _ERROR_INTERNAL)
    return api.error_create(ctypes.byref(args))


def _answer_metadata(frame):
    """Fill XLA's metadata query if this call is one; True if it was."""
    ext = frame.extension_start
    while ext:
        if ext.contents.type == _METADATA:
            meta = ctypes.cast(ext, ctypes.POINTER(_MetadataExtension)).contents.metadata
            meta.contents.api_version.major, meta.contents.api_version.minor = API_VERSION
            meta.contents.traits = 0
            return True
        ext = ext.contents.next
    return False


_registered = {}
_lock = threading.Lock()


def register(name, fn):
    """Register ``fn(frame: Frame)`` as the CPU FFI target ``name`` (once per name).

    ``fn`` runs on the thread XLA executes the device's program on, once per
    device and call; it must be thread-safe. Its exception is returned to XLA
    as an error carrying ``"<name>: <Type>: <message>"``.
    """
    with _lock:
        if name in _registered:
            if _registered[name][0] is not fn:
                raise ValueError(f"FFI target {name!r} is already registered")
            return

        def handler(frame_p):
            frame = frame_p.contents
            try:
                if _answer_metadata(frame) or frame.stage != _EXECUTE:
                    return None
                fn(Frame(frame))
                return None
            except BaseException as exc:          # noqa: BLE001 - XLA must get an error
                return _error(frame, f"{name}: {type(exc).__name__}: {exc}")

        import jax
        c_handler = _HANDLER(handler)
        address = ctypes.cast(c_handler, ctypes.c_void_p).value
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(address), platform="cpu")
        _registered[name] = (fn, c_handler)      # the C pointer lives as long as the process
