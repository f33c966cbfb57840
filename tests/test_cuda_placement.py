"""Placement on the CUDA execution provider: profiling shows every PasaAttention node on
CUDAExecutionProvider and no Memcpy node around it, in a graph where the attention sits between
other CUDA ops (projections in, a residual add out) and takes a mask, a past and nonpad."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cuda_support import cuda_session, requires_cuda
from onnx import TensorProto, helper, numpy_helper

import pasa_onnx

pytestmark = requires_cuda()


def _model(with_past: bool) -> tuple:
    rng = np.random.default_rng(0)
    h, d, s, p = 4, 32, 16, 24
    w = {
        n: numpy_helper.from_array(
            (0.1 * rng.standard_normal((h * d, h * d))).astype(np.float16), n
        )
        for n in ("wq", "wk", "wv")
    }
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, s, h * d])]
    feeds = {"x": rng.standard_normal((1, s, h * d)).astype(np.float16)}
    attn_in = ["q", "k", "v", "mask"]
    inputs.append(
        helper.make_tensor_value_info(
            "mask", TensorProto.BOOL, [1, 1, s, s + (p if with_past else 0)]
        )
    )
    feeds["mask"] = np.ones((1, 1, s, s + (p if with_past else 0)), dtype=bool)
    if with_past:
        attn_in += ["past_key", "past_value"]
        for n in ("past_key", "past_value"):
            inputs.append(helper.make_tensor_value_info(n, TensorProto.FLOAT16, [1, h, p, d]))
            feeds[n] = rng.standard_normal((1, h, p, d)).astype(np.float16)
    else:
        attn_in += ["", "", "nonpad"]
        inputs.append(helper.make_tensor_value_info("nonpad", TensorProto.INT64, [1]))
        feeds["nonpad"] = np.array([s - 3], dtype=np.int64)
    outs = ["y", "present_key", "present_value"] if with_past else ["y"]
    nodes.append(
        helper.make_node(
            "PasaAttention",
            attn_in,
            outs,
            domain="ai.pasa",
            name="attn0",
            q_num_heads=h,
            kv_num_heads=h,
            is_causal=1,
        )
    )
    nodes.append(helper.make_node("Add", ["y", "x"], ["out"]))
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT16, None)]
    outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT16, None) for n in outs[1:]]
    graph = helper.make_graph(nodes, "placed", inputs, outputs, initializer=list(w.values()))
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("ai.pasa", 1)]
    )
    return model, feeds


@pytest.mark.parametrize("with_past", [False, True])
def test_pasa_attention_runs_on_cuda_without_copies(with_past, tmp_path):
    import onnxruntime as ort

    model, feeds = _model(with_past)
    opts = ort.SessionOptions()
    opts.profile_file_prefix = str(tmp_path / "prof")
    sess = cuda_session(model, opts, profile=True)
    out = pasa_onnx.run(sess, feeds)
    assert np.isfinite(out[0].astype(np.float32)).all()
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    nodes = [e for e in events if e.get("cat") == "Node" and "args" in e and "op_name" in e["args"]]
    pasa = [e for e in nodes if e["args"]["op_name"] == "PasaAttention"]
    assert pasa, "no PasaAttention node in the profile"
    assert {e["args"].get("provider") for e in pasa} == {"CUDAExecutionProvider"}
    assert not [
        e["name"] for e in nodes if "Memcpy" in e["args"]["op_name"] or "Memcpy" in e["name"]
    ]
    assert {e["args"].get("provider") for e in nodes} == {"CUDAExecutionProvider"}
