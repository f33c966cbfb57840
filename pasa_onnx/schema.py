"""The ``ai.pasa::PasaAttention`` (version 1) operator schema, for ``onnx.checker`` and
``onnx.shape_inference``, built from ``op_contract.json`` (:mod:`pasa_onnx.contract`).
:func:`register_schema` is called on import of :mod:`pasa_onnx`.

Inputs, outputs and the standard attributes follow ONNX ``Attention`` (opset 23-25); ``precision``,
``alpha``, ``block_q`` and ``block_kv`` are PASA's own (docs/op-reference.md).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, TypeProto, helper
from onnx.defs import OpSchema

from pasa_onnx.contract import (
    ATTRIBUTES,
    DOMAIN,
    INPUTS,
    OP_DOC,
    OP_TYPE,
    OP_VERSION,
    OUTPUTS,
    TYPE_CONSTRAINTS,
    Param,
)

_A = OpSchema.AttrType


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


_ATTR_TYPES = {"int": _A.INT, "float": _A.FLOAT, "string": _A.STRING}


def make_schema() -> OpSchema:
    """The schema of the op as ``op_contract.json`` declares it."""
    FP = OpSchema.FormalParameter
    opt = OpSchema.FormalParameterOption.Optional
    single = OpSchema.FormalParameterOption.Single

    def param(p: Param) -> OpSchema.FormalParameter:
        return FP(p.name, p.type, p.doc, param_option=opt if p.optional else single)

    schema = OpSchema(
        OP_TYPE,
        DOMAIN,
        OP_VERSION,
        doc=OP_DOC,
        inputs=[param(p) for p in INPUTS],
        outputs=[param(p) for p in OUTPUTS],
        type_constraints=list(TYPE_CONSTRAINTS),
        attributes=[
            OpSchema.Attribute(a.name, _ATTR_TYPES[a.type], a.doc, required=False)
            for a in ATTRIBUTES
        ],
    )
    schema.set_type_and_shape_inference_function(_infer)
    return schema


def register_schema() -> None:
    """Register the schema with onnx once per process (idempotent)."""
    if onnx.defs.has(OP_TYPE, DOMAIN):
        return
    onnx.defs.register_schema(make_schema())
