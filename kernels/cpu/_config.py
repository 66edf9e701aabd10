"""Numba settings for every fastinit CPU kernel, defined once.

No ``fastmath`` (the contract forbids contraction and reassociation);
``error_model="numpy"`` (divisions never raise, so loops vectorize); no
Python wrapper and no runtime (``_nrt=False``: the kernels allocate nothing;
the caller hands them scratch memory), so the machine code of an entry
kernel calls nothing outside itself but the C math library; no
``parallel=True`` (a large fill runs the kernels on Python threads:
fastinit/backends/_threads.py); no Numba disk cache (the entry kernels are
compiled to object code with a C entry point, which
fastinit/backends/_native.py caches and loads: kernels/cpu/entry.py).
Why each: docs/design.md, "The CPU kernels" and "Start-up".
"""

import functools

_OPTIONS = dict(fastmath=False, nogil=True, error_model="numpy", _nrt=False, cache=False,
                no_cpython_wrapper=True, no_cfunc_wrapper=True)

INNER = dict(_OPTIONS)
"""Every kernel: compiled once per signature and linked into its callers."""

INLINE = dict(_OPTIONS, forceinline=True)
"""The same, and LLVM inlines it at every call site (``forceinline``: Numba's
own ``inline="always"`` copies and retypes the function's IR at every site,
which made a cold compile take twice as long: docs/design.md)."""


def _no_python_call(name):
    def _compile_for_args(*args, **kws):
        raise TypeError(f"{name}() runs only inside fastinit's compiled kernels and has no "
                        f"Python entry point; call it from a numba.njit function, or fill "
                        f"through fastinit")
    return _compile_for_args


def kernel_only(namespace):
    """Guard every dispatcher defined in ``namespace`` (a module's globals; not
    those it imports) against calls from Python: compiled without a CPython
    wrapper, such a call would jump to no code. A call from Python raises
    TypeError; calls from jitted code compile and link as usual (their
    signatures are recorded in ``overloads``, which typing and lowering read,
    and never in the dispatcher's table of Python entry points). Returns how
    many."""
    from numba.core.dispatcher import Dispatcher
    count = 0
    for obj in list(namespace.values()):
        if (isinstance(obj, Dispatcher) and obj.targetoptions.get("no_cpython_wrapper")
                and obj.py_func.__module__ == namespace["__name__"]):
            obj._compile_for_args = _no_python_call(obj.py_func.__qualname__)
            obj.add_overload = functools.partial(_record_overload, obj)
            count += 1
    return count


def _record_overload(dispatcher, cres):
    dispatcher.overloads[tuple(cres.signature.args)] = cres
