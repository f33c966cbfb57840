"""Numerics on the CUDA execution provider: the PASA paper's random grid (fp16, S = 1407,
D = 128, 14/2 heads) against float64, against the CPU kernel in the same mode and against the
GPU pipeline's emulation (pasa_onnx.numerics_gpu); and the stress cases of
tests/test_numerics_stress.py."""

from __future__ import annotations

import numpy as np
import pytest
import test_numerics_stress as stress
from cuda_support import output_ulp, requires_cuda, run_pasa_cpu, run_pasa_cuda
from test_numerics_stress import (  # noqa: F401 - collected here, run on CUDA
    test_causal_16384_keys,
    test_fully_masked_rows_and_blocks,
    test_masked_key_rows_holding_garbage,
    test_near_uniform_long_attention_half_mode,
    test_near_uniform_long_attention_overflows_half_accumulators,
    test_spread_keys_overflow_falls_back_to_fp32_tiles,
)

from pasa_onnx.numerics import attention_golden, error_metrics, paper_random_inputs
from pasa_onnx.numerics_gpu import attention_emulated_gpu

pytestmark = requires_cuda()

S, D, HQ, HKV = 1407, 128, 14, 2
CASES = [
    (d, m, a) for d in ("uniform", "normal") for m in (0, 10, 20, 30) for a in (0.5, 5, 10, 20)
]


@pytest.fixture(autouse=True)
def _on_cuda(monkeypatch):
    monkeypatch.setattr(stress, "run_pasa", run_pasa_cuda)


@pytest.mark.parametrize(("dist", "mean", "am"), CASES)
def test_paper_grid_on_cuda(dist, mean, am, record_property):
    q, k, v = paper_random_inputs(dist, mean, am, q_heads=HQ, kv_heads=HKV, seq=S, dim=D)
    gold = attention_golden(q, k, v)
    feeds = {"Q": q, "K": k, "V": v}
    for precision in ("half", "paper"):
        gpu = run_pasa_cuda(feeds, precision=precision)
        cpu = run_pasa_cpu(feeds, precision=precision)
        emu = attention_emulated_gpu(q, k, v, precision=precision)
        err, cpu_err = error_metrics(gpu, gold, v), error_metrics(cpu, gold, v)
        emu_err = error_metrics(emu, gold, v)
        record_property(f"{precision}_rel_rmse", err.rel_rmse)
        record_property(f"{precision}_cpu_rel_rmse", cpu_err.rel_rmse)
        assert err.nonfinite == 0, (precision, err)
        assert err.rel_rmse <= 1.5 * cpu_err.rel_rmse, (precision, err, cpu_err)
        # Kernel == GPU emulation up to rounding: float32 sums in another order, which also
        # round some outputs to the other neighbour (a quarter of an output ulp, as an RMS,
        # allows for 1 in 16 of them; it matters at mean 0, where the errors are smallest).
        diff = error_metrics(gpu, emu.astype(np.float64), v)
        ulp = output_ulp(emu, v)
        assert diff.rel_rmse <= 0.35 * emu_err.rel_rmse + 0.25 * ulp, (precision, diff, emu_err)
        assert abs(err.rel_rmse - emu_err.rel_rmse) <= 0.1 * emu_err.rel_rmse + 1e-6, (
            precision,
            err,
            emu_err,
        )


def _features(rng, dtype):
    """A problem that uses every feature at once: 3-D layout, GQA, Dv != D, an additive mask
    broadcast over heads with a short last dimension, a past, causal with a window, softcap."""
    b, hq, hkv, sq, past, new, d, dv = 2, 6, 2, 37, 150, 37, 40, 24
    q = rng.standard_normal((b, sq, hq * d)).astype(dtype)
    k = (rng.standard_normal((b, new, hkv * d)) + 2).astype(dtype)
    v = rng.standard_normal((b, new, hkv * dv)).astype(dtype)
    pk = (rng.standard_normal((b, hkv, past, d)) + 2).astype(dtype)
    pv = rng.standard_normal((b, hkv, past, dv)).astype(dtype)
    mask = np.where(rng.random((b, 1, sq, past + new - 5)) > 0.2, 0.0, -np.inf).astype(dtype)
    return {"Q": q, "K": k, "V": v, "attn_mask": mask, "past_key": pk, "past_value": pv}


