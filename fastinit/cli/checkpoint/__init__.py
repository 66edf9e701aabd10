"""Checkpoints of freshly initialized weights, written straight into safetensors files.

The Python API of ``fastinit checkpoint`` (docs/checkpoint.md): a spec is
loaded and checked (:mod:`.spec`), laid out (:mod:`.safetensors`), written
through a memory mapping (:mod:`.writer`, :mod:`.mmapio`, :mod:`.tmpfile`)
and verified (:mod:`.verify`); a transformers model directory is planned
from its config (:mod:`.hfmodel`) and written and verified by the model's
own init code (:mod:`.modeldir`); :mod:`.command` and :mod:`.modelcommand`
are the command line.
"""

from .modeldir import DirReport, verify_model_dir, write_model_dir
from .safetensors import layout
from .spec import (DTYPES, INITS, Spec, SpecError, TensorSpec, llama_spec, load_spec,
                   regenerate)
from .verify import VerifyError, verify_checkpoint
from .writer import WriteReport, write_checkpoint

__all__ = ["TensorSpec", "Spec", "SpecError", "VerifyError", "load_spec", "llama_spec",
           "regenerate", "write_checkpoint", "verify_checkpoint", "layout", "WriteReport",
           "INITS", "DTYPES", "write_model_dir", "verify_model_dir", "DirReport"]
