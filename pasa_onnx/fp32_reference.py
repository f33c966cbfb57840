"""The fp32 reference: the *original* graph with every fp16/bf16 element type lifted to fp32
(initializers, graph inputs/outputs, value_info, Cast targets, constant tensors, subgraphs), so
the same computation runs without half-precision rounding or overflow."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper

HALF_TYPES = frozenset({TensorProto.FLOAT16, TensorProto.BFLOAT16})
# Integer attributes that name an element type (Cast.to, RandomNormal.dtype, EyeLike.dtype,
# Attention.softmax_precision, ...).
_TYPE_ATTRIBUTES = frozenset({"to", "dtype", "softmax_precision"})


def _is_half_type_attr(attr: onnx.AttributeProto) -> bool:
    return (
        attr.name in _TYPE_ATTRIBUTES and attr.type == AttributeProto.INT and attr.i in HALF_TYPES
    )


def has_half_types(model: onnx.ModelProto) -> bool:
    """Whether anything in the main graph is fp16/bf16 (else the original is its own reference)."""
    g = model.graph
    for vi in (*g.input, *g.output, *g.value_info):
        if vi.type.tensor_type.elem_type in HALF_TYPES:
            return True
    if any(t.data_type in HALF_TYPES for t in g.initializer):
        return True
    for node in g.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR and attr.t.data_type in HALF_TYPES:
                return True
            if _is_half_type_attr(attr):
                return True
    return False


def _lift_tensor(t: TensorProto) -> None:
    if t.data_type not in HALF_TYPES:
        return
    arr = numpy_helper.to_array(t).astype(np.float32)
    lifted = numpy_helper.from_array(arr, t.name)
    t.CopyFrom(lifted)


def _lift_value_infos(infos) -> None:
    for vi in infos:
        tt = vi.type.tensor_type
        if tt.elem_type in HALF_TYPES:
            tt.elem_type = TensorProto.FLOAT


def _lift_graph(g: onnx.GraphProto) -> None:
    for t in g.initializer:
        _lift_tensor(t)
    _lift_value_infos(g.input)
    _lift_value_infos(g.output)
    _lift_value_infos(g.value_info)
    for node in g.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                _lift_tensor(attr.t)
            elif attr.type == AttributeProto.TENSORS:
                for t in attr.tensors:
                    _lift_tensor(t)
            elif attr.type == AttributeProto.GRAPH:
                _lift_graph(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _lift_graph(sub)
            elif _is_half_type_attr(attr):
                attr.i = TensorProto.FLOAT


def lift_to_fp32(model: onnx.ModelProto, in_place: bool = False) -> onnx.ModelProto:
    """Return ``model`` with fp16/bf16 lifted to fp32 (a copy unless ``in_place``)."""
    if not in_place:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    _lift_graph(model.graph)
    for fn in model.functions:
        for node in fn.node:
            for attr in node.attribute:
                if attr.type == AttributeProto.TENSOR:
                    _lift_tensor(attr.t)
                elif _is_half_type_attr(attr):
                    attr.i = TensorProto.FLOAT
    return model


def lift_feeds(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inputs for the lifted graph: half-precision arrays as fp32, the rest unchanged."""
    out = {}
    for name, arr in feeds.items():
        is_half = arr.dtype == np.float16 or arr.dtype.name == "bfloat16"
        out[name] = arr.astype(np.float32) if is_half else arr
    return out
