"""Model inputs for validation: the user's ``.npz`` checked against the graph, or generated ones
that make sense for each input (token ids inside the embedding table, 0/1 masks with padding,
position ids, floats in a realistic range). ``--dim name=value`` binds symbolic dimensions.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from pasa_onnx.errors import PasaError

# Ops that pass integer ids through unchanged on their way to an embedding Gather.
_ID_PASSTHROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand"}
# Ops between a weight initializer and the Gather that reads it (fp16 casts, dequantisation).
_TABLE_PASSTHROUGH = {"Cast", "Identity", "DequantizeLinear"}

# Ops that index an embedding table: {op_type: {index input position: table input position}}.
_EMBEDDING_OPS = {
    "Gather": {1: 0},
    # com.microsoft fused embedding: input_ids, segment_ids, word/position/segment tables, ...
    "EmbedLayerNormalization": {0: 2, 1: 4, 8: 3},
}

DEFAULT_BATCH = 2
DEFAULT_SEQUENCE = 16
DEFAULT_PAST = 8


@dataclass(frozen=True)
class InputInfo:
    """What fed one graph input: its shape, dtype, whether it was generated, and as what."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    generated: bool
    kind: str  # token_ids, attention_mask, position_ids, float, ... or "npz"


@dataclass
class ModelInputs:
    """Feeds for one run plus how they were obtained (for reports and progress)."""

    feeds: dict[str, np.ndarray]
    info: list[InputInfo]
    dims: dict[str, int]
    default_dims: set[str]  # dims that took a default value rather than --dim or the .npz


def parse_dims(specs: Iterable[str] | Mapping[str, int] | None) -> dict[str, int]:
    """``["batch=2", "seq=128"]`` (or a mapping) to ``{"batch": 2, "seq": 128}``."""
    if specs is None:
        return {}
    items: list[tuple[str, int | str]]
    if isinstance(specs, Mapping):
        items = [(str(k), v) for k, v in specs.items()]
    else:
        items = []
        for spec in specs:
            key, sep, text = str(spec).partition("=")
            if not sep or not key.strip():
                raise PasaError(f"--dim {spec!r}: expected NAME=VALUE, e.g. --dim batch=2")
            items.append((key.strip(), text.strip()))
    dims: dict[str, int] = {}
    for name, value in items:
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise PasaError(f"--dim {name}={value}: the value must be an integer") from None
        if n < 0 or (n == 0 and not _zero_allowed(name)):
            what = "at least 0" if n < 0 else "at least 1 (only a past length may be 0)"
            raise PasaError(f"--dim {name}={value}: the value must be {what}")
        dims[name] = n
    return dims


def _zero_allowed(name: str) -> bool:
    """A past (KV cache) length may be 0: the prompt step. Other lengths may not."""
    return "past" in name.lower()


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are real inputs (old exporters also list initializers as inputs)."""
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def _np_dtype(vi: onnx.ValueInfoProto) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))


def _dim_names(vi: onnx.ValueInfoProto) -> list[int | str]:
    """Each axis as its fixed size or a dim name; unnamed symbolic axes get ``input.axis``."""
    out: list[int | str] = []
    for axis, d in enumerate(vi.type.tensor_type.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or f"{vi.name}.{axis}")
    return out


def _default_dim(name: str, axis: int) -> int:
    low = name.lower()
    if "batch" in low or (axis == 0 and "." in name):
        return DEFAULT_BATCH
    if "past" in low or "cache" in low:
        return DEFAULT_PAST
    return DEFAULT_SEQUENCE


def embedding_rows(model: onnx.ModelProto, input_name: str) -> int | None:
    """Rows of the smallest table an integer input indexes through ``Gather`` or a fused
    embedding op (following casts and reshapes), or ``None`` if it indexes no initializer."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    producers: dict[str, onnx.NodeProto] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        for name in node.output:
            producers[name] = node
    tables = {t.name: t for t in model.graph.initializer}

    def table_rows(name: str) -> int | None:
        for _ in range(4):
            if name in tables:
                dims = tables[name].dims
                return int(dims[0]) if dims else None
            node = producers.get(name)
            if node is None:
                return None
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        return int(attr.t.dims[0]) if attr.t.dims else None
                return None
            if node.op_type not in _TABLE_PASSTHROUGH:
                return None
            name = node.input[0]
        return None

    rows: list[int] = []
    frontier, seen = [input_name], set()
    while frontier:
        name = frontier.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in consumers.get(name, []):
            for index, table in _EMBEDDING_OPS.get(node.op_type, {}).items():
                if index < len(node.input) and node.input[index] == name:
                    n = table_rows(node.input[table]) if table < len(node.input) else None
                    if n is not None:
                        rows.append(n)
            if node.op_type in _ID_PASSTHROUGH and node.input[0] == name:
                frontier.extend(node.output)
    return min(rows) if rows else None


