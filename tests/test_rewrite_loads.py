"""Issue 15: a rewrite that onnxruntime would not load is never written. D2 (a bool mask with
Q/K/V of unknown rank made onnxruntime type Y as bool), D8 (ONNX Attention with softcap < 0 or a
non-finite scale: left alone with the reason), and the rewriter emits only attributes of the
schema's types (D9, Python side)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from fixtures.support import FIXTURES, MANIFEST
from onnx import TensorProto, helper

import pasa_onnx
from pasa_onnx import rewriting
from pasa_onnx.cli import main
from pasa_onnx.errors import PasaError
from pasa_onnx.schema import make_schema

B, HQ, HKV, S, D = 2, 4, 2, 5, 8


def _attention_model(
    q_shape: list | None, layout: str = "4d", mask: str = "bool", **attrs
) -> onnx.ModelProto:
    """One ONNX Attention (opset 23) on graph inputs Q, K, V, M; shapes as given (None: no
    declared shape at all)."""
    kv_shape = q_shape
    if q_shape is not None and all(isinstance(d, int) for d in q_shape):
        kv_shape = [B, S, HKV * D] if layout == "3d" else [B, HKV, S, D]
    mask_type = TensorProto.BOOL if mask == "bool" else TensorProto.FLOAT16
    inputs = [
        helper.make_tensor_value_info("Q", TensorProto.FLOAT16, q_shape),
        helper.make_tensor_value_info("K", TensorProto.FLOAT16, kv_shape),
        helper.make_tensor_value_info("V", TensorProto.FLOAT16, kv_shape),
        helper.make_tensor_value_info("M", mask_type, None),
    ]
    if layout == "3d":
        attrs = {"q_num_heads": HQ, "kv_num_heads": HKV, **attrs}
    node = helper.make_node("Attention", ["Q", "K", "V", "M"], ["A"], name="attention", **attrs)
    relu = helper.make_node("Relu", ["A"], ["Y"], name="after")
    out = helper.make_tensor_value_info("Y", TensorProto.FLOAT16, None)
    graph = helper.make_graph([node, relu], "g", inputs, [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


def _feeds(layout: str, mask: str = "bool") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    if layout == "4d":
        q = rng.standard_normal((B, HQ, S, D))
        kv = rng.standard_normal((B, HKV, S, D))
    else:
        q = rng.standard_normal((B, S, HQ * D))
        kv = rng.standard_normal((B, S, HKV * D))
    m = rng.random((S, S)) < 0.7
    m[:, 0] = True  # no fully masked row
    feeds = {"Q": q, "K": kv, "V": rng.standard_normal(kv.shape)}
    feeds = {k: v.astype(np.float16) for k, v in feeds.items()}
    feeds["M"] = m if mask == "bool" else np.where(m, 0, -np.inf).astype(np.float16)
    return feeds


def _run_plain(model: onnx.ModelProto, feeds) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


@pytest.mark.parametrize(
    ("q_shape", "layout"),
    [(None, "4d"), (None, "3d"), ([B, HQ, S, D], "4d"), (["b", "h", "s", "d"], "4d")],
    ids=["no-shape-4d", "no-shape-3d", "static-4d", "symbolic-4d"],
)
def test_bool_mask_with_unknown_ranks_loads_and_matches(q_shape, layout, tmp_path: Path) -> None:
    model = _attention_model(q_shape, layout)
    feeds = _feeds(layout)
    want = _run_plain(model, feeds)
    src, dst = tmp_path / "m.onnx", tmp_path / "m.pasa.onnx"
    onnx.save(model, src)
    summary = rewriting.rewrite_file(src, dst)
    assert summary.replaced == 1
    session = pasa_onnx.inference_session(str(dst))  # the D2 failure: "expected tensor(bool)"
    got = pasa_onnx.run(session, feeds)[0]
    assert got.dtype == np.float16 and got.shape == want.shape
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), atol=2e-3)


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({"softcap": -1.0}, "softcap -1.0 is negative"),
        ({"scale": float("nan")}, "scale nan is not finite"),
        ({"scale": float("inf")}, "scale inf is not finite"),
    ],
    ids=["softcap<0", "scale-nan", "scale-inf"],
)
def test_attention_the_op_cannot_load_is_left_alone(attrs, reason, tmp_path, capsys) -> None:
    model = _attention_model([B, HQ, S, D], **attrs)
    _run_plain(model, _feeds("4d"))  # onnxruntime runs the original
    src, dst = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(model, src)
    assert main(["rewrite", str(src), "-o", str(dst), "-q"]) == 0
    out = capsys.readouterr().out
    assert "replaced: 0, left alone: 1" in out and reason in out
    assert dst.read_bytes() == src.read_bytes()
    _, summary = pasa_onnx.rewrite(model)
    assert summary.replaced == 0 and reason in summary.left_alone[0].reason


def test_a_rewrite_onnxruntime_cannot_load_is_not_written(tmp_path: Path, monkeypatch) -> None:
    """Whatever the cause (here a broken attribute injected after the rewrite), the check with
    onnxruntime's loader stops the write: nothing at the output path, no temporaries."""
    src = FIXTURES / MANIFEST["bert_eager_ts17"]["file"]
    real = rewriting.rewrite

    def broken(model, progress=None):
        out, summary = real(model, progress)
        for node in out.graph:
            if node.op_type == "PasaAttention":
                node.attributes["precision"] = ir.AttrString("precision", "bogus")
        return out, summary

    monkeypatch.setattr(rewriting, "rewrite", broken)
    dst = tmp_path / "o.onnx"
    with pytest.raises(PasaError, match="o.onnx: not written: onnxruntime cannot load"):
        rewriting.rewrite_file(src, dst)
    assert list(tmp_path.iterdir()) == []


def _attribute_types() -> dict[str, int]:
    return {name: int(a.type.value) for name, a in make_schema().attributes.items()}


@pytest.mark.parametrize(
    "key", ["bert_eager_ts17", "sdpa_gqa_dynamo23", "t5_sdpa_dynamo18", "llama_kv_sdpa_dynamo23"]
)
def test_emitted_attributes_have_the_schema_types(key: str) -> None:
    if key not in MANIFEST:
        pytest.fail(f"fixture {key} is not in the manifest")
    out, summary = pasa_onnx.rewrite(onnx.load(FIXTURES / MANIFEST[key]["file"]))
    assert summary.replaced >= 1
    types = _attribute_types()
    nodes = [n for n in out.graph.node if n.op_type == "PasaAttention"]
    assert nodes
    for node in nodes:
        for attr in node.attribute:
            assert attr.name in types, f"{node.name}: unknown attribute {attr.name}"
            assert attr.type == types[attr.name], f"{node.name}: {attr.name} has type {attr.type}"
    onnx.checker.check_model(out)
