"""The CUDA sources compile cleanly, with no GPU needed.

- kernels/cuda/fill.cu compiles to PTX for sm_80, sm_90 and sm_100 with nvcc,
  warnings as errors, when nvcc is on PATH; so does the exact text
  fastinit/backends/cuda.py hands NVRTC (the header inlined); the PTX has
  every kernel, no fused multiply-add, no flush-to-zero and no approximate
  operation, whatever -fmad says; ptxas finds no spills or local memory;
- the same text compiles with NVRTC through CuPy
  (fastinit.backends.cuda.build_binary, the real build path) to cubins and
  PTX for sm_80, sm_90 and sm_100, with the same PTX checks. The test extra
  brings CuPy and the NVRTC wheel on Linux (x86_64, aarch64), so there a
  missing NVRTC fails this test rather than skipping it;
- kernels/cuda/fastinit_philox.cuh compiles as C99 and as C++ with
  -Wall -Wextra -Werror.
"""

import os
import platform
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "kernels", "cuda")
FILL = os.path.join(KERNELS, "fill.cu")
# every kind and format, flat and row-strided (the _rows kernels), and the self-check
ENTRIES = {f"fastinit_{k}_{d}{shape}" for k in ("uniform", "normal", "trunc")
           for d in ("f32", "bf16", "f16", "f64") for shape in ("", "_rows")} | {
               "fastinit_selfcheck"}

USE_HEADER = r"""
#include "fastinit_philox.cuh"
int use_header(void);
int use_header(void)
{
    const philox4x32_block b = philox4x32(1u, 2u, 3u, 4u, 5u, 6u);
    const normal_pair_f32 p = box_muller_f32(b.x0, b.x1, 0.0f, 1.0f);
    const normal_pair_f64 q = box_muller_f64(b.x0, b.x1, b.x2, b.x3, 0.0, 1.0);
    const float t = truncated_normal_f32(b.x2, -0.9f, 1.8f, 0.0f, 1.4f, -2.0f, 2.0f, 0.0f, 1.0f);
    const double u = truncated_normal_f64(b.x0, b.x3, 1e-3, 2e-3, 0.0, 1.4, 3.0, 4.0, 1.0, -1.0);
    return (int)bf16_bits(p.x0 + t) + (int)f16_bits(masked_uniform_f32(b.x3, -1.0f, 2.0f,
                                                                         -1.0f, 0.99f, 0.1f))
           + (int)(q.x1 + u + erfinv_f64(0.5) + (double)erfinv_f32(-0.25f)
                   + masked_uniform_f64(b.x0, b.x1, 0.0, 1.0, 0.0, 0.99, 0.0)
                   + (double)log_f32(0.5f) + log_f64(0.25));
}
"""


def _run(args, cwd=None):
    proc = subprocess.run(args, capture_output=True, text=True, cwd=cwd)
    return proc.returncode, proc.stdout + proc.stderr


def _nvcc():
    path = shutil.which("nvcc")
    if path is None:
        pytest.skip("nvcc is not on PATH")
    return path


ARCHS = ("80", "90", "100")      # Ampere, Hopper, Blackwell
# PTX that would break the contract: a fused multiply-add (contraction), a
# flush of subnormals to zero, an approximate division, square root,
# reciprocal, exponential, logarithm or sine/cosine
INEXACT = re.compile(r"\bfma\.|\.ftz\b|\.approx\b")
# where the test extra brings CuPy and the NVRTC wheel (pyproject.toml)
NVRTC_REQUIRED = sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64")


def _ptx_body(ptx):
    """PTX without comments (the compiler's banner)."""
    return "\n".join(line for line in ptx.splitlines() if not line.lstrip().startswith("//"))


def assert_exact_ptx(ptx, what):
    """Every kernel present, and no contracted, flushing or approximate operation."""
    body = _ptx_body(ptx)
    assert set(re.findall(r"\.entry\s+(\w+)\(", body)) == ENTRIES, what
    bad = sorted({m.group(0) for m in INEXACT.finditer(body)})
    assert not bad, f"{what}: the PTX has {bad} operations"


def test_inexact_ptx_is_recognized():
    """The PTX check refuses what nvcc emits for fast math: fma, .ftz, .approx."""
    ok = "\n".join(f".entry {name}(\n\tadd.rn.f32 %f1, %f2, %f3;" for name in ENTRIES)
    assert_exact_ptx(ok, "exact")
    for line in ("fma.rn.f32 %f1, %f2, %f3, %f4;", "add.rn.ftz.f32 %f1, %f2, %f3;",
                 "div.approx.f32 %f1, %f2, %f3;", "sqrt.approx.ftz.f32 %f1, %f2;",
                 "ex2.approx.f32 %f1, %f2;"):
        with pytest.raises(AssertionError, match="operations"):
            assert_exact_ptx(ok + "\n\t" + line, line)


def _nvcc_ptx(tmp_path, arch, fmad):
    out = tmp_path / f"fill_{arch}_{fmad}.ptx"
    rc, log = _run([_nvcc(), "-ptx", f"-arch=sm_{arch}", f"-fmad={fmad}", "-std=c++14",
                    "-Werror", "all-warnings", FILL, "-o", str(out)])
    assert rc == 0 and "warning" not in log.lower(), log
    ptx = out.read_text()
    assert_exact_ptx(ptx, f"nvcc sm_{arch} -fmad={fmad}")
    return _ptx_body(ptx)


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "90"])
def test_fill_cu_to_ptx(tmp_path, arch):
    _nvcc_ptx(tmp_path, arch, "false")