def _kind(name: str, dtype: np.dtype) -> str:
    low = name.lower()
    if "mask" in low:
        return "attention_mask"
    if np.issubdtype(dtype, np.integer) and "position" in low:
        return "position_ids"
    if np.issubdtype(dtype, np.integer) and "type" in low:
        return "token_type_ids"
    if np.issubdtype(dtype, np.integer):
        return "token_ids"
    if dtype == np.bool_:
        return "bool"
    return "float"


def _padded_mask(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """1 for real tokens, 0 for right padding along the last axis: sample 0 unpadded, later
    samples progressively shorter (never shorter than half), so padding paths are exercised."""
    mask = np.ones(shape, dtype=np.int64)
    if len(shape) >= 2 and shape[0] > 1 and shape[-1] > 1:
        length = shape[-1]
        for b in range(1, shape[0]):
            keep = max(1, length - (b * length) // (2 * shape[0]))
            mask[b, ..., keep:] = 0
    return mask.astype(dtype)


def _generate(
    model: onnx.ModelProto,
    vi: onnx.ValueInfoProto,
    shape: tuple[int, ...],
    dtype: np.dtype,
    rng: np.random.Generator,
) -> tuple[np.ndarray, str]:
    kind = _kind(vi.name, dtype)
    rows = embedding_rows(model, vi.name) if np.issubdtype(dtype, np.integer) else None
    if kind == "attention_mask":
        return _padded_mask(shape, dtype), kind
    if kind == "position_ids":
        if rows is not None and shape and shape[-1] > rows:
            raise PasaError(
                f"input '{vi.name}': {shape[-1]} positions but the position table has {rows} "
                "rows; bind a smaller sequence length with --dim"
            )
        pos = np.broadcast_to(np.arange(shape[-1] if shape else 1), shape or (1,))
        return pos.reshape(shape).astype(dtype), kind
    if kind in ("token_ids", "token_type_ids"):
        if rows is None:
            # No table to index: zeros are valid for any id-like input.
            return np.zeros(shape, dtype=dtype), f"{kind} (zeros: no embedding table found)"
        return rng.integers(0, rows, size=shape).astype(dtype), f"{kind} in [0, {rows})"
    if kind == "bool":
        return np.ones(shape, dtype=bool), kind
    # Activations after a normalisation are O(1); clipping keeps rare outliers out.
    values = np.clip(rng.standard_normal(shape), -4.0, 4.0)
    return values.astype(dtype), "float N(0,1)"


def _check_npz_array(path: str, vi: onnx.ValueInfoProto, arr: np.ndarray, dims: dict) -> None:
    want = _np_dtype(vi)
    if arr.dtype != want:
        raise PasaError(f"{path}: '{vi.name}' has dtype {arr.dtype}, the model expects {want.name}")
    names = _dim_names(vi)
    if arr.ndim != len(names):
        raise PasaError(
            f"{path}: '{vi.name}' has shape {list(arr.shape)}, the model expects rank "
            f"{len(names)} {names}"
        )
    for axis, (size, dim) in enumerate(zip(arr.shape, names, strict=True)):
        if isinstance(dim, int):
            if size != dim:
                raise PasaError(
                    f"{path}: '{vi.name}' has shape {list(arr.shape)}, the model expects "
                    f"{names} (axis {axis} must be {dim})"
                )
        elif dims.setdefault(dim, size) != size:
            raise PasaError(
                f"{path}: '{vi.name}' axis {axis} is {size} but dimension '{dim}' is "
                f"{dims[dim]} elsewhere"
            )


def load_npz(model: onnx.ModelProto, path: str | os.PathLike) -> ModelInputs:
    """Read feeds from ``path``; every graph input must be there with the right dtype/shape."""
    path = str(path)
    if not Path(path).is_file():
        raise PasaError(f"{path}: no such inputs file")
    if not zipfile.is_zipfile(path):
        raise PasaError(f"{path}: not a readable .npz file: not a zip archive")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except ValueError as exc:
        if "pickled" in str(exc):  # an object array inside the archive
            raise PasaError(
                f"{path}: an array in it holds Python objects (pickled); the inputs must be "
                "numeric or bool arrays"
            ) from None
        raise PasaError(f"{path}: not a readable .npz file ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise PasaError(f"{path}: not a readable .npz file ({exc})") from None
    return check_arrays(model, arrays, path)


def check_arrays(
    model: onnx.ModelProto, arrays: Mapping[str, np.ndarray], label: str
) -> ModelInputs:
    """User-given feeds (``label`` names their source in errors) checked against the graph."""
    feeds: dict[str, np.ndarray] = {}
    info: list[InputInfo] = []
    dims: dict[str, int] = {}
    for vi in graph_inputs(model):
        if vi.name not in arrays:
            raise PasaError(f"{label}: no array for graph input '{vi.name}'")
        arr = np.asarray(arrays[vi.name])
        _check_npz_array(label, vi, arr, dims)
        feeds[vi.name] = arr
        info.append(InputInfo(vi.name, tuple(arr.shape), arr.dtype.name, False, "given"))
    return ModelInputs(feeds, info, dims, set())


def _sum_of_dims(name: str, bound: dict[str, int], defaults: set[str]) -> int | None:
    """Exporters name dims like ``past_sequence_length + 1`` or ``past + sequence``: such a dim
    is the sum of its parts (each bound, defaulted, or a number); None for a plain name."""
    parts = [p.strip() for p in name.split("+")]
    if len(parts) < 2 or not all(parts):
        return None
    total = 0
    for part in parts:
        if part.isdigit():
            total += int(part)
            continue
        if part not in bound:
            bound[part] = _default_dim(part, -1)
            defaults.add(part)
        total += bound[part]
    return total


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _check_size(name: str, shape: list[int], dtype: np.dtype) -> None:
    """An input larger than the machine's memory is a usage error, not a MemoryError."""
    nbytes = math.prod(shape) * dtype.itemsize
    limit = _memory_bytes()
    if limit is not None and nbytes > limit:
        raise PasaError(
            f"input '{name}': shape {shape} needs {nbytes / 2**30:.3g} GiB, more than this "
            f"machine's {limit / 2**30:.3g} GiB of memory; bind smaller dimensions with --dim"
        )


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _const(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for t in model.graph.initializer:
        if t.name == name:
            return onnx.numpy_helper.to_array(t)
    node = _producers(model).get(name)
    if node is not None and node.op_type == "Constant":
        for attr in node.attribute:
            if attr.name == "value":
                return onnx.numpy_helper.to_array(attr.t)
    return None


def _width(model: onnx.ModelProto, name: str) -> int | None:
    """The last axis of a projection output: the width of the MatMul weights it comes from
    (through bias Adds, casts and layer norms)."""
    producers = _producers(model)
    for _ in range(6):
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type == "MatMul" and len(node.input) == 2:
            w = _const(model, node.input[1])
            return int(w.shape[-1]) if w is not None and w.ndim == 2 else None
        if node.op_type not in ("Add", "Cast", "Identity", "RotaryEmbedding"):
            return None
        name = node.input[0]
    return None


def _int_attr(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


def _head_size_dims(model: onnx.ModelProto) -> dict[str, int]:
    """Symbolic head sizes of KV-cache inputs, from the model's own weights: the packed or
    separate projection widths of the GroupQueryAttention the cache feeds, or the last entry of
    the Reshape constant that splits the new keys' heads before the Concat with the cache."""
    found: dict[str, int] = {}
    consumers, producers = _consumers(model), _producers(model)
    for vi in graph_inputs(model):
        names = _dim_names(vi)
        if len(names) != 4 or not isinstance(names[3], str):
            continue
        head: int | None = None
        for node in consumers.get(vi.name, []):
            if node.op_type == "GroupQueryAttention" and list(node.input).index(vi.name) in (3, 4):
                heads, kv = _int_attr(node, "num_heads"), _int_attr(node, "kv_num_heads")
                packed = len(node.input) < 2 or not node.input[1]
                width = _width(model, node.input[0])
                parts = heads + 2 * kv if packed else heads
                if width is not None and parts and width % parts == 0:
                    head = width // parts
            elif node.op_type == "Concat":
                for other in node.input:
                    name = other
                    for _ in range(4):  # RotaryEmbedding / Transpose / Cast, then the Reshape
                        prod = producers.get(name)
                        if prod is None:
                            break
                        if prod.op_type == "Reshape":
                            shape = _const(model, prod.input[1])
                            if shape is not None and shape.size >= 2 and int(shape[-1]) > 0:
                                head = int(shape[-1])
                            elif shape is not None and shape.size >= 2 and int(shape[-2]) > 0:
                                # [0, 0, heads, -1]: the projection width over the heads
                                width = _width(model, prod.input[0])
                                if width is not None and width % int(shape[-2]) == 0:
                                    head = width // int(shape[-2])
                            break
                        name = prod.input[0]
                    if head is not None:
                        break
            if head is not None:
                found[names[3]] = head
                break
    return found


def _image_dims(model: onnx.ModelProto) -> dict[str, int]:
    """Channels (and, for a patch embedding, height and width) of image inputs from the first
    Conv's weights: [M, C/group, kh, kw]; a patch Conv (kernel = stride) whose output gets a
    position table [1, g*g (+1), M] takes g patches a side."""
    found: dict[str, int] = {}
    consumers = _consumers(model)
    tables = [onnx.numpy_helper.to_array(t).shape for t in model.graph.initializer]
    for vi in graph_inputs(model):
        names = _dim_names(vi)
        if len(names) != 4:
            continue
        conv = next((n for n in consumers.get(vi.name, []) if n.op_type == "Conv"), None)
        if conv is None or conv.input[0] != vi.name:
            continue
        w = _const(model, conv.input[1])
        if w is None or w.ndim != 4:
            continue
        if isinstance(names[1], str):
            found[names[1]] = int(w.shape[1]) * _int_attr(conv, "group", 1)
        kernel = [int(k) for k in w.shape[2:]]
        strides = [a.ints for a in conv.attribute if a.name == "strides"]
        stride = [int(x) for x in strides[0]] if strides else [1, 1]
        if kernel != stride or kernel[0] <= 1:
            continue
        for shape in tables:
            if len(shape) == 3 and shape[0] == 1 and shape[2] == w.shape[0]:
                for n in (shape[1], shape[1] - 1):
                    g = math.isqrt(n)
                    if g > 0 and g * g == n:
                        for axis in (2, 3):
                            if isinstance(names[axis], str):
                                found[str(names[axis])] = g * kernel[axis - 2]
                        break
                break
    return found


def _total_dims(known: set[str]) -> dict[str, tuple[str, str]]:
    """genai's ``total_sequence_length`` is ``past_sequence_length + sequence_length``:
    ``total_X`` = ``past_X`` + ``X`` wherever the model names all three."""
    out = {}
    for name in known:
        if name.startswith("total_"):
            rest = name[len("total_") :]
            if rest in known and f"past_{rest}" in known:
                out[name] = (f"past_{rest}", rest)
    return out


def model_dims(model: onnx.ModelProto) -> dict[str, int]:
    """Symbolic dims whose size the model's own weights fix (head sizes, image channels)."""
    return {**_head_size_dims(model), **_image_dims(model)}


def generate_inputs(
    model: onnx.ModelProto, dims: Mapping[str, int] | None = None, seed: int = 0
) -> ModelInputs:
    """Generate a feed for every graph input; symbolic dims from ``dims`` or a default."""
    bound = dict(dims or {})
    known: set[str] = set()
    for vi in graph_inputs(model):
        for d in _dim_names(vi):
            if isinstance(d, str):  # "past + sequence" also makes "past" and "sequence" known
                known.update([d, *(p.strip() for p in d.split("+") if "+" in d)])
    unknown = sorted(set(bound) - known)
    if unknown:
        listed = ", ".join(sorted(known)) or "none"
        raise PasaError(f"--dim {unknown[0]}: no such symbolic dimension (the model has: {listed})")
    defaults: set[str] = set()
    for name, size in model_dims(model).items():
        bound.setdefault(name, size)
    for total_name, (past, sequence) in _total_dims(known).items():
        if total_name not in bound:
            for part in (past, sequence):
                if part not in bound:
                    bound[part] = _default_dim(part, -1)
                    defaults.add(part)
            if sequence in defaults and bound[past] > 0:
                # genai's models run a past with one new token per row (GroupQueryAttention
                # refuses more when batch > 1): the decode step; past_sequence_length=0 gives
                # the prompt
                bound[sequence] = 1
            bound[total_name] = bound[past] + bound[sequence]
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    info: list[InputInfo] = []
    for vi in graph_inputs(model):
        if not vi.type.HasField("tensor_type"):
            raise PasaError(f"graph input '{vi.name}' is not a tensor; pass it in an .npz")
        shape = []
        for axis, d in enumerate(_dim_names(vi)):
            if isinstance(d, str) and d not in bound:
                total = _sum_of_dims(d, bound, defaults)
                if total is None:
                    total = _default_dim(d, axis)
                    defaults.add(d)
                bound[d] = total
            shape.append(d if isinstance(d, int) else bound[d])
        dtype = _np_dtype(vi)
        _check_size(vi.name, shape, dtype)
        arr, kind = _generate(model, vi, tuple(shape), dtype, rng)
        feeds[vi.name] = arr
        info.append(InputInfo(vi.name, tuple(arr.shape), arr.dtype.name, True, kind))
    return ModelInputs(feeds, info, bound, defaults)
