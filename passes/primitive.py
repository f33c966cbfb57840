"""Family ``primitive``: attention written out of plain ops, as both torch exporters lower eager
attention and ``F.scaled_dot_product_attention`` (survey skeletons P1-P2, P4-P7, P9-P12, P14-P30,
P32, P34-P47):

    MatMul(Q', K'ᵀ) [Cast] [Mul|Div scale] [Cast] [softcap] [Add bias] [Add mask]
    -> Softmax(last axis) [Where(IsNaN(p), 0, p)] [Cast [Cast]] -> MatMul(., V)

where softcap is ``Mul(Tanh(Div(s, c) | Mul(s, 1/c)), c)`` (Gemma 2, ONNX Attention's function
body): the op's ``softcap`` caps the scaled scores before the mask is added, so only that order
matches.

with Q' = Q or Q·c, K'ᵀ = Kᵀ or Kᵀ·c, and Kᵀ written in one of five ways (``key_format``).
"""

from __future__ import annotations

import math

import onnx_ir as ir
from onnxscript.rewriter import pattern

from ._values import (
    dim,
    elem_type,
    eval_scalar,
    int_dim,
    int_list,
    rank,
    same_dim,
)
from .emit import emit
from .match import AttentionMatch
from .repeat_kv import strip_repeat_kv

FAMILY = "primitive"
_FLOATS = (ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.FLOAT)

# key_format -> (rank of Q/K/V, perm that turns the matched K into the op's K layout)
_KEY_FORMATS: dict[str, tuple[int, list[int] | None]] = {
    "BHSd": (4, None),  # Transpose(0,1,3,2) of [B,H,S,D]: HF eager, KV-cache concat
    "BSHd": (4, [0, 2, 1, 3]),  # Transpose(0,2,3,1) of [B,S,H,D]: head split fused with Kᵀ
    "BHSd-3d": (4, None),  # Reshape->Transpose(0,2,1)->Reshape round trip: dynamo's SDPA
    "NSd": (3, None),  # Transpose(0,2,1) of [B*H,S,D]: batched 3-D matmuls
    "SNd": (3, [1, 0, 2]),  # Transpose(1,2,0) of [S,B*H,D]: nn.MultiheadAttention (dynamo)
    "Kt": (0, None),  # anything else: the op gets Transpose(Kᵀ) (rank of Q decides)
}


def _softmax_axis(node: ir.Node) -> int:
    attr = node.attributes.get("axis")
    if attr is not None:
        return attr.as_int()
    graph = node.graph
    opset = graph.opset_imports.get("", 13) if graph is not None else 13
    return -1 if opset >= 13 else 1


