"""Issue 15 D9: a PasaAttention attribute of the wrong type or out of range is an error that names
the attribute, at session creation or at the first run -- never silently ignored.

The kernel reads every attribute of the op contract (pasa_onnx/op_contract.json) with its declared
type, so an INT where a FLOAT belongs is an error rather than a silently kept default."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import AttributeProto, helper

import pasa_onnx

B, H, S, D = 1, 2, 4, 8


def _attr(name: str, value, kind: int | None = None) -> AttributeProto:
    """An attribute with exactly the given protobuf type (helper.make_node would infer one)."""
    if kind is None:
        return helper.make_attribute(name, value)
    attr = AttributeProto(name=name, type=kind)
    if kind == AttributeProto.INT:
        attr.i = value
    elif kind == AttributeProto.FLOAT:
        attr.f = value
    elif kind == AttributeProto.STRING:
        attr.s = value
    elif kind == AttributeProto.INTS:
        attr.ints.extend(value)
    return attr


def _model(attr: AttributeProto, layout: str = "4d") -> tuple[onnx.ModelProto, dict]:
    rng = np.random.default_rng(0)
    shape = [B, H, S, D] if layout == "4d" else [B, S, H * D]
    feeds = {n: rng.standard_normal(shape).astype(np.float16) for n in "QKV"}
    vi = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT16, shape) for n in "QKV"]
    node = helper.make_node("PasaAttention", ["Q", "K", "V"], ["Y"], domain="ai.pasa", name="pa")
    node.attribute.append(attr)
    if layout == "3d" and attr.name != "q_num_heads":
        node.attribute.extend([_attr("q_num_heads", H), _attr("kv_num_heads", H)])
    out = helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT16, None)
    graph = helper.make_graph([node], "g", vi, [out])
    opsets = [helper.make_opsetid("", 23), helper.make_opsetid("ai.pasa", 1)]
    return helper.make_model(graph, opset_imports=opsets), feeds


# (id, attribute, layout, marks)
CASES = [
    # helper.make_node(alpha=0) writes an INT: it used to be ignored (the default was used)
    ("alpha-as-int", _attr("alpha", 0, AttributeProto.INT), "4d", []),
    ("alpha-as-string", _attr("alpha", b"0.5", AttributeProto.STRING), "4d", []),
    ("scale-as-int", _attr("scale", 1, AttributeProto.INT), "4d", []),
    ("softcap-as-int", _attr("softcap", 5, AttributeProto.INT), "4d", []),
    ("is_causal-as-float", _attr("is_causal", 1.0, AttributeProto.FLOAT), "4d", []),
    ("block_kv-as-float", _attr("block_kv", 64.0, AttributeProto.FLOAT), "4d", []),
    ("precision-as-int", _attr("precision", 1, AttributeProto.INT), "4d", []),
    (
        "precision-with-nul",
        _attr("precision", b"half\0junk", AttributeProto.STRING),
        "4d",
        [],
    ),
    ("q_num_heads-zero-4d", _attr("q_num_heads", 0, AttributeProto.INT), "4d", []),
    ("q_num_heads-negative-4d", _attr("q_num_heads", -4, AttributeProto.INT), "4d", []),
    ("kv_num_heads-negative-4d", _attr("kv_num_heads", -1, AttributeProto.INT), "4d", []),
    # (the INTS one is rejected because 3-D inputs need q_num_heads at all)
    ("q_num_heads-as-ints", _attr("q_num_heads", [2], AttributeProto.INTS), "3d", []),
    ("alpha-above-one", _attr("alpha", 1.5, AttributeProto.FLOAT), "4d", []),
    ("alpha-negative", _attr("alpha", -0.5, AttributeProto.FLOAT), "4d", []),
    ("precision-unknown", _attr("precision", b"double", AttributeProto.STRING), "4d", []),
    ("scale-nan", _attr("scale", float("nan"), AttributeProto.FLOAT), "4d", []),
    ("softcap-negative", _attr("softcap", -1.0, AttributeProto.FLOAT), "4d", []),
    ("is_causal-two", _attr("is_causal", 2, AttributeProto.INT), "4d", []),
    ("block_q-zero", _attr("block_q", 0, AttributeProto.INT), "4d", []),
    ("left_window-minus-two", _attr("left_window_size", -2, AttributeProto.INT), "4d", []),
]


@pytest.mark.parametrize(
    ("attr", "layout"),
    [pytest.param(a, lay, marks=m, id=i) for i, a, lay, m in CASES],
)
def test_bad_attribute_is_an_error_naming_it(attr: AttributeProto, layout: str) -> None:
    model, feeds = _model(attr, layout)
    with pytest.raises(Exception) as info:  # onnxruntime's own exception types
        session = pasa_onnx.inference_session(model)
        pasa_onnx.run(session, feeds)
    message = str(info.value)
    assert attr.name in message, message
