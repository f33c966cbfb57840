"""Score forensics and the fp32 reference, each against a brute-force numpy computation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import run_pasa
from onnx import TensorProto, helper, numpy_helper
from validation_models import primitive_attention_pair, primitive_forward_float64, token_feeds

import pasa_onnx
from pasa_onnx.forensics import AttentionInputs, analyse, max_abs_score
from pasa_onnx.fp32_reference import has_half_types, lift_feeds, lift_to_fp32


def brute_max_score(q4, k4, scale, allowed):
    """Full [B,Hq,Sq,Skv] score matrix in float64; ``allowed`` broadcastable to it."""
    group = q4.shape[1] // k4.shape[1]
    k = np.repeat(k4.astype(np.float64), group, axis=1)
    s = scale * q4.astype(np.float64) @ k.transpose(0, 1, 3, 2)
    return np.abs(np.where(allowed, s, 0)).max()


@pytest.mark.parametrize("layout", ["3d", "4d"])
def test_max_abs_score_gqa_causal_mask(rng, layout):
    b, hq, hkv, sq, skv, d = 2, 4, 2, 37, 37, 8
    q4 = rng.standard_normal((b, hq, sq, d))
    k4 = rng.standard_normal((b, hkv, skv, d))
    # A huge score with a future key must not count under is_causal, nor a masked-out key.
    k4[:, :, -1] = 50.0
    q4[:, :, 0] = 50.0
    mask = np.ones((b, 1, 1, skv), bool)
    mask[1, ..., 30:] = False
    causal = np.tril(np.ones((sq, skv), bool))
    want = brute_max_score(q4, k4, 0.3, causal & mask)
    assert want < 1000  # the planted 50*50*d*0.3 = 6000 pair is excluded
    if layout == "3d":
        q = q4.transpose(0, 2, 1, 3).reshape(b, sq, hq * d)
        k = k4.transpose(0, 2, 1, 3).reshape(b, skv, hkv * d)
        extra = dict(q_num_heads=hq, kv_num_heads=hkv)
    else:
        q, k, extra = q4, k4, {}
    a = AttentionInputs(q, k, k, attn_mask=mask, scale=0.3, is_causal=True, **extra)
    assert max_abs_score(a) == pytest.approx(want, rel=1e-12)
    # An additive -inf mask marks the same keys; without is_causal the planted pair counts.
    additive = np.where(mask, 0.0, -np.inf)
    a2 = AttentionInputs(q, k, k, attn_mask=additive, scale=0.3, **extra)
    want2 = brute_max_score(q4, k4, 0.3, mask)
    assert want2 > 5000 and max_abs_score(a2) == pytest.approx(want2, rel=1e-12)


def test_plain_fp16_overflow_flag(rng):
    def qkv(mean):
        return [
            (mean + rng.standard_normal((1, 2, 64, 128))).astype(np.float16) for _ in range(2)
        ] + [rng.standard_normal((1, 2, 64, 128)).astype(np.float16)]

    # Q.K^T ~ 128 * 30 * 30 = 115200 overflows fp16 before scaling; 128 * 15 * 15 = 28800 not.
    q, k, v = qkv(30.0)
    hot = analyse(AttentionInputs(q, k, v))
    assert hot.plain_fp16_overflows and hot.plain_fp16_nonfinite > 0
    want = brute_max_score(q, k, 1 / np.sqrt(128), True)
    assert hot.max_abs_score == pytest.approx(want, rel=1e-12) and want < 65504
    assert np.isfinite(run_pasa({"Q": q, "K": k, "V": v})).all()  # PasaAttention stays finite
    q, k, v = qkv(15.0)
    cold = analyse(AttentionInputs(q, k, v))
    assert not cold.plain_fp16_overflows and cold.plain_fp16_nonfinite == 0


def _tiny_fp16_model() -> onnx.ModelProto:
    """y = Cast(x * 300 * 300, to=fp16) + ConstantOfShape(fp16 1): overflows fp16."""
    c1 = numpy_helper.from_array(np.array(300, np.float16), "c1")
    nodes = [
        helper.make_node("Mul", ["x", "c1"], ["t1"]),
        helper.make_node(
            "Constant", [], ["c2"], value=numpy_helper.from_array(np.array(300, np.float16))
        ),
        helper.make_node("Mul", ["t1", "c2"], ["t2"]),
        helper.make_node("Cast", ["t2"], ["t3"], to=TensorProto.FLOAT16),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node(
            "ConstantOfShape",
            ["shape"],
            ["ones"],
            value=numpy_helper.from_array(np.array([1], np.float16)),
        ),
        helper.make_node("Add", ["t3", "ones"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [3])],
        initializer=[c1],
        value_info=[helper.make_tensor_value_info("t1", TensorProto.FLOAT16, [3])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)])


def test_lift_to_fp32_removes_every_half_type_and_the_overflow():
    model = _tiny_fp16_model()
    x = np.array([1.0, -2.0, 0.5], np.float16)
    fp16 = pasa_onnx.inference_session(model).run(None, {"x": x})[0]
    assert np.isinf(fp16[:2]).all()  # 90000 and -180000 overflow fp16
    lifted = lift_to_fp32(model)
    assert has_half_types(model) and not has_half_types(lifted)
    assert "FLOAT16" not in str(lifted)
    onnx.checker.check_model(lifted, full_check=True)
    y = pasa_onnx.inference_session(lifted).run(None, lift_feeds({"x": x}))[0]
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, 90000.0 * x.astype(np.float32) + 1.0)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16  # untouched


def test_lifted_primitive_model_matches_float64_forward():
    orig, _ = primitive_attention_pair(n_layers=2)
    feeds = token_feeds(2, 10, 50)
    got = pasa_onnx.inference_session(lift_to_fp32(orig)).run(["logits"], feeds)[0]
    want = primitive_forward_float64(orig, feeds, heads=2)["logits"]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    fp16 = pasa_onnx.inference_session(orig).run(["logits"], feeds)[0]
    # The fp16 original is much further from float64 than the lifted reference.
    assert np.abs(fp16 - want).max() > 30 * np.abs(got - want).max()


def test_lift_bfloat16_model_and_feeds():
    """bf16 weights, inputs, Cast targets and value_info become fp32 (onnxruntime's CPU provider
    has no bf16 Mul: only the lifted model can run here)."""
    from pasa_onnx.numerics import BFLOAT16

    c = numpy_helper.from_array(np.array([1.5, -3.0, 0.25], BFLOAT16), "c")
    nodes = [
        helper.make_node("Mul", ["x", "c"], ["t"]),
        helper.make_node("Cast", ["t"], ["y"], to=TensorProto.BFLOAT16),
    ]
    g = helper.make_graph(
        nodes,
        "bf16",
        [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [3])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [3])],
        initializer=[c],
        value_info=[helper.make_tensor_value_info("t", TensorProto.BFLOAT16, [3])],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)])
    lifted = lift_to_fp32(model)
    assert has_half_types(model) and not has_half_types(lifted)
    x = np.array([2.0, 0.5, -8.0], BFLOAT16)
    feeds = lift_feeds({"x": x})
    assert feeds["x"].dtype == np.float32
    y = pasa_onnx.inference_session(lifted).run(None, feeds)[0]
    np.testing.assert_array_equal(y, np.array([3.0, -1.5, -2.0], np.float32))
