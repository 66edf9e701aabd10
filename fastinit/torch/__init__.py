"""fastinit.torch: fastinit's fills for PyTorch tensors, modules and DTensors.

Twins of ``torch.nn.init`` (``twins``; orthogonal_, eye_, dirac_, sparse_ in
``structured``), ``redirect`` (a model's own init
code with every random draw from fastinit), ``init_module`` and its rules
(``module``, ``rules``), ``materialize`` for meta-device models (``meta``),
DTensor shards equal to the same slice of the full tensor (``dtensor``),
and ``to_torch`` (``handoff``). docs/torch.md describes them.
"""

from .._contract import stream_for
from .handoff import to_torch
from .meta import UnsetBuffersError, materialize
from .module import InitReport, ParamRecord, UnmatchedParametersError, init_module
from .redirect import Redirect, redirect
from .structured import dirac_, eye_, orthogonal_, sparse_
from .twins import (calculate_gain, constant_, kaiming_normal_, kaiming_uniform_,
                    masked_uniform_, normal_, ones_, trunc_normal_, uniform_, xavier_normal_,
                    xavier_uniform_, zeros_)
from .views import SCRATCH_ELEMENTS  # noqa: F401  (read by tests: the scratch band size)

__all__ = [
    "uniform_", "normal_", "trunc_normal_", "constant_", "zeros_", "ones_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
    "calculate_gain", "masked_uniform_", "init_module", "materialize", "stream_for",
    "InitReport", "ParamRecord", "UnmatchedParametersError", "to_torch",
    "redirect", "Redirect", "UnsetBuffersError", "orthogonal_", "eye_", "dirac_", "sparse_",
]
