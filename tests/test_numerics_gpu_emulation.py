"""The CUDA pipeline's emulation (pasa_onnx.numerics_gpu) on its own, without a GPU: close to
float64 where the CPU emulation is, the CPU pipelines in float/paper mode, and the overflow
fallback of its score tiles."""

from __future__ import annotations

import numpy as np
import pytest

from pasa_onnx.numerics import (
    attention_emulated,
    attention_golden,
    error_metrics,
    paper_random_inputs,
)
from pasa_onnx.numerics_gpu import attention_emulated_gpu, round_operand


@pytest.mark.parametrize(
    ("dist", "mean", "am"), [("uniform", 30, 0.5), ("normal", 30, 20), ("uniform", 0, 20)]
)
def test_half_mode_is_as_accurate_as_the_cpu_pipeline(dist, mean, am):
    q, k, v = paper_random_inputs(dist, mean, am, q_heads=2, kv_heads=1, seq=500)
    gold = attention_golden(q, k, v)
    gpu = error_metrics(attention_emulated_gpu(q, k, v), gold, v)
    cpu = error_metrics(attention_emulated(q, k, v), gold, v)
    assert gpu.nonfinite == 0
    assert gpu.rel_rmse <= 1.5 * cpu.rel_rmse  # the bound for the CUDA kernel


@pytest.mark.parametrize("precision", ["float", "paper"])
def test_float_and_paper_are_the_cpu_pipelines(rng, precision):
    q = rng.standard_normal((1, 2, 40, 32)).astype(np.float16)
    k = (rng.standard_normal((1, 2, 300, 32)) + 2).astype(np.float16)
    gpu = attention_emulated_gpu(q, k, k, precision=precision, is_causal=1)
    cpu = attention_emulated(q, k, k, precision=precision, is_causal=1)
    assert np.array_equal(gpu, cpu)


def test_score_tiles_that_would_overflow_keep_float32():
    # Scores ~ +-68000 (spread, which the shift cannot remove): rounded to fp16 they would be inf.
    # The fallback keeps them finite; rounding K' (~ +-2) to fp16 for the tensor cores costs
    # accuracy here, as |q| ~ 2800 amplifies its ulp: rel RMSE 1.5e-2 against 3.0e-4 for the
    # CPU pipeline, which keeps K' in float32 (docs/numerics.md, "The CUDA pipeline").
    rng = np.random.default_rng(7)
    d, sq, skv = 128, 16, 256
    u = rng.choice([-1.0, 1.0], size=d)
    k = rng.choice([-1.0, 1.0], size=(skv, 1)) * 24 * u + rng.standard_normal((skv, d))
    q = 250 * u + rng.standard_normal((sq, d))
    k, q = k.astype(np.float16)[None, None], q.astype(np.float16)[None, None]
    v = rng.standard_normal((1, 1, skv, d)).astype(np.float16)
    gold = attention_golden(q, k, v)
    gpu = error_metrics(attention_emulated_gpu(q, k, v), gold, v)
    cpu = error_metrics(attention_emulated(q, k, v), gold, v)
    assert gpu.nonfinite == 0
    assert gpu.rel_rmse < 2e-2
    assert cpu.rel_rmse < 1e-3


def test_round_operand_keeps_float32_where_the_half_type_overflows():
    x = np.array([1.0001, 70000.0, -1e6, np.inf], dtype=np.float32)
    r = round_operand(x, np.dtype(np.float16))
    assert r[0] == np.float32(np.float16(1.0001))
    assert r[1] == 70000.0 and r[2] == -1e6 and r[3] == np.inf
