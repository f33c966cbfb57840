"""The one place that builds ``ai.pasa::PasaAttention`` nodes from an :class:`AttentionMatch`."""

from __future__ import annotations

import onnx_ir as ir

from pasa_onnx.contract import (
    DOMAIN,
    EMITTED_KEY,
    INPUT_NAMES,
    OP_TYPE,
    OP_VERSION,
    PATTERN_KEY,
    REPLACED_KEY,
    UPCAST_KEY,
)

from . import masks
from ._values import elem_type, rank
from .match import AttentionMatch


def _mask_input(op, m: AttentionMatch) -> ir.Value | None:
    """Sum additive masks (T5 bias + padding), unsqueeze where the layout needs it, and cast to
    Q's element type (fp16 exports upcast the scores, so their masks are fp32)."""
    if not m.masks:
        return None
    mask = m.masks[0]
    for extra in m.masks[1:]:
        mask = op.Add(mask, extra)
    if m.mask_unsqueeze:
        mask = op.Unsqueeze(mask, op.Constant(value_ints=m.mask_unsqueeze))
    # (a mask the emitter built itself has no type yet and is already right)
    q_type, mask_type = elem_type(m.q), elem_type(m.masks[0])
    if mask_type not in (None, ir.DataType.BOOL) and q_type is not None and mask_type != q_type:
        mask = op.Cast(mask, to=q_type)
    if mask_type == ir.DataType.BOOL and q_type is not None and None in (rank(m.q), rank(m.k)):
        # onnxruntime's generic custom-op type inference gives every output the element type
        # of the last present input with an open type -- here the bool mask -- and the op's
        # own inference cannot correct it without Q/K ranks: Y would be typed bool and the
        # session would fail ("expected tensor(bool)"). The additive form (0 where True, -inf
        # where False) is the same mask and has Q's type.
        zero = op.Cast(op.Constant(value_float=0.0), to=q_type)
        minus_inf = op.Cast(op.Constant(value_float=float("-inf")), to=q_type)
        mask = op.Where(mask, zero, minus_inf)
    return mask


def emit(op, m: AttentionMatch):
    """Emit the op (and its small adaptations); returns Y, or (Y, present_key, present_value)."""
    masks.simplify(m)
    k = m.k
    if m.key_perm:
        k = op.Transpose(m.k, perm=m.key_perm)
        k.producer().metadata_props[EMITTED_KEY] = "1"
    given = {
        "Q": m.q,
        "K": k,
        "V": m.v,
        "attn_mask": _mask_input(op, m),
        "past_key": m.past_key,
        "past_value": m.past_value,
        "nonpad_kv_seqlen": m.nonpad_kv_seqlen,
    }
    inputs = [given[name] for name in INPUT_NAMES]  # the op's input order
    while inputs[-1] is None:
        inputs.pop()
    attrs: dict = {}
    if m.scale is not None:
        attrs["scale"] = float(m.scale)
    if m.is_causal:
        attrs["is_causal"] = 1
    unknown_rank_heads = rank(m.q) is None and m.q_num_heads and m.kv_num_heads
    if m.layout == "3d" or rank(m.q) == 3 or unknown_rank_heads:
        # a family that matches 3-D inputs always knows the head counts
        assert m.q_num_heads is not None and m.kv_num_heads is not None, m.family
        attrs["q_num_heads"] = int(m.q_num_heads)
        attrs["kv_num_heads"] = int(m.kv_num_heads)
    if m.softcap:
        attrs["softcap"] = float(m.softcap)
    if m.left_window_size >= 0:
        attrs["left_window_size"] = int(m.left_window_size)
    outputs = op.PasaAttention(
        *inputs, _domain=DOMAIN, _version=OP_VERSION, _outputs=m.n_outputs, **attrs
    )
    y = outputs[0] if m.n_outputs > 1 else outputs
    node = y.producer()
    node.name = f"{OP_TYPE}:{m.output_name}"
    node.metadata_props[PATTERN_KEY] = m.family
    node.metadata_props[REPLACED_KEY] = ",".join(m.replaced)
    if m.output_cast is not None:  # the original output was upcast: keep its type
        outputs = op.Cast(y, to=m.output_cast)
        outputs.producer().metadata_props[UPCAST_KEY] = node.name
    return outputs


def emit_refined(op, node: ir.Node, inputs: list, attrs: dict, tag: str, absorbed: list[ir.Node]):
    """Rebuild PasaAttention ``node`` with new inputs/attributes after a refinement pass
    absorbed ``absorbed`` nodes; its name and replaced-node record carry over."""
    merged = {name: attr.value for name, attr in node.attributes.items()}
    merged.update(attrs)
    while inputs and inputs[-1] is None:
        inputs.pop()
    y = op.PasaAttention(*inputs, _domain=DOMAIN, _version=OP_VERSION, **merged)
    new = y.producer()
    new.name = node.name
    old_pattern = node.metadata_props.get(PATTERN_KEY, "")
    new.metadata_props[PATTERN_KEY] = f"{old_pattern}+{tag}"
    originals = [n.name or n.op_type for n in absorbed if EMITTED_KEY not in n.metadata_props]
    replaced = [node.metadata_props.get(REPLACED_KEY, ""), *originals]
    new.metadata_props[REPLACED_KEY] = ",".join(r for r in replaced if r)
    return y
