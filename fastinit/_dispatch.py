"""Layer 2a: a buffer in, its backend and target out.

``target_of(out)`` reads where ``out`` lives (its DLPack device type: a
NumPy array is on the CPU, a torch tensor says so itself) and hands it to
the backend registered for that device in :data:`BACKENDS`. Backends are
imported on first use, so importing fastinit imports none of them.
"""

import importlib

import numpy as np

from . import _dlpack

# DLPack device type -> the backend module that fills buffers there
BACKENDS = {
    _dlpack.KDL_CPU: "fastinit.backends.cpu",
    _dlpack.KDL_CUDA_HOST: "fastinit.backends.cpu",
    _dlpack.KDL_CUDA: "fastinit.backends.cuda",
    _dlpack.KDL_CUDA_MANAGED: "fastinit.backends.cuda",
}
_TORCH_DEVICES = {"cpu": _dlpack.KDL_CPU, "cuda": _dlpack.KDL_CUDA}


_loaded = {}                 # device type -> its backend module, once imported


def backend(device_type):
    """The backend module for DLPack ``device_type`` (imported on first use)."""
    be = _loaded.get(device_type)
    if be is not None:
        return be
    name = BACKENDS.get(device_type)
    if name is None:
        raise ValueError(f"out lives on DLPack device type {device_type}; fastinit fills "
                         f"CPU and CUDA buffers")
    be = _loaded[device_type] = importlib.import_module(name)
    return be


def _check_torch(out):
    """The refusals torch itself makes for an in-place write, with ``out`` named."""
    import torch
    if out.is_meta:
        raise ValueError("out is a meta tensor: it has no storage to fill; allocate it "
                         "first (Tensor.to_empty, or fastinit.torch.materialize for a "
                         "model built on the meta device)")
    if out.is_inference() and not torch.is_inference_mode_enabled():
        raise ValueError("out is an inference tensor (made under torch.inference_mode()); "
                         "torch allows no in-place update of it outside inference mode: "
                         "fill a .clone() of it, or fill it inside torch.inference_mode()")
    if out.is_neg() or out.is_conj():
        raise ValueError("out is a lazily negated or conjugated torch view; "
                         "call .resolve_neg() / .resolve_conj() and fill that")


def device_type(out):
    """The DLPack device type of ``out``'s memory; raises for what is no buffer."""
    if isinstance(out, np.ndarray):
        return _dlpack.KDL_CPU
    if _dlpack.is_torch_tensor(out):
        _check_torch(out)
        kind = _TORCH_DEVICES.get(out.device.type)
        if kind is not None:
            return kind
    if not hasattr(out, "__dlpack__"):
        raise TypeError(f"out must be a NumPy array or an object with __dlpack__, "
                        f"got {type(out).__name__}")
    if not hasattr(out, "__dlpack_device__"):
        return _dlpack.KDL_CPU
    try:
        return int(out.__dlpack_device__()[0])
    except Exception as exc:
        raise TypeError(f"out's __dlpack_device__() failed: {exc}") from exc


def target_of(out):
    """(backend module, its checked target over ``out``); raises before any write."""
    be = backend(device_type(out))
    return be, be.as_target(out)
