"""Every initializer the frameworks ship has a fastinit twin, or a stated reason not to.

The sets are read from the frameworks at test time (torch.nn.init's public
functions, keras.initializers' public classes and names, jax.nn.initializers'
public names), so an initializer a new release adds fails here until it is
twinned or listed below with its reason. Each check also runs against a
framework with one invented initializer added, to show it would notice.
"""

import inspect
import os
import types

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402
import torch  # noqa: E402

import fastinit.torch as ft  # noqa: E402

# torch.nn.init names deliberately without a fastinit.torch twin:
TORCH_NOT_TWINNED = {
    # torch's deprecated spellings without the trailing underscore: each warns and
    # calls the in-place function, which is twinned (constant_, xavier_uniform_, ...)
    "constant", "dirac", "eye", "kaiming_normal", "kaiming_uniform", "normal",
    "orthogonal", "sparse", "uniform", "xavier_normal", "xavier_uniform",
}
# keras.initializers names deliberately without a fastinit.keras twin:
KERAS_NOT_TWINNED = {
    # STFT (and its compatibility alias): a fixed Fourier/window basis for
    # keras.layers.STFTSpectrogram, no random draw; fastinit's stream adds nothing
    # and Keras's own values are already exact and reproducible.
    "STFT", "STFTInitializer", "stft",
    "Initializer",                      # the base class, not an initializer
}
# jax.nn.initializers names deliberately without a fastinit.jax twin:
JAX_NOT_TWINNED = {
    "Initializer",                      # a typing Protocol; fastinit.jax.Initializer is ours
}


def torch_public(init_module):
    """torch.nn.init's public functions (defined there, not imported helpers)."""
    return {n for n, f in vars(init_module).items()
            if not n.startswith("_") and inspect.isfunction(f)
            and f.__module__ == init_module.__name__}


def torch_missing(init_module):
    """Public torch.nn.init functions neither twinned in fastinit.torch nor listed."""
    return sorted(n for n in torch_public(init_module) - TORCH_NOT_TWINNED
                  if not callable(getattr(ft, n, None)))


def _named_params(fn):
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def test_torch_twins_cover_torch_nn_init():
    assert torch_missing(torch.nn.init) == []
    for name in torch_public(torch.nn.init) - TORCH_NOT_TWINNED:
        assert _named_params(getattr(ft, name)) == _named_params(
            getattr(torch.nn.init, name)), name
    assert TORCH_NOT_TWINNED <= torch_public(torch.nn.init)      # no stale entries


def test_torch_check_notices_a_new_function():
    fake = types.ModuleType("torch.nn.init")
    vars(fake).update(vars(torch.nn.init))

    def brand_new_(tensor):
        return tensor
    brand_new_.__module__ = "torch.nn.init"
    fake.brand_new_ = brand_new_
    assert torch_missing(fake) == ["brand_new_"]


def keras_missing(initializers, fk):
    """Public keras.initializers names (classes and their aliases) with no fastinit
    twin of the same class name that ``"fastinit>" + name`` also resolves to."""
    import keras
    missing = []
    for name in dir(initializers):
        obj = getattr(initializers, name)
        if name.startswith("_") or name in KERAS_NOT_TWINNED or not (
                inspect.isclass(obj) and issubclass(obj, keras.initializers.Initializer)):
            continue
        ours = getattr(fk, obj.__name__, None)
        try:
            got = keras.initializers.get(f"fastinit>{name}")
        except (ValueError, TypeError):
            got = None
        if ours is None or type(got) is not ours:
            missing.append(name)
    return sorted(missing)


def test_keras_twins_cover_keras_initializers():
    keras = pytest.importorskip("keras")
    fk = pytest.importorskip("fastinit.keras")
    assert keras_missing(keras.initializers, fk) == []
    for name in ("Orthogonal", "Identity", "RandomUniform", "VarianceScaling", "Constant"):
        assert _named_params(getattr(fk, name).__init__) == _named_params(
            getattr(keras.initializers, name).__init__), name


def test_keras_check_notices_a_new_class():
    keras = pytest.importorskip("keras")
    fk = pytest.importorskip("fastinit.keras")

    class BrandNew(keras.initializers.Initializer):
        def __call__(self, shape, dtype=None):
            return keras.ops.zeros(shape, dtype)
    fake = types.SimpleNamespace(**{n: getattr(keras.initializers, n)
                                    for n in dir(keras.initializers)})
    fake.BrandNew = fake.brand_new = BrandNew
    assert keras_missing(fake, fk) == ["BrandNew", "brand_new"]


def jax_missing(initializers, fj):
    return sorted(n for n in dir(initializers) if not n.startswith("_")
                  and n not in JAX_NOT_TWINNED and not callable(getattr(fj, n, None)))


def test_jax_twins_cover_jax_nn_initializers():
    jax = pytest.importorskip("jax")
    fj = pytest.importorskip("fastinit.jax")
    assert jax_missing(jax.nn.initializers, fj) == []
    fake = types.SimpleNamespace(**{n: getattr(jax.nn.initializers, n)
                                    for n in dir(jax.nn.initializers)})
    fake.brand_new = lambda key, shape, dtype=None: None
    assert jax_missing(fake, fj) == ["brand_new"]