class PrimitiveAttention(pattern.RewriteRuleClassBase):
    """Scores, scale, masks, softmax and the value product, from plain ONNX ops."""

    def __init__(self) -> None:
        super().__init__(FAMILY)
        self._match: AttentionMatch | None = None

    def pattern(
        self,
        op,
        q,
        k,
        v,
        q_scale,
        k_scale,
        s_scale,
        cap_in,
        cap_out,
        mask,
        bias,
        nan_fill,
        row_axes,
        neg_inf,
    ):
        any_shape = pattern.ANY_VALUE
        kt = pattern.OrValue(
            [
                op.Transpose(k, perm=[0, 1, 3, 2]),
                op.Transpose(k, perm=[0, 2, 3, 1]),
                op.Reshape(
                    op.Transpose(op.Reshape(k, any_shape, _outputs=["k_3d"]), perm=[0, 2, 1]),
                    any_shape,
                    _outputs=["kt_4d"],
                ),
                op.Transpose(k, perm=[0, 2, 1]),
                op.Transpose(k, perm=[1, 2, 0]),
                k,
            ],
            tag_var="key_format",
            tag_values=list(_KEY_FORMATS),
        )
        # TorchScript's SDPA lowering splits the scale as sqrt(scale) on Q and on Kᵀ.
        q_in = pattern.OrValue(
            [op.Mul(q, q_scale), op.Div(q, q_scale), q],
            tag_var="q_scaling",
            tag_values=["Mul", "Div", None],
        )
        kt_in = pattern.OrValue(
            [op.Mul(kt, k_scale), op.Div(kt, k_scale), kt],
            tag_var="k_scaling",
            tag_values=["Mul", "Div", None],
        )
        scores = op.MatMul(q_in, kt_in, _outputs=["qk"])
        # fp16 exports upcast the scores before the scale or the mask.
        scores = pattern.OrValue([op.Cast(scores, _outputs=["cast_a"]), scores])
        scores = pattern.OrValue(
            [op.Mul(scores, s_scale), op.Div(scores, s_scale), scores],
            tag_var="s_scaling",
            tag_values=["Mul", "Div", None],
        )
        scores = pattern.OrValue([op.Cast(scores, _outputs=["cast_b"]), scores])
        # softcap: c·tanh(s / c), before the mask (Gemma 2, ONNX Attention's function body)
        divided = pattern.OrValue(
            [op.Div(scores, cap_in), op.Mul(scores, cap_in)],
            tag_var="cap_scaling",
            tag_values=["Div", "Mul"],
        )
        scores = pattern.OrValue(
            [op.Mul(op.Tanh(divided), cap_out), scores],
            tag_var="softcapped",
            tag_values=[True, False],
        )
        # T5 adds its position bias and then the mask; everyone else at most a mask.
        scores = pattern.OrValue(
            [op.Add(op.Add(scores, bias), mask), op.Add(scores, mask), scores],
            tag_var="n_masks",
            tag_values=[2, 1, 0],
        )
        # ONNX Attention's function body casts the scores once more before Softmax.
        scores = pattern.OrValue([op.Cast(scores, _outputs=["cast_e"]), scores])
        probs = op.Softmax(scores, _outputs=["probs"])
        # ...and the probabilities right after it, before its guard.
        probs = pattern.OrValue([op.Cast(probs, _outputs=["cast_f"]), probs])
        # Guards that zero a fully masked row (the op's own rule): SDPA's lowering tests the
        # probabilities for NaN; ONNX Attention's function body tests the mask's row maximum.
        row_all_masked = op.Equal(op.ReduceMax(mask, row_axes), neg_inf)
        probs = pattern.OrValue(
            [
                op.Where(op.IsNaN(probs), nan_fill, probs),
                op.Where(row_all_masked, op.CastLike(nan_fill, probs), probs),
                probs,
            ],
            tag_var="guard",
            tag_values=["isnan", "all-masked", None],
        )
        # eager softmax(dtype=float32).to(dtype) leaves one or two Casts here.
        probs = pattern.OrValue(
            [
                op.Cast(op.Cast(probs, _outputs=["cast_c"]), _outputs=["cast_d"]),
                op.Cast(probs, _outputs=["cast_c"]),
                probs,
            ]
        )
        # fp16 TorchScript SDPA upcasts V too (a Cast that ``check`` looks through: V may come
        # from an enclosing graph, where the matcher takes only plain variables).
        return op.MatMul(probs, v)

    # onnxscript calls check with the pattern variables by name
    def check(self, context, q, k, v, key_format, n_masks, guard, probs, **b):  # type: ignore[override]
        result = pattern.MatchResult()
        self._match = None
        softmax = probs.producer()
        scores_rank = rank(softmax.inputs[0])
        axis = _softmax_axis(softmax)
        if scores_rank is None:
            return result.fail("rank of the attention scores is unknown", softmax)
        if axis not in (-1, scores_rank - 1):
            return result.fail(f"softmax over axis {axis}, not the key axis", softmax)

        v, cast_v = _through_upcast(v, elem_type(q))
        want_rank, key_perm = _KEY_FORMATS[key_format]
        if key_format == "Kt":
            want_rank = rank(q) or 0
            key_perm = [0, 2, 1] if want_rank == 3 else [0, 1, 3, 2]
        extra_nodes: list[ir.Node] = []
        if key_format == "BHSd-3d" and rank(k) == 5:  # the repeat_kv Expand feeds the round trip
            rep_k = strip_repeat_kv(k)
            if rep_k is None or not _round_trip_ok(rep_k.base, b["k_3d"], b["kt_4d"], rep_k.n_rep):
                return result.fail("K is a rank-5 tensor that is not a provable repeat_kv", k)
            rep_v = strip_repeat_kv(v)
            if rep_v is None or rep_v.n_rep != rep_k.n_rep:
                return result.fail("K is repeated for GQA but V is not repeated alike", v)
            k, v = rep_k.base, rep_v.base
            extra_nodes += rep_k.nodes + rep_v.nodes
        elif key_format == "BHSd-3d" and not _round_trip_ok(k, b["k_3d"], b["kt_4d"]):
            return result.fail("the 3-D transpose of K does not round-trip to [B,H,D,S]", k)
        elif key_perm is None and want_rank == 4:
            rep_k, rep_v = strip_repeat_kv(k), strip_repeat_kv(v)
            if rep_k and rep_v and rep_k.n_rep == rep_v.n_rep:
                k, v = rep_k.base, rep_v.base
                extra_nodes += rep_k.nodes + rep_v.nodes
        for name, value in (("Q", q), ("K", k), ("V", v)):
            if rank(value) != want_rank:
                return result.fail(
                    f"{name} ({value.name}) has rank {rank(value)}, expected {want_rank} for "
                    f"key layout {key_format}",
                    value,
                )
        q_type = elem_type(q)
        if q_type not in _FLOATS or elem_type(k) != q_type or elem_type(v) != q_type:
            return result.fail("Q, K and V must share one float element type", q)
        # The casts may only move the score path to float32 and back to Q's type.
        for cast_name in ("cast_a", "cast_b", "cast_c", "cast_d", "cast_e", "cast_f"):
            cast = b.get(cast_name)
            if cast is not None and elem_type(cast) not in (q_type, ir.DataType.FLOAT):
                return result.fail(f"a Cast to {elem_type(cast)} on the score path", cast)

        geometry = _check_geometry(q, k, v, key_perm)
        if geometry:
            return result.fail(geometry, q)
        output_cast = None
        if cast_v is not None:
            output_cast = ir.DataType.FLOAT
            if len(cast_v.outputs[0].uses()) == 1:
                extra_nodes.append(cast_v)

        scale = 1.0
        for tag, var in (
            ("q_scaling", "q_scale"),
            ("k_scaling", "k_scale"),
            ("s_scaling", "s_scale"),
        ):
            op_kind = b.get(tag)
            if op_kind is None:
                continue
            factor = eval_scalar(b.get(var))
            if factor is None or not math.isfinite(factor) or factor == 0:
                return result.fail(f"the {var.replace('_', ' ')} is not a constant scalar", b[var])
            scale *= factor if op_kind == "Mul" else 1.0 / factor

        softcap = 0.0
        if b.get("softcapped"):
            cap = eval_scalar(b.get("cap_out"))
            cap_in = eval_scalar(b.get("cap_in"))
            if cap is None or cap_in is None or not math.isfinite(cap) or cap <= 0:
                return result.fail("the softcap is not a positive constant scalar", probs)
            inverse = cap_in if b.get("cap_scaling") == "Mul" else 1.0 / cap_in
            if not math.isclose(inverse * cap, 1.0, rel_tol=1e-6):
                return result.fail(
                    f"the softcap divides by {1.0 / inverse:g} but multiplies by {cap:g} (the "
                    "op's softcap is c·tanh(s / c))",
                    probs,
                )
            softcap = cap

        if guard and eval_scalar(b.get("nan_fill")) != 0.0:
            return result.fail("the guard after Softmax does not write 0", probs)
        if guard == "all-masked":
            axes = int_list(b.get("row_axes"))
            if n_masks != 1 or axes not in ([-1], [scores_rank - 1]):
                return result.fail("the all-masked-row guard does not test the added mask", probs)
            if eval_scalar(b.get("neg_inf")) != -math.inf:
                return result.fail("the all-masked-row guard does not test for -inf", probs)

        masks = [b["bias"], b["mask"]][2 - n_masks :]
        unsqueeze = None
        qk = b["qk"]
        for mask in masks:
            mask_rank = rank(mask)
            if elem_type(mask) not in _FLOATS:
                return result.fail(f"mask {mask.name} is not a float tensor", mask)
            if mask_rank is None or not _broadcasts_into(mask, qk):
                return result.fail(f"mask {mask.name} does not broadcast to the scores", mask)
            if want_rank == 3 and mask_rank == 3:
                unsqueeze = [1]  # [N,Sq,Skv] -> [N,1,Sq,Skv] for the op's one head

        y = context.output_values[0]
        self._match = AttentionMatch(
            family=f"{FAMILY}/{key_format}" + ("+softcap" if softcap else ""),
            q=q,
            k=k,
            v=v,
            layout="3d" if want_rank == 3 else "4d",
            masks=masks,
            scale=scale,
            q_num_heads=1 if want_rank == 3 else None,
            kv_num_heads=1 if want_rank == 3 else None,
            key_perm=key_perm,
            mask_unsqueeze=unsqueeze,
            output_cast=output_cast,
            softcap=softcap,
            replaced=[n.name or n.op_type for n in [*context.nodes, *extra_nodes]],
            output_name=y.name or "",
        )
        return result

    def rewrite(self, op, **_):
        assert self._match is not None
        return emit(op, self._match)


