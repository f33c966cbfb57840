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


# ---- score_accumulation="half": the fp16-accumulator score product (PASA_ONNX_CUDA_SCORE_ACCUM)


@pytest.mark.parametrize(("dist", "mean", "am"), [("uniform", 30, 0.5), ("normal", 30, 20)])
def test_half_accumulation_measures_close_to_float_accumulation(dist, mean, am):
    q, k, v = paper_random_inputs(dist, mean, am, q_heads=2, kv_heads=1, seq=500)
    gold = attention_golden(q, k, v)
    flt = error_metrics(attention_emulated_gpu(q, k, v), gold, v)
    half = error_metrics(attention_emulated_gpu(q, k, v, score_accumulation="half"), gold, v)
    assert half.nonfinite == 0
    # fp16 partial sums add one rounding per 16 columns to the one of S: no more accurate, and of
    # the same order (uniform amplitude 0.5: the same outputs, the scores are nearly flat; normal
    # amplitude 20: 1.3x)
    assert flt.rel_rmse <= half.rel_rmse <= 4 * flt.rel_rmse, (flt, half)


def _partial_overflow_inputs(rng, rows: int, hot_rows) -> tuple:
    # Even keys: +900 in the first 64 columns and -900 in the last 64, so with q = 1.5 the fp16
    # partial sum passes 65504 after 48 columns while the full sum is 0. Only the rows in
    # hot_rows have q = 1.5 there; the others read these keys at q = 0.01.
    d = 128
    q = np.full((1, 1, rows, d), 0.01, dtype=np.float32)
    q[0, 0, list(hot_rows)] = 1.5
    k = rng.standard_normal((1, 1, 128, d)).astype(np.float32)
    k[0, 0, ::2, :64], k[0, 0, ::2, 64:] = 900.0, -900.0
    v = rng.standard_normal((1, 1, 128, d))
    return q.astype(np.float16), k.astype(np.float16), v.astype(np.float16)


def test_half_accumulation_falls_back_where_an_fp16_partial_sum_overflows(rng):
    from pasa_onnx.numerics_gpu import _half_acc_scores

    q, k, v = _partial_overflow_inputs(rng, 32, hot_rows=[3])
    attrs = dict(scale=1.0, alpha=0.0)  # no shift: the keys reach the product as they are
    sums = _half_acc_scores(q.astype(np.float32), k.astype(np.float32))
    assert np.isinf(sums[0, 0, 3, ::2]).all() and np.isfinite(sums[0, 0, 16:]).all()
    half = attention_emulated_gpu(q, k, v, score_accumulation="half", **attrs)
    flt = attention_emulated_gpu(q, k, v, **attrs)
    assert np.isfinite(half.astype(np.float32)).all()
    # rows 0-15 (row 3's group of 16 packed rows) take the float32 product ...
    assert np.array_equal(half[0, 0, :16], flt[0, 0, :16])
    # ... rows 16-31 keep their fp16 sums: the same as when no row overflows
    cold_q = q.copy()
    cold_q[0, 0, 3] = q[0, 0, 0]
    cold = attention_emulated_gpu(cold_q, k, v, score_accumulation="half", **attrs)
    assert np.array_equal(half[0, 0, 16:], cold[0, 0, 16:])
    assert not np.array_equal(cold[0, 0, 16:], flt[0, 0, 16:])


@pytest.mark.parametrize(
    ("dtype", "extra", "message"),
    [
        ("bfloat16", {}, "float16 inputs"),
        ("float16", {"softcap": 5.0}, "float16 inputs"),
        ("float16", {"score_accumulation": "double"}, "expected one of"),
    ],
)
def test_half_accumulation_refuses_what_the_kernels_do_not_run(rng, dtype, extra, message):
    from pasa_onnx.numerics import BFLOAT16

    dt = BFLOAT16 if dtype == "bfloat16" else np.float16
    q = rng.standard_normal((1, 1, 8, 64)).astype(np.float32).astype(dt)
    kwargs = {"score_accumulation": "half", **extra}
    with pytest.raises(ValueError, match=message):
        attention_emulated_gpu(q, q, q, **kwargs)


@pytest.mark.parametrize(
    ("kv_heads", "group", "rows", "keys", "i0"), [(2, 7, 37, 130, 256), (1, 4, 9, 200, 4)]
)
def test_half_accumulation_fallback_groups_are_16_packed_rows(rng, kv_heads, group, rows, keys, i0):
    # _half_acc_fallback against a loop over packed rows R = i·G + g: a 64-key tile falls back
    # for every row whose R // 16 shares it with a row that had a non-finite sum there.
    from pasa_onnx.numerics_gpu import _half_acc_fallback

    bad = rng.random((2, kv_heads * group, rows, keys)) < 0.002
    hit = set()
    for b, h, i, key in zip(*np.nonzero(bad), strict=True):
        hit.add((b, h // group, ((i0 + i) * group + h % group) // 16, key // 64))
    want = np.zeros_like(bad)
    for b, h, i, key in np.ndindex(*bad.shape):
        want[b, h, i, key] = (b, h // group, ((i0 + i) * group + h % group) // 16, key // 64) in hit
    assert want.any() and not want.all()
    assert np.array_equal(_half_acc_fallback(bad, i0, group), want)
