"""Issue #15 D10: finite inputs never give a silent NaN. Where the scaled scores leave the range
that the precision mode holds, the node fails with a message that says so; half precision
recomputes an overflowing fp16 score tile in fp32 instead (no error)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_pasa

from pasa_onnx.numerics import attention_golden


def _inputs(dtype, q_scale=1.0, k_scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((1, 2, 8, 16)) * q_scale).astype(dtype)
    k = (rng.standard_normal((1, 2, 8, 16)) * k_scale).astype(dtype)
    v = rng.standard_normal((1, 2, 8, 16)).astype(dtype)
    return {"Q": q, "K": k, "V": v}


@pytest.mark.parametrize(
    ("feeds", "attrs", "message"),
    [
        (_inputs(np.float32, 1e19, 1e19), {}, "overflow float32"),
        (_inputs(np.float32), {"scale": 3e38}, "overflow float32"),
        (_inputs(np.float16), {"precision": "paper", "scale": 1e30}, "precision 'paper'"),
        (_inputs(np.float32), {"precision": "paper", "scale": 1e30}, "precision 'paper'"),
    ],
    ids=["fp32-huge-qk", "fp32-scale-3e38", "fp16-paper-scale-1e30", "fp32-paper-scale-1e30"],
)
def test_scores_out_of_range_are_a_clear_error(feeds, attrs, message):
    with np.errstate(over="ignore", invalid="ignore"):
        scale = {k: v for k, v in attrs.items() if k == "scale"}
        gold = attention_golden(feeds["Q"], feeds["K"], feeds["V"], **scale)
    assert np.isfinite(gold).all()  # the float64 result exists
    with pytest.raises(Exception, match=message) as info:
        run_pasa(feeds, **attrs)
    assert "PasaAttention node 'attn0'" in str(info.value)


def test_half_precision_falls_back_to_fp32_scores_instead_of_failing():
    feeds = _inputs(np.float16, 300.0, 300.0)  # scaled scores far beyond 65504
    y = run_pasa(feeds)
    gold = attention_golden(feeds["Q"], feeds["K"], feeds["V"])
    assert np.isfinite(y.astype(np.float32)).all()
    assert np.abs(y.astype(np.float64) - gold).max() < 2e-2
