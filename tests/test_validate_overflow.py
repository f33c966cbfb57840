"""Criterion 2: a model whose fp16 attention overflows in a plain fp16 kernel (emulated) while
PasaAttention stays finite; every report says so for that attention."""

from __future__ import annotations

import json

import numpy as np
import pytest
from validation_models import primitive_attention_pair, run_with_outputs, save_pair, token_feeds

from pasa_onnx.numerics import attention_golden, attention_plain_half


@pytest.fixture(scope="module")
def overflow_run(tmp_path_factory):
    from pasa_onnx.validation import validate

    tmp = tmp_path_factory.mktemp("overflow")
    # Queries and keys ~ 100 + noise with D = 64: scores ~ 64 * 1e4 / 8 = 80000 > 65504.
    pair = primitive_attention_pair(qk_bias=100.0, head_dim=64)
    orig_path, rw_path = save_pair(pair, tmp, "overflow")
    reports = [tmp / "r.json", tmp / "r.md", tmp / "r.html"]
    result = validate(orig_path, rw_path, report=reports)
    return pair, result, tmp


def test_plain_fp16_kernel_would_overflow_independently():
    """The fixture really overflows: fp16 Q/K from an onnxruntime run, scored by hand, and the
    emulated plain fp16 kernel gives inf/NaN where the float64 attention is finite."""
    orig, _ = primitive_attention_pair(qk_bias=100.0, head_dim=64)
    feeds = token_feeds(2, 16, 50)
    t = run_with_outputs(orig, feeds, ["l0_q_bhsd", "l0_k_bhsd", "l0_v_bhsd"])
    q, k, v = t["l0_q_bhsd"], t["l0_k_bhsd"], t["l0_v_bhsd"]
    scores = q.astype(np.float64) @ k.astype(np.float64).transpose(0, 1, 3, 2) / 8.0
    assert (np.abs(scores) >= 65520).any()  # rounds to inf in fp16
    assert (np.abs(q.astype(np.float64) @ k.astype(np.float64).transpose(0, 1, 3, 2)) > 65504).any()
    assert not np.isfinite(attention_plain_half(q, k, v)).all()
    assert np.isfinite(attention_golden(q, k, v)).all()


def test_report_flags_the_overflowing_attention(overflow_run):
    _, result, tmp = overflow_run
    data = json.loads((tmp / "r.json").read_text())
    (att,) = data["attentions"]
    assert att["plain_fp16_overflows"] is True and att["plain_fp16_nonfinite"] > 0
    assert att["max_abs_score"] > 65504
    # PasaAttention stays finite and agrees with the fp32 reference.
    assert att["vs_original"]["nonfinite"] == 0 and att["vs_fp32_reference"]["nonfinite"] == 0
    assert att["vs_fp32_reference"]["rel_rmse"] < 1e-2
    assert att["within_tolerance"] is True and data["verdict"] == "pass"
    for o in data["outputs"]:
        assert o["vs_original"]["nonfinite"] == 0
    assert result.passed


def test_human_reports_say_so(overflow_run):
    _, _, tmp = overflow_run
    md = (tmp / "r.md").read_text()
    assert "would overflow in a plain fp16 flash-attention kernel" in md
    assert "PasaAttention keeps them finite" in md
    row = next(line for line in md.splitlines() if line.startswith("| <code>attn\\_0</code>"))
    assert "**yes**" in row
    html = (tmp / "r.html").read_text()
    assert "would overflow: <span class='warn'>YES" in html


def test_non_overflowing_model_is_not_flagged(tmp_path):
    from pasa_onnx.validation import validate

    orig_path, rw_path = save_pair(primitive_attention_pair(), tmp_path, "calm")
    result = validate(orig_path, rw_path, report=tmp_path / "r.md")
    assert [a.plain_fp16_overflows for a in result.attentions] == [False]
    assert result.attentions[0].max_abs_score < 100
    assert "would overflow" not in (tmp_path / "r.md").read_text()
