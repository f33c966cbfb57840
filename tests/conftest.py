"""Shared helpers: build single-node models, run them with the PasaAttention library."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import pasa_onnx
from pasa_onnx.contract import INPUT_NAMES, OUTPUT_NAMES

NP_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float16): TensorProto.FLOAT16,
    np.dtype(np.bool_): TensorProto.BOOL,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.float64): TensorProto.DOUBLE,
}


def onnx_type(arr: np.ndarray) -> int:
    from pasa_onnx.numerics import BFLOAT16

    if arr.dtype == BFLOAT16:
        return TensorProto.BFLOAT16
    return NP_TO_ONNX[arr.dtype]


def pasa_model(
    inputs: dict[str, np.ndarray | None], n_outputs: int = 1, **attrs
) -> onnx.ModelProto:
    """One PasaAttention node; ``inputs`` in op order (Q, K, V, attn_mask, past_key, past_value,
    nonpad_kv_seqlen), ``None`` for an absent optional input (an empty name)."""
    names, graph_inputs = [], []
    for name in INPUT_NAMES:
        arr = inputs.get(name)
        if arr is None:
            names.append("")
            continue
        names.append(name)
        graph_inputs.append(helper.make_tensor_value_info(name, onnx_type(arr), list(arr.shape)))
    while names and names[-1] == "":
        names.pop()
    out_names = list(OUTPUT_NAMES[:n_outputs])
    node = helper.make_node(
        "PasaAttention", names, out_names, domain="ai.pasa", name="attn0", **attrs
    )
    et = onnx_type(inputs["Q"])
    outputs = [helper.make_tensor_value_info(n, et, None) for n in out_names]
    graph = helper.make_graph([node], "pasa", graph_inputs, outputs)
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("ai.pasa", 1)]
    )


def run_pasa(inputs: dict[str, np.ndarray | None], n_outputs: int = 1, threads: int = 0, **attrs):
    import onnxruntime as ort

    model = pasa_model(inputs, n_outputs, **attrs)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = pasa_onnx.inference_session(model, opts)
    feeds = {k: v for k, v in inputs.items() if v is not None}
    out = pasa_onnx.run(sess, feeds)
    return out[0] if n_outputs == 1 else out


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
