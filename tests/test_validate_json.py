"""Criterion 1: the JSON report's fields exist and hold the right numbers, checked against an
independent computation (onnxruntime runs made here, numpy float64 metrics and forward pass)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from validation_models import (
    onnx_attention_pair,
    primitive_attention_pair,
    primitive_forward_float64,
    run_with_outputs,
    save_pair,
    token_feeds,
)

from pasa_onnx.validation import validate

METRIC_FIELDS = {"max_abs_err", "rmse", "rel_rmse", "cosine", "nonfinite"}


def metrics64(actual, reference) -> dict[str, float]:
    a = np.asarray(actual, np.float64).ravel()
    r = np.asarray(reference, np.float64).ravel()
    d = a - r
    return {
        "max_abs_err": float(np.max(np.abs(d))),
        "rmse": float(np.sqrt(np.mean(d * d))),
        "rel_rmse": float(np.sqrt(np.mean(d * d)) / np.sqrt(np.mean(r * r))),
        "cosine": float(a @ r / np.sqrt((a @ a) * (r @ r))),
        "nonfinite": int(np.count_nonzero(~np.isfinite(a))),
    }


@pytest.fixture(scope="module")
def primitive_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("json")
    pair = primitive_attention_pair(n_layers=2)
    orig_path, rw_path = save_pair(pair, tmp, "prim")
    feeds = token_feeds(batch=2, seq=12, vocab=50)
    np.savez(tmp / "inputs.npz", **feeds)
    report = tmp / "report.json"
    result = validate(orig_path, rw_path, inputs=tmp / "inputs.npz", report=report)
    return pair, feeds, result, json.loads(report.read_text())


def test_json_has_documented_fields(primitive_report):
    _, feeds, result, data = primitive_report
    assert data["verdict"] == "pass" == result.verdict
    assert data["tolerance"] == {"atol": result.atol, "rtol": result.rtol}
    assert set(data["inputs"]) == set(feeds)
    for name, arr in feeds.items():
        entry = data["inputs"][name]
        assert entry["shape"] == list(arr.shape) and entry["dtype"] == "int64"
        assert entry["generated"] is False
    assert [o["name"] for o in data["outputs"]] == ["hidden", "logits"]
    for o in data["outputs"]:
        assert set(o["vs_original"]) >= METRIC_FIELDS
        assert set(o["vs_fp32_reference"]) >= METRIC_FIELDS
        assert o["within_tolerance"] is True
    assert [a["node"] for a in data["attentions"]] == ["attn_0", "attn_1"]
    for i, a in enumerate(data["attentions"]):
        assert a["pattern"] == "matmul_softmax_matmul"
        assert a["output"] == f"l{i}_attn_out"
        assert {
            "vs_original",
            "vs_fp32_reference",
            "max_abs_score",
            "plain_fp16_overflows",
            "within_tolerance",
        } <= set(a)
        assert a["plain_fp16_overflows"] is False and a["within_tolerance"] is True


def test_json_metrics_match_independent_runs(primitive_report):
    (orig, rw), feeds, _, data = primitive_report
    names = ["hidden", "logits", "l0_attn_out", "l1_attn_out"]
    got_orig = run_with_outputs(orig, feeds, names)
    got_rw = run_with_outputs(rw, feeds, names)
    entries = {o["name"]: o for o in data["outputs"]}
    entries.update({a["output"]: a for a in data["attentions"]})
    for name in names:
        want = metrics64(got_rw[name], got_orig[name])
        got = entries[name]["vs_original"]
        assert got["nonfinite"] == want["nonfinite"] == 0
        for key in ("max_abs_err", "rmse", "rel_rmse", "cosine"):
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), (name, key)
        # The rewrite is not a no-op: fp16 attention differs in the last bits.
        assert got["max_abs_err"] > 0


def test_json_fp32_reference_and_scores_match_float64_forward(primitive_report):
    (orig, rw), feeds, _, data = primitive_report
    gold = primitive_forward_float64(orig, feeds, heads=2)
    got_rw = run_with_outputs(rw, feeds, ["hidden", "logits", "l0_attn_out", "l1_attn_out"])
    entries = {o["name"]: o for o in data["outputs"]}
    entries.update({a["output"]: a for a in data["attentions"]})
    for name in ("hidden", "logits", "l0_attn_out", "l1_attn_out"):
        want = metrics64(got_rw[name], gold[name])
        got = entries[name]["vs_fp32_reference"]
        # The report's reference is fp32 onnxruntime, ours float64 numpy: equal to fp32 noise,
        # far below the fp16 error being measured.
        assert got["rmse"] == pytest.approx(want["rmse"], rel=0.02), name
        assert got["max_abs_err"] == pytest.approx(want["max_abs_err"], rel=0.05), name
    for i, a in enumerate(data["attentions"]):
        # The report scores fp16 Q/K from the rewritten graph; ours are float64 projections.
        assert a["max_abs_score"] == pytest.approx(gold[f"l{i}_max_abs_score"], rel=0.01)


def test_gqa_onnx_attention_pair_json(tmp_path):
    orig_path, rw_path = save_pair(onnx_attention_pair(), tmp_path, "gqa")
    report = tmp_path / "r.json"
    result = validate(orig_path, rw_path, dims={"batch": 2, "sequence": 24}, report=report)
    data = json.loads(report.read_text())
    assert result.passed and data["verdict"] == "pass"
    assert data["inputs"]["hidden_states"] == {
        "shape": [2, 24, 64],
        "dtype": "float16",
        "generated": True,
        "kind": "float N(0,1)",
    }
    (att,) = data["attentions"]
    assert att["node"] == "attn_0" and att["pattern"] == "onnx_attention"
    assert att["output"] == "attn_out" and att["vs_original"]["nonfinite"] == 0
    assert data["fp32_reference"] == "original lifted to fp32"
