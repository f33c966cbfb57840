"""The shipped demo (examples/models/demo_fp16.onnx: fp16, attention that overflows a plain
fp16 kernel): both attentions are replaced, and each replaced tensor - found by its kept name -
matches the original when the op runs in float precision (the rewrite itself is exact; the
half-precision numerics are the kernel's business and are validated elsewhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from fixtures.support import max_rel_err, run_original, run_rewritten
from onnx import helper

import pasa_onnx

DEMO = Path(__file__).parents[1] / "examples" / "models" / "demo_fp16.onnx"


def _expose(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    return model


def test_demo_attention_outputs_match_by_name() -> None:
    original = onnx.load(DEMO)
    rewritten, summary = pasa_onnx.rewrite(original)
    assert (summary.found, summary.replaced) == (2, 2)
    nodes = [n for n in rewritten.graph.node if n.op_type == "PasaAttention"]
    for node in nodes:
        node.attribute.append(helper.make_attribute("precision", "float"))
    names = [n.output[0] for n in nodes]
    rng = np.random.default_rng(0)
    mask = np.ones((2, 64), dtype=np.int64)
    mask[1, 50:] = 0
    inputs = {"input_ids": rng.integers(0, 100, (2, 64)), "attention_mask": mask}
    expected = run_original(_expose(original, names), inputs)[1:]
    actual = run_rewritten(_expose(rewritten, names), inputs)[1:]
    assert max_rel_err(expected, actual) <= 1e-2  # fp16 tensors on both sides
