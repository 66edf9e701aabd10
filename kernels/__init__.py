"""fastinit's compute code, installed as ``fastinit.kernels``.

``_abi`` is the host/kernel interface, defined once; ``cpu/`` holds the Numba
kernels and ``cuda/`` the CUDA header and kernels (compiled at run time by
``fastinit.backends.cuda``).
"""
