"""The implementations ``fastinit bench`` times: fastinit and its peers.

Each has ``name``, ``load()`` (import it; returns its version, or raises
:class:`Unavailable`), ``prepare(method, buf)`` (an ``(api, fn)`` pair
where ``fn()`` does one fill of ``buf``, or :class:`Skip`) and
``zero(buf)`` (its zero fill of ``buf``, the write-bandwidth reference, or
None). Peers are imported here, lazily, never at ``import fastinit``.
"""

import importlib
import os

import numpy as np

SEED = 0
TRUNC_BOUNDS = (-2.0, 2.0)       # in units of std, the default of torch, JAX and TensorFlow
ITEMSIZE = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
BITS = {"float32": np.uint32, "bfloat16": np.uint16, "float16": np.uint16,
        "float64": np.uint64}
LABELS = {"fastinit": "fastinit", "torch": "torch", "numpy": "numpy", "jax": "jax",
          "tensorflow": "tf"}
ALLOCATING = ("jax", "tensorflow")   # cannot fill a given buffer: they return a new one


class Skip(Exception):
    """This implementation has no matching operation for the row; the message says why."""


class Unavailable(Exception):
    """The peer cannot be imported; the message says why."""


def _import(module):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable(f"not installed ({exc})") from None
    except Exception as exc:                    # a broken install: say so, carry on
        raise Unavailable(f"import failed: {type(exc).__name__}: {exc}") from None


class Buffer:
    """One pre-faulted, 64-byte-aligned buffer of ``size`` elements, seen by everyone."""

    def __init__(self, size, dtype):
        import fastinit as fi
        self.size, self.dtype = size, dtype
        self.array = fi.empty(size, dtype)
        self.bits = self.array.view(BITS[dtype])
        self.bits.fill(0)                       # fault every page in before timing
        self.nbytes = self.array.nbytes
        self._torch = None

    def torch(self):
        """A torch tensor over the same memory."""
        if self._torch is None:
            import fastinit as fi
            self._torch = fi.to_torch(self.array)
        return self._torch


class Fastinit:
    name = "fastinit"

    def load(self):
        import fastinit
        self.fi = fastinit
        return fastinit.__version__

    def prepare(self, method, buf):
        fi, arr = self.fi, buf.array
        if method == "uniform":
            return "fastinit.uniform", lambda: fi.uniform(arr, 0.0, 1.0, seed=SEED)
        if method == "normal":
            return "fastinit.normal", lambda: fi.normal(arr, 0.0, 1.0, seed=SEED)
        a, b = TRUNC_BOUNDS
        return ("fastinit.truncated_normal",
                lambda: fi.truncated_normal(arr, 0.0, 1.0, a, b, seed=SEED))

    def zero(self, buf):
        return None


class TorchPeer:
    name = "torch"

    def load(self):
        self.torch = _import("torch")
        return self.torch.__version__

    def prepare(self, method, buf):
        t = buf.torch()
        if method == "uniform":
            return "Tensor.uniform_", lambda: t.uniform_(0.0, 1.0)
        if method == "normal":
            return "Tensor.normal_", lambda: t.normal_(0.0, 1.0)
        a, b = TRUNC_BOUNDS
        init = self.torch.nn.init
        return "nn.init.trunc_normal_", lambda: init.trunc_normal_(t, 0.0, 1.0, a, b)

    def zero(self, buf):
        t = buf.torch()
        return "Tensor.zero_", t.zero_

    def threads(self):
        return self.torch.get_num_threads()


class NumpyPeer:
    name = "numpy"

    def load(self):
        return np.__version__

    def prepare(self, method, buf):
        if buf.dtype not in ("float32", "float64"):
            raise Skip(f"numpy.random.Generator has no {buf.dtype} output (float32 and "
                       f"float64 only); timing a float32 draw plus a conversion would "
                       f"not be a native path")
        if method == "truncated_normal":
            raise Skip("numpy.random.Generator has no truncated normal")
        rng = np.random.default_rng(SEED)
        arr, dt = buf.array, buf.array.dtype
        if method == "uniform":
            return "Generator.random", lambda: rng.random(out=arr, dtype=dt)
        return "Generator.standard_normal", lambda: rng.standard_normal(out=arr, dtype=dt)

    def zero(self, buf):
        bits = buf.bits
        return "ndarray.fill(0)", lambda: bits.fill(0)


class JaxPeer:
    name = "jax"

    def load(self):
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        self.jax, self.jnp = _import("jax"), _import("jax.numpy")
        try:
            self.device = self.jax.devices("cpu")[0]
        except Exception as exc:
            raise Unavailable(f"no CPU device: {exc}") from None
        return self.jax.__version__

    def prepare(self, method, buf):
        jax, jnp = self.jax, self.jnp
        if buf.dtype == "float64" and not jax.config.read("jax_enable_x64"):
            raise Skip("JAX runs with jax_enable_x64 off, so float64 would silently be "
                       "float32")
        dt = getattr(jnp, buf.dtype)
        n = buf.size
        make_key = getattr(jax.random, "key", jax.random.PRNGKey)
        key = jax.device_put(make_key(SEED), self.device)
        if method == "uniform":
            api, f = "random.uniform", jax.jit(lambda k: jax.random.uniform(k, (n,), dt))
        elif method == "normal":
            api, f = "random.normal", jax.jit(lambda k: jax.random.normal(k, (n,), dt))
        else:
            a, b = TRUNC_BOUNDS
            api, f = "random.truncated_normal", jax.jit(
                lambda k: jax.random.truncated_normal(k, a, b, (n,), dt))
        return api, lambda: f(key).block_until_ready()

    def zero(self, buf):
        return None


class TensorflowPeer:
    name = "tensorflow"

    def load(self):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.tf = _import("tensorflow")
        return self.tf.__version__

    def prepare(self, method, buf):
        tf = self.tf
        dt = getattr(tf, buf.dtype)
        shape = (buf.size,)
        if method == "uniform":
            api, op = "random.uniform", lambda: tf.random.uniform(shape, 0.0, 1.0, dtype=dt)
        elif method == "normal":
            api, op = "random.normal", lambda: tf.random.normal(shape, 0.0, 1.0, dtype=dt)
        else:                                   # TensorFlow truncates at 2 std, fixed
            api, op = "random.truncated_normal", lambda: tf.random.truncated_normal(
                shape, 0.0, 1.0, dtype=dt)

        def fn():
            with tf.device("/CPU:0"):
                return op()                    # eager CPU ops finish before returning
        return api, fn

    def zero(self, buf):
        return None


PEER_CLASSES = {"torch": TorchPeer, "numpy": NumpyPeer, "jax": JaxPeer,
                "tensorflow": TensorflowPeer}
PEERS = tuple(PEER_CLASSES)


def load_peers(names):
    """(loaded peers, {name: reason} for those that could not be imported)."""
    loaded, unavailable = [], {}
    for name in names:
        peer = PEER_CLASSES[name]()
        try:
            peer.version = peer.load()
        except Unavailable as exc:
            unavailable[name] = str(exc)
        else:
            loaded.append(peer)
    return loaded, unavailable


def zero_fillers(peers):
    """The implementations whose zero fill is the write-bandwidth reference.

    torch's Tensor.zero_ when torch can be imported, and NumPy's fill(0),
    whether or not they are among the compared peers.
    """
    have = {p.name: p for p in peers}
    extra, _ = load_peers([name for name in ("torch", "numpy") if name not in have])
    have.update((p.name, p) for p in extra)
    return [have[name] for name in ("torch", "numpy") if name in have]
