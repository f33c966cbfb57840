"""Element types and ranks that onnx's shape inference leaves unknown, filled in before matching.

onnx's inference knows no ``com.microsoft`` op (onnxruntime's optimizer output: fused
``Attention``, ``SkipLayerNormalization``, ... and everything after them), and it gives up on
``Expand``/``ConstantOfShape``/``ScatterND`` with computed shape tensors (T5's position bias in
optimum's merged decoders). This pass walks every graph, subgraphs included, in order and gives
an output without a type or shape the one its op implies. It only fills what is missing, and it
names a symbolic dim only where the op copies it exactly (elementwise ops, broadcasting against
1, transposes): a dim it cannot prove stays anonymous, so no rule can prove an equality from it.
"""

from __future__ import annotations

import onnx_ir as ir
import onnx_ir.passes.common as ir_passes

from . import subgraphs
from ._values import int_list

Dims = list[int | ir.SymbolicDim]

_SAME = {  # output 0 is like input 0 (standard and com.microsoft ops)
    "Identity", "Relu", "Sqrt", "Neg", "Exp", "Log", "Abs", "Tanh", "Erf", "Sigmoid",
    "Reciprocal", "Softmax", "LogSoftmax", "Dropout", "LayerNormalization", "Gelu", "FastGelu",
    "BiasGelu", "QuickGelu", "BiasAdd", "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "SimplifiedLayerNormalization", "RMSNormalization", "RotaryEmbedding", "Floor", "Ceil",
    "Round", "Sin", "Cos", "HardSigmoid", "LeakyRelu", "Elu", "Selu", "Softplus", "Clip",
    "CumSum", "Trilu", "ScatterND", "ScatterElements", "Not", "Mish", "Swish",
}  # fmt: skip
_BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "PRelu", "Sum"}
_COMPARE = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor"}
_ATTENTION_OPS = {"Attention", "MultiHeadAttention", "GroupQueryAttention"}
_UNKNOWN = None  # an anonymous dim


def _anon() -> ir.SymbolicDim:
    return ir.SymbolicDim(_UNKNOWN)


def _dims(value: ir.Value | None) -> Dims | None:
    if value is None or value.shape is None:
        return None
    return list(value.shape.dims)


def _is_one(d: int | ir.SymbolicDim) -> bool:
    return isinstance(d, int) and d == 1


def _same_dim(a: int | ir.SymbolicDim, b: int | ir.SymbolicDim) -> bool:
    if isinstance(a, int) or isinstance(b, int):
        return a == b
    return a.value is not None and a.value == b.value


def _broadcast(shapes: list[Dims | None]) -> Dims | None:
    """numpy broadcasting of the shapes (None: unknown rank, so the result is unknown)."""
    known = [s for s in shapes if s is not None]
    if len(known) != len(shapes):
        return None
    out_rank = max(len(s) for s in known)
    out: Dims = []
    for axis in range(out_rank):
        here = [s[axis - out_rank + len(s)] for s in known if axis - out_rank + len(s) >= 0]
        big = [d for d in here if not _is_one(d)]
        if not big:
            out.append(1)
        elif all(_same_dim(big[0], d) for d in big[1:]):
            out.append(big[0])
        else:
            out.append(_anon())
    return out


def _rank_only(n: int | ir.SymbolicDim | None) -> Dims | None:
    return [_anon() for _ in range(n)] if isinstance(n, int) else None


def _attr(node: ir.Node, name: str, default=None):
    a = node.attributes.get(name)
    return a.value if a is not None else default


def _input(node: ir.Node, i: int) -> ir.Value | None:
    return node.inputs[i] if i < len(node.inputs) else None


def _type_of(value: ir.Value | None) -> ir.DataType | None:
    return value.type.dtype if value is not None and value.type is not None else None


