"""The one description every pattern family normalises its match into.

A family's ``check`` fills an :class:`AttentionMatch`; :func:`pasa_onnx.passes.emit.emit`
turns it into the ``PasaAttention`` node. Fields follow the op's inputs and attributes (ONNX
``Attention`` semantics), plus the small adaptations the emitter inserts in front of the op.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_ir as ir

# The failure of a rule variant written for another output count: not a reason to report.
OTHER_VARIANT = "the node's used outputs belong to another variant of this rule"


@dataclass
class AttentionMatch:
    """Attention as the op will compute it. Q/K/V are the op's inputs unless an adaptation
    below says otherwise; ``layout`` is ``"4d"`` ([B,H,S,D]) or ``"3d"`` ([B,S,H*D])."""

    family: str  # pattern family and variant, e.g. "primitive/BSHd,qk-scale,mask"
    q: ir.Value
    k: ir.Value
    v: ir.Value
    layout: str = "4d"
    masks: list[ir.Value] = field(default_factory=list)  # additive (summed) or one bool mask
    past_key: ir.Value | None = None
    past_value: ir.Value | None = None
    nonpad_kv_seqlen: ir.Value | None = None
    scale: float | None = None  # None: the op's default 1/sqrt(D)
    is_causal: bool = False
    q_num_heads: int | None = None
    kv_num_heads: int | None = None
    softcap: float = 0.0
    left_window_size: int = -1  # keys before i + offset - this are masked (-1: unbounded)
    # Adaptations emitted in front of the op:
    key_perm: list[int] | None = None  # Transpose K with this perm first
    mask_unsqueeze: list[int] | None = None  # Unsqueeze the mask on these axes first
    output_cast: ir.DataType | None = None  # Cast Y to this type (fp16 exports upcasting V)
    n_outputs: int = 1  # 3 when present_key/present_value are produced
    replaced: list[str] = field(default_factory=list)  # original node names
    output_name: str = ""  # the original tensor that Y replaces (naming contract)
