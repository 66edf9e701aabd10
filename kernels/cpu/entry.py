"""C entry points of the CPU fill kernels, compiled to object code.

One entry point per (distribution, compute precision, stored bits): nine in
all. Each is a small function of the C ABI, generated here in LLVM IR, that
wraps its arguments as arrays and calls the Numba entry kernel of
``fills.KERNELS``::

    void fastinit_cpu_<kind>_<compute>_<bits>(
        void *out, int64_t n,           /* the buffer's bits, n elements; n <= 0: no-op */
        const uint64_t *ctl,            /* CTL_WORDS control words (_abi.py) */
        const F *p,                     /* the parameters of PARAMS[kind] */
        F *vals, uint32_t *words)       /* scratch: 2 TILE values, 2 TILE words */

with ``F`` the compute type (float or double). The kernels are compiled
without Numba's runtime and never raise, so the object code calls nothing
but itself and the C math library: it links into any process with llvmlite
alone, without importing Numba (fastinit/backends/_native.py caches it on disk
and loads it). Importing this module imports Numba: only a compile does.
"""

import contextlib

from llvmlite import ir
from numba.core import cgutils, types
from numba.core.codegen import JITCodeLibrary
from numba.core.compiler_lock import global_compiler_lock, require_global_compiler_lock
from numba.core.registry import cpu_target
from numba.np.arrayobj import populate_array

from .._abi import CPU_ENTRIES, CPU_SCRATCH, CTL_WORDS, KINDS, PARAMS, cpu_entry_name
from . import fills

_NUMBA = {"float32": types.float32, "float64": types.float64, "uint16": types.uint16,
          "uint32": types.uint32, "uint64": types.uint64}


def _array(context, builder, aryty, ptr, n):
    """A C-contiguous 1-d array of ``aryty`` over ``ptr`` (no owner: the caller's memory)."""
    ary = context.make_array(aryty)(context, builder)
    itemsize = context.get_constant(types.intp, context.get_abi_sizeof(
        context.get_data_type(aryty.dtype)))
    populate_array(ary, data=builder.bitcast(ptr, ary.data.type), shape=[n],
                   strides=[itemsize], itemsize=itemsize, meminfo=None)
    return ary._getvalue()


class _LinkOnlyLibrary(JITCodeLibrary):
    """The code library of a kernel function compiled for an entry point: it is
    only ever linked into a caller's library, never run on its own (no Python
    wrapper), so finalizing it links its callees' modules in and stops there.
    Numba's own library would also optimize the linked module at O3 and
    compile it to machine code, at every level of the call tree: the tile
    functions' code was optimized and compiled four times over before the entry
    point's own library did it once more. The entry point's library (a plain
    one) optimizes and compiles everything once, the same passes on the same
    code (docs/design.md, "Issue 13: one optimization per entry point")."""

    # Numba's ``finalize`` links the callees' modules in and verifies, then
    # calls these two: no O3 here, no machine code
    def _optimize_final_module(self):
        pass

    def _finalize_final_module(self):
        self._finalized = True


@contextlib.contextmanager
def _link_only(codegen):
    """While compiling an entry kernel (under the compiler lock, after the
    target's ``refresh``): new libraries are :class:`_LinkOnlyLibrary`, and
    Numba does not store the function's environment pointer in the machine
    code, which a link-only library has none of (the kernels never raise, so
    they never read it)."""
    require_global_compiler_lock()
    saved = codegen._library_class
    codegen._library_class = _LinkOnlyLibrary
    codegen.set_env = _no_env
    try:
        yield
    finally:
        codegen._library_class = saved
        del codegen.set_env


def _no_env(env_name, env):
    pass


class Entry:
    """A compiled entry point: its ``object_code`` (bytes), ``name``, the
    external symbols it calls (``externals``) and its ``address`` in this
    process (valid while this object lives)."""

    def __init__(self, library, name):
        self._library = library               # keeps the machine code mapped
        self.name = name
        self.address = library.get_pointer_to_function(name)   # compiles the machine code
        self.object_code = bytes(library._get_compiled_object())
        module = library._final_module
        self.externals = sorted(
            v.name for v in list(module.functions) + list(module.global_variables)
            if v.is_declaration and not v.name.startswith("llvm."))


@global_compiler_lock
def build(kind, compute, bits):
    """Compile the entry point of (``kind``, ``compute``, ``bits``) (one of
    ``_abi.CPU_ENTRIES``): the Numba kernel and its C wrapper. An :class:`Entry`."""
    if (kind, compute, bits) not in CPU_ENTRIES:
        raise ValueError(f"no CPU entry point for {(kind, compute, bits)}")
    context = cpu_target.target_context
    ft = _NUMBA[compute]
    arrays = tuple(types.Array(t, 1, "C") for t in
                   (_NUMBA[bits], types.uint64, ft, ft, types.uint32))
    kernel = fills.KERNELS[KINDS[kind], compute]
    if not hasattr(kernel, "overloads"):        # NUMBA_DISABLE_JIT=1: plain functions
        raise RuntimeError("fastinit's CPU kernels are compiled with Numba's JIT, which "
                           "NUMBA_DISABLE_JIT disables; unset it (or run `fastinit warmup` "
                           "without it, to fill the kernel cache)")
    codegen = context.codegen()
    if arrays not in kernel.overloads:
        # Numba's one-time set-up first (it compiles its runtime's library,
        # which runs on its own and must not be link-only), then the kernel
        context.refresh()
        with _link_only(codegen):
            kernel.compile(arrays)
    cres = kernel.overloads[arrays]
    name = cpu_entry_name(kind, compute, bits)

    library = codegen.create_library(name)
    library.enable_object_caching()        # keep the machine code as an object file
    module = library.create_ir_module(name)
    i64 = ir.IntType(64)
    fptr = context.get_data_type(ft).as_pointer()
    fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i64,
                                           i64.as_pointer(), fptr, fptr,
                                           ir.IntType(32).as_pointer()])
    fn = ir.Function(module, fnty, name=name)
    out, n, ctl, p, vals, words = fn.args
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    with builder.if_then(builder.icmp_signed("<=", n, ir.Constant(i64, 0)), likely=False):
        builder.ret_void()          # nothing to fill (the kernels assume n >= 1)
    scratch = ir.Constant(i64, CPU_SCRATCH)
    args = [_array(context, builder, arrays[0], out, n),
            _array(context, builder, arrays[1], ctl, ir.Constant(i64, CTL_WORDS)),
            _array(context, builder, arrays[2], p, ir.Constant(i64, len(PARAMS[kind]))),
            _array(context, builder, arrays[3], vals, scratch),
            _array(context, builder, arrays[4], words, scratch)]
    restype = cres.signature.return_type
    callee = cgutils.get_or_insert_function(
        module, context.call_conv.get_function_type(restype, arrays), cres.fndesc.llvm_func_name)
    context.call_conv.call_function(builder, callee, restype, arrays, args)
    builder.ret_void()              # the kernels never raise: no status to pass on
    library.add_ir_module(module)
    library.add_linking_library(cres.library)
    library.finalize()
    return Entry(library, name)
