"""onnxruntime's com.microsoft attention nodes and the ONNX Attention node become PasaAttention
and compute the same (fp32, relative tolerance 1e-4)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from fixtures.support import max_rel_err, run_original, run_rewritten
from onnx import TensorProto, helper, numpy_helper

import pasa_onnx

F, I32 = TensorProto.FLOAT, TensorProto.INT32


def _model(node, inputs: dict[str, np.ndarray], inits=(), opset: int = 23) -> onnx.ModelProto:
    types = {np.dtype(np.float32): F, np.dtype(np.int32): I32, np.dtype(np.bool_): TensorProto.BOOL}
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(k, types[v.dtype], list(v.shape))
            for k, v in inputs.items()
        ],
        [helper.make_tensor_value_info(node.output[0], F, ["batch", "seq", "hidden"])],
        list(inits),
    )
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _check(model: onnx.ModelProto, inputs: dict, family: str) -> None:
    rewritten, summary = pasa_onnx.rewrite(model)
    assert (summary.found, summary.replaced) == (1, 1), summary.format()
    assert summary.instances[0].pattern.startswith(family)
    onnx.checker.check_model(rewritten)
    (node,) = [n for n in rewritten.graph.node if n.domain == "ai.pasa"]
    assert node.output[0] == model.graph.node[0].output[0]
    err = max_rel_err(run_original(model, inputs), run_rewritten(rewritten, inputs))
    assert err <= 1e-4, err


@pytest.fixture
def data(rng):
    def randn(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    return randn


def _mha_inputs(data, kv_len: int) -> dict:
    pad = np.ones((2, kv_len), dtype=np.int32)
    pad[1, 3:] = 0
    return {
        "q": data(2, 5, 32),
        "k": data(2, kv_len, 32),
        "v": data(2, kv_len, 32),
        "pad": pad,
        "bias": data(1, 4, 5, kv_len),
    }


def _mha_node(causal: int):
    return helper.make_node(
        "MultiHeadAttention",
        ["q", "k", "v", "", "pad", "bias"],
        ["y"],
        domain="com.microsoft",
        num_heads=4,
        unidirectional=causal,
        name="mha",
    )


@pytest.mark.parametrize(("causal", "kv_len"), [(0, 7), (1, 5)])
def test_multi_head_attention(data, causal: int, kv_len: int) -> None:
    inputs = _mha_inputs(data, kv_len)
    _check(_model(_mha_node(causal), inputs), inputs, "ort-contrib/MultiHeadAttention")


def test_causal_multi_head_attention_over_longer_keys_is_left_alone(data) -> None:
    inputs = _mha_inputs(data, 7)
    _, summary = pasa_onnx.rewrite(_model(_mha_node(1), inputs))
    (inst,) = summary.left_alone
    assert "query and key lengths that differ" in inst.reason


def test_packed_attention(data) -> None:
    mask = np.ones((2, 5), dtype=np.int32)
    mask[0, 3:] = 0
    inputs = {"x": data(2, 5, 32), "mask": mask}
    inits = [numpy_helper.from_array(data(32, 96), "w"), numpy_helper.from_array(data(96), "b")]
    node = helper.make_node(
        "Attention", ["x", "w", "b", "mask"], ["y"], domain="com.microsoft", num_heads=4, name="at"
    )
    _check(_model(node, inputs, inits), inputs, "ort-contrib/Attention")


def test_group_query_attention_prompt(data) -> None:
    inputs = {
        "q": data(2, 5, 32),
        "k": data(2, 5, 16),
        "v": data(2, 5, 16),
        "seqlens_k": np.array([4, 2], dtype=np.int32),
        "total": np.array(5, dtype=np.int32),
    }
    node = helper.make_node(
        "GroupQueryAttention",
        ["q", "k", "v", "", "", "seqlens_k", "total"],
        ["y", "present_k", "present_v"],
        domain="com.microsoft",
        num_heads=4,
        kv_num_heads=2,
        name="gqa",
    )
    _check(_model(node, inputs), inputs, "ort-contrib/GroupQueryAttention")


def test_onnx_attention_3d_with_past_keeps_present_outputs(data) -> None:
    inputs = {
        "q": data(2, 3, 32),
        "k": data(2, 3, 16),
        "v": data(2, 3, 16),
        "past_k": data(2, 2, 4, 8),
        "past_v": data(2, 2, 4, 8),
    }
    node = helper.make_node(
        "Attention",
        ["q", "k", "v", "", "past_k", "past_v"],
        ["y", "pk", "pv"],
        q_num_heads=4,
        kv_num_heads=2,
        is_causal=1,
        name="attn",
    )
    model = _model(node, inputs)
    model.graph.output.extend(
        [helper.make_tensor_value_info(n, F, ["b", "h", "t", "d"]) for n in ("pk", "pv")]
    )
    _check(model, inputs, "onnx-attention")
