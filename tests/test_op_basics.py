"""The library loads, registers ai.pasa::PasaAttention, and matches the float64 golden."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import run_pasa

import pasa_onnx
from pasa_onnx.numerics import attention_emulated, attention_golden, error_metrics


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


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("causal", [0, 1])
def test_matches_golden_and_emulation(rng, dtype, causal):
    q = (rng.standard_normal((2, 4, 150, 32)) + 1).astype(dtype)
    k = (rng.standard_normal((2, 2, 170, 32)) + 1).astype(dtype)
    v = rng.standard_normal((2, 2, 170, 32)).astype(dtype)
    y = run_pasa({"Q": q, "K": k, "V": v}, is_causal=causal)
    assert y.dtype == dtype and y.shape == (2, 4, 150, 32)
    gold = attention_golden(q, k, v, is_causal=causal)
    emu = attention_emulated(q, k, v, is_causal=causal)
    tol = 2e-3 if dtype == np.float16 else 1e-5
    assert error_metrics(y, gold, v).rel_rmse < tol
    assert np.abs(y.astype(np.float64) - emu.astype(np.float64)).max() < (
        2e-3 if dtype == np.float16 else 1e-5
    )
