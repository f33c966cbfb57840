"""Refinement ``3d``: absorb the head split in front of a 4-D PasaAttention
(``[B,S,H*D] -Reshape-> [B,S,H,D] -Transpose(0,2,1,3)->``, for Q, K and V) and the head merge
after it (``Transpose(0,2,1,3) -> Reshape [B,S,H*Dv]``) into the op's 3-D layout, where the
shapes prove it exact. The rewritten graph then moves no data around the op."""

from __future__ import annotations

import onnx_ir as ir
from onnxscript.rewriter import pattern

from pasa_onnx.contract import DOMAIN

from ._values import dim, int_dim, int_list, rank, same_dim
from .emit import emit_refined

TAG = "3d"


Entry = int | tuple[ir.Value, int] | None  # a constant, dim i of a tensor, or unknown


def _shape_entries(shape: ir.Value) -> list[Entry] | None:
    """The target of a Reshape, entry by entry, as far as it is known ahead: constants, and
    ``Unsqueeze(Gather(Shape(t), i))`` / ``Shape(t)[a:b]`` pieces of a Concat (how TorchScript
    writes ``x.size()[:-1] + (H, D)``)."""
    known = int_list(shape)
    if known is not None:
        return list(known)
    node = shape.producer()
    if node is None or node.op_type != "Concat":
        return None
    entries: list[Entry] = []
    for piece in node.inputs:
        if piece is None:
            return None
        ints = int_list(piece)
        if ints is not None:
            entries += ints
            continue
        entries += _dims_of_piece(piece) or [None] * (int_dim(piece, 0) or 0) or [None]
    return entries


def _producer(value: ir.Value | None) -> ir.Node | None:
    return value.producer() if value is not None else None


def _dims_of_piece(piece: ir.Value) -> list[Entry] | None:
    node = piece.producer()
    if node is not None and node.op_type == "Unsqueeze":
        node = _producer(node.inputs[0])
    if node is None:
        return None
    if node.op_type == "Shape":
        t = node.inputs[0]
        start = node.attributes.get("start")
        end = node.attributes.get("end")
        r = rank(t) if t is not None else None
        if t is None or r is None:
            return None
        lo = start.as_int() if start is not None else 0
        hi = end.as_int() if end is not None else r
        return [(t, i) for i in range(r)[lo:hi]]
    if node.op_type == "Slice" and len(node.inputs) in (3, 4):
        src = _producer(node.inputs[0])
        starts, ends = int_list(node.inputs[1]), int_list(node.inputs[2])
        if src is None or src.op_type != "Shape" or src.attributes or not starts or not ends:
            return None
        t = src.inputs[0]
        r = rank(t) if t is not None else None
        if t is None or r is None:
            return None
        return [(t, i) for i in range(r)[starts[0] : ends[0]]]
    if node.op_type == "Gather":
        src = _producer(node.inputs[0])
        idx = int_list(node.inputs[1])
        if src is None or src.op_type != "Shape" or idx is None or len(idx) != 1:
            return None
        t = src.inputs[0]
        if t is None:
            return None
        offset = src.attributes.get("start")
        base = offset.as_int() if offset is not None else 0
        return [(t, base + idx[0])]
    return None


def _same(src: ir.Value, axis: int, entry: Entry, dst: ir.Value) -> bool:
    """Entry ``axis`` of a reshape of ``src`` provably keeps ``src``'s dim ``axis``."""
    if same_dim(dim(src, axis), dim(dst, axis)):
        return True
    if entry == 0:  # Reshape copies the input dim
        return True
    if isinstance(entry, tuple):
        t, i = entry
        return (t is src and i == axis) or same_dim(dim(t, i), dim(src, axis))
    return isinstance(entry, int) and entry > 0 and same_dim(dim(src, axis), entry)


def _leading_kept(src: ir.Value, dst: ir.Value, shape: ir.Value) -> bool:
    """The reshape keeps dims 0 and 1 (B, S)."""
    entries = _shape_entries(shape) or [None, None]
    first = _same(src, 0, entries[0], dst)
    second = _same(src, 1, entries[1], dst) or (entries[1] == -1 and first)
    return first and second


def _split_heads(x: ir.Value, x4: ir.Value, shape: ir.Value) -> int | None:
    """H when Reshape(x [B,S,H*D], shape) = x4 [B,S,H,D] exactly, else None."""
    if rank(x) != 3 or rank(x4) != 4:
        return None
    entries = _shape_entries(shape) or []
    h = int_dim(x4, 2) or (
        entries[2] if len(entries) == 4 and isinstance(entries[2], int) else None
    )
    d = int_dim(x4, 3) or (
        entries[3] if len(entries) == 4 and isinstance(entries[3], int) else None
    )
    hidden = int_dim(x, 2)
    if h == -1 and d and hidden and hidden % d == 0:  # (..., -1, D): H follows
        h = hidden // d
    if not h or not d or h < 0 or d < 0 or hidden != h * d:
        return None
    return h if _leading_kept(x, x4, shape) else None


def _merged_width(out: ir.Value, shape: ir.Value) -> int | None:
    width = int_dim(out, 2)
    if width is None:
        entries = _shape_entries(shape) or []
        width = entries[2] if len(entries) == 3 and isinstance(entries[2], int) else None
    return width


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

    # onnxscript calls check with the pattern variables by name
    def check(self, context, xq, xk, xv, sq, sk, sv, so, q4, k4, v4, y, merged, **_):  # type: ignore[override]
        result = pattern.MatchResult()
        hq, hk, hv = _split_heads(xq, q4, sq), _split_heads(xk, k4, sk), _split_heads(xv, v4, sv)
        if hq is None or hk is None or hv is None or hk != hv:
            return result.fail("the head split of Q/K/V is not provably [B,S,H*D]->[B,S,H,D]")
        out = context.output_values[0]
        xv_width = int_dim(xv, 2)
        dv = int_dim(v4, 3) or (xv_width // hv if xv_width else None)
        width = _merged_width(out, so)  # -1: the rest, H*Dv once [B,S] are kept (below)
        if rank(out) != 3 or dv is None or width not in (hq * dv, -1):
            return result.fail("the output reshape does not merge the heads into [B,S,H*Dv]")
        # merged is [B,S,H,Dv] with Q's B and S, which xq carries as its dims 0 and 1
        if not _leading_kept(xq, out, so):
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
