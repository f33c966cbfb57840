"""Every committed fixture (scripts/make_fixtures.py): each attention instance is replaced, the
result passes onnx.checker, keeps its graph interface, honours the naming contract, runs with the
library and matches the original within RTOL_FP32 / RTOL_FP16."""

from __future__ import annotations

import onnx
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

# Instances that must stay: the model returns its attention probabilities.
LEFT_ALONE = {"mha_weights": "probabilities are consumed elsewhere"}


def _io(graph: onnx.GraphProto) -> list:
    return [(v.name, str(v.type)) for v in [*graph.input, *graph.output]]


@pytest.mark.parametrize("key", sorted(MANIFEST))
def test_fixture_rewrites_and_matches(key: str) -> None:
    entry = MANIFEST[key]
    original = onnx.load(FIXTURES / entry["file"])
    rewritten, summary = pasa_onnx.rewrite(original)

    assert summary.found >= 1
    expected_left = LEFT_ALONE.get(entry["case"])
    if expected_left:
        assert summary.replaced == 0
        assert all(expected_left in i.reason for i in summary.left_alone)
        return
    assert summary.replaced == summary.found, summary.format()

    onnx.checker.check_model(rewritten, full_check=True)
    pasa = [n for n in rewritten.graph.node if n.domain == "ai.pasa"]
    assert len(pasa) == summary.found
    assert not any(n.op_type in ("Softmax", "Attention") for n in rewritten.graph.node)
    assert {"": 0, "ai.pasa": 1}.keys() <= {
        o.domain: o.version for o in rewritten.opset_import
    }.keys()
    # Dynamic dims stay dynamic: inputs and outputs are declared exactly as before.
    assert _io(rewritten.graph) == _io(original.graph)
    # Naming contract: Y keeps an original tensor name; metadata says what was replaced.
    original_names = {o for n in original.graph.node for o in n.output}
    original_nodes = {n.name for n in original.graph.node}
    for node in pasa:
        assert node.output[0] in original_names
        meta = {p.key: p.value for p in node.metadata_props}
        assert meta["pasa.pattern"]
        assert set(meta["pasa.replaced"].split(",")) <= original_nodes
    assert len({n.name for n in pasa}) == len(pasa)

    inputs = feeds(entry)
    err = max_rel_err(run_original(original, inputs), run_rewritten(rewritten, inputs))
    assert err <= (RTOL_FP16 if entry["half"] else RTOL_FP32), f"{key}: rel err {err:.3g}"


@pytest.mark.parametrize("key", ["bert_eager_ts17", "sdpa_gqa_dynamo23", "t5_eager_dynamo18"])
def test_rewriting_a_rewritten_model_changes_nothing(key: str) -> None:
    once, first = pasa_onnx.rewrite(onnx.load(FIXTURES / MANIFEST[key]["file"]))
    assert first.replaced >= 1
    twice, second = pasa_onnx.rewrite(once)
    assert second.replaced == 0 and second.found == 0
    assert second.already_rewritten == first.replaced
    assert twice.SerializeToString() == once.SerializeToString()


def test_three_d_layout_absorbs_head_split_and_merge() -> None:
    """BERT's head split/merge moves into the op: no Transpose left around the attention."""
    original = onnx.load(FIXTURES / MANIFEST["bert_eager_ts17"]["file"])
    rewritten, summary = pasa_onnx.rewrite(original)
    (node,) = [n for n in rewritten.graph.node if n.domain == "ai.pasa"]
    assert summary.instances[0].pattern.endswith("+3d")
    attrs = {a.name: a.i for a in node.attribute if a.name.endswith("heads")}
    assert attrs == {"q_num_heads": 4, "kv_num_heads": 4}
    assert (
        sum(n.op_type == "Transpose" for n in rewritten.graph.node)
        < sum(n.op_type == "Transpose" for n in original.graph.node) - 3
    )


@pytest.mark.parametrize(
    "key", ["llama_eager_dynamo18", "sdpa_gqa_dynamo18", "kv_step_sdpa_dynamo18"]
)
def test_gqa_repeat_kv_is_absorbed(key: str) -> None:
    """K and V reach the op with their 2 kv heads; repeat_kv's Expand nodes are gone."""
    original = onnx.load(FIXTURES / MANIFEST[key]["file"])
    rewritten, _ = pasa_onnx.rewrite(original)
    (node,) = [n for n in rewritten.graph.node if n.domain == "ai.pasa"]
    inferred = onnx.shape_inference.infer_shapes(rewritten)
    values = [*inferred.graph.value_info, *inferred.graph.output]
    shapes = {v.name: v.type.tensor_type.shape for v in values}
    k_shape = shapes[node.input[1]]
    heads = {a.name: a.i for a in node.attribute}.get("kv_num_heads")
    assert heads == 2 or k_shape.dim[1].dim_value == 2
    expands = sum(n.op_type == "Expand" for n in original.graph.node)
    assert sum(n.op_type == "Expand" for n in rewritten.graph.node) == expands - 2
