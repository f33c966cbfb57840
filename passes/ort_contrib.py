"""Family ``ort-contrib``: onnxruntime's fused ``com.microsoft`` attention nodes, as its
transformers optimizer and onnxscript's ``ort_fusions`` write them: ``MultiHeadAttention``,
``Attention`` (packed input projection) and ``GroupQueryAttention`` (prompt form)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import onnx_ir as ir
from onnxscript.rewriter import pattern

from ._values import dim, elem_type, int_dim, rank, same_dim
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
        self._padding: tuple[ir.Value, float] | None = None  # (mask [B,L] 0/1, filter value)
        # extra ops to emit before the op (bias add, packed projection): op -> [q, k, v]
        self._pre: Callable[[Any], Any] | None = None

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
            mask, fill = self._padding
            # ORT adds mask_filter_value where the key padding mask is 0: the same additive mask
            keep = op.Cast(op.Unsqueeze(mask, op.Constant(value_ints=[1, 2])), to=ir.DataType.BOOL)
            zero = op.Constant(value=ir.tensor(0.0, dtype=self._dtype))
            filt = op.Constant(value=ir.tensor(fill, dtype=self._dtype))
            m.masks = [op.Where(keep, zero, filt), *m.masks]
        return emit(op, m)


def _padding_mask(node: ir.Node, value: ir.Value | None) -> tuple[str, tuple | None]:
    """A raw 2-D key padding mask [B,L] (1 attends) is supported; other mask_index forms not."""
    if value is None:
        return "", None
    if rank(value) != 2:
        return f"mask form of rank {rank(value)} (only a raw [B,L] 0/1 mask is supported)", None
    return "", (value, float(_attr(node, "mask_filter_value", -10000.0)))


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
        reason, self._padding = _padding_mask(node, _input(node, 4))
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
        reason, self._padding = _padding_mask(node, _input(node, 3))
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
    """Prompt form only (no past): causal from position 0, keys past seqlens_k[b] masked."""

    op_type = "GroupQueryAttention"

    def normalise(self, node: ir.Node) -> str:
        q, k, v = (_input(node, i) for i in range(3))
        if q is None or k is None or v is None:
            return "packed QKV is not supported"
        if _input(node, 3) is not None or _input(node, 4) is not None:
            return "a KV cache (past_key/past_value) is not supported"
        if _attr(node, "do_rotary", 0) or _attr(node, "smooth_softmax", 0):
            return "do_rotary/smooth_softmax are not supported"
        if int(_attr(node, "local_window_size", -1)) != -1:
            return "local_window_size is not supported"
        if any(_input(node, i) is not None for i in range(9, 12)):
            return "position_ids/attention_bias/head_sink are not supported"
        if _used(node, 1) or _used(node, 2):
            return "the present outputs are used"
        self._seqlens = _input(node, 5)
        if self._seqlens is None:
            return "seqlens_k is missing"
        self._key = k
        self._match = AttentionMatch(
            family=f"{FAMILY}/{self.op_type}",
            q=q,
            k=k,
            v=v,
            layout="3d",
            scale=float(_attr(node, "scale", 0.0)) or None,
            is_causal=True,
            q_num_heads=int(_attr(node, "num_heads")),
            kv_num_heads=int(_attr(node, "kv_num_heads")),
            softcap=float(_attr(node, "softcap", 0.0)),
        )
        return ""

    def rewrite(self, op, **_):
        m = self._match
        assert m is not None
        # key j is valid for batch b iff j <= seqlens_k[b]: a bool mask [B,1,1,L]
        length = op.Squeeze(op.Shape(self._key, start=1, end=2), op.Constant(value_ints=[0]))
        keys = op.Range(op.Constant(value_int=0), length, op.Constant(value_int=1))
        last = op.Unsqueeze(
            op.Cast(self._seqlens, to=ir.DataType.INT64), op.Constant(value_ints=[1, 2, 3])
        )
        m.masks = [op.LessOrEqual(keys, last)]
        return emit(op, m)


def find(node: ir.Node) -> ir.Node | None:
    """A com.microsoft attention node is its own instance."""
    return node if node.domain == MS and node.op_type in OP_TYPES else None


def diagnose(anchor: ir.Node, root: ir.Node) -> str:
    return ""  # the rules' own failure reasons say it


rules = [
    MultiHeadAttention.rule(3),
    MultiHeadAttention.rule(1),
    PackedAttention.rule(1),
    GroupQueryAttention.rule(1),  # its present outputs must be unused
]