def _infer(node: ir.Node) -> tuple[ir.DataType | None, Dims | None]:
    """(element type, dims) of output 0 as far as ``node``'s op implies them."""
    op, x = node.op_type, _input(node, 0)
    xt, xd = _type_of(x), _dims(x)
    if op in _SAME:
        return xt, xd
    if op == "Cast":
        return ir.DataType(_attr(node, "to")), xd
    if op == "CastLike":
        return _type_of(_input(node, 1)), xd
    if op == "IsNaN" or op == "IsInf":
        return ir.DataType.BOOL, xd
    if op in _BROADCAST:
        return xt, _broadcast([_dims(v) for v in node.inputs])
    if op in _COMPARE:
        return ir.DataType.BOOL, _broadcast([_dims(v) for v in node.inputs])
    if op == "Where":
        return _type_of(_input(node, 1)), _broadcast([_dims(v) for v in node.inputs])
    if op == "Transpose":
        perm = _attr(node, "perm")
        if xd is None:
            return xt, None
        perm = list(perm) if perm is not None else list(reversed(range(len(xd))))
        return xt, [xd[p] for p in perm] if len(perm) == len(xd) else None
    if op == "MatMul":
        a, b = xd, _dims(_input(node, 1))
        if a is None or b is None or len(a) < 2 or len(b) < 2:
            return xt, None
        batch = _broadcast([a[:-2], b[:-2]])
        return xt, None if batch is None else [*batch, a[-2], b[-1]]
    if op == "ConstantOfShape":
        value = _attr(node, "value")
        dtype = value.dtype if value is not None else ir.DataType.FLOAT
        dims = _dims(x)
        return dtype, _rank_only(dims[0] if dims is not None and len(dims) == 1 else None)
    if op == "Expand":
        shape = _dims(_input(node, 1))
        if xd is None or shape is None or len(shape) != 1 or not isinstance(shape[0], int):
            return xt, None
        return xt, _rank_only(max(len(xd), shape[0]))
    if op == "Reshape":
        shape = _dims(_input(node, 1))
        return xt, _rank_only(shape[0] if shape and len(shape) == 1 else None)
    if op in ("Slice", "Pad"):
        return xt, _rank_only(len(xd)) if xd is not None else None
    if op in ("Unsqueeze", "Squeeze"):
        axes = int_list(_input(node, 1)) if _input(node, 1) is not None else _attr(node, "axes")
        if xd is None or axes is None:
            return xt, None
        return xt, _rank_only(len(xd) + (len(axes) if op == "Unsqueeze" else -len(axes)))
    if op == "Shape":
        return ir.DataType.INT64, None
    if node.domain == "com.microsoft" and op in _ATTENTION_OPS:  # [B,S,hidden of V]
        return xt, [xd[0], xd[1], _anon()] if xd is not None and len(xd) == 3 else None
    if node.domain == "com.microsoft" and op == "EmbedLayerNormalization":
        table = _dims(_input(node, 2))
        if xd is None or len(xd) != 2 or table is None or len(table) != 2:
            return _type_of(_input(node, 2)), _rank_only(3)
        return _type_of(_input(node, 2)), [xd[0], xd[1], table[1]]
    if op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin") and xd is not None:
        axes = int_list(_input(node, 1)) if _input(node, 1) is not None else _attr(node, "axes")
        if axes is None:
            return xt, None
        picked = {a % len(xd) for a in axes}
        if _attr(node, "keepdims", 1):
            return xt, [1 if i in picked else d for i, d in enumerate(xd)]
        return xt, [d for i, d in enumerate(xd) if i not in picked]
    return None, None


def _infer_mask_index(node: ir.Node) -> tuple[ir.DataType, Dims] | None:
    """EmbedLayerNormalization's second output: the int32 key lengths [B]."""
    ids = _dims(_input(node, 0))
    if node.op_type != "EmbedLayerNormalization" or len(node.outputs) < 2 or not ids:
        return None
    return ir.DataType.INT32, [ids[0]]


def fill_missing(model: ir.Model) -> int:
    """Fill missing output types/shapes in every graph of ``model``; returns how many."""
    filled = 0
    for _, graph in subgraphs.graphs(model.graph):
        for node in graph:
            if not node.outputs:
                continue
            out = node.outputs[0]
            dtype, dims = (None, None) if out.type and out.shape else _infer(node)
            if out.type is None and dtype is not None:
                out.type = ir.TensorType(dtype)
                filled += 1
            if out.shape is None and dims is not None:
                out.shape = ir.Shape(dims)
                filled += 1
            second = _infer_mask_index(node) if node.domain == "com.microsoft" else None
            if second is not None and node.outputs[1].shape is None:
                node.outputs[1].type, node.outputs[1].shape = (
                    ir.TensorType(second[0]),
                    ir.Shape(second[1]),
                )
                filled += 1
    return filled


def infer(model: ir.Model) -> None:
    """onnx's shape inference, then :func:`fill_missing`, then both once more where that helped.

    onnx's data propagation keys computed shape values by tensor name across the branches of
    an ``If``, and optimum's merged decoders repeat names in both branches: there it infers
    wrong shapes (a ``ConstantOfShape`` of a 1-D shape gets another tensor's 3-D shape). Models
    with subgraphs therefore run it without data propagation.
    """
    data_prop = len(subgraphs.graphs(model.graph)) == 1
    ir_passes.ShapeInferencePass(strict_mode=False, data_prop=data_prop)(model)
    if fill_missing(model):
        ir_passes.ShapeInferencePass(strict_mode=False, data_prop=data_prop)(model)
        fill_missing(model)
