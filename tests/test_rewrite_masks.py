"""Constant masks: all-zero ones are dropped, causal ones become is_causal, anything else stays
a tensor input (the op then applies it as given)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from fixtures.support import FIXTURES, MANIFEST
from pasa_onnx.passes.masks import _kind

import pasa_onnx

S = 5
UPPER = np.triu(np.ones((S, S), dtype=bool), k=1)


@pytest.mark.parametrize(
    ("mask", "kind"),
    [
        (np.zeros((1, 1, S, S), np.float32), "none"),
        (np.ones((S, S), bool), "none"),
        (np.where(UPPER, -np.inf, 0).astype(np.float32), "causal"),
        (np.where(UPPER, np.finfo(np.float32).min, 0).astype(np.float32)[None, None], "causal"),
        (~UPPER, "causal"),
        # fp16's min is not negative enough to vanish next to large scores: kept as a tensor
        (np.where(UPPER, np.finfo(np.float16).min, 0).astype(np.float16), "tensor"),
        (np.where(UPPER.T, -np.inf, 0).astype(np.float32), "tensor"),  # anti-causal
        (np.where(UPPER, -np.inf, 0.5).astype(np.float32), "tensor"),  # a bias, not on/off
        (np.stack([np.where(UPPER, -np.inf, 0), np.zeros((S, S))]).astype(np.float32), "tensor"),
        (np.where(UPPER, -np.inf, 0)[:, :4].astype(np.float32), "tensor"),  # Sq != Skv
    ],
)
def test_mask_kind(mask: np.ndarray, kind: str) -> None:
    assert _kind(mask) == kind


@pytest.mark.parametrize(
    ("key", "causal"),
    [("mha_causal_dynamo18", 1), ("sdpa_causal_dynamo18", 1), ("vit_eager_dynamo18", 0)],
)
def test_constant_masks_leave_the_graph(key: str, causal: int) -> None:
    rewritten, _ = pasa_onnx.rewrite(onnx.load(FIXTURES / MANIFEST[key]["file"]))
    (node,) = [n for n in rewritten.graph.node if n.domain == "ai.pasa"]
    assert len(node.input) == 3  # Q, K, V only
    assert {a.name: a.i for a in node.attribute}.get("is_causal", 0) == causal


def test_runtime_mask_is_passed_on() -> None:
    """BERT's padding mask is computed from attention_mask at run time: it stays an input."""
    rewritten, _ = pasa_onnx.rewrite(onnx.load(FIXTURES / MANIFEST["bert_eager_ts17"]["file"]))
    (node,) = [n for n in rewritten.graph.node if n.domain == "ai.pasa"]
    assert len(node.input) == 4 and node.input[3]
    assert not any(a.name == "is_causal" for a in node.attribute)
