"""Public rewrite API: ``rewrite(model) -> (model, RewriteSummary)`` and the file-level
``rewrite_file(src, dst)`` that keeps external data, writes atomically, checks that onnxruntime
loads the result before it is written, and never writes the input or a file it references.

Writing a model with external data (docs/cli.md, "How outputs are written"): the model and its
data are written into a fresh temporary folder beside ``dst``; the data file is then linked in
under a name that no existing file has (``dst.data``, or ``dst.1.data`` when the model being
replaced still uses ``dst.data``), and the model is renamed over ``dst`` -- the one step that
switches readers from the old pair to the new one. The data file of the replaced output is removed
afterwards. A kill at any moment leaves either the old pair or the new pair, never the new graph
with the old weights or the reverse."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir

from pasa_onnx import safe_io
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


def find_cycle(graph: ir.Graph) -> list[ir.Node] | None:
    """The nodes of one cycle of ``graph`` (in data-flow order), or None when it is acyclic."""
    state: dict[int, int] = {}  # id(node) -> 1 on the current path, 2 done
    for start in graph:
        if id(start) in state:
            continue
        path: list[ir.Node] = []
        stack: list[tuple[ir.Node, Any]] = [(start, iter(start.inputs))]
        state[id(start)] = 1
        path.append(start)
        while stack:
            node, inputs = stack[-1]
            advanced = False
            for value in inputs:
                producer = value.producer() if value is not None else None
                if producer is None or producer.graph is not graph:
                    continue
                mark = state.get(id(producer))
                if mark == 1:
                    cycle = path[path.index(producer) :]
                    return list(reversed(cycle))
                if mark is None:
                    state[id(producer)] = 1
                    path.append(producer)
                    stack.append((producer, iter(producer.inputs)))
                    advanced = True
                    break
            if not advanced:
                state[id(node)] = 2
                path.pop()
                stack.pop()
    return None


def check_acyclic(model: ir.Model, label: str = "the model") -> None:
    """Raise a PasaError naming a node on a cycle (ONNX graphs must be acyclic)."""
    cycle = find_cycle(model.graph)
    if cycle:
        names = [n.name or n.op_type for n in cycle]
        shown = " -> ".join([*names[:6], *(["..."] if len(names) > 6 else []), names[0]])
        raise PasaError(
            f"{label}: the graph has a cycle through node '{names[0]}' ({shown}); "
            "an ONNX graph must be acyclic"
        )


def rewrite(
    model: Any, progress: Callable[[str], None] | None = None
) -> tuple[Any, RewriteSummary]:
    """Replace every attention subgraph that PasaAttention reproduces exactly.

    ``model``: a path (loaded with its external data), an ``onnx.ModelProto`` (left untouched;
    a new one is returned) or an ``onnx_ir.Model`` (rewritten in place and returned). A path
    gives back an ``onnx_ir.Model``. When nothing is replaced the input comes back as it was.
    A cyclic graph is refused with a PasaError.
    """
    from pasa_onnx.passes import pipeline

    ir_model, kind = _to_ir(model)
    check_acyclic(ir_model, os.fspath(model) if kind == "path" else "the model")
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


def not_onnx_reason(model: ir.Model | onnx.ModelProto) -> str | None:
    """Why a parsed protobuf is not an ONNX model (protobuf parses an empty file, and some
    other files, as an empty ModelProto), or None."""
    if isinstance(model, onnx.ModelProto):
        opsets, outputs = len(model.opset_import), len(model.graph.output)
    else:
        opsets, outputs = len(model.opset_imports), len(model.graph.outputs)
    if not model.ir_version:
        return "no ir_version"
    if not opsets:
        return "no opset_import"
    if not outputs:
        return "its graph has no outputs"
    return None


def load(path: str | os.PathLike) -> ir.Model:
    """Load an ONNX file (external data stays on disk until written) or raise a PasaError."""
    path = Path(path)
    if not path.is_file():
        raise PasaError(f"{path}: no such file")
    try:
        if path.stat().st_size == 0:
            raise PasaError(f"{path}: not an ONNX model (the file is empty)")
        model = ir.load(path)
    except PasaError:
        raise
    except OSError as exc:
        raise PasaError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except Exception as exc:
        raise PasaError(f"{path}: not an ONNX model ({type(exc).__name__})") from exc
    reason = not_onnx_reason(model)
    if reason:
        raise PasaError(f"{path}: not an ONNX model ({reason})")
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


def _data_family(dst: Path) -> list[Path]:
    """The names an output's data file may have: ``dst.data``, ``dst.1.data``, ..."""
    return [dst.parent / f"{dst.name}.data"] + [
        dst.parent / f"{dst.name}.{i}.data" for i in range(1, 64)
    ]


def check_loads(path: Path, label: str) -> None:
    """Create an onnxruntime session (CPU, the PasaAttention library registered, no graph
    optimisation, no run): the rewritten model must load before it is written."""
    import onnxruntime as ort

    from pasa_onnx.runtime import inference_session

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        session = inference_session(str(path), opts)
    except PasaError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()
        first = text[0] if text else type(exc).__name__
        raise PasaError(
            f"{label}: not written: onnxruntime cannot load the rewritten model ({first})"
        ) from None
    del session


