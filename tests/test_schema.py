"""onnx.checker and onnx.shape_inference understand PasaAttention; onnxruntime infers shapes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

import pasa_onnx


def _model(q_shape, k_shape, v_shape, elem=TensorProto.FLOAT16, **attrs):
    node = helper.make_node(
        "PasaAttention", ["Q", "K", "V"], ["Y"], domain="ai.pasa", name="attn", **attrs
    )
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("Q", elem, q_shape),
            helper.make_tensor_value_info("K", elem, k_shape),
            helper.make_tensor_value_info("V", elem, v_shape),
        ],
        [helper.make_tensor_value_info("Y", elem, [None] * len(q_shape))],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("ai.pasa", 1)]
    )


def _dims(vi):
    return [
        d.dim_value if d.HasField("dim_value") else d.dim_param
        for d in vi.type.tensor_type.shape.dim
    ]


def test_checker_and_shape_inference_4d_symbolic():
    m = _model(["batch", 8, "seq", 64], ["batch", 2, "kv", 64], ["batch", 2, "kv", 32])
    onnx.checker.check_model(m)
    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    y = inferred.graph.output[0]
    assert y.type.tensor_type.elem_type == TensorProto.FLOAT16
    assert _dims(y) == ["batch", 8, "seq", 32]


def test_shape_inference_3d():
    m = _model(["b", "s", 512], ["b", "t", 128], ["b", "t", 128], q_num_heads=8, kv_num_heads=2)
    y = onnx.shape_inference.infer_shapes(m, strict_mode=True).graph.output[0]
    assert _dims(y) == ["b", "s", 512]


def test_onnxruntime_infers_symbolic_output_shape():
    import onnxruntime as ort

    m = _model(["batch", 4, "seq", 16], ["batch", 4, "kv", 16], ["batch", 4, "kv", 8])
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("Y", TensorProto.FLOAT16, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = pasa_onnx.inference_session(m, opts)
    # ORT reports the inferred shape of the graph output when the model leaves it open.
    q = np.zeros((2, 4, 5, 16), np.float16)
    k = np.zeros((2, 4, 7, 16), np.float16)
    v = np.zeros((2, 4, 7, 8), np.float16)
    (y,) = sess.run(None, {"Q": q, "K": k, "V": v})
    assert y.shape == (2, 4, 5, 8)
