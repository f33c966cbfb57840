"""GQA's ``repeat_kv`` (``Unsqueeze(2) -> Expand -> Reshape``), absorbed into the op's
``kv_num_heads``: query head h reads kv head h // n_rep, which is what repeat_kv builds."""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from ._values import dim, int_dim, int_list, rank, same_dim


@dataclass
class Repeated:
    base: ir.Value  # [B,Hkv,S,D]
    n_rep: int
    nodes: list[ir.Node]


def strip_repeat_kv(value: ir.Value) -> Repeated | None:
    """If ``value`` is repeat_kv(x) as [B,Hkv*n,S,D] (Reshape of the Expand) or as the rank-5
    Expand [B,Hkv,n,S,D] itself, return x and n; None when that is not provable."""
    nodes: list[ir.Node] = []
    expanded: ir.Value | None = value
    node = value.producer()
    if node is not None and node.op_type == "Reshape" and rank(value) == 4:
        expanded = node.inputs[0]
        nodes.append(node)
    if expanded is None:
        return None
    expand = expanded.producer()
    if expand is None or expand.op_type != "Expand" or rank(expanded) != 5:
        return None
    unsq = expand.inputs[0].producer() if expand.inputs[0] is not None else None
    if unsq is None or unsq.op_type != "Unsqueeze":
        return None
    axes = int_list(unsq.inputs[1]) if len(unsq.inputs) > 1 else None
    if axes is None and "axes" in unsq.attributes:
        axes = list(unsq.attributes["axes"].as_ints())
    base = unsq.inputs[0]
    if base is None or axes != [2] or rank(base) != 4:
        return None
    n_rep = int_dim(expanded, 2)
    if n_rep is None:
        return None
    # Expand only repeats the new axis: the others keep the base's dims
    for e_axis, b_axis in ((1, 1), (3, 2), (4, 3)):
        if not same_dim(dim(expanded, e_axis), dim(base, b_axis)):
            return None
    if nodes:  # and the Reshape merges (Hkv, n) into one head axis
        hk = int_dim(base, 1)
        if hk is None or int_dim(value, 1) != hk * n_rep:
            return None
        if not (same_dim(dim(value, 2), dim(base, 2)) and same_dim(dim(value, 3), dim(base, 3))):
            return None
    return Repeated(base, n_rep, [*nodes, expand, unsq])
