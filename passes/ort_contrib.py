"""Family ``ort-contrib``: onnxruntime's fused ``com.microsoft`` attention nodes, as its
transformers optimizer and onnxscript's ``ort_fusions`` write them: ``MultiHeadAttention``,
``Attention`` (packed input projection) and ``GroupQueryAttention`` (onnxruntime-genai's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import pattern

from ._values import dim, elem_type, int_dim, int_list, rank, same_dim
from .emit import emit
from .match import OTHER_VARIANT, AttentionMatch

FAMILY = "ort-contrib"
MS = "com.microsoft"
OP_TYPES = ("MultiHeadAttention", "Attention", "GroupQueryAttention")
_FLOATS = (ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.FLOAT)


def _attr(node: ir.Node, name: str, default=None):
    a = node.attributes.get(name)
    return a.value if a is not None else default


def _input(node: ir.Node, i: int) -> ir.Value | None:
    return node.inputs[i] if i < len(node.inputs) else None


def _used(node: ir.Node, i: int) -> bool:
    return i < len(node.outputs) and bool(
        node.outputs[i].uses() or node.outputs[i].is_graph_output()
    )


class _ContribRule(pattern.RewriteRuleClassBase):
    """One com.microsoft op type; subclasses fill ``self._match`` in ``normalise``."""

    op_type = ""

    def __init__(self, n_outputs: int) -> None:
        super().__init__(f"{FAMILY}/{self.op_type}/{n_outputs}-out")
        self._n_outputs = n_outputs
        self._match: AttentionMatch | None = None
        # (mask, filter value, form): form "raw" = [B,L] 0/1, "lengths" = mask_index key lengths
        self._padding: tuple[ir.Value, float, str] | None = None
        # extra ops to emit before the op (bias add, packed projection): op -> [q, k, v]
        self._pre: Callable[..., Any] | None = None

    def pattern(self, op, x):
        return getattr(op, self.op_type)(
            x,
            _domain=MS,
            _allow_other_inputs=True,
            _allow_other_attributes=True,
            _outputs=self._n_outputs,
        )

    # onnxscript calls check with the pattern variables by name
    def check(self, context, x, **_):  # type: ignore[override]
        result = pattern.MatchResult()
        node: ir.Node = context.root
        self._match, self._padding, self._pre = None, None, None
        used = [i for i, out in enumerate(node.outputs) if out.uses() or out.is_graph_output()]
        if len(node.outputs) < self._n_outputs or (self._n_outputs > 1 and used == [0]):
            return result.fail(OTHER_VARIANT, node)
        self._dtype = elem_type(x)
        if self._dtype not in _FLOATS:
            return result.fail(f"element type {self._dtype} is not fp16, bf16 or fp32", x)
        reason = self.normalise(node)
        if reason or self._match is None:
            return result.fail(reason or "not normalised", node)
        self._match.replaced = [node.name or node.op_type]
        self._match.output_name = node.outputs[0].name or ""
        self._match.n_outputs = self._n_outputs
        return result

    def normalise(self, node: ir.Node) -> str:
        raise NotImplementedError

    def rewrite(self, op, **_):
        m = self._match
        assert m is not None
        if self._pre is not None:
            m.q, m.k, m.v = self._pre(op)
        if self._padding is not None:
            mask, fill, form = self._padding
            if form == "raw":
                keep = op.Cast(
                    op.Unsqueeze(mask, op.Constant(value_ints=[1, 2])), to=ir.DataType.BOOL
                )
            else:  # key j attends iff j < mask_index[b]
                length = op.Squeeze(op.Shape(m.k, start=1, end=2), op.Constant(value_ints=[0]))
                keys = op.Range(op.Constant(value_int=0), length, op.Constant(value_int=1))
                ends = op.Cast(mask, to=ir.DataType.INT64)
                keep = op.Less(keys, op.Unsqueeze(ends, op.Constant(value_ints=[1, 2, 3])))
            # ORT adds mask_filter_value where a key is masked: the same additive mask
            zero = op.Constant(value=ir.tensor(0.0, dtype=self._dtype))
            # (finfo(float32).min, ORT's default in fp16 models, becomes the type's own min)
            assert self._dtype is not None
            fill = max(fill, float(np.finfo(self._dtype.numpy()).min))
            filt = op.Constant(value=ir.tensor(fill, dtype=self._dtype))
            m.masks = [op.Where(keep, zero, filt), *m.masks]
        return emit(op, m)


def _key_lengths_by_construction(value: ir.Value) -> bool:
    """``ReduceSum(mask [B,L], axes=[1], keepdims=0)`` or EmbedLayerNormalization's mask_index:
    one length per batch row, however the shapes are named."""
    node = value.producer()
    if node is None or node.domain not in ("", "ai.onnx", "com.microsoft"):
        return False
    if node.op_type == "EmbedLayerNormalization":
        return value is node.outputs[1] if len(node.outputs) > 1 else False
    if node.op_type != "ReduceSum" or rank(node.inputs[0]) != 2 or _attr(node, "keepdims", 1):
        return False
    axes = int_list(node.inputs[1]) if len(node.inputs) > 1 else _attr(node, "axes")
    return axes is not None and list(axes) in ([1], [-1])


def _padding_mask(node: ir.Node, value: ir.Value | None, x: ir.Value) -> tuple[str, tuple | None]:
    """The key padding forms of ``mask_index``: a raw 2-D mask [B,L] (1 attends), or 1-D key
    lengths [B] (keys at or after ``mask_index[b]`` are masked: what onnxruntime's optimizer
    builds with ``ReduceSum(attention_mask)`` or EmbedLayerNormalization). Returns (reason,
    (mask, filter value, form))."""
    if value is None:
        return "", None
    fill = float(_attr(node, "mask_filter_value", -10000.0))
    if rank(value) == 2:
        return "", (value, fill, "raw")
    if rank(value) == 1:
        if not (same_dim(dim(value, 0), dim(x, 0)) or _key_lengths_by_construction(value)):
            return (
                "a 1-D mask_index whose length is not provably the batch size (the [2*B] "
                "end/start form is not supported)",
                None,
            )
        return "", (value, fill, "lengths")
    if rank(value) is None:
        return "the mask_index input has an unknown shape", None
    return f"a {rank(value)}-D mask_index (only [B] key lengths or a [B,L] 0/1 mask)", None


class MultiHeadAttention(_ContribRule):
    op_type = "MultiHeadAttention"

    def normalise(self, node: ir.Node) -> str:
        q, k, v = (_input(node, i) for i in range(3))
        if q is None or k is None or v is None or rank(q) != 3 or rank(k) != 3 or rank(v) != 3:
            return "packed or 4-D key/value layouts are not supported"
        for i, what in ((8, "past_sequence_length"), (9, "cache_indirection")):
            if _input(node, i) is not None:
                return f"the {what} input is not supported"
        proj_bias = _input(node, 3)
        if proj_bias is not None:  # [Dq + Dk + Dv], added to Q, K and V before attention
            sizes = [int_dim(t, 2) for t in (q, k, v)]
            if None in sizes:
                return "the bias input needs known hidden sizes of Q, K and V"

            def add_bias(op, sizes=sizes):
                parts = op.Split(proj_bias, op.Constant(value_ints=sizes), axis=0, _outputs=3)
                return [op.Add(t, b) for t, b in zip((q, k, v), parts, strict=True)]

            self._pre = add_bias
        reason, self._padding = _padding_mask(node, _input(node, 4), q)
        if reason:
            return reason
        heads = int(_attr(node, "num_heads"))
        causal = bool(_attr(node, "unidirectional", 0))
        # onnxruntime aligns its causal mask differently once Sq != Skv: only the square case
        if causal and (_input(node, 6) is not None or not same_dim(dim(q, 1), dim(k, 1))):
            return "causal attention with a KV cache or with query and key lengths that differ"
        bias = _input(node, 5)
        scale = float(_attr(node, "scale", 0.0)) or None
        self._match = AttentionMatch(
            family=f"{FAMILY}/{self.op_type}",
            q=q,
            k=k,
            v=v,
            layout="3d",
            masks=[bias] if bias is not None else [],
            past_key=_input(node, 6),
            past_value=_input(node, 7),
            scale=scale,
            is_causal=causal,
            q_num_heads=heads,
            kv_num_heads=heads,
        )
        return ""


class PackedAttention(_ContribRule):
    """com.microsoft Attention: QKV = input @ weights + bias, split, then attention."""

    op_type = "Attention"

    def normalise(self, node: ir.Node) -> str:
        x, weights, bias = _input(node, 0), _input(node, 1), _input(node, 2)
        if x is None or rank(x) != 3 or weights is None or rank(weights) != 2:
            return "input must be [B,S,E] with 2-D weights"
        for i, what in ((4, "past"), (6, "past_sequence_length")):
            if _input(node, i) is not None:
                return f"the {what} input is not supported"
        if _used(node, 1):
            return "the present output is used"
        if _attr(node, "do_rotary", 0):
            return "do_rotary is not supported"
        reason, self._padding = _padding_mask(node, _input(node, 3), x)
        if reason:
            return reason
        heads = int(_attr(node, "num_heads"))
        sizes = _attr(node, "qkv_hidden_sizes")
        width = weights.shape[1] if weights.shape is not None else None
        if sizes is None:
            if not isinstance(width, int) or width % 3:
                return "the packed projection width is unknown"
            sizes = [width // 3] * 3
        sizes = [int(s) for s in sizes]

        def project(op):
            qkv = op.MatMul(x, weights)
            if bias is not None:
                qkv = op.Add(qkv, bias)
            return op.Split(qkv, op.Constant(value_ints=sizes), axis=-1, _outputs=3)

        self._pre = project
        attention_bias = _input(node, 5)
        self._match = AttentionMatch(
            family=f"{FAMILY}/{self.op_type}",
            q=x,
            k=x,
            v=x,
            layout="3d",
            masks=[attention_bias] if attention_bias is not None else [],
            scale=float(_attr(node, "scale", 0.0)) or None,
            is_causal=bool(_attr(node, "unidirectional", 0)),
            q_num_heads=heads,
            kv_num_heads=heads,
        )
        return ""


class GroupQueryAttention(_ContribRule):
    """GroupQueryAttention as onnxruntime-genai's model builder writes it: packed or separate
    Q/K/V, an optional KV cache (past/present, 4-D ``[B,Hkv,P,D]``), rotary embedding inside the
    op (``do_rotary``), ``local_window_size``, ``softcap``, and ``seqlens_k``.

    onnxruntime computes each batch row ``b`` with its own past length ``p_b``: 0 on the first
    prompt (``S == total_sequence_length``), else ``seqlens_k[b] + 1 - S``. It copies
    ``past[:p_b]`` into the present cache (``max(total_sequence_length, P)`` long, zeros after),
    writes the new keys at ``p_b`` (rotated at positions ``p_b + arange(S)``), and lets query
    ``s`` attend keys ``j <= p_b + s`` (and within the local window). Without a past that is
    causal attention with ``j <= seqlens_k[b]``. With a past the rewrite builds that same
    present cache in the graph (a gather of ``concat(past, new)``, so right-padded rows whose
    ``p_b < P`` come out as onnxruntime's) and runs the op on it with the per-row mask."""

    op_type = "GroupQueryAttention"

    def normalise(self, node: ir.Node) -> str:
        q, k, v = (_input(node, i) for i in range(3))
        past_key, past_value = _input(node, 3), _input(node, 4)
        heads, kv_heads = int(_attr(node, "num_heads")), int(_attr(node, "kv_num_heads"))
        if rank(q) != 3:
            return "the query input is not 3-D [B,S,hidden]"
        if (k is None) != (v is None):
            return "only one of key and value is given"
        if q is None:
            return "the query input is missing"
        hidden = int_dim(q, 2)
        head: int | None
        if k is None:  # packed [B,S,(Nq+2Nkv)*D]
            if hidden is None or hidden % (heads + 2 * kv_heads):
                return "the packed QKV width is not known as a multiple of the head count"
            head = hidden // (heads + 2 * kv_heads)
        else:
            if rank(k) != 3 or rank(v) != 3:
                return "key/value are not 3-D [B,S,hidden]"
            head = hidden // heads if hidden is not None and hidden % heads == 0 else None
        if _attr(node, "smooth_softmax", 0):
            return "smooth_softmax (an extra zero logit in every softmax) is not supported"
        for i, what in ((9, "position_ids"), (10, "attention_bias"), (11, "head_sink")):
            if _input(node, i) is not None:
                return f"the {what} input is not supported"
        if _attr(node, "qk_output", 0):
            return "the QK output (qk_output) is used"
        if (past_key is None) != (past_value is None):
            return "only one of past_key and past_value is given"
        if past_key is not None:
            if rank(past_key) != 4 or rank(past_value) != 4:
                return "the KV cache is not 4-D [B,Hkv,P,D]"
            if self._shared_buffer(node, past_key):
                return (
                    "past and present share one buffer (past_present_share_buffer): the cache "
                    "is a fixed-size buffer, not past + new keys"
                )
        elif _used(node, 1) or _used(node, 2):
            return "present outputs without a past input are not supported"
        self._seqlens = _input(node, 5)
        if self._seqlens is None:
            return "seqlens_k is missing"
        rotary = bool(_attr(node, "do_rotary", 0))
        cos, sin = _input(node, 7), _input(node, 8)
        if rotary and (cos is None or sin is None):
            return "do_rotary without cos_cache/sin_cache"
        window = int(_attr(node, "local_window_size", -1))
        if window == 0:
            return "local_window_size 0 (a window of no keys)"
        sizes = None
        if k is None:  # packed: head is known (checked above)
            assert head is not None
            sizes = [heads * head, kv_heads * head, kv_heads * head]
        interleaved = int(_attr(node, "rotary_interleaved", 0))

        def prepare(op, positions, q=q, k=k, v=v):
            if sizes is not None:
                q, k, v = op.Split(q, op.Constant(value_ints=sizes), axis=-1, _outputs=3)
            if rotary:
                q, k = (
                    op.RotaryEmbedding(
                        x, positions, cos, sin, _domain=MS, interleaved=interleaved, num_heads=n
                    )
                    for x, n in ((q, heads), (k, kv_heads))
                )
            return q, k, v

        self._pre = prepare
        self._kv_heads, self._head = kv_heads, head
        self._total = _input(node, 6)
        if self._total is None and past_key is not None:
            return "total_sequence_length is missing"
        self._match = AttentionMatch(
            family=f"{FAMILY}/{self.op_type}" + ("+past" if past_key is not None else ""),
            q=q,
            k=q if k is None else k,
            v=q if v is None else v,
            layout="3d",
            past_key=past_key,
            past_value=past_value,
            scale=float(_attr(node, "scale", 0.0)) or None,
            is_causal=True,
            q_num_heads=heads,
            kv_num_heads=kv_heads,
            softcap=float(_attr(node, "softcap", 0.0)),
            # onnxruntime's window of W keys ends at the query's own: W - 1 before it
            left_window_size=window - 1 if window > 0 else -1,
        )
        if rotary:
            self._match.family += "+rotary"
        if window > 0:
            self._match.family += "+window"
        return ""

    @staticmethod
    def _shared_buffer(node: ir.Node, past_key: ir.Value) -> bool:
        """genai's CUDA builds: present_key has the past buffer's own (maximum) length."""
        if len(node.outputs) < 2:
            return False
        past_len, present_len = dim(past_key, 2), dim(node.outputs[1], 2)
        return same_dim(past_len, present_len)

    def rewrite(self, op, **_):
        m = self._match
        assert m is not None and self._pre is not None
        if m.past_key is not None:
            return self._rewrite_with_past(op, m)
        m.q, m.k, m.v = self._pre(op, op.Constant(value_ints=[0]))
        # key j is valid for batch b iff j <= seqlens_k[b]: a bool [B,1,1,S]
        length = op.Squeeze(op.Shape(m.k, start=1, end=2), op.Constant(value_ints=[0]))
        keys = op.Range(op.Constant(value_int=0), length, op.Constant(value_int=1))
        last = op.Unsqueeze(
            op.Cast(self._seqlens, to=ir.DataType.INT64), op.Constant(value_ints=[1, 2, 3])
        )
        m.masks = [op.LessOrEqual(keys, last)]
        return emit(op, m)

    def _rewrite_with_past(self, op, m: AttentionMatch):
        """onnxruntime's per-row cache update and mask, in graph ops (see the class doc)."""
        assert self._pre is not None
        i64 = ir.DataType.INT64

        def ints(*values: int):
            return op.Constant(value_ints=list(values))

        def scalar(x):
            return op.Reshape(x, ints())

        zero, one = op.Constant(value_int=0), op.Constant(value_int=1)
        seqlens = op.Cast(self._seqlens, to=i64)  # [B]
        total = scalar(op.Cast(self._total, to=i64))
        s_len = scalar(op.Shape(m.q, start=1, end=2))
        p_len = scalar(op.Shape(m.past_key, start=2, end=3))
        first_prompt = op.Equal(s_len, total)
        row_past = op.Where(first_prompt, zero, op.Sub(op.Add(seqlens, one), s_len))  # p_b
        row_past2 = op.Unsqueeze(row_past, ints(1))  # [B,1]
        queries = op.Unsqueeze(op.Range(zero, s_len, one), ints(0))  # [1,S]
        positions = op.Add(row_past2, queries)  # [B,S]: p_b + s
        q, k, v = self._pre(op, positions)

        present_len = op.Max(total, p_len)
        keys = op.Unsqueeze(op.Range(zero, present_len, one), ints(0))  # [1,T]
        # present[b, :, j] = past[b, :, j] (j < p_b), new[b, :, j - p_b] (j < p_b + S), else 0
        source = op.Where(op.Less(keys, row_past2), keys, op.Sub(op.Add(keys, p_len), row_past2))
        last_source = op.Sub(op.Add(p_len, s_len), one)
        source = op.Max(op.Min(source, last_source), zero)
        written = op.Less(keys, op.Add(row_past2, s_len))  # [B,T]
        index = op.Unsqueeze(source, ints(1, 3))  # [B,1,T,1]
        keep = op.Unsqueeze(written, ints(1, 3))
        heads_kv = ints(0, 0, self._kv_heads, -1)

        def present(past, new):
            new4 = op.Transpose(op.Reshape(new, heads_kv), perm=[0, 2, 1, 3])  # [B,Hkv,S,D]
            cache = op.Concat(past, new4, axis=2)
            shape = op.Concat(
                op.Shape(cache, start=0, end=2),
                op.Reshape(present_len, ints(1)),
                op.Shape(cache, start=3, end=4),
                axis=0,
            )
            gathered = op.GatherElements(cache, op.Expand(index, shape), axis=2)
            return op.Where(keep, gathered, op.CastLike(op.Constant(value_float=0.0), cache))

        present_k, present_v = present(m.past_key, k), present(m.past_value, v)

        # (the hidden size spelled out: the op's shape inference needs it to type Y)
        width = self._kv_heads * self._head if self._head is not None else -1

        def flat(cache):  # [B,Hkv,T,D] -> [B,T,Hkv*D]
            return op.Reshape(op.Transpose(cache, perm=[0, 2, 1, 3]), ints(0, 0, width))

        # query s of row b attends keys j <= p_b + s (and j <= seqlens_k[b] on a padded prompt)
        own = op.Unsqueeze(op.Add(row_past2, queries), ints(1, 3))  # [B,1,S,1]
        last = op.Min(own, op.Unsqueeze(seqlens, ints(1, 2, 3)))
        flat_keys = op.Range(zero, present_len, one)  # [T]
        mask = op.LessOrEqual(flat_keys, last)
        if m.left_window_size >= 0:
            first = op.Sub(own, op.Constant(value_int=m.left_window_size))
            mask = op.And(mask, op.GreaterOrEqual(flat_keys, first))
        m.q, m.k, m.v = q, flat(present_k), flat(present_v)
        m.masks = [mask]
        m.past_key = m.past_value = None
        m.is_causal, m.left_window_size, m.n_outputs = False, -1, 1
        y = emit(op, m)
        return (y, present_k, present_v) if self._n_outputs == 3 else y


def find(node: ir.Node) -> ir.Node | None:
    """A com.microsoft attention node is its own instance."""
    return node if node.domain == MS and node.op_type in OP_TYPES else None


def diagnose(anchor: ir.Node, root: ir.Node) -> str:
    return ""  # the rules' own failure reasons say it


rules = [
    MultiHeadAttention.rule(3),
    MultiHeadAttention.rule(1),
    PackedAttention.rule(1),
    GroupQueryAttention.rule(3),
    GroupQueryAttention.rule(1),
]