def _through_upcast(v: ir.Value, q_type: ir.DataType | None) -> tuple[ir.Value, ir.Node | None]:
    """(V before its Cast, the Cast) when V is a half-precision tensor of Q's type cast to
    float32; else (V, None)."""
    node = v.producer()
    if node is None or node.op_type != "Cast" or node.domain not in ("", "ai.onnx"):
        return v, None
    src = node.inputs[0]
    if src is None or elem_type(v) != ir.DataType.FLOAT or q_type == ir.DataType.FLOAT:
        return v, None
    return (src, node) if elem_type(src) == q_type else (v, None)


def _check_geometry(q: ir.Value, k: ir.Value, v: ir.Value, key_perm: list[int] | None) -> str:
    """'' when Q [B,H,S,D], K [B,Hk,Skv,D] (after ``key_perm``) and V [B,Hk,Skv,Dv] fit the
    op; otherwise why not. Unknown dims pass: the original MatMuls constrain them already."""
    if rank(q) == 3:  # [N,S,D]: one head per batch entry
        return ""
    kd = [dim(k, i) for i in (key_perm or [0, 1, 2, 3])]
    hq, hk, hv = int_dim(q, 1), kd[1], int_dim(v, 1)
    if isinstance(hk, int) and hq is not None and (hk == 0 or hq % hk):
        return f"query heads {hq} are not a multiple of key heads {hk}"
    if isinstance(hk, int) and hv is not None and hk != hv:
        return f"key heads {hk} differ from value heads {hv}"
    bq, bk = dim(q, 0), kd[0]
    if isinstance(bq, int) and isinstance(bk, int) and bq != bk:
        return f"Q batch {bq} and K batch {bk} differ (broadcast batch)"
    return ""