def test_ptx_does_not_depend_on_fmad(tmp_path):
    """sm_90 with -fmad=false and -fmad=true: the same exact PTX (the _rn
    intrinsics are never contracted)."""
    assert _nvcc_ptx(tmp_path, "90", "false") == _nvcc_ptx(tmp_path, "90", "true")


def test_nvrtc_source_with_nvcc(tmp_path):
    """The text fastinit/backends/cuda.py compiles (header inlined) builds with nvcc too."""
    from fastinit.backends import cuda
    src = tmp_path / "fill_inlined.cu"
    src.write_text(cuda.kernel_source())
    out = tmp_path / "fill_inlined.ptx"
    rc, log = _run([_nvcc(), "-ptx", "-arch=sm_90", "-fmad=false", "-std=c++14", "-Werror",
                    "all-warnings", str(src), "-o", str(out)], cwd=str(tmp_path))
    assert rc == 0 and "warning" not in log.lower(), log
    assert set(re.findall(r"\.entry\s+(\w+)\(", out.read_text())) == ENTRIES


def test_no_spills_or_local_memory(tmp_path):
    out = tmp_path / "fill.cubin"
    rc, log = _run([_nvcc(), "-cubin", "-arch=sm_90", "-fmad=false", "-Xptxas",
                    "-v,-warn-spills,-warn-lmem-usage,-Werror", FILL, "-o", str(out)])
    assert rc == 0, log
    assert "bytes spill" not in log or not re.search(r"[1-9]\d* bytes spill", log), log
    assert not re.search(r"[1-9]\d* bytes stack frame", log), log


def _nvrtc_or_skip():
    """CuPy's NVRTC; skips where the test extra does not bring it, fails where it does."""
    from fastinit.backends import cuda
    try:
        return cuda._nvrtc(cuda._cupy())
    except cuda.CudaUnavailableError as exc:
        if NVRTC_REQUIRED:
            pytest.fail(f"the test extra brings CuPy and NVRTC here, but: {exc}")
        pytest.skip(f"CuPy's NVRTC is not available ({exc})")


@pytest.mark.parametrize("arch", ARCHS)
def test_nvrtc_build(arch):
    """The real build path (NVRTC through CuPy, no -ftz): a cubin for the
    architecture with every kernel, and PTX with no inexact operation."""
    _nvrtc_or_skip()
    from fastinit.backends import cuda
    if arch == "90":      # build_binary itself (one compile per call)
        data, kind = cuda.build_binary(arch)
        assert kind == "cubin"
        ptx, kind = cuda.build_binary(arch, target="ptx")
        assert kind == "ptx"
    else:                 # the compile it makes, cubin and PTX at once
        built = cuda.nvrtc_compile(f"-arch=sm_{arch}", ("cubin", "ptx"))
        data, ptx = built["cubin"], built["ptx"]
    assert data[:4] == b"\x7fELF" and all(name.encode() in data for name in ENTRIES)
    text = ptx.decode().rstrip("\0")
    assert f".target sm_{arch}" in text
    assert_exact_ptx(text, f"NVRTC sm_{arch}")


def test_curand_source_builds_from_wheels():
    """tests/test_cuda_gpu.py's cuRAND kernel builds with NVRTC from wheels alone:
    curand_kernel.h from the nvidia-curand wheel (or a toolkit), the CCCL
    headers it includes from CuPy. Skipped where no cuRAND header is installed
    (the test extra does not bring the 170 MB wheel); bench/gpu_check.py
    counts the GPU test's skip as a failure."""
    nvrtc = _nvrtc_or_skip()
    import test_cuda_gpu
    options = test_cuda_gpu.curand_options()
    if options is None:
        pytest.skip("curand_kernel.h not found: pip install nvidia-curand-cu12 (CUDA 12) or "
                    "nvidia-curand (CUDA 13), or use a CUDA toolkit")
    prog = nvrtc.createProgram(test_cuda_gpu.CURAND_SRC, "curand_words.cu", (), ())
    try:
        nvrtc.compileProgram(prog, list(options) + ["-arch=compute_80"])
        ptx = nvrtc.getPTX(prog).decode()
    except nvrtc.NVRTCError as exc:
        pytest.fail(f"{exc}\n{nvrtc.getProgramLog(prog)}")
    finally:
        nvrtc.destroyProgram(prog)
    assert re.search(r"\.entry\s+curand_words\(", ptx)


@pytest.mark.parametrize("lang", ["c99", "c++"])
def test_header_compiles_warning_free(tmp_path, lang):
    if lang == "c99":
        compiler = shutil.which("cc")
        flags = ["-std=c99", "-pedantic", "-x", "c"]
    else:
        compiler = shutil.which("c++")
        flags = ["-x", "c++"]
    if compiler is None:
        pytest.skip(f"no compiler for {lang}")
    src = tmp_path / "use_header.c"
    src.write_text(USE_HEADER)
    rc, log = _run([compiler, *flags, "-Wall", "-Wextra", "-Werror", "-O2",
                    "-ffp-contract=off", "-I", KERNELS, "-c", str(src),
                    "-o", str(tmp_path / "use_header.o")])
    assert rc == 0, log


def test_header_refuses_fast_math(tmp_path):
    compiler = shutil.which("cc")
    if compiler is None:
        pytest.skip("no cc")
    src = tmp_path / "use_header.c"
    src.write_text(USE_HEADER)
    rc, log = _run([compiler, "-std=c99", "-ffast-math", "-I", KERNELS, "-c", str(src),
                    "-o", str(tmp_path / "x.o")])
    assert rc != 0 and "fast-math" in log
