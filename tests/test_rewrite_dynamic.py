"""Dynamic dimensions stay dynamic: fixtures exported with a symbolic batch and sequence run,
rewritten, at a batch and length other than the export's and still match the original."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from fixtures.support import (
    FIXTURES,
    MANIFEST,
    RTOL_FP16,
    RTOL_FP32,
    max_rel_err,
    run_original,
    run_rewritten,
)

import pasa_onnx


def _is_dynamic(model: onnx.ModelProto) -> bool:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return len(dims) >= 2 and all(d.dim_param for d in dims[:2])


DYNAMIC = [k for k in sorted(MANIFEST) if _is_dynamic(onnx.load(FIXTURES / MANIFEST[k]["file"]))]


def test_there_are_dynamic_fixtures() -> None:
    assert len(DYNAMIC) >= 10


@pytest.mark.parametrize("key", DYNAMIC)
def test_other_batch_and_length(key: str) -> None:
    entry = MANIFEST[key]
    rng = np.random.default_rng(7)
    batch, seq = 3, 5
    inputs = {}
    for name, spec in entry["inputs"].items():
        if name.endswith("input_ids"):
            inputs[name] = rng.integers(0, spec["high"], (batch, seq)).astype(np.int64)
        elif name == "attention_mask":
            mask = np.ones((batch, seq), dtype=np.int64)
            mask[1, 3:] = 0
            inputs[name] = mask
        else:  # [B,S,E] floats
            dtype = np.float16 if spec["dtype"] == "float16" else np.float32
            inputs[name] = rng.standard_normal((batch, seq, spec["shape"][-1])).astype(dtype)
    original = onnx.load(FIXTURES / entry["file"])
    rewritten, summary = pasa_onnx.rewrite(original)
    assert summary.replaced == summary.found >= 1
    err = max_rel_err(run_original(original, inputs), run_rewritten(rewritten, inputs))
    assert err <= (RTOL_FP16 if entry["half"] else RTOL_FP32), err
