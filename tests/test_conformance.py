"""ONNX's own Attention conformance cases (opset 23-25), with the node retargeted to
ai.pasa::PasaAttention, in fp16, bf16 and fp32.

Each case runs as shipped (against its expected outputs) and cast to the two other element types
(against onnx's reference evaluator run in float64 on the same, already rounded, inputs).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

import pasa_onnx
from pasa_onnx.numerics import BFLOAT16

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from onnx.backend.test.case.node import collect_testcases

    _ALL = collect_testcases("Attention")

DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": BFLOAT16}
# Tolerances against float64 (atol, rtol): the op keeps statistics in fp32 and rounds scores and
# probabilities to the half type, so the error is a few ulps of the output type.
TOLERANCE = {"float32": (2e-5, 2e-4), "float16": (4e-3, 4e-3), "bfloat16": (3e-2, 3e-2)}


def _single_node_cases():
    cases = []
    for case in _ALL:
        graph = case.model.graph
        if len(graph.node) != 1 or graph.node[0].op_type != "Attention":
            continue
        opset = max(o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx"))
        if not 23 <= opset <= 25:
            continue
        outputs = list(graph.node[0].output)
        if len(outputs) > 3 and outputs[3]:
            continue  # qk_matmul_output: unsupported by design (PASA never forms the scores)
        cases.append(case)
    return cases


CASES = _single_node_cases()


def test_case_count():
    # 75 single-node cases of opset 23-25 without qk_matmul_output in onnx 1.23.
    assert len(CASES) >= 75


def _retarget(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    node = out.graph.node[0]
    node.op_type = "PasaAttention"
    node.domain = "ai.pasa"
    while len(node.output) > 3:
        node.output.pop()
    out.opset_import.append(helper.make_opsetid("ai.pasa", 1))
    return out


def _cast_model(model: onnx.ModelProto, dtype: np.dtype) -> onnx.ModelProto:
    """Change the float element type of every graph input/output to ``dtype``."""
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    for vi in list(out.graph.input) + list(out.graph.output):
        if vi.type.tensor_type.elem_type in floats:
            vi.type.tensor_type.elem_type = elem
    return out


def _is_float(arr: np.ndarray) -> bool:
    return arr.dtype in (np.float32, np.float16, BFLOAT16, np.float64)


def _run_pasa(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = pasa_onnx.inference_session(_retarget(model))
    return pasa_onnx.run(sess, feeds)


def _feeds(case, index=0):
    inputs, expected = case.data_sets[index]
    names = [i.name for i in case.model.graph.input]
    return dict(zip(names, inputs, strict=True)), expected


def _assert_close(actual, reference, type_name, label):
    atol, rtol = TOLERANCE[type_name]
    a = np.asarray(actual).astype(np.float64)
    r = np.asarray(reference).astype(np.float64)
    assert a.shape == r.shape, f"{label}: shape {a.shape} != {r.shape}"
    assert np.isfinite(a).all(), f"{label}: non-finite output"
    err = np.abs(a - r) - (atol + rtol * np.abs(r))
    assert (err <= 0).all(), f"{label}: max excess error {err.max():.3g} (atol={atol}, rtol={rtol})"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_as_shipped(case):
    feeds, expected = _feeds(case)
    q_type = feeds["Q"].dtype
    type_name = next(k for k, v in DTYPES.items() if v == q_type)
    outputs = _run_pasa(case.model, feeds)
    for i, (got, want) in enumerate(zip(outputs, expected, strict=False)):
        _assert_close(got, want, type_name, f"{case.name} output {i}")


@pytest.mark.parametrize("type_name", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cast_to_each_type(case, type_name):
    dtype = DTYPES[type_name]
    feeds, _ = _feeds(case)
    cast = {k: (v.astype(dtype) if _is_float(v) else v) for k, v in feeds.items()}
    model = _cast_model(case.model, dtype)
    # Independent reference: onnx's evaluator on the original Attention node in float64.
    ref_model = _cast_model(case.model, np.dtype(np.float64))
    ref_feeds = {k: (v.astype(np.float64) if _is_float(v) else v) for k, v in cast.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ReferenceEvaluator(ref_model).run(None, ref_feeds)
    outputs = _run_pasa(model, cast)
    for i, (got, want) in enumerate(zip(outputs, expected, strict=False)):
        assert got.dtype == dtype
        _assert_close(got, want, type_name, f"{case.name}[{type_name}] output {i}")
