"""The ``ai.pasa::PasaAttention`` (version 1) operator schema, for ``onnx.checker`` and
``onnx.shape_inference``. :func:`register_schema` is called on import of :mod:`pasa_onnx`.

Inputs, outputs and the standard attributes follow ONNX ``Attention`` (opset 23-25); ``precision``,
``alpha``, ``block_q`` and ``block_kv`` are PASA's own (docs/op-reference.md).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, TypeProto, helper
from onnx.defs import OpSchema

from pasa_onnx.runtime import DOMAIN, OP_TYPE, OP_VERSION

_FLOATS = ["tensor(float16)", "tensor(bfloat16)", "tensor(float)"]
_A = OpSchema.AttrType


def _attr(name: str, kind, doc: str) -> OpSchema.Attribute:
    return OpSchema.Attribute(name, kind, doc, required=False)


def _dim_of(shape, i):
    d = shape.dim[i]
    if d.HasField("dim_value"):
        return d.dim_value
    return d.dim_param or None


def _times(x, f):
    return x * f if isinstance(x, int) else None


def _div(x, f):
    return x // f if isinstance(x, int) and f else None


def _plus(a, b):
    return a + b if isinstance(a, int) and isinstance(b, int) else None


def _infer(ctx) -> None:
    """Output element types from Q; shapes from the layouts (symbolic dims pass through)."""
    q_type = ctx.get_input_type(0)
    elem = q_type.tensor_type.elem_type
    if elem == TensorProto.UNDEFINED:
        return

    def attr_int(name):
        try:
            return helper.get_attribute_value(ctx.get_attribute(name))
        except Exception:  # absent attribute
            return None

    def shape_of(idx):
        if idx >= ctx.get_num_inputs() or not ctx.has_input(idx):
            return None
        t = ctx.get_input_type(idx)
        return t.tensor_type.shape if t.tensor_type.HasField("shape") else None

    q, k, v, past = shape_of(0), shape_of(1), shape_of(2), shape_of(4)
    y = pk = pv = None
    if q is not None and k is not None and v is not None:
        rank = len(q.dim)
        past_len = _dim_of(past, 2) if past is not None and len(past.dim) == 4 else 0
        if rank == 4 and len(k.dim) == 4 and len(v.dim) == 4:
            total = _plus(past_len, _dim_of(k, 2)) if past is not None else _dim_of(k, 2)
            y = [_dim_of(q, 0), _dim_of(q, 1), _dim_of(q, 2), _dim_of(v, 3)]
            pk = [_dim_of(q, 0), _dim_of(k, 1), total, _dim_of(k, 3)]
            pv = [_dim_of(q, 0), _dim_of(v, 1), total, _dim_of(v, 3)]
        elif rank == 3 and len(k.dim) == 3 and len(v.dim) == 3:
            hq, hkv = attr_int("q_num_heads"), attr_int("kv_num_heads")
            if hq and hkv:
                total = _plus(past_len, _dim_of(k, 1)) if past is not None else _dim_of(k, 1)
                y = [_dim_of(q, 0), _dim_of(q, 1), _times(_div(_dim_of(v, 2), hkv), hq)]
                pk = [_dim_of(q, 0), hkv, total, _div(_dim_of(k, 2), hkv)]
                pv = [_dim_of(q, 0), hkv, total, _div(_dim_of(v, 2), hkv)]
    for idx, shape in enumerate([y, pk, pv]):
        if idx >= ctx.get_num_outputs() or not ctx.has_output(idx):
            continue
        out = TypeProto()
        out.tensor_type.elem_type = elem
        if shape is not None:
            for d in shape:
                dim = out.tensor_type.shape.dim.add()
                if isinstance(d, int):
                    dim.dim_value = d
                elif isinstance(d, str):
                    dim.dim_param = d
        ctx.set_output_type(idx, out)


def make_schema() -> OpSchema:
    FP = OpSchema.FormalParameter
    opt = OpSchema.FormalParameterOption.Optional
    schema = OpSchema(
        OP_TYPE,
        DOMAIN,
        OP_VERSION,
        doc="Attention with ONNX Attention semantics, computed with PASA's overflow-safe "
        "half-precision numerics (online pseudo-average shifting, global recovering).",
        inputs=[
            FP("Q", "T", "queries [B,Hq,Sq,D] or [B,Sq,Hq*D]"),
            FP("K", "T", "keys [B,Hkv,Skv,D] or [B,Skv,Hkv*D]"),
            FP("V", "T", "values [B,Hkv,Skv,Dv] or [B,Skv,Hkv*Dv]"),
            FP("attn_mask", "U", "bool (True attends) or additive mask", param_option=opt),
            FP("past_key", "T", "[B,Hkv,P,D]", param_option=opt),
            FP("past_value", "T", "[B,Hkv,P,Dv]", param_option=opt),
            FP("nonpad_kv_seqlen", "tensor(int64)", "[B] valid keys", param_option=opt),
        ],
        outputs=[
            FP("Y", "T", "[B,Hq,Sq,Dv] or [B,Sq,Hq*Dv]"),
            FP("present_key", "T", "[B,Hkv,P+Skv,D]", param_option=opt),
            FP("present_value", "T", "[B,Hkv,P+Skv,Dv]", param_option=opt),
        ],
        type_constraints=[
            ("T", _FLOATS, "half, bfloat16 or float"),
            ("U", [*_FLOATS, "tensor(bool)"], "mask: bool or the element type of Q"),
        ],
        attributes=[
            _attr("is_causal", _A.INT, "1: causal mask aligned to the past length"),
            _attr("scale", _A.FLOAT, "score scale; default 1/sqrt(D)"),
            _attr("q_num_heads", _A.INT, "query heads (3-D inputs)"),
            _attr("kv_num_heads", _A.INT, "key/value heads (3-D inputs)"),
            _attr("softcap", _A.FLOAT, "> 0: softcap * tanh(scores / softcap)"),
            _attr("softmax_precision", _A.INT, "accepted; softmax statistics are fp32"),
            _attr("qk_matmul_output_mode", _A.INT, "accepted; qk_matmul_output is unsupported"),
            _attr("left_window_size", _A.INT, "local window to the left (-1: none)"),
            _attr("right_window_size", _A.INT, "local window to the right (-1: none)"),
            _attr("precision", _A.STRING, "'half' | 'paper' | 'float'"),
            _attr("alpha", _A.FLOAT, "PASA shift strength in [0, 1)"),
            _attr("block_q", _A.INT, "query rows per tile"),
            _attr("block_kv", _A.INT, "keys per block (the shift's averaging window)"),
        ],
    )
    schema.set_type_and_shape_inference_function(_infer)
    return schema


def register_schema() -> None:
    """Register the schema with onnx once per process (idempotent)."""
    if onnx.defs.has(OP_TYPE, DOMAIN):
        return
    onnx.defs.register_schema(make_schema())
