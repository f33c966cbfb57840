"""Hand-built original/rewritten model pairs for the validation tests.

Each builder returns ``(original, rewritten)``: the original holds an attention written as an
exporter would (primitive MatMul -> Mul -> Add -> Softmax -> MatMul, or an ONNX ``Attention``
node); the rewritten twin replaces it by one ``ai.pasa::PasaAttention`` node whose ``Y`` keeps
the name of the last replaced tensor and carries ``pasa.pattern`` / ``pasa.replaced`` metadata,
as the rewriter's contract says. Everything else (weights, projections) is shared.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSETS = [helper.make_opsetid("", 23), helper.make_opsetid("ai.pasa", 1)]
_ONNX_TYPE = {np.dtype(np.float16): TensorProto.FLOAT16, np.dtype(np.float32): TensorProto.FLOAT}


def primitive_attention_pair(
    *,
    dtype=np.float16,
    n_layers: int = 1,
    heads: int = 2,
    head_dim: int = 16,
    vocab: int = 50,
    max_positions: int = 32,
    qk_bias: float = 0.0,
    qk_noise: float = 1.0,
    wrong_scale_layer: int | None = None,
    wrong_scale_factor: float = 2.0,
    seed: int = 0,
) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """A small decoder-like model: token + position embeddings, ``n_layers`` attention blocks
    written as primitive ops with an additive padding mask built from a 0/1 ``attention_mask``,
    outputs ``hidden`` and ``logits``. ``qk_bias`` shifts queries and keys (a large shared bias
    makes plain fp16 scores overflow); ``wrong_scale_layer`` injects a wrong ``scale`` into that
    layer's PasaAttention (a broken rewrite)."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    et = _ONNX_TYPE[dt]
    hidden = heads * head_dim
    inits: list[onnx.TensorProto] = []

    def w(name, shape, std=1.0, mean=0.0):
        inits.append(
            numpy_helper.from_array((mean + std * rng.standard_normal(shape)).astype(dt), name)
        )
        return name

    def c(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    N = helper.make_node
    pre: list[onnx.NodeProto] = [
        N("Gather", [w("tok_emb", (vocab, hidden)), "input_ids"], ["tok"], name="embed_tokens"),
        N(
            "Gather",
            [w("pos_emb", (max_positions, hidden), 0.1), "position_ids"],
            ["pos"],
            name="embed_positions",
        ),
        N("Add", ["tok", "pos"], ["x0"], name="embed_add"),
        # 0/1 mask -> additive bias [B,1,1,S]: (1 - m) * -10000, in the model's float type.
        N("Cast", ["attention_mask"], ["mask_f"], name="mask_cast", to=et),
        N("Sub", [c("one", np.array(1.0, dt)), "mask_f"], ["mask_inv"], name="mask_inv"),
        N(
            "Mul",
            ["mask_inv", c("neg_big", np.array(-10000.0, dt))],
            ["mask_add3"],
            name="mask_scale",
        ),
        N(
            "Unsqueeze",
            ["mask_add3", c("axes12", np.array([1, 2], np.int64))],
            ["mask_add"],
            name="mask_unsqueeze",
        ),
    ]
    c("split_shape", np.array([0, 0, heads, head_dim], np.int64))
    c("merge_shape", np.array([0, 0, hidden], np.int64))
    scale = 1.0 / np.sqrt(head_dim)
    c("scale", np.array(scale, dt))
    orig_nodes, rw_nodes = list(pre), list(pre)
    x = "x0"
    for layer in range(n_layers):
        p = f"l{layer}_"
        proj: list[onnx.NodeProto] = []
        heads4 = {}
        for t, mean in (("q", qk_bias), ("k", qk_bias), ("v", 0.0)):
            std = (qk_noise if t != "v" else 1.0) / np.sqrt(hidden)
            proj += [
                N(
                    "MatMul",
                    [x, w(f"{p}w{t}", (hidden, hidden), std)],
                    [f"{p}{t}_mm"],
                    name=f"{p}{t}_proj",
                ),
                N(
                    "Add",
                    [f"{p}{t}_mm", w(f"{p}b{t}", (hidden,), 0.0, mean)],
                    [f"{p}{t}"],
                    name=f"{p}{t}_bias",
                ),
                N("Reshape", [f"{p}{t}", "split_shape"], [f"{p}{t}_bshd"], name=f"{p}{t}_split"),
                N(
                    "Transpose",
                    [f"{p}{t}_bshd"],
                    [f"{p}{t}_bhsd"],
                    name=f"{p}{t}_heads",
                    perm=[0, 2, 1, 3],
                ),
            ]
            heads4[t] = f"{p}{t}_bhsd"
        out = f"{p}attn_out"  # [B,H,S,D]: the last tensor the rewrite replaces
        attn_orig = [
            N("Transpose", [heads4["k"]], [f"{p}kt"], name=f"{p}k_transpose", perm=[0, 1, 3, 2]),
            N("MatMul", [heads4["q"], f"{p}kt"], [f"{p}scores"], name=f"{p}qk"),
            N("Mul", [f"{p}scores", "scale"], [f"{p}scaled"], name=f"{p}scale"),
            N("Add", [f"{p}scaled", "mask_add"], [f"{p}masked"], name=f"{p}mask"),
            N("Softmax", [f"{p}masked"], [f"{p}probs"], name=f"{p}softmax", axis=-1),
            N("MatMul", [f"{p}probs", heads4["v"]], [out], name=f"{p}pv"),
        ]
        rw_scale = scale * (wrong_scale_factor if layer == wrong_scale_layer else 1.0)
        pasa = N(
            "PasaAttention",
            [heads4["q"], heads4["k"], heads4["v"], "mask_add"],
            [out],
            name=f"attn_{layer}",
            domain="ai.pasa",
            scale=float(rw_scale),
        )
        helper.set_metadata_props(
            pasa,
            {
                "pasa.pattern": "matmul_softmax_matmul",
                "pasa.replaced": ",".join(n.name for n in attn_orig),
            },
        )
        post = [
            N("Transpose", [out], [f"{p}attn_bshd"], name=f"{p}merge_t", perm=[0, 2, 1, 3]),
            N("Reshape", [f"{p}attn_bshd", "merge_shape"], [f"{p}attn_merged"], name=f"{p}merge"),
            N(
                "MatMul",
                [f"{p}attn_merged", w(f"{p}wo", (hidden, hidden), 1 / np.sqrt(hidden))],
                [f"{p}o"],
                name=f"{p}o_proj",
            ),
            N("Add", [x, f"{p}o"], [f"{p}x"], name=f"{p}residual"),
        ]
        orig_nodes += proj + attn_orig + post
        rw_nodes += proj + [pasa] + post
        x = f"{p}x"
    tail = [
        N("Identity", [x], ["hidden"], name="final_hidden"),
        N(
            "MatMul",
            [x, w("lm_head", (hidden, vocab), 1 / np.sqrt(hidden))],
            ["logits"],
            name="lm_head",
        ),
    ]
    orig_nodes += tail
    rw_nodes += tail
    ints = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
        for n in ("input_ids", "attention_mask", "position_ids")
    ]
    outs = [
        helper.make_tensor_value_info("hidden", et, ["batch", "sequence", hidden]),
        helper.make_tensor_value_info("logits", et, ["batch", "sequence", vocab]),
    ]
    return _pair(orig_nodes, rw_nodes, ints, outs, inits)