def _broadcasts_into(mask: ir.Value, scores: ir.Value) -> bool:
    """The mask broadcasts to the scores' shape without enlarging it (numpy rules, right
    aligned); dims unknown on either side pass where the other side is 1 or unknown."""
    m_rank, s_rank = rank(mask), rank(scores)
    if m_rank is None or s_rank is None or m_rank > s_rank:
        return False
    for axis in range(1, m_rank + 1):
        m, s = dim(mask, -axis), dim(scores, -axis)
        if isinstance(m, int) and m != 1 and isinstance(s, int) and m != s:
            return False
    return True


def _round_trip_ok(k: ir.Value, k_3d: ir.Value, kt_4d: ir.Value, n_rep: int = 1) -> bool:
    """[B,H,S,D] -> [B*H,S,D] -> [B*H,D,S] -> [B,H,D,S], checked on the shapes we know
    (with ``n_rep``, K is [B,H/n_rep,S,D] and the 3-D reshape also repeats its heads)."""
    if rank(k_3d) != 3 or rank(kt_4d) != 4:
        return False
    head_dim = dim(k, 3)
    if not (same_dim(dim(k_3d, 2), head_dim) and same_dim(dim(kt_4d, 2), head_dim)):
        return False
    heads = int_dim(k, 1)
    if n_rep == 1 and not same_dim(dim(kt_4d, 1), dim(k, 1)):
        return False
    if n_rep > 1 and (heads is None or int_dim(kt_4d, 1) != heads * n_rep):
        return False
    # the last reshape restores S, or B, and the rest follows from the element count
    reshape = kt_4d.producer()
    shape = int_list(reshape.inputs[1]) if reshape is not None else None
    restores_seq = same_dim(dim(kt_4d, 3), dim(k, 2)) or (shape is not None and shape[3] == -1)
    return restores_seq or same_dim(dim(kt_4d, 0), dim(k, 0))


