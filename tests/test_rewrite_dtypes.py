"""fp16, bf16 and fp32 attention subgraphs are all replaced; the op keeps the element type."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from fixtures.support import max_rel_err, run_original, run_rewritten
from onnx import TensorProto, helper, numpy_helper

import pasa_onnx

SHAPE = [2, 2, 6, 8]
NP = {
    TensorProto.FLOAT: np.float32,
    TensorProto.FLOAT16: np.float16,
    TensorProto.BFLOAT16: ml_dtypes.bfloat16,
}


def _model(elem: int) -> onnx.ModelProto:
    """Q·Kᵀ / sqrt(D) + mask -> Softmax -> ·V in one element type."""
    scale = numpy_helper.from_array(np.array(8**0.5).astype(NP[elem]), "sqrt_d")
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["qk"]),
        helper.make_node("Div", ["qk", "sqrt_d"], ["scores"]),
        helper.make_node("Add", ["scores", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["y"]),
    ]
    inputs = [helper.make_tensor_value_info(n, elem, SHAPE) for n in "qkv"]
    inputs.append(helper.make_tensor_value_info("mask", elem, [2, 1, 1, 6]))
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("y", elem, SHAPE)], [scale]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("elem", list(NP))
def test_every_float_type_is_replaced(elem: int) -> None:
    model = _model(elem)
    rewritten, summary = pasa_onnx.rewrite(model)
    assert (summary.found, summary.replaced) == (1, 1)
    onnx.checker.check_model(rewritten, full_check=True)
    (node,) = rewritten.graph.node[-1:]
    assert node.op_type == "PasaAttention" and node.output[0] == "y"
    assert len([n for n in rewritten.graph.node if n.op_type == "Cast"]) == 0
    scale = {a.name: a.f for a in node.attribute}["scale"]
    assert scale == pytest.approx(8**-0.5, rel=1e-2 if elem != TensorProto.FLOAT else 1e-6)


@pytest.mark.parametrize(("elem", "rtol"), [(TensorProto.FLOAT, 1e-4), (TensorProto.FLOAT16, 1e-2)])
def test_fp32_and_fp16_match(rng, elem: int, rtol: float) -> None:
    model = _model(elem)
    rewritten, summary = pasa_onnx.rewrite(model)
    assert summary.replaced == 1
    mask = np.zeros((2, 1, 1, 6))
    mask[1, ..., 4:] = -np.inf
    inputs = {n: rng.standard_normal(SHAPE).astype(NP[elem]) for n in "qkv"}
    inputs["mask"] = mask.astype(NP[elem])
    assert max_rel_err(run_original(model, inputs), run_rewritten(rewritten, inputs)) <= rtol
