"""Softcapped attention in primitive form: ``c·tanh(s / c)`` between the scaled scores and the
mask (Gemma 2; ONNX Attention's softcap, which caps the scores before the mask is added) becomes
PasaAttention with ``softcap=c`` and matches onnxruntime's run of the original (fp32, 1e-4).
ONNX's own expanded function bodies with softcap are replaced too; what the op cannot reproduce
(the cap applied after the mask, mismatched constants, exposed scores) is left with its reason.
The Gemma 2 export itself is a tool fixture (tests/test_rewrite_tools.py)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from fixtures.support import max_rel_err, run_original, run_rewritten
from onnx import TensorProto, helper, numpy_helper

import pasa_onnx

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from onnx.backend.test.case.node import collect_testcases

    EXPANDED = {
        c.name: c
        for c in collect_testcases("Attention")
        if c.name.endswith("_expanded") and "softcap" in c.name
    }

F = TensorProto.FLOAT
B, H, S, D = 2, 4, 6, 8


def _softcap_model(order: str, cap_div: float = 30.0, cap_mul: float = 30.0) -> onnx.ModelProto:
    """Gemma 2's eager attention: MatMul -> Mul(scale) -> softcap -> Add(mask) -> Softmax ->
    MatMul. ``order``: "div" (Div(s, c)), "mul" (Mul(s, 1/c)), or "mask-first" (the mask
    added before the cap)."""
    consts = [
        numpy_helper.from_array(np.array(D**-0.5, np.float32), "scale"),
        numpy_helper.from_array(np.array(cap_div, np.float32), "cap_div"),
        numpy_helper.from_array(np.array(1.0 / cap_div, np.float32), "cap_inv"),
        numpy_helper.from_array(np.array(cap_mul, np.float32), "cap_mul"),
    ]
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["qk"]),
        helper.make_node("Mul", ["qk", "scale"], ["scaled"]),
    ]
    capped_in = "masked" if order == "mask-first" else "scaled"
    if order == "mask-first":
        nodes.append(helper.make_node("Add", ["scaled", "mask"], ["masked"]))
    if order == "mul":
        nodes.append(helper.make_node("Mul", [capped_in, "cap_inv"], ["divided"]))
    else:
        nodes.append(helper.make_node("Div", [capped_in, "cap_div"], ["divided"]))
    nodes += [
        helper.make_node("Tanh", ["divided"], ["tanh"]),
        helper.make_node("Mul", ["tanh", "cap_mul"], ["capped"]),
    ]
    if order != "mask-first":
        nodes.append(helper.make_node("Add", ["capped", "mask"], ["scores"]))
    scores = "capped" if order == "mask-first" else "scores"
    nodes += [
        helper.make_node("Softmax", [scores], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, F, [B, H, S, D]) for n in ("q", "k", "v")]
        + [helper.make_tensor_value_info("mask", F, [B, 1, S, S])],
        [helper.make_tensor_value_info("y", F, [B, H, S, D])],
        consts,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _feeds(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    # large scores, so that the cap changes them (|s| up to ~60 before capping at 30)
    feeds = {n: (rng.standard_normal((B, H, S, D)) * 6).astype(np.float32) for n in "qkv"}
    mask = np.triu(np.full((S, S), -np.inf, np.float32), 1)  # causal
    mask = np.broadcast_to(mask, (B, 1, S, S)).copy()
    mask[1, :, :, 4:] = np.finfo(np.float32).min  # padding of the second row (Gemma's fill)
    feeds["mask"] = mask
    return feeds


@pytest.mark.parametrize("order", ["div", "mul"])
def test_gemma2_softcap_before_mask_is_replaced_and_matches(order: str) -> None:
    original = _softcap_model(order)
    rewritten, summary = pasa_onnx.rewrite(original)
    assert (summary.found, summary.replaced) == (1, 1), summary.format()
    assert summary.instances[0].pattern == "primitive/BHSd+softcap"
    (node,) = [n for n in rewritten.graph.node if n.op_type == "PasaAttention"]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["softcap"] == pytest.approx(30.0)
    assert "Tanh" not in [n.op_type for n in rewritten.graph.node]
    feeds = _feeds()
    expected = run_original(original, feeds)
    # the cap matters on these inputs: without it the output is far off
    uncapped = _softcap_model(order, cap_div=1e6, cap_mul=1e6)
    assert max_rel_err(expected, run_original(uncapped, feeds)) > 1e-2
    assert max_rel_err(expected, run_rewritten(rewritten, feeds)) <= 1e-4


def test_softcap_after_the_mask_is_left_alone_with_its_reason() -> None:
    _, summary = pasa_onnx.rewrite(_softcap_model("mask-first"))
    (inst,) = summary.left_alone
    assert summary.found == 1
    assert inst.reason == (
        "the scores are softcapped (tanh) after a mask or bias is added; the op caps them "
        "before the mask, so masked keys would get weight"
    )


def test_mismatched_softcap_constants_are_left_alone_with_their_reason() -> None:
    _, summary = pasa_onnx.rewrite(_softcap_model("div", cap_div=30.0, cap_mul=50.0))
    (inst,) = summary.left_alone
    assert inst.reason == (
        "the softcap divides by 30 but multiplies by 50 (the op's softcap is c·tanh(s / c))"
    )


REPLACED = sorted(name for name in EXPANDED if "qk_matmul" not in name)


def test_expanded_case_count() -> None:
    assert len(REPLACED) == 8 and len(EXPANDED) == 10


@pytest.mark.parametrize("name", REPLACED)
def test_onnx_attention_expanded_softcap_body_is_replaced_and_matches(name: str) -> None:
    case = EXPANDED[name]
    rewritten, summary = pasa_onnx.rewrite(case.model)
    assert (summary.found, summary.replaced) == (1, 1), summary.format()
    assert summary.instances[0].pattern.endswith("+softcap")
    (inputs, outputs), *_ = case.data_sets
    feeds = {vi.name: x for vi, x in zip(case.model.graph.input, inputs, strict=False)}
    expected = run_original(case.model, feeds)
    actual = run_rewritten(rewritten, feeds)
    assert max_rel_err(expected, actual) <= 1e-4
    assert max_rel_err([np.asarray(outputs[0])], actual[:1]) <= 1e-4


@pytest.mark.parametrize("name", sorted(set(EXPANDED) - set(REPLACED)))
def test_expanded_softcap_body_with_its_scores_exposed_is_left_alone(name: str) -> None:
    _, summary = pasa_onnx.rewrite(EXPANDED[name].model)
    (inst,) = summary.left_alone
    assert inst.reason == (
        "an intermediate of the attention (scores or probabilities) is used elsewhere"
    )