def onnx_attention_pair(
    *,
    dtype=np.float16,
    q_heads: int = 4,
    kv_heads: int = 2,
    head_dim: int = 16,
    is_causal: int = 1,
    seed: int = 1,
) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Float ``hidden_states`` [batch, sequence, hidden] and a 0/1 ``attention_mask`` (cast to a
    bool [B,1,1,S] mask) into one grouped-query ONNX ``Attention`` (opset 23, 3-D inputs); the
    rewrite swaps it for a PasaAttention with the same inputs and attributes."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    et = _ONNX_TYPE[dt]
    hq, hkv = q_heads * head_dim, kv_heads * head_dim
    inits = []

    def w(name, shape):
        inits.append(
            numpy_helper.from_array(
                (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(dt), name
            )
        )
        return name

    N = helper.make_node
    pre = [
        N("MatMul", ["hidden_states", w("wq", (hq, hq))], ["q"], name="q_proj"),
        N("MatMul", ["hidden_states", w("wk", (hq, hkv))], ["k"], name="k_proj"),
        N("MatMul", ["hidden_states", w("wv", (hq, hkv))], ["v"], name="v_proj"),
        N("Cast", ["attention_mask"], ["mask_bool"], name="mask_cast", to=TensorProto.BOOL),
        N("Unsqueeze", ["mask_bool", "axes12"], ["mask_b11s"], name="mask_unsqueeze"),
        # onnxruntime's Attention wants the mask's query axis spelled out: [B,1,S,S].
        N("Shape", ["attention_mask"], ["mask_shape"], name="mask_shape"),
        N("Slice", ["mask_shape", "one_i", "two_i"], ["seq_len"], name="seq_len"),
        N("Concat", ["ones2", "seq_len", "one_i"], ["expand_to"], name="expand_to", axis=0),
        N("Expand", ["mask_b11s", "expand_to"], ["mask4"], name="mask_expand"),
    ]
    for name, arr in (("axes12", [1, 2]), ("one_i", [1]), ("two_i", [2]), ("ones2", [1, 1])):
        inits.append(numpy_helper.from_array(np.array(arr, np.int64), name))
    attrs = dict(q_num_heads=q_heads, kv_num_heads=kv_heads, is_causal=is_causal)
    orig_attn = N("Attention", ["q", "k", "v", "mask4"], ["attn_out"], name="sdpa", **attrs)
    pasa = N(
        "PasaAttention",
        ["q", "k", "v", "mask4"],
        ["attn_out"],
        name="attn_0",
        domain="ai.pasa",
        **attrs,
    )
    helper.set_metadata_props(pasa, {"pasa.pattern": "onnx_attention", "pasa.replaced": "sdpa"})
    post = [N("MatMul", ["attn_out", w("wo", (hq, hq))], ["y"], name="o_proj")]
    ins = [
        helper.make_tensor_value_info("hidden_states", et, ["batch", "sequence", hq]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
    ]
    outs = [helper.make_tensor_value_info("y", et, ["batch", "sequence", hq])]
    return _pair(pre + [orig_attn] + post, pre + [pasa] + post, ins, outs, inits)


def _pair(orig_nodes, rw_nodes, inputs, outputs, inits) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    def make(nodes, name):
        g = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
        m = helper.make_model(g, opset_imports=OPSETS)
        m.ir_version = 10
        return m

    return make(orig_nodes, "original"), make(rw_nodes, "rewritten")


def primitive_forward_float64(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], *, heads: int
) -> dict[str, np.ndarray]:
    """Independent float64 forward pass of a :func:`primitive_attention_pair` original (weights
    read from its initializers): ``hidden``, ``logits``, each ``l{i}_attn_out`` and each layer's
    ``l{i}_max_abs_score`` (over all pairs: its padding mask is additive, nothing is -inf)."""
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    ids, mask, pos = feeds["input_ids"], feeds["attention_mask"], feeds["position_ids"]
    x = w["tok_emb"][ids] + w["pos_emb"][pos]
    b, s, hidden = x.shape
    d = hidden // heads
    bias = ((1.0 - mask) * -10000.0)[:, None, None, :]
    out: dict[str, np.ndarray] = {}
    layer = 0
    while f"l{layer}_wq" in w:
        p = f"l{layer}_"

        def split(t):
            return t.reshape(b, s, heads, d).transpose(0, 2, 1, 3)

        q, k, v = (split(x @ w[f"{p}w{t}"] + w[f"{p}b{t}"]) for t in "qkv")
        scores = (q @ k.transpose(0, 1, 3, 2)) / np.sqrt(d)
        out[f"{p}max_abs_score"] = np.abs(scores).max()
        z = scores + bias
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        attn = (e / e.sum(axis=-1, keepdims=True)) @ v
        out[f"{p}attn_out"] = attn
        x = x + attn.transpose(0, 2, 1, 3).reshape(b, s, hidden) @ w[f"{p}wo"]
        layer += 1
    out["hidden"] = x
    out["logits"] = x @ w["lm_head"]
    return out


def save_pair(pair: tuple[onnx.ModelProto, onnx.ModelProto], directory, stem: str):
    """Write ``(original, rewritten)`` as ``stem.onnx`` / ``stem.pasa.onnx``; returns paths."""
    orig_path = directory / f"{stem}.onnx"
    rw_path = directory / f"{stem}.pasa.onnx"
    onnx.save(pair[0], orig_path)
    onnx.save(pair[1], rw_path)
    return orig_path, rw_path


def token_feeds(batch: int, seq: int, vocab: int, seed: int = 7) -> dict[str, np.ndarray]:
    """Inputs for a primitive pair chosen by the test, independent of pasa_onnx.inputs."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[-1, seq - 3 :] = 0
    return {
        "input_ids": rng.integers(0, vocab, (batch, seq)).astype(np.int64),
        "attention_mask": mask,
        "position_ids": np.tile(np.arange(seq, dtype=np.int64), (batch, 1)),
    }


def run_with_outputs(model: onnx.ModelProto, feeds, names: list[str]) -> dict[str, np.ndarray]:
    """Run ``model`` in onnxruntime fetching ``names`` (intermediates exposed on a copy)."""
    import pasa_onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
    sess = pasa_onnx.inference_session(m)
    return dict(zip(names, sess.run(names, feeds), strict=True))
