"""Refinement ``3d``: absorb the head split in front of a 4-D PasaAttention
(``[B,S,H*D] -Reshape-> [B,S,H,D] -Transpose(0,2,1,3)->``, for Q, K and V) and the head merge
after it (``Transpose(0,2,1,3) -> Reshape [B,S,H*Dv]``) into the op's 3-D layout, where the
shapes prove it exact. The rewritten graph then moves no data around the op."""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import pattern

from pasa_onnx.passes._values import dim, int_dim, int_list, rank, same_dim
from pasa_onnx.passes.emit import emit_refined
from pasa_onnx.runtime import DOMAIN

TAG = "3d"


def _leading_kept(src: ir.Value, dst: ir.Value, shape: ir.Value) -> bool:
    """The reshape keeps dims 0 and 1 (B, S): provable from symbolic dims or a 0-copy shape."""
    if same_dim(dim(src, 0), dim(dst, 0)) and same_dim(dim(src, 1), dim(dst, 1)):
        return True
    target = int_list(shape)
    if target is None:
        return False
    first = target[0] == 0 or same_dim(dim(src, 0), target[0])
    second = target[1] == 0 or same_dim(dim(src, 1), target[1]) or (target[1] == -1 and first)
    return first and second


def _split_heads(x: ir.Value, x4: ir.Value, shape: ir.Value) -> int | None:
    """H when Reshape(x [B,S,H*D], shape) = x4 [B,S,H,D] exactly, else None."""
    if rank(x) != 3 or rank(x4) != 4:
        return None
    h, d, hidden = int_dim(x4, 2), int_dim(x4, 3), int_dim(x, 2)
    if h is None or d is None or hidden != h * d:
        return None
    return h if _leading_kept(x, x4, shape) else None


class HeadLayout(pattern.RewriteRuleClassBase):
    """PasaAttention(split(Q), split(K), split(V)) -> merge  =>  3-D PasaAttention."""

    def __init__(self) -> None:
        super().__init__(f"refine/{TAG}")
        self._inputs: list = []
        self._attrs: dict = {}

    def pattern(self, op, xq, xk, xv, sq, sk, sv, so):
        def split(x, s, name):
            return op.Transpose(op.Reshape(x, s, _outputs=[name]), perm=[0, 2, 1, 3])

        y = op.PasaAttention(
            split(xq, sq, "q4"),
            split(xk, sk, "k4"),
            split(xv, sv, "v4"),
            _domain=DOMAIN,
            _allow_other_inputs=True,
            _allow_other_attributes=True,
            _outputs=["y"],
        )
        return op.Reshape(op.Transpose(y, perm=[0, 2, 1, 3], _outputs=["merged"]), so)

    def check(self, context, xq, xk, xv, sq, sk, sv, so, q4, k4, v4, y, merged, **_):
        result = pattern.MatchResult()
        hq, hk, hv = _split_heads(xq, q4, sq), _split_heads(xk, k4, sk), _split_heads(xv, v4, sv)
        if hq is None or hk is None or hv is None or hk != hv:
            return result.fail("the head split of Q/K/V is not provably [B,S,H*D]->[B,S,H,D]")
        out = context.output_values[0]
        dv = int_dim(v4, 3)
        if rank(out) != 3 or dv is None or int_dim(out, 2) != hq * dv:
            return result.fail("the output reshape does not merge the heads into [B,S,H*Dv]")
        if not _leading_kept(merged, out, so):
            return result.fail("the output reshape does not keep [B,S]")
        node: ir.Node = y.producer()
        self._node = node
        self._inputs = [xq, xk, xv, *node.inputs[3:]]
        self._attrs = {"q_num_heads": hq, "kv_num_heads": hk}
        self._absorbed = [n for n in context.nodes if n is not node]
        return result

    def rewrite(self, op, **_):
        return emit_refined(op, self._node, list(self._inputs), self._attrs, TAG, self._absorbed)


rules = [HeadLayout.rule()]
