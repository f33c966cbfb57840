"""The one library serves CPU-only and GPU machines: whether or not it carries the CUDA kernels,
it needs no CUDA library at load time (the CUDA runtime is linked statically; the driver is
opened on first use), so it loads and runs the CPU kernel anywhere."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from cuda_support import run_pasa_cpu

import pasa_onnx


@pytest.mark.skipif(shutil.which("ldd") is None, reason="ldd is not available")
def test_library_needs_no_cuda_library_at_load_time():
    out = subprocess.run(
        ["ldd", pasa_onnx.library_path()], capture_output=True, text=True, check=True
    ).stdout
    needed = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert not [n for n in needed if "cuda" in n.lower() or "cublas" in n.lower()], out


def test_cpu_kernel_runs_with_the_cuda_build_loaded(rng):
    q = rng.standard_normal((1, 2, 5, 16)).astype(np.float16)
    y = run_pasa_cpu({"Q": q, "K": q, "V": q})
    assert y.shape == (1, 2, 5, 16) and np.isfinite(y.astype(np.float32)).all()
