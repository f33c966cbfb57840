"""com.microsoft::GroupQueryAttention in the forms onnxruntime-genai's model builder writes
(packed or separate Q/K/V, past/present, do_rotary, local_window_size, softcap), and the 1-D
mask_index of onnxruntime's optimizer: each becomes PasaAttention and matches onnxruntime's own
kernel (fp32, 1e-4), on the prompt and at a decode step; the forms it cannot reproduce are left
with their reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from fixtures.support import max_rel_err, run_original, run_rewritten
from onnx import TensorProto, helper, numpy_helper

import pasa_onnx

F, I32 = TensorProto.FLOAT, TensorProto.INT32
HQ, HKV, D, MAX_POS = 4, 2, 16, 32


def _gqa_model(packed: bool, past: bool, **attrs) -> onnx.ModelProto:
    """One GroupQueryAttention node with 3 outputs, dims symbolic like genai's."""
    names = ["qkv"] if packed else ["q", "k", "v"]
    widths = {"qkv": (HQ + 2 * HKV) * D, "q": HQ * D, "k": HKV * D, "v": HKV * D}
    inputs = [helper.make_tensor_value_info(n, F, ["B", "S", widths[n]]) for n in names]
    cache = ["B", HKV, "P", D]
    if past:
        inputs += [helper.make_tensor_value_info(n, F, cache) for n in ("past_k", "past_v")]
    inputs += [
        helper.make_tensor_value_info("seqlens_k", I32, ["B"]),
        helper.make_tensor_value_info("total", I32, []),
    ]
    node_inputs = [*names, "", ""] if packed else list(names)
    node_inputs += ["past_k", "past_v"] if past else ["", ""]
    node_inputs += ["seqlens_k", "total"]
    inits = []
    if attrs.get("do_rotary"):
        rng = np.random.default_rng(1)
        angles = rng.uniform(0, 3, (MAX_POS, D // 2)).astype(np.float32)
        inits = [
            numpy_helper.from_array(np.cos(angles), "cos"),
            numpy_helper.from_array(np.sin(angles), "sin"),
        ]
        node_inputs += ["cos", "sin"]
    node = helper.make_node(
        "GroupQueryAttention",
        node_inputs,
        ["y", "present_k", "present_v"],
        domain="com.microsoft",
        num_heads=HQ,
        kv_num_heads=HKV,
        name="gqa",
        **attrs,
    )
    total = "P + S" if past else "S"
    outputs = [
        helper.make_tensor_value_info("y", F, ["B", "S", HQ * D]),
        helper.make_tensor_value_info("present_k", F, ["B", HKV, total, D]),
        helper.make_tensor_value_info("present_v", F, ["B", HKV, total, D]),
    ]
    graph = helper.make_graph([node], "g", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _feeds(packed: bool, past_len: int | None, seq: int, lengths=None, seed: int = 0) -> dict:
    """genai's feeds: seqlens_k = tokens so far - 1 per row, total = past + sequence."""
    rng = np.random.default_rng(seed)
    batch = 2
    total = (past_len or 0) + seq

    def randn(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    feeds = {}
    if packed:
        feeds["qkv"] = randn(batch, seq, (HQ + 2 * HKV) * D)
    else:
        feeds.update(q=randn(batch, seq, HQ * D), k=randn(batch, seq, HKV * D))
        feeds["v"] = randn(batch, seq, HKV * D)
    if past_len is not None:
        feeds["past_k"], feeds["past_v"] = (
            randn(batch, HKV, past_len, D),
            randn(batch, HKV, past_len, D),
        )
    lengths = lengths or [total] * batch
    feeds["seqlens_k"] = np.array([n - 1 for n in lengths], dtype=np.int32)
    feeds["total"] = np.array(total, dtype=np.int32)
    return feeds


def _rewrite(model: onnx.ModelProto, pattern: str) -> onnx.ModelProto:
    rewritten, summary = pasa_onnx.rewrite(model)
    assert (summary.found, summary.replaced) == (1, 1), summary.format()
    assert summary.instances[0].pattern.startswith(pattern), summary.instances[0].pattern
    onnx.checker.check_model(rewritten)
    assert [n.op_type for n in rewritten.graph.node].count("GroupQueryAttention") == 0
    return rewritten


def _err(original, rewritten, feeds) -> float:
    return max_rel_err(run_original(original, feeds), run_rewritten(rewritten, feeds))


FORMS = [
    pytest.param(True, {"do_rotary": 1}, id="packed-rotary"),
    pytest.param(True, {"do_rotary": 1, "rotary_interleaved": 1}, id="packed-rotary-interleaved"),
    pytest.param(False, {}, id="separate"),
    pytest.param(False, {"softcap": 5.0}, id="softcap"),
    pytest.param(True, {"local_window_size": 3}, id="local-window"),
]


@pytest.mark.parametrize(("packed", "attrs"), FORMS)
def test_genai_forms_match_on_prompt_and_decode(packed: bool, attrs: dict) -> None:
    original = _gqa_model(packed, past=True, **attrs)
    rewritten = _rewrite(original, "ort-contrib/GroupQueryAttention+past")
    # the prompt (empty past), a decode step, and a padded prompt (seqlens_k masks the tail)
    for past_len, seq, lengths in ((0, 6, None), (7, 1, None), (0, 6, [6, 4])):
        feeds = _feeds(packed, past_len, seq, lengths)
        err = _err(original, rewritten, feeds)
        assert err <= 1e-4, (past_len, seq, err)


@pytest.mark.parametrize(("packed", "attrs"), FORMS)
@pytest.mark.parametrize("lengths", [[8, 5], [3, 8], [8, 1]], ids=["pad-last", "pad-first", "one"])
def test_padded_decode_batch_matches_onnxruntime(packed: bool, attrs: dict, lengths) -> None:
    """A decode step whose rows hold fewer tokens than the cache (seqlens_k[b] + 1 < P + S):
    onnxruntime writes that row's new key at seqlens_k[b], rotates it there and zeroes the rest
    of its present cache; Y and both present outputs match it."""
    original = _gqa_model(packed, past=True, **attrs)
    rewritten = _rewrite(original, "ort-contrib/GroupQueryAttention+past")
    feeds = _feeds(packed, 7, 1, lengths, seed=2)
    expected, actual = run_original(original, feeds), run_rewritten(rewritten, feeds)
    assert [e.shape for e in expected] == [a.shape for a in actual]
    assert max_rel_err(expected, actual) <= 1e-4
    # the padded row's new key is in onnxruntime's place, not at the end of the cache
    row = int(np.argmin(lengths))
    assert np.allclose(actual[1][row, :, lengths[row] :], 0.0)


def test_prompt_only_form_without_cache() -> None:
    original = _gqa_model(packed=False, past=False)
    # prompt-only models drop the present outputs
    del original.graph.output[1:]
    original.graph.node[0].output[1:] = []
    rewritten = _rewrite(original, "ort-contrib/GroupQueryAttention")
    assert _err(original, rewritten, _feeds(False, None, 5, [5, 3])) <= 1e-4


def test_shared_past_present_buffer_is_left_alone() -> None:
    model = _gqa_model(packed=True, past=True)
    for out in model.graph.output[1:]:  # CUDA builds: present is the past buffer itself
        out.type.tensor_type.shape.dim[2].dim_param = "P"
    _, summary = pasa_onnx.rewrite(model)
    (inst,) = summary.left_alone
    assert "share one buffer" in inst.reason


def test_smooth_softmax_is_left_alone_with_its_reason() -> None:
    _, summary = pasa_onnx.rewrite(_gqa_model(packed=True, past=True, smooth_softmax=1))
    (inst,) = summary.left_alone
    assert inst.reason.startswith("smooth_softmax")


def _packed_attention_with_lengths(dtype: int) -> onnx.ModelProto:
    """com.microsoft Attention fed ReduceSum(mask) key lengths, as onnxruntime's optimizer
    writes BERT (its fused nodes without value_info)."""
    rng = np.random.default_rng(3)
    np_type = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    w = numpy_helper.from_array((rng.standard_normal((32, 96)) * 0.3).astype(np_type), "w")
    b = numpy_helper.from_array(rng.standard_normal(96).astype(np_type), "b")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("Cast", ["mask"], ["mask32"], to=I32, name="cast"),
        helper.make_node("ReduceSum", ["mask32", "axes"], ["lengths"], keepdims=0, name="sum"),
        helper.make_node(
            "Attention",
            ["x", "w", "b", "lengths"],
            ["y"],
            domain="com.microsoft",
            num_heads=4,
            mask_filter_value=-3.4028234663852886e38,
            name="attention",
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", dtype, ["batch", "seq", 32]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("y", dtype, ["batch", "seq", 32])],
        [w, b, axes],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


@pytest.mark.parametrize(("dtype", "tol"), [(TensorProto.FLOAT, 1e-4), (TensorProto.FLOAT16, 1e-2)])
def test_attention_with_1d_mask_index(dtype: int, tol: float) -> None:
    original = _packed_attention_with_lengths(dtype)
    rewritten = _rewrite(original, "ort-contrib/Attention")
    rng = np.random.default_rng(0)
    mask = np.ones((2, 6), dtype=np.int64)
    mask[1, 4:] = 0
    np_type = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    feeds = {"x": rng.standard_normal((2, 6, 32)).astype(np_type), "mask": mask}
    assert _err(original, rewritten, feeds) <= tol