_PROB_PATH = ("Where", "IsNaN", "Cast")  # between Softmax and the value MatMul


def _value_matmul(softmax: ir.Node) -> tuple[ir.Node | None, bool]:
    """The MatMul that multiplies these probabilities with V, and whether the probabilities
    (or the tensors between) are consumed by anything else."""
    value = softmax.outputs[0]
    shared = False
    frontier = [value]
    found = None
    seen: set[int] = set()
    while frontier:
        v = frontier.pop()
        if v.is_graph_output():
            shared = True
        for user, index in v.uses():
            if id(user) in seen:
                continue
            seen.add(id(user))
            if user.op_type == "MatMul" and index == 0 and found is None:
                found = user
            elif user.op_type == "CastLike" and index == 1:
                continue  # reads only the element type
            elif user.op_type in _PROB_PATH:
                frontier.extend(user.outputs)
            else:
                shared = True
    return found, shared


_SCORE_PATH = ("Add", "Mul", "Div", "Cast", "Sub", "Where", "Tanh")


def _score_path(softmax: ir.Node) -> list[str] | None:
    """The op types from Softmax's input back to the score MatMul (excluded), or None when
    the scores do not come from a MatMul through the score-path ops."""
    v = softmax.inputs[0]
    path: list[str] = []
    for _ in range(10):
        node = v.producer() if v is not None else None
        if node is None:
            return None
        if node.op_type == "MatMul":
            return path
        if node.op_type not in _SCORE_PATH:
            return None
        path.append(node.op_type)
        v = node.inputs[0]
    return None


def _scores_from_matmul(softmax: ir.Node) -> bool:
    """Softmax over something computed from a MatMul through the score-path ops."""
    return _score_path(softmax) is not None


def find(node: ir.Node) -> ir.Node | None:
    """A Softmax between two MatMuls anchors an instance; its root is the value MatMul."""
    if node.op_type != "Softmax" or node.domain not in ("", "ai.onnx"):
        return None
    root, _ = _value_matmul(node)
    return root if root is not None and _scores_from_matmul(node) else None


def diagnose(anchor: ir.Node, root: ir.Node) -> str:
    _, shared = _value_matmul(anchor)
    if shared:
        return "the attention probabilities are consumed elsewhere (e.g. returned weights)"
    path = _score_path(anchor) or []
    if "Tanh" in path and "Add" in path[path.index("Tanh") :]:
        return (
            "the scores are softcapped (tanh) after a mask or bias is added; the op caps them "
            "before the mask, so masked keys would get weight"
        )
    return ""


rules = [PrimitiveAttention.rule()]
