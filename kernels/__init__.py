"""fastinit's compute kernels: Numba CPU kernels and the CUDA sources.

Installed as ``fastinit.kernels``. ``philox`` holds the one Numba definition
of the generator and the transforms; ``cpu`` the fill kernels built on it.
"""
