"""Family ``onnx-attention``: the standard ONNX ``Attention`` node (opset 23+), which torch's
dynamo exporter writes for ``F.scaled_dot_product_attention`` at opset 23 (survey P3, P8, P13,
P31, P33). PasaAttention has its semantics, so inputs and attributes carry over; GQA's repeat_kv
in front of it is absorbed."""

from __future__ import annotations

import math

import onnx_ir as ir
from onnxscript.rewriter import pattern

from ._values import elem_type, rank
from .emit import emit
from .match import OTHER_VARIANT, AttentionMatch
from .repeat_kv import strip_repeat_kv

FAMILY = "onnx-attention"
_FLOATS = (ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.FLOAT)


class OnnxAttention(pattern.RewriteRuleClassBase):
    """``Attention(Q, K, V, [mask, past_key, past_value, nonpad_kv_seqlen])``."""

    def __init__(self, n_outputs: int) -> None:
        super().__init__(f"{FAMILY}/{n_outputs}-out")
        self._n_outputs = n_outputs
        self._match: AttentionMatch | None = None

    def pattern(self, op, q, k, v):
        return op.Attention(
            q,
            k,
            v,
            _allow_other_inputs=True,
            _allow_other_attributes=True,
            _outputs=self._n_outputs,
        )

    # onnxscript calls check with the pattern variables by name
    def check(self, context, q, k, v, **_):  # type: ignore[override]
        result = pattern.MatchResult()
        self._match = None
        node: ir.Node = context.root
        used = [i for i, out in enumerate(node.outputs) if out.uses() or out.is_graph_output()]
        if self._n_outputs == 3 and used == [0]:
            return result.fail(OTHER_VARIANT, node)
        if len(node.outputs) > 3 and node.outputs[3].uses():
            return result.fail("the QK matmul output (qk_matmul_output) is used", node)
        q_type = elem_type(q)
        if q_type not in _FLOATS:
            return result.fail(f"element type {q_type} is not fp16, bf16 or fp32", q)
        extra = list(node.inputs[3:7]) + [None] * (7 - len(node.inputs))
        mask, past_key, past_value, nonpad = extra[:4]

        def attr(name: str):
            a = node.attributes.get(name)
            return a.value if a is not None else None

        extra_nodes: list[ir.Node] = []
        if rank(q) == 4 and past_key is None:
            rep_k, rep_v = strip_repeat_kv(k), strip_repeat_kv(v)
            if rep_k and rep_v and rep_k.n_rep == rep_v.n_rep:
                k, v = rep_k.base, rep_v.base
                extra_nodes = rep_k.nodes + rep_v.nodes
        scale = attr("scale")
        if scale is not None and not math.isfinite(float(scale)):
            return result.fail(f"scale {scale} is not finite (PasaAttention needs finite)", node)
        softcap = attr("softcap")
        if softcap is not None and not (math.isfinite(float(softcap)) and float(softcap) >= 0):
            return result.fail(f"softcap {softcap} is negative or not finite", node)
        self._match = AttentionMatch(
            family=FAMILY,
            q=q,
            k=k,
            v=v,
            layout="3d" if rank(q) == 3 else "4d",
            masks=[mask] if mask is not None else [],
            past_key=past_key,
            past_value=past_value,
            nonpad_kv_seqlen=nonpad,
            scale=float(scale) if scale is not None else None,
            is_causal=bool(attr("is_causal") or 0),
            q_num_heads=attr("q_num_heads"),
            kv_num_heads=attr("kv_num_heads"),
            softcap=float(attr("softcap") or 0.0),
            n_outputs=self._n_outputs,
            replaced=[n.name or n.op_type for n in [node, *extra_nodes]],
            output_name=node.outputs[0].name or "",
        )
        if self._match.layout == "3d" and not (
            self._match.q_num_heads and self._match.kv_num_heads
        ):
            return result.fail("3-D Attention without q_num_heads/kv_num_heads", node)
        return result

    def rewrite(self, op, **_):
        assert self._match is not None
        return emit(op, self._match)


def find(node: ir.Node) -> ir.Node | None:
    """An ONNX Attention node is its own instance."""
    return node if not node.domain and node.op_type == "Attention" else None


def diagnose(anchor: ir.Node, root: ir.Node) -> str:
    if len(root.outputs) > 3:
        qk = root.outputs[3]
        if qk.uses() or qk.is_graph_output():
            return "the QK matmul output (qk_matmul_output) is used"
    return ""


rules = [OnnxAttention.rule(3), OnnxAttention.rule(1)]
