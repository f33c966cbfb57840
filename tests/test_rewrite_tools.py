"""What users' tools write (tests/fixtures/tools/, made by scripts/make_tool_fixtures.py):
optimum's merged decoders, onnxruntime's optimizer output, onnxruntime-genai's builder,
diffusers through TorchScript, transformers' Gemma 2 (softcap) through dynamo. Every attention
instance is replaced, and each rewritten model matches its original in onnxruntime on every
recorded run (both If branches of a merged decoder; genai's prompt and a decode step with a
past): fp32 within 1e-4, fp16 within 1e-2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from fixtures.support import RTOL_FP16, RTOL_FP32, max_rel_err, run_original, run_rewritten
from onnx import helper

import pasa_onnx

TOOLS = Path(__file__).parent / "fixtures" / "tools"
MANIFEST: dict = json.loads((TOOLS / "tools.json").read_text())
VOCAB = 99


def tool_feeds(model: onnx.ModelProto, run: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for one recorded run: symbolic dims bound by name (``past + sequence`` sums its
    parts), ids below the vocabulary, attention masks of ones (the last row padded when the run
    says ``pad``), position ids after the past, explicit values, normal floats."""
    rng = np.random.default_rng(seed)
    dims = dict(run["dims"])
    if "sequence_length" in dims and "past_sequence_length" in dims:
        dims.setdefault(
            "total_sequence_length", dims["past_sequence_length"] + dims["sequence_length"]
        )
    feeds = {}
    inits = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = []
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                shape.append(d.dim_value)
            else:
                parts = [p.strip() for p in d.dim_param.split("+")]
                shape.append(sum(dims[p] for p in parts))
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        name = vi.name
        if name in run.get("values", {}):
            feeds[name] = np.array(run["values"][name], dtype=dtype).reshape(shape)
        elif "mask" in name:
            mask = np.ones(shape, dtype=dtype)
            if run.get("pad"):
                mask[-1, shape[-1] // 2 :] = 0
            feeds[name] = mask
        elif "position" in name:
            start = dims.get("past_sequence_length", 0)
            feeds[name] = np.broadcast_to(np.arange(start, start + shape[-1]), shape).astype(dtype)
        elif "type" in name:
            feeds[name] = np.zeros(shape, dtype=dtype)
        elif np.issubdtype(dtype, np.integer):
            feeds[name] = rng.integers(0, VOCAB, shape).astype(dtype)
        else:
            feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _ops(graph: onnx.GraphProto) -> list[str]:
    ops = []
    for node in graph.node:
        ops.append(node.op_type)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                ops += _ops(attr.g)
    return ops


@pytest.mark.parametrize("key", sorted(MANIFEST))
def test_tool_output_rewrites_and_matches(key: str) -> None:
    entry = MANIFEST[key]
    original = onnx.load(TOOLS / entry["file"])
    rewritten, summary = pasa_onnx.rewrite(original)
    assert summary.found == entry["attention"] >= 1
    assert summary.replaced == summary.found, summary.format()
    ops = _ops(rewritten.graph)
    assert ops.count("PasaAttention") == summary.found
    fused = ("Softmax", "GroupQueryAttention", "MultiHeadAttention", "Attention")
    assert not any(op in fused for op in ops), ops
    if key.startswith("optimum_") and "decoder_merged" in key:
        assert {i.graph for i in summary.instances} == {
            "optimum::if/then_branch",
            "optimum::if/else_branch",
        }
    tol = RTOL_FP16 if entry["half"] else RTOL_FP32
    for run in entry["runs"]:
        feeds = tool_feeds(original, run)
        expected = run_original(original, feeds)
        actual = run_rewritten(rewritten, feeds)
        # (an empty present output of the branch that does not compute it compares nothing)
        pairs = [(e, a) for e, a in zip(expected, actual, strict=True) if e.size]
        err = max_rel_err([e for e, _ in pairs], [a for _, a in pairs])
        assert err <= tol, f"{key} {run}: rel err {err:.3g}"


def test_every_tool_is_covered() -> None:
    tools = {entry["tool"].split(" (")[0] for entry in MANIFEST.values()}
    assert tools == {
        "optimum merged decoder",
        "onnxruntime transformers optimizer",
        "onnxruntime-genai model builder",
        "diffusers, TorchScript exporter",
        "transformers Gemma 2",
    }
