"""Stress cases of the numerics contract (shared/PASA.md): long near-uniform attention where
half-precision accumulators overflow, long causal attention, masked rows/blocks/keys holding
garbage, and scores that overflow fp16 through spread rather than a shared bias."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_pasa

from pasa_onnx.numerics import attention_emulated, attention_golden, error_metrics


def _near_uniform(skv: int, v_mag: float, seed: int = 0, sq: int = 64, d: int = 64):
    rng = np.random.default_rng(seed)
    q = (0.1 * rng.standard_normal((1, 2, sq, d))).astype(np.float16)
    k = (0.1 * rng.standard_normal((1, 2, skv, d))).astype(np.float16)
    v = (v_mag + rng.standard_normal((1, 2, skv, d))).astype(np.float16)
    return q, k, v


@pytest.mark.parametrize(("skv", "v_mag"), [(8192, 50.0), (16384, 10.0), (16384, 100.0)])
def test_near_uniform_long_attention_half_mode(skv, v_mag):
    q, k, v = _near_uniform(skv, v_mag)
    gold = attention_golden(q, k, v)
    y = run_pasa({"Q": q, "K": k, "V": v})  # default precision for fp16: half
    m = error_metrics(y, gold, v)
    assert m.nonfinite == 0
    assert m.rel_rmse <= 1e-3, m


@pytest.mark.parametrize(("skv", "v_mag"), [(8192, 50.0), (16384, 100.0)])
def test_near_uniform_long_attention_overflows_half_accumulators(skv, v_mag):
    # The same data through the paper's all-fp16 pipeline: l * |V| > 65504 overflows O. The op
    # says so (issue #15 D10: never a silent inf or NaN from finite inputs).
    q, k, v = _near_uniform(skv, v_mag)
    with pytest.raises(Exception, match="overflow float16 in precision 'paper'"):
        run_pasa({"Q": q, "K": k, "V": v}, precision="paper")
    # ... and its emulation shows the overflow itself.
    assert not np.isfinite(attention_emulated(q, k, v, precision="paper")).all()


def test_causal_16384_keys():
    rng = np.random.default_rng(1)
    s, d = 16384, 64
    q = (rng.standard_normal((1, 1, s, d)) + 2).astype(np.float16)
    k = (rng.standard_normal((1, 1, s, d)) + 2).astype(np.float16)
    v = rng.standard_normal((1, 1, s, d)).astype(np.float16)
    y = run_pasa({"Q": q, "K": k, "V": v}, is_causal=1)
    assert np.isfinite(y.astype(np.float32)).all()
    # float64 check on row bands (first, middle, last): rows [i0, i1) of causal attention equal
    # attention of those queries over past = keys[:i0] plus new keys [i0, i1), is_causal.
    for i0 in (0, 8000, s - 256):
        i1 = i0 + 256
        gold = attention_golden(
            q[:, :, i0:i1],
            k[:, :, i0:i1],
            v[:, :, i0:i1],
            past_key=k[:, :, :i0],
            past_value=v[:, :, :i0],
            is_causal=1,
        )
        m = error_metrics(y[:, :, i0:i1], gold, v)
        assert m.rel_rmse <= 2e-3, (i0, m)


def test_fully_masked_rows_and_blocks(rng):
    b, h, sq, skv, d = 2, 2, 96, 600, 32
    q = (rng.standard_normal((b, h, sq, d)) + 3).astype(np.float16)
    k = (rng.standard_normal((b, h, skv, d)) + 3).astype(np.float16)
    v = rng.standard_normal((b, h, skv, d)).astype(np.float16)
    mask = rng.random((b, 1, sq, skv)) > 0.3
    mask[:, :, 5] = False  # fully masked rows
    mask[1, :, 40:60] = False
    mask[:, :, :, 128:256] = False  # a whole key block masked for every row
    mask[0, :, :, 384:] = False  # the tail blocks of batch 0
    for precision in ("half", "paper", "float"):
        y = run_pasa({"Q": q, "K": k, "V": v, "attn_mask": mask}, precision=precision)
        y32 = y.astype(np.float32)
        assert np.isfinite(y32).all(), precision
        assert (y32[:, :, 5] == 0).all() and (y32[1, :, 40:60] == 0).all()
        gold = attention_golden(q, k, v, mask)
        # The paper's all-fp16 pipeline is the least accurate of the three.
        tolerance = 5e-3 if precision == "paper" else 1e-3
        assert error_metrics(y, gold, v).rel_rmse < tolerance, precision
        emu = attention_emulated(q, k, v, mask, precision=precision)
        assert np.abs(y32 - emu.astype(np.float32)).max() < 2e-2, precision


@pytest.mark.parametrize("garbage", [np.inf, -np.inf, 30000.0])
@pytest.mark.parametrize("how", ["bool", "additive", "nonpad"])
def test_masked_key_rows_holding_garbage(rng, garbage, how):
    b, h, sq, skv, d = 2, 2, 40, 300, 64
    valid = [300, 170]  # batch 1 has 130 padded keys: garbage there
    q = (rng.standard_normal((b, h, sq, d)) + 1).astype(np.float16)
    k = (rng.standard_normal((b, h, skv, d)) + 1).astype(np.float16)
    v = rng.standard_normal((b, h, skv, d)).astype(np.float16)
    k[1, :, valid[1] :] = garbage
    v[1, :, valid[1] :] = garbage
    keep = np.arange(skv)[None, :] < np.array(valid)[:, None]  # [B, Skv]
    inputs = {"Q": q, "K": k, "V": v}
    if how == "bool":
        inputs["attn_mask"] = keep[:, None, None, :]
    elif how == "additive":
        inputs["attn_mask"] = np.where(keep, 0, -np.inf).astype(np.float16)[:, None, None, :]
    else:
        inputs["nonpad_kv_seqlen"] = np.array(valid, dtype=np.int64)
    y = run_pasa(inputs)
    assert np.isfinite(y.astype(np.float32)).all()
    k_clean, v_clean = k.copy(), v.copy()
    k_clean[1, :, valid[1] :] = 0
    v_clean[1, :, valid[1] :] = 0
    gold = attention_golden(q, k_clean, v_clean, keep[:, None, None, :])
    assert error_metrics(y, gold, v_clean).rel_rmse < 2e-3


def test_spread_keys_overflow_falls_back_to_fp32_tiles():
    # Keys +-24*u + noise (u a +-1 vector): their mean is ~0, so the PASA shift cannot remove the
    # spread; queries aligned with u make |scale * q.k| ~ 68000 > 65504.
    rng = np.random.default_rng(7)
    d, sq, skv = 128, 64, 512
    u = rng.choice([-1.0, 1.0], size=d)
    signs = rng.choice([-1.0, 1.0], size=(skv, 1))
    k = (signs * 24 * u + rng.standard_normal((skv, d))).astype(np.float16)[None, None]
    q = (250 * u + rng.standard_normal((sq, d))).astype(np.float16)[None, None]
    v = rng.standard_normal((1, 1, skv, d)).astype(np.float16)
    feeds = {"Q": q, "K": k, "V": v}
    gold = attention_golden(q, k, v)
    assert (
        np.abs(q.astype(np.float64)[0, 0] @ k.astype(np.float64)[0, 0].T).max() / np.sqrt(d) > 65504
    )
    half = run_pasa(feeds, precision="half")
    full = run_pasa(feeds, precision="float")
    assert np.isfinite(half.astype(np.float32)).all()
    assert error_metrics(half, full.astype(np.float64), v).rel_rmse < 1e-3
    assert error_metrics(half, gold, v).rel_rmse < 2e-3
    # Without the fallback (the paper's pipeline) the same scores overflow: a clear error.
    with pytest.raises(Exception, match="overflow float16 in precision 'paper'"):
        run_pasa(feeds, precision="paper")
    assert not np.isfinite(attention_emulated(q, k, v, precision="paper")).all()
    emu = attention_emulated(q, k, v, precision="half")
    assert np.abs(half.astype(np.float32) - emu.astype(np.float32)).max() < 2e-2
