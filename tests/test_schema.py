"""onnx.checker and onnx.shape_inference understand PasaAttention; onnxruntime infers shapes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
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


def test_onnxruntime_infers_symbolic_output_shapes():
    import onnxruntime as ort

    m = _model(["batch", 4, "seq", 16], ["batch", 2, "kv", 16], ["batch", 2, "kv", 8])
    del m.graph.output[0].type.tensor_type.shape.dim[:]
    m.graph.output[0].type.tensor_type.ClearField("shape")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = pasa_onnx.inference_session(m, opts)
    out = sess.get_outputs()[0]
    assert out.shape == ["batch", 4, "seq", 8] and out.type == "tensor(float16)"
    q = np.zeros((2, 4, 5, 16), np.float16)
    k = np.zeros((2, 2, 7, 16), np.float16)
    v = np.zeros((2, 2, 7, 8), np.float16)
    (y,) = sess.run(None, {"Q": q, "K": k, "V": v})
    assert y.shape == (2, 4, 5, 8)


def test_onnxruntime_infers_3d_and_present_shapes():
    node = helper.make_node(
        "PasaAttention",
        ["Q", "K", "V", "", "past_key", "past_value"],
        ["Y", "present_key", "present_value"],
        domain="ai.pasa",
        q_num_heads=8,
        kv_num_heads=2,
    )
    f16 = TensorProto.FLOAT16
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("Q", f16, ["b", "s", 512]),
            helper.make_tensor_value_info("K", f16, ["b", "t", 128]),
            helper.make_tensor_value_info("V", f16, ["b", "t", 96]),
            helper.make_tensor_value_info("past_key", f16, ["b", 2, 5, 64]),
            helper.make_tensor_value_info("past_value", f16, ["b", 2, 5, 48]),
        ],
        [
            helper.make_tensor_value_info(n, f16, None)
            for n in ("Y", "present_key", "present_value")
        ],
    )
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("ai.pasa", 1)]
    )
    shapes = {o.name: o.shape for o in pasa_onnx.inference_session(m).get_outputs()}
    # Y: [b, s, Hq * Dv]; presents: [b, Hkv, past + t (unknown: t is symbolic), D or Dv].
    assert shapes["Y"] == ["b", "s", 8 * 48]
    assert shapes["present_key"][0] == "b" and shapes["present_key"][1:] != []
    assert shapes["present_key"][1] == 2 and shapes["present_key"][3] == 64
    assert shapes["present_value"][3] == 48


# (Q, K, V, past_key, past_value) shapes and attributes; None: the input is absent.
_F16 = TensorProto.FLOAT16
_SHAPE_CASES = {
    "4d": ([2, 8, 5, 64], [2, 8, 7, 64], [2, 8, 7, 32], None, None, {}),
    "4d_symbolic_gqa": (
        ["batch", 8, "seq", 64],
        ["batch", 2, "kv", 64],
        ["batch", 2, "kv", 32],
        None,
        None,
        {},
    ),
    "4d_past": ([1, 4, 3, 16], [1, 2, 3, 16], [1, 2, 3, 8], [1, 2, 9, 16], [1, 2, 9, 8], {}),
    "4d_past_symbolic": (
        ["b", 4, "s", 16],
        ["b", 2, "s", 16],
        ["b", 2, "s", 8],
        ["b", 2, "p", 16],
        ["b", 2, "p", 8],
        {},
    ),
    "3d_mha": (
        [2, 6, 256],
        [2, 9, 256],
        [2, 9, 256],
        None,
        None,
        {"q_num_heads": 4, "kv_num_heads": 4},
    ),
    "3d_gqa_symbolic": (
        ["b", "s", 512],
        ["b", "t", 128],
        ["b", "t", 96],
        None,
        None,
        {"q_num_heads": 8, "kv_num_heads": 2},
    ),
    "3d_past": (
        ["b", 1, 512],
        ["b", 1, 128],
        ["b", 1, 96],
        ["b", 2, 5, 64],
        ["b", 2, 5, 48],
        {"q_num_heads": 8, "kv_num_heads": 2},
    ),
    "3d_past_symbolic": (
        ["b", "s", 512],
        ["b", "t", 128],
        ["b", "t", 96],
        ["b", 2, 5, 64],
        ["b", 2, 5, 48],
        {"q_num_heads": 8, "kv_num_heads": 2},
    ),
}


def _case_model(case: str) -> onnx.ModelProto:
    q, k, v, past_k, past_v, attrs = _SHAPE_CASES[case]
    names = ["Q", "K", "V"]
    shapes = [q, k, v]
    outputs = ["Y"]
    if past_k is not None:
        names += ["", "past_key", "past_value"]
        shapes += [None, past_k, past_v]
        outputs += ["present_key", "present_value"]
    node = helper.make_node("PasaAttention", names, outputs, domain="ai.pasa", **attrs)
    inputs = [
        helper.make_tensor_value_info(n, _F16, s) for n, s in zip(names, shapes, strict=True) if n
    ]
    graph = helper.make_graph(
        [node], "g", inputs, [helper.make_tensor_value_info(n, _F16, None) for n in outputs]
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("ai.pasa", 1)]
    )


def _known(dims, symbols: set[str]) -> list:
    """A shape with every unknown dim as None: onnx leaves it empty, onnxruntime writes -1 or
    a name of its own (anything that is not one of the model's symbols)."""
    return [d if (isinstance(d, int) and d >= 0) or d in symbols else None for d in dims]


@pytest.mark.parametrize("case", list(_SHAPE_CASES))
def test_python_and_onnxruntime_shape_inference_agree(case):
    """onnx's shape inference runs the Python schema's function, onnxruntime the library's
    InferOutputShapeFn; both must give every output the same type and shape."""
    import onnxruntime as ort

    m = _case_model(case)
    symbols = {
        d.dim_param for i in m.graph.input for d in i.type.tensor_type.shape.dim if d.dim_param
    }
    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    python = {o.name: o for o in inferred.graph.output}
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    runtime = {o.name: o for o in pasa_onnx.inference_session(m, opts).get_outputs()}
    assert set(python) == set(runtime)
    for name, vi in python.items():
        assert runtime[name].type == "tensor(float16)"
        assert vi.type.tensor_type.elem_type == _F16
        assert vi.type.tensor_type.HasField("shape"), f"{case}: Python inferred no shape for {name}"
        py_shape = _known(_dims(vi), symbols)
        ort_shape = _known(runtime[name].shape, symbols)
        assert py_shape == ort_shape, f"{case}/{name}: Python {py_shape}, onnxruntime {ort_shape}"
