"""The library loads, registers ai.pasa::PasaAttention, and matches the float64 golden."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import run_pasa

import pasa_onnx
from pasa_onnx.numerics import BFLOAT16, attention_emulated, attention_golden, error_metrics


def test_library_path_is_absolute_file():
    path = pasa_onnx.library_path()
    assert os.path.isabs(path) and os.path.isfile(path)


def test_library_exports_only_registration():
    import subprocess

    out = subprocess.run(
        ["nm", "-D", "--defined-only", pasa_onnx.library_path()], capture_output=True, text=True
    )
    if out.returncode != 0:
        pytest.skip("nm not available")
    symbols = [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]
    assert symbols == ["RegisterCustomOps"]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, BFLOAT16])
@pytest.mark.parametrize("causal", [0, 1])
def test_matches_golden_and_emulation(rng, dtype, causal):
    q = (rng.standard_normal((2, 4, 150, 32)) + 1).astype(dtype)
    k = (rng.standard_normal((2, 2, 170, 32)) + 1).astype(dtype)
    v = rng.standard_normal((2, 2, 170, 32)).astype(dtype)
    y = run_pasa({"Q": q, "K": k, "V": v}, is_causal=causal)
    assert y.dtype == dtype and y.shape == (2, 4, 150, 32)
    gold = attention_golden(q, k, v, is_causal=causal)
    emu = attention_emulated(q, k, v, is_causal=causal)
    tol = {np.float16: 2e-3, np.float32: 1e-5}.get(dtype, 2e-2)
    assert error_metrics(y, gold, v).rel_rmse < tol
    # Kernel and emulation round at the same points: a few output ulps apart at most.
    ulps = {np.float16: 2e-3, np.float32: 1e-5}.get(dtype, 2e-2)
    assert np.abs(y.astype(np.float64) - emu.astype(np.float64)).max() < ulps


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_threads_do_not_change_results(rng, threads):
    q = (rng.standard_normal((2, 6, 300, 64)) + 2).astype(np.float16)
    k = (rng.standard_normal((2, 3, 300, 64)) + 2).astype(np.float16)
    v = rng.standard_normal((2, 3, 300, 64)).astype(np.float16)
    feeds = {"Q": q, "K": k, "V": v}
    single = run_pasa(feeds, threads=1, is_causal=1)
    multi = run_pasa(feeds, threads=threads, is_causal=1)
    assert np.array_equal(single, multi)
