"""What ``fastinit bench`` reports about the machine: memory, CPU, threads, versions.

Linux ``/proc`` is read where it exists; elsewhere each function falls back
to what :mod:`platform` knows, or returns None.
"""

import importlib.metadata
import os
import platform


def _proc_kib(path, key):
    """The ``key:`` line of a /proc file such as /proc/meminfo, in bytes (its
    value is in KiB), or None."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def mem_available():
    """Bytes of memory available to new work (MemAvailable), or None."""
    return _proc_kib("/proc/meminfo", "MemAvailable")


def rss_now():
    """This process's resident set size in bytes (VmRSS), or None."""
    return _proc_kib("/proc/self/status", "VmRSS")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model", "Hardware") \
                        and val.strip():
                    return val.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def dist_version(name):
    """The installed version of distribution ``name``, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(threads, peers):
    from fastinit.backends._threads import usable_cpus
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable_cpus(),
            "machine": platform.machine(), "platform": platform.platform(),
            "python": platform.python_version(), "fill_threads": threads}
    for p in peers:
        if p.name == "torch":
            info["torch_threads"] = p.threads()
    return info


def versions(peers):
    import numba
    import numpy as np

    import fastinit
    v = {"fastinit": fastinit.__version__, "numpy": np.__version__,
         "numba": numba.__version__, "ml_dtypes": dist_version("ml_dtypes"),
         "torch": dist_version("torch"), "jax": dist_version("jax"),
         "jaxlib": dist_version("jaxlib"),
         "tensorflow": dist_version("tensorflow") or dist_version("tensorflow-cpu")}
    for p in peers:
        v[p.name] = p.version
    return v
