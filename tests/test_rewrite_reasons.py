"""Attention the op cannot reproduce exactly is left alone, and the summary says why."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pasa_onnx

SHAPE = [1, 2, 4, 8]  # [B,H,S,D]


def _attention_model(
    *,
    opset: int = 18,
    axis: int = -1,
    scale_input: bool = False,
    mask_shape=None,
    probs_out: bool = False,
    score_cast: int | None = None,
) -> onnx.ModelProto:
    """Q·Kᵀ -> Mul(scale) [-> Cast] [-> Add(mask)] -> Softmax(axis) -> ·V, with knobs that
    break exactness one at a time."""
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(n, f, SHAPE) for n in "qkv"]
    inits = [numpy_helper.from_array(np.array(0.35, dtype=np.float32), "scale")]
    scale = "scale"
    if scale_input:  # a scale fed at run time: not a constant
        inputs.append(helper.make_tensor_value_info("s", f, []))
        scale = "s"
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2], name="kt"),
        helper.make_node("MatMul", ["q", "kt"], ["qk"], name="qk"),
        helper.make_node("Mul", ["qk", scale], ["scores"], name="scale"),
    ]
    scores = "scores"
    if score_cast is not None:
        nodes.append(helper.make_node("Cast", [scores], ["cast"], to=score_cast, name="cast"))
        scores = "cast"
    if mask_shape is not None:
        inputs.append(helper.make_tensor_value_info("mask", f, mask_shape))
        nodes.append(helper.make_node("Add", [scores, "mask"], ["masked"], name="mask"))
        scores = "masked"
    nodes.append(helper.make_node("Softmax", [scores], ["probs"], axis=axis, name="softmax"))
    probs = "probs"
    if score_cast is not None:  # back to float for the value product
        nodes.append(helper.make_node("Cast", [probs], ["probs32"], to=f, name="back"))
        probs = "probs32"
    nodes.append(helper.make_node("MatMul", [probs, "v"], ["y"], name="pv"))
    outputs = [helper.make_tensor_value_info("y", f, None)]
    if probs_out:
        outputs.append(helper.make_tensor_value_info("probs", f, None))
    graph = helper.make_graph(nodes, "attn", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_the_plain_model_is_replaced() -> None:
    """The control: with no knob turned, the same graph is rewritten."""
    _, summary = pasa_onnx.rewrite(_attention_model(mask_shape=[1, 1, 4, 4]))
    assert (summary.found, summary.replaced) == (1, 1)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"probs_out": True}, "probabilities are consumed elsewhere"),
        ({"axis": 2}, "softmax over axis 2, not the key axis"),
        ({"scale_input": True}, "scale is not a constant scalar"),
        ({"mask_shape": [2, 1, 2, 4, 4]}, "does not broadcast to the scores"),
        ({"score_cast": TensorProto.DOUBLE}, "a Cast to"),
        ({"opset": 12}, "opset 12 is below 13"),
    ],
)
def test_left_alone_with_reason(kwargs: dict, reason: str) -> None:
    model = _attention_model(**kwargs)
    rewritten, summary = pasa_onnx.rewrite(model)
    assert summary.found == 1 and summary.replaced == 0
    (inst,) = summary.left_alone
    assert reason in inst.reason, inst.reason
    assert inst.family == "primitive" and inst.anchor == "softmax"
    assert rewritten is model  # nothing replaced: the input comes back untouched
    assert reason in summary.format()


def test_onnx_attention_with_used_qk_output_is_left_alone() -> None:
    f = TensorProto.FLOAT
    node = helper.make_node(
        "Attention", ["q", "k", "v"], ["y", "", "", "qk"], name="attn", qk_matmul_output_mode=0
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, f, SHAPE) for n in "qkv"],
        [helper.make_tensor_value_info("y", f, None), helper.make_tensor_value_info("qk", f, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    _, summary = pasa_onnx.rewrite(model)
    (inst,) = summary.left_alone
    assert inst.family == "onnx-attention"
    assert "qk_matmul_output" in inst.reason


def test_a_structure_no_rule_knows_gets_words_not_matcher_text() -> None:
    """Scores minus a constant before Softmax: found, left alone, and the reason is the
    family's, not onnxscript's matcher diagnostics."""
    model = _attention_model()
    sub = numpy_helper.from_array(np.array(1.5, dtype=np.float32), "shift")
    model.graph.initializer.append(sub)
    scale = next(n for n in model.graph.node if n.name == "scale")
    scale.output[0] = "scaled"
    index = list(model.graph.node).index(scale)
    model.graph.node.insert(
        index + 1, helper.make_node("Sub", ["scaled", "shift"], ["scores"], name="shift")
    )
    _, summary = pasa_onnx.rewrite(model)
    (inst,) = summary.left_alone
    assert inst.reason == "no rule of the family matched its structure"
    for text in ("Mismatch", "pattern variable", "alternatives", "graph boundaries"):
        assert text not in summary.format()