@pytest.mark.parametrize("precision", ["half", "paper", "float"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_every_feature_matches_the_gpu_emulation(rng, dtype, precision):
    from pasa_onnx.numerics import BFLOAT16

    dt = BFLOAT16 if dtype == "bfloat16" else np.dtype(dtype)
    x = _features(rng, dt)
    attrs = dict(q_num_heads=6, kv_num_heads=2, is_causal=1, left_window_size=90, softcap=30.0)
    y, pk, pv = run_pasa_cuda(x, n_outputs=3, precision=precision, block_kv=64, **attrs)
    names = ["attn_mask", "past_key", "past_value"]
    emu = attention_emulated_gpu(
        x["Q"], x["K"], x["V"], *(x[n] for n in names), precision=precision, block_kv=64, **attrs
    )
    gold = attention_golden(x["Q"], x["K"], x["V"], *(x[n] for n in names), **attrs)
    vref = x["past_value"]  # the RMS of V that relative errors divide by
    # float32 inputs in half/paper mode run an fp16 pipeline: fp16 tolerances.
    pipeline = dtype if precision == "float" or dtype != "float32" else "float16"
    tol = {"float32": 2e-6, "float16": 2e-3, "bfloat16": 2e-2}[pipeline]
    assert error_metrics(y, emu.astype(np.float64), vref).rel_rmse <= tol
    assert error_metrics(y, gold, vref).rel_rmse <= 10 * tol + (5e-3 if precision == "paper" else 0)
    # present = concat(past, new) in [B, Hkv, P+S, D]
    knew = x["K"].reshape(2, 37, 2, 40).transpose(0, 2, 1, 3)
    assert np.array_equal(pk, np.concatenate([x["past_key"], knew], axis=2))
    vnew = x["V"].reshape(2, 37, 2, 24).transpose(0, 2, 1, 3)
    assert np.array_equal(pv, np.concatenate([x["past_value"], vnew], axis=2))


@pytest.mark.parametrize(("hq", "hkv", "skv"), [(32, 32, 4096), (32, 8, 4096), (8, 1, 1500)])
def test_decode_with_a_long_past(rng, hq, hkv, skv):
    d = 128
    q = rng.standard_normal((1, hq, 1, d)).astype(np.float16)
    k = (rng.standard_normal((1, hkv, 1, d)) + 1).astype(np.float16)
    v = rng.standard_normal((1, hkv, 1, d)).astype(np.float16)
    pk = (rng.standard_normal((1, hkv, skv - 1, d)) + 1).astype(np.float16)
    pv = rng.standard_normal((1, hkv, skv - 1, d)).astype(np.float16)
    x = {"Q": q, "K": k, "V": v, "past_key": pk, "past_value": pv}
    y = run_pasa_cuda(x, is_causal=1)
    emu = attention_emulated_gpu(q, k, v, None, pk, pv, is_causal=1)
    gold = attention_golden(q, k, v, None, pk, pv, is_causal=1)
    assert error_metrics(y, emu.astype(np.float64), v).rel_rmse <= 1e-3
    assert error_metrics(y, gold, v).rel_rmse <= 2e-3


def test_nonpad_and_per_head_bool_mask(rng):
    b, hq, hkv, sq, skv, d = 3, 4, 2, 20, 300, 64
    q = rng.standard_normal((b, hq, sq, d)).astype(np.float16)
    k = (rng.standard_normal((b, hkv, skv, d)) + 3).astype(np.float16)
    v = rng.standard_normal((b, hkv, skv, d)).astype(np.float16)
    mask = rng.random((1, hq, sq, skv)) > 0.5
    nonpad = np.array([300, 129, 20], dtype=np.int64)
    x = {"Q": q, "K": k, "V": v, "attn_mask": mask, "nonpad_kv_seqlen": nonpad}
    y = run_pasa_cuda(x, is_causal=1)
    emu = attention_emulated_gpu(q, k, v, mask, None, None, nonpad, is_causal=1)
    assert error_metrics(y, emu.astype(np.float64), v).rel_rmse <= 1e-3
