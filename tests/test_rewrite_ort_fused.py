"""Models fused by onnxscript's ort_fusions (com.microsoft Attention / MultiHeadAttention, as
onnxruntime deployments carry them) are rewritten too and compute the same."""

from __future__ import annotations

import logging

import onnx
import onnx_ir as ir
import pytest
from fixtures.support import (
    FIXTURES,
    MANIFEST,
    RTOL_FP16,
    RTOL_FP32,
    feeds,
    max_rel_err,
    run_original,
    run_rewritten,
)

import pasa_onnx


def _contrib(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == "com.microsoft" and "Attention" in n.op_type]


def _fused(key: str) -> onnx.ModelProto:
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    logging.disable(logging.WARNING)
    try:
        model, _ = optimize_for_ort(ir.load(FIXTURES / MANIFEST[key]["file"]))
    finally:
        logging.disable(logging.NOTSET)
    return ir.to_proto(model)


@pytest.mark.parametrize(
    ("key", "ops"),
    [
        ("bert_eager_dynamo18", {"Attention"}),
        ("bart_eager_dynamo18", {"Attention", "MultiHeadAttention"}),  # MHA with a bias input
        ("diffusers_block_sdpa_dynamo18", {"MultiHeadAttention"}),  # cross-attention
        ("llama_eager_fp16_dynamo18", {"MultiHeadAttention"}),
        ("mha_causal_ts17", {"MultiHeadAttention"}),
    ],
)
def test_ort_fused_model_is_rewritten(key: str, ops: set[str]) -> None:
    fused = _fused(key)
    contrib = [
        n for n in fused.graph.node if n.domain == "com.microsoft" and "Attention" in n.op_type
    ]
    assert {n.op_type for n in contrib} == ops
    rewritten, summary = pasa_onnx.rewrite(fused)
    assert summary.found == summary.replaced == len(contrib), summary.format()
    assert all(i.family == "ort-contrib" for i in summary.instances)
    assert not any(
        n.domain == "com.microsoft" and "Attention" in n.op_type for n in rewritten.graph.node
    )
    inputs = feeds(MANIFEST[key])
    err = max_rel_err(run_original(fused, inputs), run_rewritten(rewritten, inputs))
    assert err <= (RTOL_FP16 if MANIFEST[key]["half"] else RTOL_FP32), err
