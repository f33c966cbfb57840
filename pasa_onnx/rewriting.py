"""Public rewrite API: ``rewrite(model) -> (model, RewriteSummary)`` and the file-level
``rewrite_file(src, dst)`` that keeps external data, writes atomically and refuses dst == src."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir

from pasa_onnx.errors import PasaError
from pasa_onnx.runtime import DOMAIN, OP_TYPE, OP_VERSION

# Models whose tensors exceed this are written with external data (protobuf's limit is 2 GiB).
EXTERNAL_DATA_THRESHOLD = 1 << 30


@dataclass
class RewriteSummary:
    """What a rewrite found: every attention instance, replaced or left alone (with reason)."""

    instances: list = field(default_factory=list)  # pasa_onnx.passes.pipeline.Instance
    already_rewritten: int = 0  # PasaAttention nodes the input already had

    @property
    def found(self) -> int:
        return len(self.instances)

    @property
    def replaced(self) -> int:
        return sum(1 for i in self.instances if i.replaced)

    @property
    def left_alone(self) -> list:
        return [i for i in self.instances if not i.replaced]

    def by_pattern(self) -> dict[str, int]:
        return dict(Counter(i.pattern for i in self.instances if i.replaced))

    def by_graph(self) -> dict[str, tuple[int, int]]:
        """(found, replaced) per subgraph (If branch, Loop/Scan body); the main graph left out."""
        out: dict[str, tuple[int, int]] = {}
        for i in self.instances:
            if getattr(i, "graph", ""):
                found, replaced = out.get(i.graph, (0, 0))
                out[i.graph] = (found + 1, replaced + int(i.replaced))
        return out

    def reasons(self) -> dict[tuple[str, str], int]:
        return dict(Counter((i.family, i.reason) for i in self.left_alone))

    def to_dict(self) -> dict[str, Any]:
        return {
            "found": self.found,
            "replaced": self.replaced,
            "left_alone": len(self.left_alone),
            "already_rewritten": self.already_rewritten,
            "instances": [vars(i) for i in self.instances],
        }

    def format(self) -> str:
        lines = [
            f"attention found: {self.found}, replaced: {self.replaced}, "
            f"left alone: {len(self.left_alone)}"
            + (
                f", already PasaAttention: {self.already_rewritten}"
                if self.already_rewritten
                else ""
            )
        ]
        for graph, (found, replaced) in sorted(self.by_graph().items()):
            lines.append(f"  in subgraph {graph}: found {found}, replaced {replaced}")
        for pattern, n in sorted(self.by_pattern().items()):
            lines.append(f"  replaced    {n:4d}  {pattern}")
        for (family, reason), n in sorted(self.reasons().items()):
            lines.append(f"  left alone  {n:4d}  {family}: {reason}")
        return "\n".join(lines)


def _to_ir(model: Any) -> tuple[ir.Model, str]:
    """(IR model, kind of the input: 'path' | 'proto' | 'ir')."""
    if isinstance(model, ir.Model):
        return model, "ir"
    if isinstance(model, onnx.ModelProto):
        return ir.from_proto(model), "proto"
    if isinstance(model, (str, os.PathLike)):
        return load(model), "path"
    raise PasaError(f"cannot rewrite a {type(model).__name__}: pass a path, ModelProto or ir.Model")


def rewrite(
    model: Any, progress: Callable[[str], None] | None = None
) -> tuple[Any, RewriteSummary]:
    """Replace every attention subgraph that PasaAttention reproduces exactly.

    ``model``: a path (loaded with its external data), an ``onnx.ModelProto`` (left untouched;
    a new one is returned) or an ``onnx_ir.Model`` (rewritten in place and returned). A path
    gives back an ``onnx_ir.Model``. When nothing is replaced the input comes back as it was.
    """
    from pasa_onnx.passes import pipeline

    ir_model, kind = _to_ir(model)
    if progress:
        progress(f"matching attention patterns in {len(ir_model.graph)} nodes")
    already = sum(
        1
        for n in ir.traversal.RecursiveGraphIterator(ir_model.graph)
        if n.domain == DOMAIN and n.op_type == OP_TYPE
    )
    summary = RewriteSummary(pipeline.run(ir_model, progress), already)
    if summary.replaced == 0:
        return (model if kind == "proto" else ir_model), summary
    ir_model.opset_imports[DOMAIN] = OP_VERSION
    return (ir.to_proto(ir_model) if kind == "proto" else ir_model), summary


def load(path: str | os.PathLike) -> ir.Model:
    """Load an ONNX file (external data stays on disk until written) or raise a PasaError."""
    path = Path(path)
    if not path.is_file():
        raise PasaError(f"{path}: no such file")
    try:
        model = ir.load(path)
    except OSError as exc:
        raise PasaError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except Exception as exc:
        raise PasaError(f"{path}: not an ONNX model ({type(exc).__name__})") from exc
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if not isinstance(tensor, ir.ExternalTensor):
            continue
        data = Path(tensor.path)
        if not data.is_file():
            raise PasaError(f"{path}: external data file {data.name} of {value.name} is missing")
        # the data is read lazily: a short file would fail much later, mid-rewrite
        if (tensor.offset or 0) + (tensor.length or tensor.nbytes) > data.stat().st_size:
            raise PasaError(f"{path}: external data file {data.name} is too short for {value.name}")
    return model


def _external_files(model: ir.Model) -> set[Path]:
    return {
        Path(t.const_value.path).resolve()
        for t in model.graph.initializers.values()
        if isinstance(t.const_value, ir.ExternalTensor)
    }


def _has_external(model: ir.Model) -> bool:
    return bool(_external_files(model))


def _tensor_bytes(model: ir.Model) -> int:
    return sum(t.const_value.nbytes for t in model.graph.initializers.values() if t.const_value)


def _copy_atomically(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=f".{dst.name}.") as tmp:
        shutil.copyfile(src, Path(tmp) / dst.name)
        try:
            os.replace(Path(tmp) / dst.name, dst)
        except OSError as exc:
            raise PasaError(f"{dst}: cannot write ({exc.strerror or exc})") from exc


def save(model: ir.Model, dst: str | os.PathLike, external: bool | None = None) -> None:
    """Write atomically: to a temporary folder beside ``dst``, then ``os.replace`` (the data
    file first, so the model never points at a missing one)."""
    dst = Path(dst)
    if external is None:
        external = _has_external(model) or _tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD
    data_name = f"{dst.name}.data" if external else None
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=f".{dst.name}.") as tmp:
        tmp_model = Path(tmp) / dst.name
        try:
            ir.save(model, tmp_model, external_data=data_name)
        except OSError as exc:
            raise PasaError(f"{dst}: cannot write ({exc.strerror or exc})") from exc
        except Exception as exc:  # unreadable source tensors surface here (lazy loading)
            raise PasaError(f"{dst}: cannot write the model ({type(exc).__name__}: {exc})") from exc
        try:
            if data_name:
                os.replace(Path(tmp) / data_name, dst.parent / data_name)
            os.replace(tmp_model, dst)
        except OSError as exc:  # e.g. dst is a directory
            raise PasaError(f"{dst}: cannot write ({exc.strerror or exc})") from exc


def rewrite_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    progress: Callable[[str], None] | None = None,
) -> RewriteSummary:
    """Rewrite the model at ``src`` into ``dst``; ``src`` is never modified."""
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve() or (dst.exists() and os.path.samefile(src, dst)):
        raise PasaError(f"{dst}: the output path is the input; choose another file")
    model = load(src)
    external = _has_external(model)
    if (dst.parent / f"{dst.name}.data").resolve() in _external_files(model):
        raise PasaError(f"{dst}: its data file would overwrite the input's external data")
    model, summary = rewrite(model, progress)
    if progress:
        progress(f"writing {dst}")
    if summary.replaced == 0 and not external:  # nothing to change: the same bytes
        _copy_atomically(src, dst)
    else:
        save(model, dst, external=external or None)
    return summary
