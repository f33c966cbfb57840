"""Graph surgery for validation: find the PasaAttention nodes of a rewritten model, expose
tensors as extra graph outputs, and estimate what those extra outputs cost in memory."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from pasa_onnx.contract import DOMAIN, INPUT_NAMES, OP_TYPE, PATTERN_KEY, REPLACED_KEY

# Initializers up to this size stay in the shape-inference probe (Reshape targets and other
# constants whose values shape inference reads); larger ones become typed inputs.
_SMALL_CONSTANT = 4096


@dataclass(frozen=True)
class Site:
    """One PasaAttention node of the rewritten graph."""

    index: int
    node: str
    pattern: str
    replaced: list[str]
    output: str  # Y: named after the last original tensor it replaced
    inputs: dict[str, str]  # op input name (Q, K, ...) -> tensor name, present inputs only
    attrs: dict[str, Any]


def find_sites(model: onnx.ModelProto) -> list[Site]:
    sites: list[Site] = []
    for i, node in enumerate(model.graph.node):
        if node.op_type != OP_TYPE or node.domain != DOMAIN:
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        inputs = {
            op_name: tensor
            for op_name, tensor in zip(INPUT_NAMES, node.input, strict=False)
            if tensor  # "" marks an absent optional input
        }
        replaced = [r.strip() for r in meta.get(REPLACED_KEY, "").split(",") if r.strip()]
        sites.append(
            Site(
                index=len(sites),
                node=node.name or f"PasaAttention_{i}",
                pattern=meta.get(PATTERN_KEY, ""),
                replaced=replaced,
                output=node.output[0],
                inputs=inputs,
                attrs={a.name: helper.get_attribute_value(a) for a in node.attribute},
            )
        )
    return sites


def tensor_names(model: onnx.ModelProto) -> set[str]:
    """Every tensor name of the main graph: node outputs, graph inputs, initializers."""
    g = model.graph
    names = {o for n in g.node for o in n.output}
    names |= {i.name for i in g.input} | {t.name for t in g.initializer}
    return names


def expose(model: onnx.ModelProto, names: Iterable[str]) -> list[str]:
    """Add ``names`` as graph outputs (untyped: onnxruntime takes the producer's type); returns
    those that can be fetched from a session, in order. Graph inputs and initializers are not
    node outputs, so they are not added (read them from the feeds or the model instead)."""
    existing = {o.name for o in model.graph.output}
    produced = {o for n in model.graph.node for o in n.output}
    fetch = []
    for name in dict.fromkeys(names):
        if name in produced and name not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
            existing.add(name)
        if name in existing:
            fetch.append(name)
    return fetch


def tensor_bytes(t: onnx.TensorProto) -> int:
    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    return int(np.prod(t.dims, dtype=np.int64)) * itemsize


def estimate_bytes(
    model: onnx.ModelProto, names: list[str], feeds: Mapping[str, np.ndarray]
) -> int | None:
    """Bytes of ``names`` by shape inference with the concrete input shapes; None when some
    shape stays unknown (data-dependent shapes, custom ops without inference)."""
    if not names:
        return 0
    try:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        small = [t for t in probe.graph.initializer if tensor_bytes(t) <= _SMALL_CONSTANT]
        big = [t for t in probe.graph.initializer if tensor_bytes(t) > _SMALL_CONSTANT]
        probe.graph.ClearField("initializer")
        probe.graph.initializer.extend(small)
        listed = {vi.name for vi in probe.graph.input}  # old IRs list weights as inputs too
        probe.graph.input.extend(
            helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
            for t in big
            if t.name not in listed
        )
        for vi in probe.graph.input:
            if vi.name in feeds:
                shape = vi.type.tensor_type.shape
                shape.ClearField("dim")
                for n in feeds[vi.name].shape:
                    shape.dim.add().dim_value = int(n)
        inferred = onnx.shape_inference.infer_shapes(probe)
    except Exception:  # inference is a best-effort estimate; the real size is measured later
        return None
    infos = {vi.name: vi for vi in (*inferred.graph.value_info, *inferred.graph.output)}
    total = 0
    for name in names:
        vi = infos.get(name)
        if vi is None or not vi.type.tensor_type.HasField("shape"):
            return None
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        if any(d < 0 for d in dims):
            return None
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).itemsize
        total += int(np.prod(dims, dtype=np.int64)) * itemsize
    return total
