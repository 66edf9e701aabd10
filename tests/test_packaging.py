"""What a built wheel holds: every package of the source tree, and the CUDA sources."""

import os
import pytest

tomllib = pytest.importorskip("tomllib")        # Python 3.11+

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]


def _packages_on_disk():
    """Dotted names of every folder with an __init__.py, under the installed names."""
    roots = {"fastinit": "fastinit", "kernels": "fastinit.kernels"}
    found = set()
    for top, dotted in roots.items():
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            if "__init__.py" in files and "__pycache__" not in folder:
                rel = os.path.relpath(folder, os.path.join(ROOT, top))
                found.add(dotted if rel == "." else dotted + "." + rel.replace(os.sep, "."))
    return found


def test_every_package_is_listed():
    listed = set(_config()["packages"])
    assert _packages_on_disk() == listed


def test_package_dirs_exist():
    for name, folder in _config()["package-dir"].items():
        assert os.path.isfile(os.path.join(ROOT, folder, "__init__.py")), name


def test_package_data_globs_match_the_cuda_sources():
    import glob
    dirs = _config()["package-dir"]
    matched = set()
    for package, patterns in _config()["package-data"].items():
        for pattern in patterns:
            hits = glob.glob(os.path.join(ROOT, dirs[package], pattern))
            assert hits, (package, pattern)
            matched.update(os.path.basename(h) for h in hits)
    assert {"fill.cu", "fastinit_philox.cuh"} <= matched
