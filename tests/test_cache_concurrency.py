"""Four processes with an empty kernel cache fill at once, as torchrun starts them.

They all compile the same kernel entry point into one ``NUMBA_CACHE_DIR`` at
the same time. Each must succeed with the same bytes as this process' fill,
and the cache they leave must be whole: a fifth process links the kernel
from it (nothing compiled, Numba not imported) and fills the same bytes
again. One dtype
and one distribution keep the compile short.
"""

import json
import os
import subprocess
import sys

import numpy as np

import fastinit as fi

N, SEED, MEAN, STD = 5000, 1234567, 0.25, 2.0
CHILD = r"""
import json, sys
import numpy as np
import fastinit as fi
from fastinit.backends import _native
a = np.empty(int(sys.argv[1]), np.float16)
fi.normal(a, float(sys.argv[3]), float(sys.argv[4]), seed=int(sys.argv[2]))
print(json.dumps(dict(bits=a.tobytes().hex(), hits=_native.LOADS["loaded"],
                      misses=_native.LOADS["built"], path=_native.cache_path(),
                      numba="numba" in sys.modules)))
"""


def _start(cache):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "NUMBA_CACHE_LOCATOR_CLASSES")}
    env["NUMBA_CACHE_DIR"] = str(cache)
    return subprocess.Popen([sys.executable, "-c", CHILD, str(N), str(SEED), str(MEAN),
                             str(STD)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(proc):
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_four_processes_with_an_empty_cache(tmp_path):
    cache = tmp_path / "cache"
    procs = [_start(cache) for _ in range(4)]
    results = [_result(p) for p in procs]
    expected = np.empty(N, np.float16)
    fi.normal(expected, MEAN, STD, seed=SEED)
    assert [r["bits"] == expected.tobytes().hex() for r in results] == [True] * 4, [
        (r["hits"], r["misses"], r["numba"]) for r in results]
    assert all(r["path"] and r["path"].startswith(str(cache)) for r in results)
    assert sum(r["misses"] for r in results) >= 1        # someone compiled it
    files = [f for _, _, fs in os.walk(cache) for f in fs]
    assert len(files) == 1 and files[0].endswith(".o"), files     # no temporary file left
    after = _result(_start(cache))
    assert after["bits"] == expected.tobytes().hex()
    assert after["hits"] == 1 and after["misses"] == 0    # linked whole, not recompiled
    assert not after["numba"]
