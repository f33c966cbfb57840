"""Attention inside control-flow bodies (optimum's merged decoders put every decoder attention in
the branches of one If): found, replaced with the same rules, outer-scope inputs kept, the
summary names the subgraph, and the rewritten model computes what the original did."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import pasa_onnx

F = TensorProto.FLOAT
SHAPE = [2, 2, 5, 8]  # [B,H,S,D]


def _attention_nodes(prefix: str, q: str, k: str, v: str, out: str, scale: str) -> list:
    """Q·Kᵀ·scale -> Softmax -> ·V, reading q/k/v (possibly from an enclosing graph)."""
    return [
        helper.make_node("Transpose", [k], [f"{prefix}kt"], perm=[0, 1, 3, 2], name=f"{prefix}kt"),
        helper.make_node("MatMul", [q, f"{prefix}kt"], [f"{prefix}qk"], name=f"{prefix}qk"),
        helper.make_node("Mul", [f"{prefix}qk", scale], [f"{prefix}s"], name=f"{prefix}scale"),
        helper.make_node("Softmax", [f"{prefix}s"], [f"{prefix}p"], axis=-1, name=f"{prefix}sm"),
        helper.make_node("MatMul", [f"{prefix}p", v], [out], name=f"{prefix}pv"),
    ]


def _if_model(nested: bool = False) -> onnx.ModelProto:
    """y = If(cond, then: attention(q, k, v), else: attention(q, v, k) + a Loop-free nested If
    when ``nested``). Every Q/K/V is a main-graph input read from inside the branches."""
    then_nodes = _attention_nodes("t_", "q", "k", "v", "then_y", "scale")
    else_nodes = _attention_nodes("e_", "q", "v", "k", "else_y", "scale")
    if nested:
        inner_then = helper.make_graph(
            _attention_nodes("it_", "q", "k", "k", "inner_y", "scale"),
            "inner_then",
            [],
            [helper.make_tensor_value_info("inner_y", F, SHAPE)],
        )
        inner_else = helper.make_graph(
            [helper.make_node("Identity", ["q"], ["inner_z"], name="inner_id")],
            "inner_else",
            [],
            [helper.make_tensor_value_info("inner_z", F, SHAPE)],
        )
        else_nodes.append(
            helper.make_node(
                "If",
                ["cond2"],
                ["nested_y"],
                then_branch=inner_then,
                else_branch=inner_else,
                name="inner_if",
            )
        )
        else_nodes.append(helper.make_node("Add", ["else_y", "nested_y"], ["else_sum"]))
    else_out = "else_sum" if nested else "else_y"
    then_g = helper.make_graph(
        then_nodes, "then", [], [helper.make_tensor_value_info("then_y", F, SHAPE)]
    )
    else_g = helper.make_graph(
        else_nodes, "else", [], [helper.make_tensor_value_info(else_out, F, SHAPE)]
    )
    inputs = [helper.make_tensor_value_info(n, F, SHAPE) for n in "qkv"]
    inputs.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
    if nested:
        inputs.append(helper.make_tensor_value_info("cond2", TensorProto.BOOL, []))
    graph = helper.make_graph(
        [
            helper.make_node(
                "If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g, name="merged_if"
            )
        ],
        "main",
        inputs,
        [helper.make_tensor_value_info("y", F, SHAPE)],
        [numpy_helper.from_array(np.array(0.25, dtype=np.float32), "scale")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _feeds(seed: int = 0, **conds: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {n: rng.standard_normal(SHAPE).astype(np.float32) for n in "qkv"}
    out.update({name: np.array(value) for name, value in conds.items()})
    return out


def _compare(original: onnx.ModelProto, rewritten: onnx.ModelProto, feeds: dict) -> float:
    sess = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)[0]
    got = pasa_onnx.inference_session(rewritten).run(None, feeds)[0]
    return float(np.abs(want - got).max() / np.abs(want).max())


def _subgraph_ops(graph: onnx.GraphProto) -> list[str]:
    ops = []
    for node in graph.node:
        ops.append(node.op_type)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                ops += _subgraph_ops(attr.g)
    return ops


def test_attention_in_both_if_branches_is_replaced() -> None:
    original = _if_model()
    rewritten, summary = pasa_onnx.rewrite(original)
    assert (summary.found, summary.replaced) == (2, 2), summary.format()
    assert {i.graph for i in summary.instances} == {
        "merged_if/then_branch",
        "merged_if/else_branch",
    }
    text = summary.format()
    assert "in subgraph merged_if/then_branch: found 1, replaced 1" in text
    assert "in subgraph merged_if/else_branch: found 1, replaced 1" in text
    ops = _subgraph_ops(rewritten.graph)
    assert ops.count("PasaAttention") == 2 and "Softmax" not in ops
    onnx.checker.check_model(rewritten)
    for cond in (True, False):
        assert _compare(original, rewritten, _feeds(cond=cond)) < 1e-4


def test_nested_if_is_searched_recursively() -> None:
    original = _if_model(nested=True)
    rewritten, summary = pasa_onnx.rewrite(original)
    assert (summary.found, summary.replaced) == (3, 3), summary.format()
    assert "merged_if/else_branch/inner_if/then_branch" in {i.graph for i in summary.instances}
    for cond, cond2 in ((True, True), (False, True), (False, False)):
        assert _compare(original, rewritten, _feeds(cond=cond, cond2=cond2)) < 1e-4


def test_rewriting_a_rewritten_if_model_changes_nothing() -> None:
    once, first = pasa_onnx.rewrite(_if_model())
    twice, second = pasa_onnx.rewrite(once)
    assert first.replaced == 2
    assert second.found == 0 and second.already_rewritten == 2
    assert twice.SerializeToString() == once.SerializeToString()


def test_loop_body_attention_is_replaced() -> None:
    """A Loop body that runs attention on the carried state: the body's own inputs (iteration,
    condition, carried value) and the outer-scope K/V both stay wired."""
    body_nodes = [
        helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
        *_attention_nodes("l_", "x_in", "k", "v", "x_out", "scale"),
    ]
    body = helper.make_graph(
        body_nodes,
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", F, SHAPE),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", F, SHAPE),
        ],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["n", "", "q"], ["y"], body=body, name="loop")],
        "main",
        [
            *[helper.make_tensor_value_info(n, F, SHAPE) for n in "qkv"],
            helper.make_tensor_value_info("n", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("y", F, SHAPE)],
        [numpy_helper.from_array(np.array(0.25, dtype=np.float32), "scale")],
    )
    original = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    rewritten, summary = pasa_onnx.rewrite(original)
    assert (summary.found, summary.replaced) == (1, 1), summary.format()
    assert summary.instances[0].graph == "loop/body"
    feeds = _feeds()
    feeds["n"] = np.array(3, dtype=np.int64)
    assert _compare(original, rewritten, feeds) < 1e-4