def _commit(tmp: Path, dst: Path, data_name: str | None, protected: set[Path]) -> None:
    """Move ``tmp/dst.name`` (and ``tmp/data_name``) into place with one model rename; then
    remove the data file of the output it replaced. ``protected``: files never touched."""
    old_data = safe_io.model_files(dst) - {dst.resolve()} if dst.is_file() else set()
    final_data = dst.parent / data_name if data_name else None
    created = False
    try:
        if final_data is not None and data_name is not None:
            try:  # no-clobber: the name was free a moment ago; never replace a file here
                os.link(tmp / data_name, final_data)
            except FileExistsError:
                raise
            except OSError:  # no hard links on this file system
                if final_data.exists():
                    raise FileExistsError(17, "File exists", str(final_data)) from None
                os.rename(tmp / data_name, final_data)
            created = True
            (tmp / data_name).unlink(missing_ok=True)  # one link again (onnx checks that)
        safe_io.write_delay()
        os.replace(tmp / dst.name, dst)  # the commit: readers see the new pair from here on
    except BaseException as exc:  # e.g. dst is a directory; SIGTERM (safe_io.Terminated)
        if created and final_data is not None:
            final_data.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise safe_io.os_error(dst, exc) from None
        raise
    family = {p.resolve() for p in _data_family(dst)}
    keep = protected | ({final_data.resolve()} if final_data else set())
    for old in old_data & family - keep:
        old.unlink(missing_ok=True)


def _free_data_name(dst: Path, protected: set[Path]) -> str:
    """A data-file name for ``dst`` that no existing file has. Data files of the family that no
    model uses (the current ``dst`` or the input) are left from an interrupted write: removed."""
    used = protected | (safe_io.model_files(dst) if dst.is_file() else set())
    for candidate in _data_family(dst):
        if candidate.exists() and candidate.resolve() not in used:
            candidate.unlink(missing_ok=True)
    for candidate in _data_family(dst):
        if not candidate.exists() and candidate.resolve() not in used:
            return candidate.name
    raise PasaError(f"{dst}: no free name for its data file ({dst.name}.N.data are all taken)")


def _copy_atomically(src: Path, dst: Path, protected: set[Path] | None = None) -> None:
    safe_io.clean_before_write(dst.parent if str(dst.parent) else ".")
    with safe_io.temporary_folder(dst) as tmp:
        try:
            shutil.copyfile(src, tmp / dst.name)
        except OSError as exc:
            raise safe_io.os_error(dst, exc) from None
        _commit(tmp, dst, None, protected or {src.resolve()})


def save(
    model: ir.Model,
    dst: str | os.PathLike,
    external: bool | None = None,
    *,
    check: bool = False,
    protected: set[Path] | None = None,
) -> None:
    """Write atomically: model and data into a temporary folder beside ``dst``, then one
    rename of the model (module docstring). ``check``: first make onnxruntime load the written
    model (a PasaError, and nothing written, if it cannot). ``protected``: files (the input's)
    that must never be written or removed."""
    dst = Path(dst)
    protected = set(protected or ())
    if external is None:
        external = _has_external(model) or _tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD
    safe_io.clean_before_write(dst.parent if str(dst.parent) else ".")
    with safe_io.temporary_folder(dst) as tmp:
        data_name = _free_data_name(dst, protected) if external else None
        tmp_model = tmp / dst.name
        try:
            ir.save(model, tmp_model, external_data=data_name)
        except OSError as exc:
            raise safe_io.os_error(dst, exc) from None
        except Exception as exc:  # unreadable source tensors surface here (lazy loading)
            raise PasaError(f"{dst}: cannot write the model ({type(exc).__name__}: {exc})") from exc
        if check:
            check_loads(tmp_model, str(dst))
        _commit(tmp, dst, data_name, protected)


def check_output_path(src: Path, dst: Path, what: str = "the output path") -> set[Path]:
    """Refuse an output that is the input or a file the input references (its external data);
    return those files."""
    protected = safe_io.model_files(src)
    if safe_io.same_file(dst, protected):
        which = (
            "the input"
            if safe_io.same_file(dst, {src.resolve()})
            else (f"an external data file of the input {src}")
        )
        raise PasaError(f"{dst}: {what} is {which}; choose another file")
    return protected


def rewrite_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    progress: Callable[[str], None] | None = None,
) -> RewriteSummary:
    """Rewrite the model at ``src`` into ``dst``; ``src`` and the files it references are
    never modified. The result is written only if onnxruntime loads it."""
    if os.fspath(dst).endswith(os.sep) or Path(dst).is_dir():
        raise PasaError(f"{os.fspath(dst)}: cannot write: the output path is a folder")
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve() or (dst.exists() and os.path.samefile(src, dst)):
        raise PasaError(f"{dst}: the output path is the input; choose another file")
    model = load(src)
    check_acyclic(model, str(src))
    protected = check_output_path(src, dst) | _external_files(model)
    external = _has_external(model)
    if (dst.parent / f"{dst.name}.data").resolve() in _external_files(model):
        raise PasaError(f"{dst}: its data file would overwrite the input's external data")
    model, summary = rewrite(model, progress)
    if progress:
        progress(f"writing {dst}")
    if summary.replaced == 0 and not external:  # nothing to change: the same bytes
        _copy_atomically(src, dst, protected)
    else:
        save(model, dst, external=external or None, check=summary.replaced > 0, protected=protected)
    return summary
