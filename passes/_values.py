"""Small questions about onnx_ir values that every family asks: constants, ranks, dims."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx_ir as ir

Dim = int | ir.SymbolicDim | None


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The value as a numpy array if it is an initializer or a Constant's output."""
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    if tensor is None:
        return None
    try:
        return tensor.numpy()
    except Exception:  # an unreadable external tensor is not a constant we can use
        return None


def rank(value: ir.Value | None) -> int | None:
    if value is None or value.shape is None:
        return None
    return value.shape.rank()


def dim(value: ir.Value, axis: int) -> Dim:
    """Dimension ``axis`` (negative counts from the end); None when unknown."""
    shape = value.shape
    if shape is None or not -shape.rank() <= axis < shape.rank():
        return None
    d = shape[axis]
    if isinstance(d, ir.SymbolicDim) and d.value is None:
        return None
    return d


def int_dim(value: ir.Value, axis: int) -> int | None:
    d = dim(value, axis)
    return d if isinstance(d, int) else None


def same_dim(a: Dim, b: Dim) -> bool:
    """Provably equal: equal ints, or the same named symbolic dimension."""
    if a is None or b is None:
        return False
    return a == b


def elem_type(value: ir.Value) -> ir.DataType | None:
    return value.type.dtype if value.type is not None else None


def int_list(value: ir.Value | None) -> list[int] | None:
    arr = const_array(value)
    if arr is None or arr.ndim > 1:
        return None
    return [int(x) for x in arr.reshape(-1)]


class _Unknown(Exception):
    """The value depends on something that is not known before run time."""


class _ShapeVec:
    """The output of Shape(x): dims known ahead (ints) or not (None)."""

    def __init__(self, dims: list[int | None]) -> None:
        self.dims = dims

    def array(self) -> np.ndarray:
        if any(d is None for d in self.dims):
            raise _Unknown
        return np.array(self.dims, dtype=np.int64)


# Scalar arithmetic that exporters use to compute a scale from a shape at run time.
_UNARY: dict[str, Callable[[Any], Any] | None] = {
    "Sqrt": np.sqrt,
    "Neg": np.negative,
    "Reciprocal": np.reciprocal,
    "Identity": None,
}
_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "Mul": np.multiply,
    "Add": np.add,
    "Sub": np.subtract,
    "Pow": np.power,
}


def _eval(value: ir.Value | None, depth: int):
    if value is None or depth > 16:
        raise _Unknown
    arr = const_array(value)
    if arr is not None:
        return arr
    node = value.producer()
    if node is None or node.domain not in ("", "ai.onnx"):
        raise _Unknown
    op = node.op_type
    if op == "Shape":
        start = node.attributes.get("start")
        end = node.attributes.get("end")
        x = node.inputs[0]
        if x is None or x.shape is None:
            raise _Unknown
        dims = _static_dims(x, depth + 1)
        s = start.as_int() if start is not None else 0
        e = end.as_int() if end is not None else len(dims)
        return _ShapeVec(dims[s:e])
    if op == "CastLike":
        like = node.inputs[1].type if node.inputs[1] is not None else None
        if like is None:
            raise _Unknown
        return np.asarray(_eval(node.inputs[0], depth + 1)).astype(like.dtype.numpy())
    args: list[Any] = [_eval(v, depth + 1) if v is not None else None for v in node.inputs]
    if op == "Concat":  # of shape pieces: dims known ahead or not
        pieces: list[int | None] = []
        for a in args:
            pieces += a.dims if isinstance(a, _ShapeVec) else [int(x) for x in np.ravel(a)]
        return _ShapeVec(pieces)

    def arr_of(a):
        return a.array() if isinstance(a, _ShapeVec) else a

    if op in ("Gather", "Slice") and isinstance(args[0], _ShapeVec):
        dims = args[0].dims
        if op == "Gather":
            idx = arr_of(args[1])
            picked = [dims[int(i)] for i in np.asarray(idx).reshape(-1)]
            if any(d is None for d in picked):
                return _ShapeVec(picked)  # a dim known only at run time (e.g. the batch)
            return np.array(picked, dtype=np.int64).reshape(np.shape(idx))
        starts, ends = arr_of(args[1]), arr_of(args[2])
        steps = arr_of(args[4]) if len(args) > 4 and args[4] is not None else [1]
        return _ShapeVec(dims[int(starts[0]) : int(ends[0]) : int(steps[0])]).array()
    if op in ("Unsqueeze", "Squeeze", "Cast", "Identity") and isinstance(args[0], _ShapeVec):
        return args[0]  # still a piece of a shape, possibly with run-time dims
    args = [arr_of(a) if a is not None else None for a in args]
    if op in _UNARY:
        fn = _UNARY[op]
        return args[0] if fn is None else fn(args[0])
    if op in _BINARY:
        return _BINARY[op](args[0], args[1])
    if op == "Div":
        a, b = args
        if np.issubdtype(np.asarray(a).dtype, np.integer):
            return np.asarray(a // b)
        return np.asarray(a / b)
    if op == "Cast":
        to = ir.DataType(node.attributes["to"].as_int())
        return np.asarray(args[0]).astype(to.numpy())
    if op in ("Squeeze", "Unsqueeze", "Reshape", "Expand") and np.size(args[0]) == 1:
        return np.asarray(args[0]).reshape(())  # only the one value matters for a scale
    raise _Unknown


def _static_dims(x: ir.Value, depth: int) -> list[int | None]:
    """x's dims as far as they are known ahead: its shape, or where that has unknown dims,
    what its Transpose or Reshape (of a target computed from static shapes) makes them."""
    dims = [d if isinstance(d, int) else None for d in x.shape or []]
    node = x.producer()
    if None not in dims or node is None or depth > 16 or node.domain not in ("", "ai.onnx"):
        return dims
    inner: list[int | None] | None = None
    try:
        if node.op_type == "Transpose" and node.inputs[0] is not None:
            src = _static_dims(node.inputs[0], depth + 1)
            perm = node.attributes.get("perm")
            order = list(perm.as_ints()) if perm is not None else list(reversed(range(len(src))))
            inner = [src[p] for p in order] if len(order) == len(src) else None
        elif node.op_type == "Reshape" and node.inputs[1] is not None:
            target = _eval(node.inputs[1], depth + 1)
            entries = target.dims if isinstance(target, _ShapeVec) else list(np.ravel(target))
            src = _static_dims(node.inputs[0], depth + 1) if node.inputs[0] is not None else []
            allowzero = node.attributes.get("allowzero")
            inner = []
            for i, e in enumerate(entries):
                if e is not None and e == 0 and not (allowzero and allowzero.as_int()):
                    e = src[i] if i < len(src) else None
                inner.append(None if e is None or e < 0 else int(e))
    except (_Unknown, IndexError, KeyError, ValueError, TypeError):
        inner = None
    if inner is None or len(inner) != len(dims):
        return dims
    return [d if d is not None else e for d, e in zip(dims, inner, strict=True)]


def eval_scalar(value: ir.Value | None) -> float | None:
    """A scalar computed from constants and statically known dims (``Shape -> Gather ->
    Cast -> Sqrt -> Div``, as TorchScript writes SDPA's scale), else None."""
    try:
        arr = np.asarray(_eval(value, 0), dtype=np.float64)
    except (_Unknown, IndexError, KeyError, ValueError, TypeError, ZeroDivisionError):
        return None
    if arr.size != 1:
        return None
    return float(arr.reshape(()))
